/*
 * stack_churn.c - a hostile target (`-- CMD` mode): millions of distinct
 * call stacks and addresses, for SECONDS seconds.
 *
 * Usage: stack_churn SECONDS
 *
 * leak_anchor() first leaks 100 blocks of 1000 bytes (100000 bytes): what
 * the report must still show, whatever the churn did to the tables. Then
 * round i recurses DEPTH levels through step(), taking one of two call
 * sites at each level as bit k of i says, so every round below 2^DEPTH
 * (16.7 million) has a call stack of its own. At the bottom, bottom()
 * mallocs 16 to 4111 bytes and frees the block of RING rounds earlier (a
 * ring of live blocks: addresses churn too), and every MMAP_EVERY-th round
 * mmaps 4 KiB and munmaps it at once. Writes "rounds N" to stderr at the
 * end; nothing to stdout.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common.h"

#define ANCHORS 100
#define ANCHOR_SIZE 1000
#define DEPTH 24
#define RING 1024
#define MMAP_EVERY 8

static void *anchors[ANCHORS];
static void *ring[RING];
static unsigned long round_no;

__attribute__((noinline)) void leak_anchor(void) {
    for (int i = 0; i < ANCHORS; i++) {
        anchors[i] = malloc(ANCHOR_SIZE);
        if (!anchors[i])
            die("malloc");
        memset(anchors[i], 0x33, ANCHOR_SIZE);
    }
}

__attribute__((noinline)) void bottom(void) {
    unsigned long slot = round_no % RING;
    free(ring[slot]);
    ring[slot] = malloc(16 + round_no % 4096);
    if (!ring[slot])
        die("malloc");
    if (round_no % MMAP_EVERY == 0) {
        void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            die("mmap");
        munmap(m, 4096);
    }
}

__attribute__((noinline)) void step(unsigned long bits, int depth) {
    if (depth == 0) {
        bottom();
        return;
    }
    if (bits & 1)
        step(bits >> 1, depth - 1);
    else
        step(bits >> 1, depth - 1);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SECONDS\n", argv[0]);
        return 2;
    }
    double end = now_secs() + atof(argv[1]);
    leak_anchor();
    while (now_secs() < end) {
        for (int i = 0; i < 256; i++, round_no++)
            step(round_no, DEPTH);
    }
    fprintf(stderr, "rounds %lu\n", round_no);
    return 0;
}
