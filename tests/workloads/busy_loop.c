/*
 * busy_loop.c - a target that is always inside the allocator (--pid mode,
 * attach to a busy process).
 *
 * Prints "ready" on stdout, then loops until killed: malloc(64) and free it
 * (from churn_once), and every 2000 iterations busy_leak() mallocs 4096
 * bytes that are never freed. With probes attached mid-loop, many calls are
 * in flight at attach time; memtrace must still record the calls that
 * start after its probes are in place. Expected report (traced for a few
 * seconds): the top stack's frames[0] is busy_leak with
 * 4096 * outstanding_allocations bytes outstanding; churn_once's blocks are
 * all freed (at most the one in flight at the end is outstanding).
 */
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define LEAK_EVERY 2000
#define LEAK_SIZE 4096

/* Written so the compiler cannot drop the leaked block or the churn. */
static void *volatile sink;

__attribute__((noinline)) void *busy_leak(void) {
    void *p = malloc(LEAK_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x5a, LEAK_SIZE);
    return p;
}

__attribute__((noinline)) void churn_once(void) {
    char *p = malloc(64);
    if (!p)
        die("malloc");
    p[0] = 1;
    sink = p;
    free(p);
}

int main(void) {
    printf("ready\n");
    fflush(stdout);
    for (unsigned long i = 1;; i++) {
        churn_once();
        if (i % LEAK_EVERY == 0)
            sink = busy_leak();
    }
}
