/*
 * stepped_calls.c - probes the kernel single-steps, and one it no longer
 * needs to (`-- CMD` mode). Writes nothing to stdout.
 *
 * `stepped_calls stepped` (traced with --symbol-prefix stepalloc_):
 *   many_stepped_calls makes 20,000 calls of stepalloc_malloc(64), freeing
 *   each with free(). stepalloc_malloc starts with `sub rsp` (which the
 *   kernel single-steps, and which no probe may pass: the return probe
 *   needs the return address on top of the stack), then calls a function
 *   of this file that calls malloc. Expected report:
 *   counters.stepped_probe_runs == 20000, probes.single_stepped names
 *   stepalloc_malloc in this executable, and nothing outstanding.
 *
 * `stepped_calls reallocarray`:
 *   grow_array makes 20,000 calls of glibc's reallocarray(p, n, 16) for
 *   n = 1..50 over and over, then one that overflows (SIZE_MAX / 2 * 4:
 *   NULL, p untouched), then free(p). reallocarray's entry has no emulated
 *   instruction in reach (`mul` writes rdx first); its calls go on to
 *   realloc, and only its overflow path is probed. Expected report: no
 *   single-stepped probe; 20,000 allocations and 20,000 frees under
 *   grow_array, nothing outstanding; counters.failed_allocations == 1.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define CALLS 20000

/* Through volatiles: the compiler neither warns nor folds them. */
static volatile size_t overflow_count = SIZE_MAX / 2;
static volatile size_t overflow_size = 4;

/* Called by stepalloc_malloc: not a name memtrace hooks, so that
 * stepalloc_malloc is no wrapper of malloc and keeps its own probe. */
__attribute__((noinline, used)) void *stepalloc_inner(size_t n) {
    return malloc(n);
}

__asm__(".text\n"
        ".globl stepalloc_malloc\n"
        ".type stepalloc_malloc, @function\n"
        "stepalloc_malloc:\n"
        "    sub $8, %rsp\n"
        "    call stepalloc_inner\n"
        "    add $8, %rsp\n"
        "    ret\n"
        ".size stepalloc_malloc, .-stepalloc_malloc\n");

void *stepalloc_malloc(size_t n);

/* The prefix's free (an allocator under a prefix needs both names). */
__attribute__((noinline)) void stepalloc_free(void *p) { free(p); }

__attribute__((noinline)) void many_stepped_calls(void) {
    for (int i = 0; i < CALLS; i++) {
        void *p = stepalloc_malloc(64);
        if (!p)
            die("stepalloc_malloc");
        free(p);
    }
}

__attribute__((noinline)) void grow_array(void) {
    void *p = NULL;
    for (int i = 0; i < CALLS; i++) {
        p = reallocarray(p, (size_t)(i % 50) + 1, 16);
        if (!p)
            die("reallocarray");
    }
    if (reallocarray(p, overflow_count, overflow_size) != NULL)
        die("reallocarray did not overflow");
    free(p);
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "stepped") == 0)
        many_stepped_calls();
    else if (argc == 2 && strcmp(argv[1], "reallocarray") == 0)
        grow_array();
    else
        die("usage: stepped_calls stepped|reallocarray");
    return 0;
}
