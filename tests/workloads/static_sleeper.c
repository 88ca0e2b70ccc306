/*
 * static_sleeper.c - built by the tests with `-static -s`: a statically
 * linked, stripped program, so its process maps no allocator library and
 * its executable has no symbols (--pid mode: memtrace must refuse it with
 * "no allocator symbols").
 *
 * Prints "ready" on stdout, then sleeps 10 s and exits 0.
 */
#include <stdio.h>

#include "common.h"

int main(void) {
    printf("ready\n");
    fflush(stdout);
    sleep_ms(10000);
    return 0;
}
