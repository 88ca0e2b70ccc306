/*
 * agent_mix.c - processes for the node agent to tell apart.
 *
 * Usage: agent_mix leak KIB_PER_SEC | plateau MIB | step MIB | steady | idle
 *   leak:    append_audit_record() mallocs KIB_PER_SEC/20 KiB every 50 ms,
 *            touches it and keeps it: anonymous memory grows for ever.
 *   plateau: fill_cache() fills MIB MiB in 256 KiB blocks over about a
 *            second, then the process only churns small blocks: it grew,
 *            then stays flat (a cache that filled up).
 *   step:    prints "ready", waits for SIGUSR1, then fills MIB MiB at once
 *            (one step up between two scans), prints "filled" and only
 *            churns small blocks: one interval of growth, then flat.
 *   steady:  holds a 4 MiB table and churns 64 KiB blocks every 10 ms.
 *   idle:    sleeps, allocating nothing: its anonymous memory (~100 KiB)
 *            stays exactly as it is.
 * Prints "ready" once set up (plateau: once its cache is full), then runs
 * until killed.
 */
#include <string.h>

#include "common.h"

static void *kept[1 << 20];
static unsigned long n_kept;

__attribute__((noinline)) void append_audit_record(size_t size) {
    char *p = malloc(size);
    if (!p)
        die("malloc");
    memset(p, 0x5a, size);
    if (n_kept < sizeof kept / sizeof kept[0])
        kept[n_kept++] = p;
}

__attribute__((noinline)) void fill_cache(size_t mib) {
    for (size_t i = 0; i < mib * 4; i++) {
        char *p = malloc(256 * 1024);
        if (!p)
            die("malloc");
        memset(p, 0x3c, 256 * 1024);
        kept[n_kept++] = p;
        sleep_ms(1000 / (int)(mib * 4) + 1);
    }
}

__attribute__((noinline)) void fill_at_once(size_t mib) {
    for (size_t i = 0; i < mib * 4; i++) {
        char *p = malloc(256 * 1024);
        if (!p)
            die("malloc");
        memset(p, 0x3c, 256 * 1024);
        kept[n_kept++] = p;
    }
}

__attribute__((noinline)) void churn_block(size_t size) {
    char *p = malloc(size);
    if (!p)
        die("malloc");
    memset(p, 0x11, size);
    free(p);
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    if (strcmp(argv[1], "leak") == 0 && argc > 2) {
        size_t chunk = (size_t)atol(argv[2]) * 1024 / 20;
        printf("ready\n");
        fflush(stdout);
        for (;;) {
            append_audit_record(chunk);
            sleep_ms(50);
        }
    }
    if (strcmp(argv[1], "plateau") == 0 && argc > 2) {
        fill_cache((size_t)atol(argv[2]));
        printf("ready\n");
        fflush(stdout);
        for (;;) {
            churn_block(4096);
            sleep_ms(10);
        }
    }
    if (strcmp(argv[1], "step") == 0 && argc > 2) {
        wait_for_go();
        fill_at_once((size_t)atol(argv[2]));
        printf("filled\n");
        fflush(stdout);
        for (;;) {
            churn_block(4096);
            sleep_ms(10);
        }
    }
    if (strcmp(argv[1], "steady") == 0) {
        char *table = malloc(4 << 20);
        if (!table)
            die("malloc");
        memset(table, 1, 4 << 20);
        printf("ready\n");
        fflush(stdout);
        for (;;) {
            churn_block(64 * 1024);
            sleep_ms(10);
        }
    }
    if (strcmp(argv[1], "idle") == 0) {
        printf("ready\n");
        fflush(stdout);
        for (;;)
            sleep_ms(1000);
    }
    return 2;
}
