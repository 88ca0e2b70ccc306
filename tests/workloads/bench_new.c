/*
 * bench_new.c - C++ (compiled with g++, which treats .c files as C++): the
 * new/delete loop `cargo xtask bench` times beside bench_alloc.c's
 * malloc/free one. Named .c so the workload builders find it.
 *
 * Usage: bench_new PAIRS
 * Prints "ready" and waits for a line on stdin (the bench attaches its
 * tracer in between), then times PAIRS `operator new` + `operator delete`
 * pairs over a ring of RING live blocks of bench_alloc.c's sizes (16 B ..
 * 4 KiB), prints "ns_per_pair <float>" and exits, everything deleted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <new>

#include "bench_ring.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_new PAIRS\n");
        return 2;
    }
    unsigned long pairs = strtoul(argv[1], NULL, 10);
    for (unsigned long i = 0; i < RING; i++)
        ring[i] = ::operator new(SIZES[i % 8]);
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 2;
    double start = now_ns();
    for (unsigned long i = 0; i < pairs; i++) {
        unsigned long slot = i % RING;
        void *p = ::operator new(SIZES[i % 8]);
        ::operator delete(ring[slot]);
        ring[slot] = p;
    }
    double elapsed = now_ns() - start;
    for (unsigned long i = 0; i < RING; i++)
        ::operator delete(ring[i]);
    printf("ns_per_pair %.1f\n", elapsed / pairs);
    fflush(stdout);
    return 0;
}
