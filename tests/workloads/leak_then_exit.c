/*
 * leak_then_exit.c - leaks on SIGUSR1, then exits on its own (--pid mode:
 * the target exits while memtrace traces it).
 *
 * Installs a SIGUSR1 handler, prints "ready" on stdout, then waits. On
 * SIGUSR1 it calls leak_then_exit() 20 times; each call mallocs 1000 bytes
 * that are never freed. It then sleeps 0.5 s and exits 0. Expected report:
 * targets[0].exited, and one stack whose frames[0] is leak_then_exit with
 * 20000 bytes outstanding in 20 allocations.
 *
 * stdout is written (and its buffer allocated) before tracing starts; the
 * pointers are kept in a static array.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define LEAK_COUNT 20
#define LEAK_SIZE 1000

static void *kept[LEAK_COUNT];


__attribute__((noinline)) void *leak_then_exit(void) {
    void *p = malloc(LEAK_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x5a, LEAK_SIZE);
    return p;
}

int main(void) {
    wait_for_go();

    for (int i = 0; i < LEAK_COUNT; i++)
        kept[i] = leak_then_exit();

    sleep_ms(500);
    return 0;
}
