/*
 * late_small.c - a large stack that stops growing, then a small one that
 * appears late (`--pid` mode; the ranking of stacks without a rate).
 *
 * Prints "ready" on stdout and waits for SIGUSR1; then big_early() mallocs
 * 64 blocks of 16 KiB (1 MiB), all kept, and main prints "early". On a
 * second SIGUSR1, small_late() mallocs 10 blocks of 4 KiB (40 KiB), all
 * kept, and main prints "done" and idles until killed. Both are called
 * from main; nothing else allocates once traced.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

#define BIG_COUNT 64
#define BIG_SIZE (16 * KiB)
#define SMALL_COUNT 10
#define SMALL_SIZE (4 * KiB)

static void *kept[BIG_COUNT + SMALL_COUNT];

__attribute__((noinline)) void *big_early(void) {
    void *p = malloc(BIG_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x21, BIG_SIZE);
    return p;
}

__attribute__((noinline)) void *small_late(void) {
    void *p = malloc(SMALL_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x22, SMALL_SIZE);
    return p;
}

int main(void) {
    wait_for_go();
    for (int i = 0; i < BIG_COUNT; i++)
        kept[i] = big_early();
    printf("early\n");
    fflush(stdout);
    go_signalled = 0;
    while (!go_signalled)
        sleep_ms(10);
    for (int i = 0; i < SMALL_COUNT; i++)
        kept[BIG_COUNT + i] = small_late();
    printf("done\n");
    fflush(stdout);
    for (;;)
        pause();
}
