/*
 * loss_flood.c MODE - fills one of memtrace's kernel tables on purpose
 * (`-- CMD` mode, with a small --max-live or --max-stacks).
 *
 * Both modes: steady_leak() mallocs 512 B every 75 ms, 32 times, all kept:
 * a leak that starts before the flood and goes on after it
 *   -> steady_leak: 16384 B in 32 allocations, a leak.
 * Right after the 8th leak (one thread: nothing else allocates meanwhile):
 *   live    flood_alloc() mallocs 3000 x 32 B, kept in an array, then all
 *           3000 are freed. With --max-live 1024 most are not recorded
 *           (live_map_full) and their frees are frees of unknown blocks:
 *           nothing of the flood may stay outstanding.
 *   stacks  4096 calls reach leaf_alloc() through 4096 different call
 *           paths (12 levels, each through branch_a or branch_b by one bit
 *           of the call's number); each keeps 16 B: 65536 B in 4096
 *           allocations from 4096 distinct stacks, far more than
 *           --max-stacks 256 (stack_lost: their bytes go to an unknown
 *           stack, none is lost).
 * The program exits right after the last leak (an idle tail would read as a
 * leak slowing down). Writes nothing to stdout.
 */
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define STEADY_LEAKS 32
#define STEADY_SIZE 512
#define STEADY_EVERY_MS 75
#define FLOOD_AFTER 8
#define FLOOD_BLOCKS 3000
#define FLOOD_SIZE 32
#define PATH_LEVELS 12
#define PATHS (1 << PATH_LEVELS)
#define LEAF_SIZE 16

static void *steady[STEADY_LEAKS];
static void *flood[FLOOD_BLOCKS];
static void *leaves[PATHS];
static int nleaves;

__attribute__((noinline)) void *steady_leak(void) {
    void *p = malloc(STEADY_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x61, STEADY_SIZE);
    return p;
}

__attribute__((noinline)) void *flood_alloc(void) {
    void *p = malloc(FLOOD_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x62, FLOOD_SIZE);
    return p;
}

static void flood_live(void) {
    for (int i = 0; i < FLOOD_BLOCKS; i++)
        flood[i] = flood_alloc();
    for (int i = 0; i < FLOOD_BLOCKS; i++)
        free(flood[i]);
}

__attribute__((noinline)) void leaf_alloc(void) {
    void *p = malloc(LEAF_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x63, LEAF_SIZE);
    leaves[nleaves++] = p;
}

__attribute__((noinline)) void branch_a(unsigned path, int level);
__attribute__((noinline)) void branch_b(unsigned path, int level);

/* Two functions with two call sites each: every path of calls is a
 * different sequence of return addresses. */
#define BRANCH(name)                                                           \
    void name(unsigned path, int level) {                                      \
        if (level == 0)                                                        \
            leaf_alloc();                                                      \
        else if (path & 1)                                                     \
            branch_b(path >> 1, level - 1);                                    \
        else                                                                   \
            branch_a(path >> 1, level - 1);                                    \
    }
BRANCH(branch_a)
BRANCH(branch_b)

static void flood_stacks(void) {
    for (unsigned path = 0; path < PATHS; path++)
        branch_a(path, PATH_LEVELS);
}

int main(int argc, char **argv) {
    if (argc != 2 || (strcmp(argv[1], "live") && strcmp(argv[1], "stacks"))) {
        fprintf(stderr, "usage: loss_flood live|stacks\n");
        return 2;
    }
    int live = strcmp(argv[1], "live") == 0;
    for (int i = 0; i < STEADY_LEAKS; i++) {
        steady[i] = steady_leak();
        if (i + 1 == FLOOD_AFTER) {
            if (live)
                flood_live();
            else
                flood_stacks();
        }
        if (i + 1 < STEADY_LEAKS)
            sleep_ms(STEADY_EVERY_MS);
    }
    return 0;
}
