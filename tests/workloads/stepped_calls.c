/*
 * stepped_calls.c - an array grown by glibc's reallocarray (`-- CMD` mode),
 * whose probe the kernel single-steps: no instruction it emulates is in
 * straight-line reach of its entry (`mul` writes rdx first).
 *
 * grow_array: 20,000 calls of reallocarray(p, n, 16) for n = 1..50 over
 * and over, then free(p). Writes nothing to stdout. Expected report:
 * counters.stepped_probe_runs == 20000, probes.single_stepped names
 * reallocarray in libc.
 */
#define _GNU_SOURCE
#include <stdlib.h>

#include "common.h"

#define CALLS 20000

__attribute__((noinline)) void grow_array(void) {
    void *p = NULL;
    for (int i = 0; i < CALLS; i++) {
        p = reallocarray(p, (size_t)(i % 50) + 1, 16);
        if (!p)
            die("reallocarray");
    }
    free(p);
}

int main(void) {
    grow_array();
    return 0;
}
