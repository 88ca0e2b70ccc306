/*
 * common.h - tiny helpers shared by the integration-test workloads.
 *
 * Nothing here allocates: the workloads must make exactly the allocator
 * calls the tests count, and nothing else while they are traced.
 */
#ifndef MEMTRACE_WORKLOAD_COMMON_H
#define MEMTRACE_WORKLOAD_COMMON_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define KiB (1024UL)
#define MiB (1024UL * KiB)

/* Sleep for `ms` milliseconds, restarting after signal interruptions. */
static inline void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Print a message to stderr and exit non-zero. */
#define die(msg)                                                               \
    do {                                                                       \
        perror(msg);                                                           \
        exit(2);                                                               \
    } while (0)

#endif
