/*
 * pprof_mix.c - heap blocks half freed and anonymous mappings kept, in
 * exact amounts, started on SIGUSR1 (--pid mode; the pprof tests).
 *
 * Usage: pprof_mix COUNT SIZE REGIONS
 *
 * Prints "ready" on stdout and waits for SIGUSR1; then, 10 ms apart:
 *   alloc_block  called COUNT times (COUNT even), mallocs SIZE bytes; main
 *                frees every other block right away and keeps the rest
 *                -> COUNT allocations of COUNT * SIZE bytes, COUNT / 2
 *                   blocks (COUNT / 2 * SIZE bytes) outstanding, kind heap
 *   map_region   called REGIONS times, mmaps 64 KiB of anonymous memory,
 *                writes it and keeps it
 *                -> REGIONS * 64 KiB outstanding in REGIONS mappings, all
 *                   still mapped, kind mmap
 * Both are called from main. It then prints "done" and idles until killed.
 * Every allocation so differs in the four values of a heap profile
 * (allocated vs in use, blocks vs bytes).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

/* Region size of map_region(). */
#define REGION_SIZE (64 * KiB)

static void **kept;

__attribute__((noinline)) void *alloc_block(size_t size) {
    void *p = malloc(size);
    if (!p)
        die("malloc");
    memset(p, 0xab, size);
    return p;
}

__attribute__((noinline)) void *map_region(void) {
    void *p = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap");
    memset(p, 0xcd, REGION_SIZE);
    return p;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s COUNT SIZE REGIONS\n", argv[0]);
        return 2;
    }
    long count = atol(argv[1]);
    size_t size = (size_t)atol(argv[2]);
    long regions = atol(argv[3]);
    if (count % 2 != 0) {
        fprintf(stderr, "COUNT must be even\n");
        return 2;
    }

    /* The pointer array is allocated before tracing starts. */
    kept = calloc((size_t)(count / 2 + regions), sizeof *kept);
    if (!kept)
        die("calloc");

    wait_for_go();

    for (long i = 0; i < count; i++) {
        void *p = alloc_block(size);
        if (i % 2)
            free(p);
        else
            kept[i / 2] = p;
        sleep_ms(10);
    }
    for (long i = 0; i < regions; i++) {
        kept[count / 2 + i] = map_region();
        sleep_ms(10);
    }

    printf("done\n");
    fflush(stdout);

    for (;;)
        pause();
}
