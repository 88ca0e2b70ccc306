/*
 * unsampled_big.c - allocations that `--sample-bytes 1GiB` mostly leaves
 * unsampled (`-- CMD` mode):
 *   keep_big     64 x malloc(1 MiB), kept: glibc (default mmap threshold,
 *                128 KiB) serves each with an mmap of its own, made inside
 *                malloc, which must not be counted as an "mmap" region;
 *   keep_medium  64 x malloc(32 KiB), kept: from the heap, unless the
 *                environment lowers the threshold (MALLOC_MMAP_THRESHOLD_=4096:
 *                then each is an mmap inside malloc too);
 *   churn_small  200,000 x malloc(64) + free: the calls whose return probe
 *                the session path skips.
 * Then sleeps 1.5 s and exits. Writes nothing to stdout.
 */
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define BIG (1 * MiB)
#define MEDIUM (32 * KiB)
#define KEPT 64
#define CHURNS 200000

static void *kept[KEPT];
static void *kept_medium[KEPT];

__attribute__((noinline)) void keep_big(void) {
    for (int i = 0; i < KEPT; i++) {
        kept[i] = malloc(BIG);
        if (!kept[i])
            die("malloc");
        memset(kept[i], 0x55, 4096);
    }
}

__attribute__((noinline)) void keep_medium(void) {
    for (int i = 0; i < KEPT; i++) {
        kept_medium[i] = malloc(MEDIUM);
        if (!kept_medium[i])
            die("malloc");
        memset(kept_medium[i], 0x66, 4096);
    }
}

__attribute__((noinline)) void churn_small(void) {
    for (long i = 0; i < CHURNS; i++) {
        void *volatile p = malloc(64);
        free(p);
    }
}

int main(void) {
    keep_big();
    keep_medium();
    churn_small();
    sleep_ms(1500);
    return 0;
}
