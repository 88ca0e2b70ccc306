/*
 * unsampled_big.c - allocations that `--sample-bytes 1GiB` mostly leaves
 * unsampled (`-- CMD` mode):
 *   keep(BIG)    64 x malloc(1 MiB), kept: glibc (default mmap threshold,
 *                128 KiB) serves each with an mmap of its own, made inside
 *                malloc, which must not be counted as an "mmap" region;
 *   keep(MEDIUM) 64 x malloc(32 KiB), kept: from the heap, unless the
 *                environment lowers the threshold (MALLOC_MMAP_THRESHOLD_=4096:
 *                then each is an mmap inside malloc too);
 *   churn_small  200,000 x malloc(64) + free: the calls whose return probe
 *                the session path skips.
 *   grow         with the argument `grow` only, then 4096 x malloc(16 KiB),
 *                kept (64 MiB): jemalloc, tcmalloc and mimalloc map memory
 *                for them from these small calls (glibc grows its heap by
 *                brk).
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

/* KEPT blocks of `size` bytes into `slots`, their first page written. */
__attribute__((noinline)) void keep(void **slots, size_t size, int byte) {
    for (int i = 0; i < KEPT; i++) {
        slots[i] = malloc(size);
        if (!slots[i])
            die("malloc");
        memset(slots[i], byte, 4096);
    }
}

__attribute__((noinline)) void churn_small(void) {
    for (long i = 0; i < CHURNS; i++) {
        void *volatile p = malloc(64);
        free(p);
    }
}

#define GROWN 4096
#define SMALL (16 * KiB)
static void *grown[GROWN];

/* GROWN blocks of SMALL bytes, kept, their first byte written. */
__attribute__((noinline)) void grow(void) {
    for (int i = 0; i < GROWN; i++) {
        grown[i] = malloc(SMALL);
        if (!grown[i])
            die("malloc");
        *(char *)grown[i] = 1;
    }
}

int main(int argc, char **argv) {
    keep(kept, BIG, 0x55);
    keep(kept_medium, MEDIUM, 0x66);
    churn_small();
    if (argc > 1 && strcmp(argv[1], "grow") == 0)
        grow();
    sleep_ms(1500);
    return 0;
}
