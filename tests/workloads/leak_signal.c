/*
 * leak_signal.c - a steady leak that starts on SIGUSR1 (--pid mode tests).
 *
 * Usage: leak_signal COUNT SIZE INTERVAL_US
 *
 * Installs a SIGUSR1 handler, prints "ready" on stdout, then waits. On
 * SIGUSR1 it calls leak_fixed() COUNT times, sleeping INTERVAL_US between
 * calls; each call mallocs SIZE bytes that are never freed. It then prints
 * "done" and idles until killed. Expected report: one stack whose frames[0]
 * is leak_fixed (called from main) with COUNT * SIZE bytes outstanding in
 * COUNT allocations.
 *
 * stdout is written (and its buffer allocated) before tracing starts, so
 * the only allocations made after the signal are leak_fixed's.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

static void **kept;


__attribute__((noinline)) void *leak_fixed(size_t size) {
    void *p = malloc(size);
    if (!p)
        die("malloc");
    memset(p, 0xab, size);
    return p;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s COUNT SIZE INTERVAL_US\n", argv[0]);
        return 2;
    }
    long count = atol(argv[1]);
    size_t size = (size_t)atol(argv[2]);
    long interval_us = atol(argv[3]);

    /* The pointer array is allocated before tracing starts. */
    kept = calloc((size_t)count, sizeof *kept);
    if (!kept)
        die("calloc");

    wait_for_go();

    for (long i = 0; i < count; i++) {
        kept[i] = leak_fixed(size);
        sleep_ms(interval_us / 1000);
    }

    printf("done\n");
    fflush(stdout);

    for (;;)
        pause();
}
