/*
 * alloc_variants.c - one leak per allocation entry point (`-- CMD` mode).
 *
 * Each function below allocates from a single call site, so each owns
 * exactly one stack, and keeps what it allocated:
 *   leak_calloc          5 x calloc(100, 40)              = 20000 B, 5 allocs
 *   grow_realloc         p = realloc(p, n) for n = 16, 32, ..., 65536,
 *                        starting from NULL; only the final 65536-byte
 *                        block is outstanding            = 65536 B, 1 alloc
 *   leak_posix_memalign  3 x posix_memalign(64, 1000)     =  3000 B, 3 allocs
 *   leak_aligned_alloc   4 x aligned_alloc(256, 2048)     =  8192 B, 4 allocs
 *   leak_mmap            3 x anonymous mmap of 64 KiB     = 196608 B, 3 regions
 *                        (kind "mmap")
 * The program then sleeps 1.5 s and exits. Writes nothing to stdout.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common.h"

static void *kept[32];
static int nkept;

static void keep(void *p) {
    if (nkept >= (int)(sizeof kept / sizeof kept[0]))
        abort();
    kept[nkept++] = p;
}

__attribute__((noinline)) void leak_calloc(void) {
    for (int i = 0; i < 5; i++) {
        void *p = calloc(100, 40);
        if (!p)
            die("calloc");
        keep(p);
    }
}

__attribute__((noinline)) void grow_realloc(void) {
    char *p = NULL;
    for (size_t n = 16; n <= 64 * KiB; n *= 2) {
        p = realloc(p, n);
        if (!p)
            die("realloc");
        p[n - 1] = 1;
    }
    keep(p);
}

__attribute__((noinline)) void leak_posix_memalign(void) {
    for (int i = 0; i < 3; i++) {
        void *p = NULL;
        if (posix_memalign(&p, 64, 1000) != 0)
            die("posix_memalign");
        keep(p);
    }
}

__attribute__((noinline)) void leak_aligned_alloc(void) {
    for (int i = 0; i < 4; i++) {
        void *p = aligned_alloc(256, 2048);
        if (!p)
            die("aligned_alloc");
        keep(p);
    }
}

__attribute__((noinline)) void leak_mmap(void) {
    for (int i = 0; i < 3; i++) {
        void *p = mmap(NULL, 64 * KiB, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            die("mmap");
        memset(p, 0x33, 64 * KiB);
        keep(p);
    }
}

int main(void) {
    leak_calloc();
    grow_realloc();
    leak_posix_memalign();
    leak_aligned_alloc();
    leak_mmap();
    sleep_ms(1500);
    return 0;
}
