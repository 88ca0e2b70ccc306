/*
 * bad_traffic.c - allocator calls that are wrong or fail (`-- CMD` mode);
 * none may leave phantom bytes. (Failed realloc, malloc(SIZE_MAX) and an
 * overflowing calloc are in alloc_semantics.c.) Each function allocates
 * from its own call sites:
 *
 *   free_null         free(NULL) 1000 times                  -> nothing, not
 *                     counted as frees of unknown blocks
 *   double_free       p = malloc(48) (df_alloc); free(p); free(p) again:
 *                     glibc's tcache check aborts; a SIGABRT handler
 *                     siglongjmps back             -> df_alloc: 0 B, 1
 *                     allocation, 1 free; the second free is unknown
 *   interior_free     p = calloc(1, 200) (interior_alloc), kept; free(p + 8):
 *                     glibc aborts ("invalid pointer") before freeing
 *                     anything                    -> interior_alloc: 200 B
 *                     outstanding; the bad free is unknown
 *   wrap_reallocarray p = malloc(300) (wrap_alloc); reallocarray(p, 2^32,
 *                     2^32): the product wraps to exactly 0, but this is an
 *                     overflow (NULL, ENOMEM), not realloc(p, 0): p kept
 *                                                 -> wrap_alloc: 300 B
 *   memalign_einval   q = malloc(80) (ma_alloc), kept; posix_memalign(&q,
 *                     3, 64) fails (EINVAL) and leaves q as it was: not a
 *                     new block                   -> ma_alloc: 80 B, 1 alloc
 *   munmap_unmapped   in a 1 MiB PROT_NONE reservation (not memory),
 *                     keep_mapping() maps 128 KiB read-write at +256 KiB
 *                     (MAP_FIXED); then munmap of 64 KiB of the reservation,
 *                     of the same range again (nothing mapped there now), of
 *                     a range from 48 KiB before the mapping to 16 KiB into
 *                     it, of one from 32 KiB before its end to 32 KiB past
 *                     it, and an unaligned munmap (EINVAL)
 *                                                 -> keep_mapping: mmap,
 *                     allocated 128 KiB, 48 KiB freed, 80 KiB outstanding
 *
 * glibc writes its two messages to stderr and keeps the last one in a page
 * it maps for that (__libc_message, memory the process really holds). So:
 * 2 failed allocator calls, 2 frees of unknown blocks. The program then
 * sleeps 1.5 s and exits. Writes nothing to stdout.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common.h"

static sigjmp_buf after_abort;
static volatile sig_atomic_t aborts;
static void *volatile kept[8];
static volatile size_t wrap_count = (size_t)1 << 32;
static volatile size_t wrap_size = (size_t)1 << 32;
static volatile size_t bad_alignment = 3;
static volatile size_t interior_offset = 8;

static void on_abort(int sig) {
    (void)sig;
    aborts++;
    siglongjmp(after_abort, 1);
}

__attribute__((noinline)) void free_null(void) {
    for (int i = 0; i < 1000; i++)
        free(kept[7]); /* always NULL */
}

__attribute__((noinline)) void *df_alloc(void) {
    void *p = malloc(48);
    if (!p)
        die("malloc(48)");
    memset(p, 0x71, 48);
    return p;
}

__attribute__((noinline)) void double_free(void) {
    void *volatile p = df_alloc();
    free(p);
    if (sigsetjmp(after_abort, 1) == 0) {
        free(p);
        fprintf(stderr, "bad_traffic: glibc did not catch the double free\n");
        exit(2);
    }
}

__attribute__((noinline)) void *interior_alloc(void) {
    void *p = calloc(1, 200);
    if (!p)
        die("calloc(1, 200)");
    return p;
}

__attribute__((noinline)) void interior_free(void) {
    char *volatile p = interior_alloc();
    kept[0] = p;
    if (sigsetjmp(after_abort, 1) == 0) {
        free(p + interior_offset);
        fprintf(stderr, "bad_traffic: glibc did not catch the interior free\n");
        exit(2);
    }
}

__attribute__((noinline)) void *wrap_alloc(void) {
    void *p = malloc(300);
    if (!p)
        die("malloc(300)");
    memset(p, 0x72, 300);
    return p;
}

__attribute__((noinline)) void wrap_reallocarray(void) {
    void *p = wrap_alloc();
    void *q = reallocarray(p, wrap_count, wrap_size);
    if (q) {
        fprintf(stderr, "bad_traffic: reallocarray(p, 2^32, 2^32) succeeded\n");
        exit(2);
    }
    kept[1] = p;
}

__attribute__((noinline)) void *ma_alloc(void) {
    void *p = malloc(80);
    if (!p)
        die("malloc(80)");
    memset(p, 0x73, 80);
    return p;
}

__attribute__((noinline)) void memalign_einval(void) {
    void *q = ma_alloc();
    void *before = q;
    if (posix_memalign(&q, bad_alignment, 64) == 0 || q != before) {
        fprintf(stderr, "bad_traffic: posix_memalign(&q, 3, 64) did not fail\n");
        exit(2);
    }
    kept[2] = q;
}

__attribute__((noinline)) char *keep_mapping(char *at) {
    char *p = mmap(at, 128 * KiB, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p == MAP_FAILED)
        die("mmap(128 KiB, MAP_FIXED)");
    memset(p, 0x74, 128 * KiB);
    return p;
}

__attribute__((noinline)) void munmap_unmapped(void) {
    char *r = mmap(NULL, 1 * MiB, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED)
        die("mmap(1 MiB, PROT_NONE)");
    char *m = keep_mapping(r + 256 * KiB);
    kept[3] = m;
    if (munmap(r + 768 * KiB, 64 * KiB) != 0)
        die("munmap(reservation)");
    if (munmap(r + 768 * KiB, 64 * KiB) != 0) /* nothing mapped there */
        die("munmap(hole)");
    if (munmap(m - 48 * KiB, 64 * KiB) != 0) /* straddles the start */
        die("munmap(start)");
    if (munmap(m + 96 * KiB, 64 * KiB) != 0) /* straddles the end */
        die("munmap(end)");
    if (munmap(m + 17 * KiB + 1, 4096) == 0)
        die("unaligned munmap succeeded");
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_abort;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGABRT, &sa, NULL) != 0)
        die("sigaction");
    free_null();
    double_free();
    interior_free();
    wrap_reallocarray();
    memalign_einval();
    munmap_unmapped();
    if (aborts != 2) {
        fprintf(stderr, "bad_traffic: %d aborts, expected 2\n", (int)aborts);
        return 2;
    }
    sleep_ms(1500);
    return 0;
}
