/*
 * full_cache.c - a cache that fills up and then only replaces entries,
 * next to a steady leak (`-- CMD` mode, about 7 s).
 *
 * Runs 700 ticks of 10 ms on average:
 * - ticks 0..19 fill a 200-entry table, 10 entries per tick (full after
 *   ~0.1 s); every later tick replaces one random entry. Both go through
 *   the one call site of cache_insert(slot), which frees the slot's old
 *   block (if any) and callocs 256 new bytes. A replacement waits a random
 *   0-10 ms between the free and the calloc (the new value being fetched),
 *   and each tick then ends after another random 0-10 ms, so a sample
 *   taken at any moment sees 199 entries about half the time: the cache's
 *   size jitters between 50944 and 51200 bytes from one sample to the
 *   next, as a real full cache does, without ever growing;
 * - every other tick, steady_leak() mallocs 1000 bytes that are never
 *   freed (350 blocks, one every 20 ms on average).
 * Then the program exits 0 (with the cache full). Expected report
 * (--interval 1s): the cache_insert stack holds exactly 200 * 256 = 51200
 * bytes in 200 allocations (880 allocations, 680 frees) and is "stable";
 * steady_leak (350 * 1000 bytes) is "growing". Writes nothing to stdout;
 * rand() does not allocate.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define ENTRIES 200
#define ENTRY_SIZE 256
#define TICKS 700
#define FILL_PER_TICK 10
#define MAX_FETCH_MS 10
#define MAX_REST_MS 10
#define STEADY_SIZE 1000

static void *cache[ENTRIES];
static void *steady[TICKS / 2];

__attribute__((noinline)) void cache_insert(int slot) {
    if (cache[slot]) {
        free(cache[slot]);
        cache[slot] = NULL;
        sleep_ms(rand() % (MAX_FETCH_MS + 1));
    }
    cache[slot] = calloc(1, ENTRY_SIZE);
    if (!cache[slot])
        die("calloc");
}

__attribute__((noinline)) void *steady_leak(void) {
    void *p = malloc(STEADY_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x55, STEADY_SIZE);
    return p;
}

int main(void) {
    srand(12345);
    for (int tick = 0; tick < TICKS; tick++) {
        if (tick % 2 == 0)
            steady[tick / 2] = steady_leak();
        int filling = tick * FILL_PER_TICK < ENTRIES;
        int n = filling ? FILL_PER_TICK : 1;
        for (int k = 0; k < n; k++) {
            int slot = filling ? tick * FILL_PER_TICK + k : rand() % ENTRIES;
            cache_insert(slot);
        }
        sleep_ms(rand() % (MAX_REST_MS + 1));
    }
    return 0;
}
