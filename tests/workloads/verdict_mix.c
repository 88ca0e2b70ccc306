/*
 * verdict_mix.c - one workload per leak verdict, alone or interleaved
 * (`--pid` mode): a cache that fills up and plateaus, a steady leak, and
 * churn that keeps nothing.
 *
 * Usage: verdict_mix cache|leak|churn|all
 *
 * Prints "ready", waits for SIGUSR1 (wait_for_go), then runs ticks of
 * exactly 50 ms (20 per second), paced on CLOCK_MONOTONIC deadlines so the
 * rates below hold whatever each tick costs: tick k starts k * 50 ms after
 * the go. Each tick runs the mode's step(s), in this order in `all` mode
 * (one thread; each step is its own noinline function, so frames[0] of its
 * stacks names it):
 *
 * - cache_insert(slot) (cache, all): a 256-entry cache of 8 KiB values
 *   (2 MiB when full). Ticks 0..51 fill it, 5 entries per tick (the last
 *   tick 1): full at tick 51, 2.55 s after the go. Every later tick
 *   replaces the oldest entry (FIFO: replacement r evicts slot r % 256),
 *   freeing the old value, then mallocing the new one of the same size.
 *   Once full the cache holds exactly 256 blocks, 2097152 bytes (but for
 *   the microseconds between a free and its malloc), never more; every
 *   entry is replaced every 256 ticks (12.8 s), so once the run is longer
 *   than 2.55 + 12.8 s the oldest live entry is 12.75-12.8 s old. Expected
 *   verdict: plateau (grew for 2.55 s, then flat), never leak.
 * - leak_steady() (leak, all): mallocs 4096 bytes every tick (80 KiB/s,
 *   20 blocks per second), writes them and never frees them: after T
 *   seconds, 20 * T + 1 blocks of exactly 4096 bytes, the oldest T old.
 *   Expected verdict: leak.
 * - churn_work(tick) (churn, all): every tick mallocs 4 blocks of varying
 *   sizes (the n-th block, n from 0, is 256 * (1 + (7 * n) % 16) bytes:
 *   256 B to 4 KiB), writes them, then frees all 4 (in another order):
 *   4 allocations per tick, nothing kept across ticks. Outstanding only for
 *   the microseconds of a tick's work, so a sample (almost) never sees any
 *   of it: expected, the stack absent from the report (no outstanding
 *   bytes), or stable.
 * - serve_request(size) (churn, all): request-scoped blocks with lifetimes:
 *   every tick starts 0-8 requests (uniform, mean 4), each mallocing one
 *   block of 256 B - 4 KiB that is freed 1-20 ticks later (50 ms - 1 s),
 *   all drawn from a fixed-seed xorshift generator (the same sequence every
 *   run). About 42 blocks (~90 KB) are in flight at any moment, the amount
 *   jittering by ~20 % from one sample to the next; no block outlives 1 s
 *   and at most 8 * 20 = 160 are in flight. Expected verdict: stable.
 *
 * Stops by itself after 10 minutes (exit 0). Writes nothing after "ready";
 * clock_gettime, clock_nanosleep and memset do not allocate.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

#define TICK_MS 50
#define MAX_TICKS (10 * 60 * 1000 / TICK_MS)

#define CACHE_ENTRIES 256
#define CACHE_VALUE_SIZE (8 * KiB)
#define CACHE_FILL_PER_TICK 5

#define LEAK_SIZE (4 * KiB)

#define CHURN_BLOCKS 4
#define CHURN_UNIT 256
#define CHURN_SIZES 16

static void *cache[CACHE_ENTRIES];
static unsigned long cache_filled;
static unsigned long cache_replacements;

/* Keeps the leaked pointers reachable from nowhere the compiler can see. */
void *volatile leak_sink;

/* Frees the slot's old value (if any), then mallocs its new value. */
__attribute__((noinline)) void cache_insert(unsigned long slot) {
    if (cache[slot]) {
        free(cache[slot]);
        cache[slot] = NULL;
    }
    cache[slot] = malloc(CACHE_VALUE_SIZE);
    if (!cache[slot])
        die("malloc");
    memset(cache[slot], 0x11, CACHE_VALUE_SIZE);
}

/*
 * One call site of cache_insert for filling and replacing: the blocks of
 * both are one stack (frames[1] is this function at the same address).
 */
static void cache_step(void) {
    int inserts = cache_filled < CACHE_ENTRIES ? CACHE_FILL_PER_TICK : 1;
    for (int k = 0; k < inserts; k++) {
        unsigned long slot;
        if (cache_filled < CACHE_ENTRIES)
            slot = cache_filled++;
        else if (k == 0)
            slot = cache_replacements++ % CACHE_ENTRIES;
        else
            break; /* the fill ended inside this tick */
        cache_insert(slot);
    }
}

__attribute__((noinline)) void leak_steady(void) {
    void *p = malloc(LEAK_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x22, LEAK_SIZE);
    leak_sink = p;
}

__attribute__((noinline)) void churn_work(unsigned long tick) {
    void *blocks[CHURN_BLOCKS];
    for (unsigned long k = 0; k < CHURN_BLOCKS; k++) {
        unsigned long n = tick * CHURN_BLOCKS + k;
        size_t size = CHURN_UNIT * (1 + (7 * n) % CHURN_SIZES);
        blocks[k] = malloc(size);
        if (!blocks[k])
            die("malloc");
        memset(blocks[k], 0x33, size);
    }
    for (unsigned long k = 0; k < CHURN_BLOCKS; k++)
        free(blocks[(3 * k) % CHURN_BLOCKS]);
}

#define REQUEST_SLOTS 256
#define REQUEST_MAX_START 8
#define REQUEST_MAX_TICKS 20

static struct {
    void *block;
    unsigned long until; /* the tick that frees it */
} requests[REQUEST_SLOTS];
static unsigned long rng_state = 0x2545f4914f6cdd1dUL;

/* xorshift64: deterministic, allocation-free. */
static unsigned long next_random(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

__attribute__((noinline)) void *serve_request(size_t size) {
    void *p = malloc(size);
    if (!p)
        die("malloc");
    memset(p, 0x44, size);
    return p;
}

/* Frees the requests that end this tick, then starts this tick's ones. */
static void requests_step(unsigned long tick) {
    for (int i = 0; i < REQUEST_SLOTS; i++) {
        if (requests[i].block && requests[i].until <= tick) {
            free(requests[i].block);
            requests[i].block = NULL;
        }
    }
    unsigned long starts = next_random() % (REQUEST_MAX_START + 1);
    for (int i = 0; i < REQUEST_SLOTS && starts > 0; i++) {
        if (requests[i].block)
            continue;
        size_t size = CHURN_UNIT * (1 + next_random() % CHURN_SIZES);
        requests[i].until = tick + 1 + next_random() % REQUEST_MAX_TICKS;
        requests[i].block = serve_request(size);
        starts--;
    }
}

static void usage(void) {
    fprintf(stderr, "usage: verdict_mix cache|leak|churn|all\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc != 2)
        usage();
    int do_cache = 0, do_leak = 0, do_churn = 0;
    if (strcmp(argv[1], "cache") == 0)
        do_cache = 1;
    else if (strcmp(argv[1], "leak") == 0)
        do_leak = 1;
    else if (strcmp(argv[1], "churn") == 0)
        do_churn = 1;
    else if (strcmp(argv[1], "all") == 0)
        do_cache = do_leak = do_churn = 1;
    else
        usage();

    wait_for_go();
    struct timespec next;
    if (clock_gettime(CLOCK_MONOTONIC, &next) != 0)
        die("clock_gettime");
    for (unsigned long tick = 0; tick < MAX_TICKS; tick++) {
        if (do_cache)
            cache_step();
        if (do_leak)
            leak_steady();
        if (do_churn) {
            churn_work(tick);
            requests_step(tick);
        }
        next.tv_nsec += TICK_MS * 1000000L;
        if (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec += 1;
        }
        int rc;
        while ((rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL)) == EINTR) {
        }
        if (rc != 0) {
            errno = rc;
            die("clock_nanosleep");
        }
    }
    return 0;
}
