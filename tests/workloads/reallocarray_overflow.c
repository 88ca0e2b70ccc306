/*
 * reallocarray_overflow.c - a reallocarray whose size overflows (`-- CMD`
 * mode).
 *
 * keep_after_overflow: p = malloc(1000), written; reallocarray(p,
 * SIZE_MAX / 2, 4) overflows and returns NULL (ENOMEM) without touching p,
 * so p stays outstanding. The counts go through volatile variables so the
 * compiler neither warns nor folds them. This is the program's only failing
 * allocator call. Then sleeps 1 s and exits. Expected report: the
 * keep_after_overflow stack holds exactly 1000 bytes in 1 allocation (0
 * frees); counters.failed_allocations == 1. Writes nothing to stdout.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static volatile size_t overflow_count = SIZE_MAX / 2;
static volatile size_t overflow_size = 4;
static void *volatile kept;

__attribute__((noinline)) void keep_after_overflow(void) {
    char *p = malloc(1000);
    if (!p)
        die("malloc(1000)");
    memset(p, 0x44, 1000);
    void *q = reallocarray(p, overflow_count, overflow_size);
    if (q) {
        fprintf(stderr, "reallocarray(p, SIZE_MAX / 2, 4) unexpectedly succeeded\n");
        exit(2);
    }
    kept = p;
}

int main(void) {
    keep_after_overflow();
    sleep_ms(1000);
    return 0;
}
