/*
 * churn.c - malloc/free churn next to a small known leak (`-- CMD` mode).
 *
 * churn() mallocs and frees a 4096-byte block 10000 times: its stack must
 * end with nothing outstanding. leak_anchor() leaks 10 blocks of 512 bytes
 * (5120 bytes), proving the run was traced. The program then sleeps 1.5 s
 * and exits. Writes nothing to stdout.
 */
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define CHURN_SIZE 4096
#define CHURN_ROUNDS 10000
#define ANCHOR_SIZE 512
#define ANCHOR_COUNT 10

static void *kept[ANCHOR_COUNT];

__attribute__((noinline)) void churn(void) {
    for (int i = 0; i < CHURN_ROUNDS; i++) {
        char *p = malloc(CHURN_SIZE);
        if (!p)
            die("malloc");
        p[0] = (char)i;
        p[CHURN_SIZE - 1] = (char)i;
        free(p);
    }
}

__attribute__((noinline)) void leak_anchor(void) {
    for (int i = 0; i < ANCHOR_COUNT; i++) {
        kept[i] = malloc(ANCHOR_SIZE);
        if (!kept[i])
            die("malloc");
        memset(kept[i], 0x22, ANCHOR_SIZE);
    }
}

int main(void) {
    leak_anchor();
    churn();
    sleep_ms(1500);
    return 0;
}
