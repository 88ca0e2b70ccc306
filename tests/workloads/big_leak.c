/*
 * big_leak.c - large mallocs that glibc serves with mmap (`-- CMD` mode).
 *
 * The mmap threshold is pinned at 128 KiB with mallopt (which also turns off
 * glibc's dynamic threshold), so every 1 MiB malloc below is an mmap inside
 * malloc and every free of one is a munmap inside free.
 *   leak_big   8 x malloc(1 MiB), kept        -> 8 MiB outstanding, kind heap
 *   churn_big  4 x malloc(1 MiB) then free     -> nothing outstanding
 * Those mmaps/munmaps belong to the heap blocks and must not be counted a
 * second time as "mmap" regions. The program then sleeps 1.5 s and exits.
 * Writes nothing to stdout.
 */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define BIG (1 * MiB)
#define LEAKS 8
#define CHURNS 4

static void *kept[LEAKS];

__attribute__((noinline)) void leak_big(void) {
    for (int i = 0; i < LEAKS; i++) {
        kept[i] = malloc(BIG);
        if (!kept[i])
            die("malloc");
        memset(kept[i], 0x44, BIG);
    }
}

__attribute__((noinline)) void churn_big(void) {
    for (int i = 0; i < CHURNS; i++) {
        char *p = malloc(BIG);
        if (!p)
            die("malloc");
        memset(p, 0x55, BIG);
        free(p);
    }
}

int main(void) {
    if (mallopt(M_MMAP_THRESHOLD, 128 * 1024) != 1) {
        fprintf(stderr, "mallopt(M_MMAP_THRESHOLD) failed\n");
        return 2;
    }
    leak_big();
    churn_big();
    sleep_ms(1500);
    return 0;
}
