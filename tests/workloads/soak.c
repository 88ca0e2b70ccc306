/*
 * soak.c - a steady leak next to heavy churn, for SECONDS seconds (`-- CMD`
 * mode; the soak test and `cargo xtask soak`).
 *
 * Usage: soak SECONDS
 *
 * Every 20 ms tick: leak_steady() mallocs 1000 bytes and keeps them (50
 * blocks, 50,000 bytes a second); churn() makes 1000 malloc/free pairs of
 * 16 to 4111 bytes over a ring of 4096 live blocks, each through one of
 * 512 call paths (nine levels of two call sites: 512 distinct stacks),
 * and every 64th pair an mmap/munmap of 64 KiB. At the end it writes
 * "leaked N" (bytes) to stderr and exits 0; nothing to stdout.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common.h"

#define LEAK_SIZE 1000
#define TICK_MS 20
#define PAIRS_PER_TICK 1000
#define RING 4096
#define PATH_LEVELS 9
#define MMAP_EVERY 64
#define MAP_SIZE (64 * KiB)

static void *ring[RING];
static unsigned long pair_no;
static unsigned long leaked;

__attribute__((noinline)) void leak_steady(void) {
    char *p = malloc(LEAK_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x44, LEAK_SIZE);
    leaked += LEAK_SIZE;
}

__attribute__((noinline)) void churn_block(void) {
    unsigned long slot = pair_no % RING;
    free(ring[slot]);
    ring[slot] = malloc(16 + pair_no % 4096);
    if (!ring[slot])
        die("malloc");
    if (pair_no % MMAP_EVERY == 0) {
        char *m = mmap(NULL, MAP_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            die("mmap");
        m[0] = 1;
        munmap(m, MAP_SIZE);
    }
}

__attribute__((noinline)) void churn_path(unsigned long bits, int level) {
    if (level == 0) {
        churn_block();
        return;
    }
    if (bits & 1)
        churn_path(bits >> 1, level - 1);
    else
        churn_path(bits >> 1, level - 1);
}

__attribute__((noinline)) void churn(void) {
    for (int i = 0; i < PAIRS_PER_TICK; i++, pair_no++)
        churn_path(pair_no, PATH_LEVELS);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SECONDS\n", argv[0]);
        return 2;
    }
    double start = now_secs();
    double end = start + atof(argv[1]);
    for (unsigned long tick = 1; now_secs() < end; tick++) {
        leak_steady();
        churn();
        double next = start + (double)tick * TICK_MS / 1000.0;
        double wait = next - now_secs();
        if (wait > 0)
            sleep_ms((long)(wait * 1000.0));
    }
    fprintf(stderr, "leaked %lu\n", leaked);
    return 0;
}
