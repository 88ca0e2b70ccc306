/*
 * exec_after_leak.c - leaks, then exec()s another program (`-- CMD` mode).
 *
 * before_exec() mallocs 50 blocks of 1000 bytes and map_before_exec() maps
 * 64 KiB of anonymous memory, none of it freed; then the program execs
 * argv[1]. exec replaces the address space, so none of that memory exists
 * any more: the report must show only what the new image holds.
 */
#include <string.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

#define BLOCKS 50
#define BLOCK_SIZE 1000

static void *kept[BLOCKS];

__attribute__((noinline)) void before_exec(void) {
    for (int i = 0; i < BLOCKS; i++) {
        kept[i] = malloc(BLOCK_SIZE);
        if (!kept[i])
            die("malloc");
        memset(kept[i], 0x11, BLOCK_SIZE);
    }
}

__attribute__((noinline)) void *map_before_exec(void) {
    void *p = mmap(NULL, 64 * KiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap");
    memset(p, 0x22, 64 * KiB);
    return p;
}

int main(int argc, char **argv) {
    if (argc < 2)
        die("usage: exec_after_leak PROGRAM");
    before_exec();
    map_before_exec();
    usleep(300 * 1000);
    execv(argv[1], &argv[1]);
    die("execv");
}
