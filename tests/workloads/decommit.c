/*
 * decommit.c - JVM/V8-style commit and decommit inside a reserved range
 * (`-- CMD` mode).
 *
 *   reserve    mmap 64 MiB PROT_NONE (a reservation: not memory)
 *   commit     mmap 1 MiB PROT_READ|PROT_WRITE, MAP_FIXED at an offset of
 *              the reservation, then memset it (memory)
 *   decommit   mmap the same 1 MiB PROT_NONE, MAP_FIXED|MAP_NORESERVE over
 *              the committed range: the memory is released, the address
 *              space stays reserved
 *
 * 30 cycles commit + decommit, cycle i at offset i MiB, then 10 commits
 * that are kept, at offsets 30..39 MiB. Every range is committed once, so
 * only the decommit can release a cycle's chunk (a later mapping at the same
 * address would also replace it). Then sleeps 1.5 s and exits. Expected
 * report: the commit stacks (kind mmap) hold exactly 10 MiB in 10
 * allocations; decommit and reserve hold nothing, and counters.reservations
 * counts the reservation and the 30 decommits (>= 31). Writes nothing to
 * stdout.
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>

#include "common.h"

#define RESERVED (64 * MiB)
#define CHUNK (1 * MiB)
#define CYCLES 30
#define KEPT 10

__attribute__((noinline)) char *reserve(void) {
    void *p = mmap(NULL, RESERVED, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        die("mmap reserve");
    return p;
}

__attribute__((noinline)) void commit(char *at) {
    void *p = mmap(at, CHUNK, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p != at)
        die("mmap commit");
    memset(p, 0x3c, CHUNK);
}

__attribute__((noinline)) void decommit(char *at) {
    void *p = mmap(at, CHUNK, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1,
                   0);
    if (p != at)
        die("mmap decommit");
}

int main(void) {
    char *base = reserve();
    for (int i = 0; i < CYCLES; i++) {
        char *at = base + (size_t)i * CHUNK;
        commit(at);
        decommit(at);
    }
    for (int i = CYCLES; i < CYCLES + KEPT; i++)
        commit(base + (size_t)i * CHUNK);
    sleep_ms(1500);
    return 0;
}
