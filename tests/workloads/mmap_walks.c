/*
 * mmap_walks.c - anonymous mappings whose stacks the kernel's
 * frame-pointer walk gets whole, cuts at its frame limit, and loses in
 * code without frame pointers (`-- CMD` mode; the truncation flag of mmap
 * stacks).
 *
 * map_region() mmaps 1 MiB, writes it and keeps it. It is called:
 *   - from main directly: a walk down to libc's start of main, whole;
 *   - from recurse() 200 calls deep (called from main): more frames than
 *     the walk keeps (127);
 *   - from compare(), libc qsort's comparator (called from main): libc
 *     keeps no frame pointers, so the walk cannot get back to main.
 * Then exits. Writes nothing to stdout (memtrace's report goes there).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common.h"

#define REGION_SIZE MiB
#define DEPTH 200

static void *kept[3];

__attribute__((noinline)) void *map_region(void) {
    void *p = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap");
    memset(p, 0x31, REGION_SIZE);
    return p;
}

__attribute__((noinline)) int recurse(int depth) {
    if (depth == 0) {
        kept[1] = map_region();
        return 0;
    }
    /* Not a tail call: every level keeps its frame. */
    return recurse(depth - 1) + 1;
}

static int compare(const void *a, const void *b) {
    if (!kept[2])
        kept[2] = map_region();
    return *(const int *)a - *(const int *)b;
}

int main(void) {
    kept[0] = map_region();
    if (recurse(DEPTH) != DEPTH)
        return 1;
    int values[16];
    for (int i = 0; i < 16; i++)
        values[i] = 16 - i;
    qsort(values, 16, sizeof values[0], compare);
    return 0;
}
