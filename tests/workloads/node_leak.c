/*
 * node_leak.c - one of several processes on a node traced with --all.
 *
 * Usage: node_leak leak|clean [DELAY_MS [COUNT]]
 * Prints "ready" on stdout, sleeps DELAY_MS (default 0; a process whose
 * allocator file memtrace has never seen is hooked within a fraction of a
 * second of mapping it), then every 20 ms:
 *   leak:  leak_record() mallocs 2000 bytes and keeps them (never freed);
 *   clean: churn_record() mallocs 2000 bytes and frees them.
 * Prints "started" after the first call; runs until killed, or exits 0
 * after COUNT calls when given.
 */
#include <string.h>

#include "common.h"

static volatile unsigned long sink;
static void *kept[100000];
static unsigned long n_kept;

__attribute__((noinline)) void leak_record(void) {
    char *p = malloc(2000);
    if (!p)
        die("malloc");
    memset(p, 1, 2000);
    if (n_kept < sizeof kept / sizeof kept[0])
        kept[n_kept++] = p;
}

__attribute__((noinline)) void churn_record(void) {
    char *p = malloc(2000);
    if (!p)
        die("malloc");
    memset(p, 2, 2000);
    sink += (unsigned long)p[7];
    free(p);
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    int leak = strcmp(argv[1], "leak") == 0;
    long delay = argc > 2 ? atol(argv[2]) : 0;
    unsigned long count = argc > 3 ? strtoul(argv[3], NULL, 10) : 0;
    printf("ready\n");
    fflush(stdout);
    sleep_ms(delay);
    for (unsigned long i = 0;; i++) {
        if (leak)
            leak_record();
        else
            churn_record();
        if (i == 0) {
            printf("started\n");
            fflush(stdout);
        }
        if (count && i + 1 == count)
            return 0;
        sleep_ms(20);
    }
}
