/*
 * bench_alloc.c - the malloc-heavy program `cargo xtask bench` times.
 *
 * Usage: bench_alloc malloc|mixed PAIRS
 *        bench_alloc rate PAIRS_PER_SEC SECONDS
 *        bench_alloc hold BLOCKS
 * Prints "ready" and waits for a line on stdin (the bench attaches its
 * tracer in between), then times PAIRS allocate+free pairs over a ring of
 * RING live blocks, so that each free hits a block allocated RING
 * iterations earlier (as in a program with live data, not an immediate
 * malloc/free of the same block). Sizes cycle through a fixed pattern of
 * 8 small and medium sizes (16 B .. 4 KiB, all below glibc's mmap
 * threshold).
 *   malloc: malloc + free.
 *   mixed:  the allocation cycles malloc, calloc, realloc(NULL, n) and
 *           realloc of the block being replaced (then no free that round:
 *           the realloc is the pair).
 * Prints "ns_per_pair <float>" and exits. Everything is freed at the end.
 *
 * rate: after the go line, malloc+free pairs of the same sizes at a steady
 * PAIRS_PER_SEC for SECONDS (in 1 ms slices), then prints "done".
 * hold: after the go line, mallocs BLOCKS 64-byte blocks and keeps them,
 * prints "held", waits for another line, frees them and exits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_ring.h"

__attribute__((noinline)) static void *allocate(unsigned long i, int mixed, void *old, int *freed) {
    size_t size = SIZES[i % 8];
    *freed = 0;
    if (!mixed)
        return malloc(size);
    switch (i % 4) {
    case 0:
        return malloc(size);
    case 1:
        return calloc(1, size);
    case 2:
        return realloc(NULL, size);
    default:
        *freed = 1;
        return realloc(old, size);
    }
}

static int wait_line(void) {
    char line[16];
    return fgets(line, sizeof line, stdin) != NULL;
}

static int run_rate(unsigned long per_sec, unsigned long seconds) {
    printf("ready\n");
    fflush(stdout);
    if (!wait_line())
        return 2;
    double start = now_ns();
    unsigned long done = 0;
    for (;;) {
        double elapsed = now_ns() - start;
        if (elapsed >= seconds * 1e9)
            break;
        unsigned long due = (unsigned long)(elapsed / 1e9 * per_sec);
        for (; done < due; done++) {
            void *p = malloc(SIZES[done % 8]);
            if (!p)
                return 3;
            free(ring[done % RING]);
            ring[done % RING] = p;
        }
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    printf("done %lu\n", done);
    fflush(stdout);
    return 0;
}

static int run_hold(unsigned long blocks) {
    void **held = malloc(blocks * sizeof *held);
    if (!held)
        return 3;
    printf("ready\n");
    fflush(stdout);
    if (!wait_line())
        return 2;
    for (unsigned long i = 0; i < blocks; i++)
        if (!(held[i] = malloc(64)))
            return 3;
    printf("held\n");
    fflush(stdout);
    wait_line();
    for (unsigned long i = 0; i < blocks; i++)
        free(held[i]);
    free(held);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_alloc malloc|mixed PAIRS\n");
        return 2;
    }
    if (strcmp(argv[1], "hold") == 0)
        return run_hold(strtoul(argv[2], NULL, 10));
    if (strcmp(argv[1], "rate") == 0) {
        for (unsigned long i = 0; i < RING; i++)
            ring[i] = malloc(SIZES[i % 8]);
        return run_rate(strtoul(argv[2], NULL, 10), argc > 3 ? strtoul(argv[3], NULL, 10) : 10);
    }
    int mixed = strcmp(argv[1], "mixed") == 0;
    unsigned long pairs = strtoul(argv[2], NULL, 10);
    for (unsigned long i = 0; i < RING; i++)
        ring[i] = malloc(SIZES[i % 8]);
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 2;
    double start = now_ns();
    for (unsigned long i = 0; i < pairs; i++) {
        unsigned long slot = i % RING;
        int freed;
        void *p = allocate(i, mixed, ring[slot], &freed);
        if (!p)
            return 3;
        if (!freed)
            free(ring[slot]);
        ring[slot] = p;
    }
    double elapsed = now_ns() - start;
    for (unsigned long i = 0; i < RING; i++)
        free(ring[i]);
    printf("ns_per_pair %.1f\n", elapsed / pairs);
    fflush(stdout);
    return 0;
}
