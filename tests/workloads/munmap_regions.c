/*
 * munmap_regions.c - anonymous mappings that are fully or partly unmapped
 * (`-- CMD` mode).
 *
 *   map_and_unmap   mmaps 16 regions of 64 KiB, then munmaps all of them
 *                   -> nothing outstanding
 *   partial_unmap   mmaps 4 regions of 1 MiB; from each unmaps the first and
 *                   the last 256 KiB (leaving [256K, 768K)); from region 0
 *                   it also unmaps a 256 KiB hole in the middle
 *                   ([384K, 640K)), splitting what is left in two
 *                   -> 3 * 512 KiB + 2 * 128 KiB = 1792 KiB outstanding
 * The mmap calls are made directly by the two functions (not through a
 * helper), so each function is frames[0] of its regions' stack.
 * The program then sleeps 1.5 s and exits. Writes nothing to stdout.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common.h"

static void unmap(void *addr, size_t len) {
    if (munmap(addr, len) != 0)
        die("munmap");
}

__attribute__((noinline)) void map_and_unmap(void) {
    char *r[16];
    for (int i = 0; i < 16; i++) {
        r[i] = mmap(NULL, 64 * KiB, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (r[i] == MAP_FAILED)
            die("mmap");
        r[i][0] = 1;
    }
    for (int i = 0; i < 16; i++)
        unmap(r[i], 64 * KiB);
}

__attribute__((noinline)) void partial_unmap(void) {
    static char *r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = mmap(NULL, 1 * MiB, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (r[i] == MAP_FAILED)
            die("mmap");
        memset(r[i], 0x66, 1 * MiB);
    }
    for (int i = 0; i < 4; i++) {
        unmap(r[i], 256 * KiB);
        unmap(r[i] + 768 * KiB, 256 * KiB);
    }
    unmap(r[0] + 384 * KiB, 256 * KiB);
}

int main(void) {
    map_and_unmap();
    partial_unmap();
    sleep_ms(1500);
    return 0;
}
