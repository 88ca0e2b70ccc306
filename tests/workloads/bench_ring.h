/*
 * bench_ring.h - what the bench's pair loops share (bench_alloc.c in C,
 * bench_new.c in C++): the ring of live blocks each freed RING iterations
 * after its allocation, the 8 sizes it cycles through (16 B .. 4 KiB, all
 * below glibc's mmap threshold) and the clock the loops are timed with.
 */
#ifndef MEMTRACE_BENCH_RING_H
#define MEMTRACE_BENCH_RING_H

#include <stddef.h>
#include <time.h>

#define RING 1024

static const size_t SIZES[8] = {16, 32, 64, 100, 256, 512, 1024, 4096};
static void *ring[RING];

/* Nanoseconds on the monotonic clock. */
static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

#endif
