/*
 * deep_leak.c - leaks for the stack-unwinding tests (tests/unwind.rs),
 * built both with frame pointers (the default flags) and with
 * -O2 -fomit-frame-pointer:
 *
 * 1. four calls below main: main -> load_config -> parse_section ->
 *    build_entry -> store_value -> malloc, DEEP_COUNT blocks of DEEP_SIZE;
 * 2. through libc's qsort, whose frames never keep frame pointers on
 *    Debian: main -> sort_records -> qsort -> ... -> compare_records ->
 *    note_comparison -> malloc, one NOTE_SIZE block per comparison.
 *
 * Prints "ready", waits for SIGUSR1, leaks, prints "compares N" and
 * "done", then sleeps until killed. With the argument "now": leaks at
 * once, prints the same on stderr (memtrace's report goes to stdout) and
 * exits (for `memtrace -- deep_leak now`). Every function is noipa (not inlined,
 * cloned or renamed) and does work after its call (no tail calls), so each
 * has a frame of its own at any optimisation level.
 */
#include "common.h"

#include <string.h>

#define DEEP_COUNT 64
#define DEEP_SIZE 3000
#define NOTE_SIZE 48
#define RECORDS 200

#define NOIPA __attribute__((noipa))

volatile unsigned long sink;
static char *deep[DEEP_COUNT];
static char *notes[1 << 14];
static unsigned compares;

NOIPA char *store_value(int i) {
    char *p = malloc(DEEP_SIZE);
    if (!p)
        die("malloc");
    memset(p, i, DEEP_SIZE);
    sink += (unsigned char)p[i % DEEP_SIZE];
    return p;
}

NOIPA char *build_entry(int i) {
    volatile char scratch[40];
    scratch[i % 40] = (char)i;
    char *p = store_value(i);
    sink += (unsigned long)scratch[i % 40];
    return p;
}

NOIPA char *parse_section(int i) {
    char *p = build_entry(i);
    sink += (unsigned long)i * 3;
    return p;
}

NOIPA void load_config(void) {
    for (int i = 0; i < DEEP_COUNT; i++) {
        deep[i] = parse_section(i);
        sink += (unsigned long)i;
    }
}

NOIPA void note_comparison(int a, int b) {
    char *p = malloc(NOTE_SIZE);
    if (!p)
        die("malloc");
    p[0] = (char)a;
    p[1] = (char)b;
    notes[compares++ % (1 << 14)] = p;
    sink += (unsigned char)p[0];
}

NOIPA int compare_records(const void *x, const void *y) {
    int a = *(const int *)x, b = *(const int *)y;
    note_comparison(a, b);
    sink += 1;
    return (a > b) - (a < b);
}

NOIPA void sort_records(void) {
    int records[RECORDS];
    for (int i = 0; i < RECORDS; i++)
        records[i] = (i * 7919) % RECORDS;
    qsort(records, RECORDS, sizeof records[0], compare_records);
    sink += (unsigned long)records[0];
}

int main(int argc, char **argv) {
    int now = argc > 1 && strcmp(argv[1], "now") == 0;
    if (!now)
        wait_for_go();
    load_config();
    sort_records();
    FILE *out = now ? stderr : stdout;
    fprintf(out, "compares %u\ndone\n", compares);
    fflush(out);
    while (!now)
        sleep_ms(1000);
    return 0;
}
