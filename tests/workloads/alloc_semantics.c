/*
 * alloc_semantics.c - the allocator edge cases the README's "Semantics"
 * paragraph promises (`-- CMD` mode). Each function allocates from its own
 * call sites, so each owns its stacks:
 *
 *   realloc_from_null         realloc(NULL, 1234), kept           -> 1234 B, 1 alloc
 *   malloc_then_zero_realloc  p = malloc(3000); realloc(p, 0)     -> 0 B (realloc(p, 0)
 *                             is a free; glibc returns NULL)
 *   keep_after_failed_realloc p = malloc(5000); realloc(p, 1 << 60) fails (NULL), p kept
 *                                                                 -> 5000 B, 1 alloc
 *   fail_calloc_overflow      calloc(SIZE_MAX / 2, 4) overflows   -> NULL, nothing
 *   fail_malloc_huge          malloc(SIZE_MAX)                    -> NULL, nothing
 *   leak_reallocarray         reallocarray(NULL, 10, 100), kept   -> 1000 B, 1 alloc
 *   leak_memalign             memalign(64, 700), kept             ->  700 B, 1 alloc
 *   leak_valloc               valloc(900), kept                   ->  900 B, 1 alloc
 *   leak_pvalloc              pvalloc(100), kept                  ->  100 B, 1 alloc
 *                             (the requested size; glibc rounds the block up to a page)
 *   leak_mremap_grow          mmap 64 KiB RW, written, mremap to 256 KiB (MAYMOVE), kept
 *                                                                 -> 256 KiB, kind mmap
 *   shrink_then_unmap         mmap 128 KiB, mremap to 32 KiB, munmap -> 0 B
 *   reserve_only              mmap 1 MiB PROT_NONE, kept          -> not counted
 *                             (a reservation)
 *
 * So the program makes exactly FAILED_CALLS = 3 failing allocator calls
 * (the realloc, the calloc and the malloc above). The sizes that must fail
 * go through volatile variables so the compiler neither warns nor folds
 * them. The program then sleeps 1.5 s and exits. Writes nothing to stdout.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
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

static volatile size_t huge_realloc = (size_t)1 << 60;
static volatile size_t calloc_count = SIZE_MAX / 2;
static volatile size_t huge_malloc = SIZE_MAX;

__attribute__((noinline)) void realloc_from_null(void) {
    char *p = realloc(NULL, 1234);
    if (!p)
        die("realloc(NULL, 1234)");
    memset(p, 0x21, 1234);
    keep(p);
}

__attribute__((noinline)) void malloc_then_zero_realloc(void) {
    char *p = malloc(3000);
    if (!p)
        die("malloc(3000)");
    memset(p, 0x22, 3000);
    /* glibc: frees p and returns NULL. */
    void *q = realloc(p, 0);
    if (q)
        keep(q);
}

__attribute__((noinline)) void keep_after_failed_realloc(void) {
    char *p = malloc(5000);
    if (!p)
        die("malloc(5000)");
    memset(p, 0x23, 5000);
    void *q = realloc(p, huge_realloc);
    if (q) {
        fprintf(stderr, "realloc(p, 1 << 60) unexpectedly succeeded\n");
        exit(2);
    }
    keep(p);
}

__attribute__((noinline)) void fail_calloc_overflow(void) {
    void *p = calloc(calloc_count, 4);
    if (p) {
        fprintf(stderr, "calloc(SIZE_MAX / 2, 4) unexpectedly succeeded\n");
        exit(2);
    }
}

__attribute__((noinline)) void fail_malloc_huge(void) {
    void *p = malloc(huge_malloc);
    if (p) {
        fprintf(stderr, "malloc(SIZE_MAX) unexpectedly succeeded\n");
        exit(2);
    }
}

__attribute__((noinline)) void leak_reallocarray(void) {
    void *p = reallocarray(NULL, 10, 100);
    if (!p)
        die("reallocarray");
    memset(p, 0x24, 1000);
    keep(p);
}

__attribute__((noinline)) void leak_memalign(void) {
    void *p = memalign(64, 700);
    if (!p)
        die("memalign");
    memset(p, 0x25, 700);
    keep(p);
}

__attribute__((noinline)) void leak_valloc(void) {
    void *p = valloc(900);
    if (!p)
        die("valloc");
    memset(p, 0x26, 900);
    keep(p);
}

__attribute__((noinline)) void leak_pvalloc(void) {
    void *p = pvalloc(100);
    if (!p)
        die("pvalloc");
    memset(p, 0x27, 100);
    keep(p);
}

__attribute__((noinline)) void leak_mremap_grow(void) {
    char *p = mmap(NULL, 64 * KiB, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap(64 KiB)");
    memset(p, 0x28, 64 * KiB);
    char *q = mremap(p, 64 * KiB, 256 * KiB, MREMAP_MAYMOVE);
    if (q == MAP_FAILED)
        die("mremap(64 KiB -> 256 KiB)");
    memset(q, 0x29, 256 * KiB);
    keep(q);
}

__attribute__((noinline)) void shrink_then_unmap(void) {
    char *p = mmap(NULL, 128 * KiB, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap(128 KiB)");
    memset(p, 0x2a, 128 * KiB);
    char *q = mremap(p, 128 * KiB, 32 * KiB, 0);
    if (q == MAP_FAILED)
        die("mremap(128 KiB -> 32 KiB)");
    if (munmap(q, 32 * KiB) != 0)
        die("munmap(32 KiB)");
}

__attribute__((noinline)) void reserve_only(void) {
    void *p = mmap(NULL, 1 * MiB, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        die("mmap(1 MiB, PROT_NONE)");
    keep(p);
}

int main(void) {
    realloc_from_null();
    malloc_then_zero_realloc();
    keep_after_failed_realloc();
    fail_calloc_overflow();
    fail_malloc_huge();
    leak_reallocarray();
    leak_memalign();
    leak_valloc();
    leak_pvalloc();
    leak_mremap_grow();
    shrink_then_unmap();
    reserve_only();
    sleep_ms(1500);
    return 0;
}
