/*
 * replaced_libc.c - a target whose libc file is replaced on disk while it
 * runs (--pid mode; the test starts it with LD_LIBRARY_PATH pointing at a
 * copy of libc, then renames another copy over it, so /proc/PID/maps shows
 * the mapped libc as "(deleted)").
 *
 * Prints "ready" on stdout and waits for SIGUSR1; then calls
 * leak_with_replaced_libc() 50 times, 10 ms apart, each mallocing 1000
 * bytes that are never freed; prints "done" and idles until killed.
 * Expected report: the leak_with_replaced_libc stack holds 50000 bytes in
 * 50 allocations. stdout's buffer is allocated before tracing starts.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

#define LEAK_COUNT 50
#define LEAK_SIZE 1000

static void *kept[LEAK_COUNT];


__attribute__((noinline)) void *leak_with_replaced_libc(void) {
    void *p = malloc(LEAK_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x77, LEAK_SIZE);
    return p;
}

int main(void) {
    wait_for_go();

    for (int i = 0; i < LEAK_COUNT; i++) {
        kept[i] = leak_with_replaced_libc();
        sleep_ms(10);
    }
    printf("done\n");
    fflush(stdout);
    for (;;)
        pause();
}
