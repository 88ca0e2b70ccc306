/*
 * bench_alloc.c - the malloc-heavy program `cargo xtask bench` times.
 *
 * Usage: bench_alloc malloc|mixed PAIRS
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
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RING 1024

static const size_t SIZES[8] = {16, 32, 64, 100, 256, 512, 1024, 4096};
static void *ring[RING];

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

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

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_alloc malloc|mixed PAIRS\n");
        return 2;
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
