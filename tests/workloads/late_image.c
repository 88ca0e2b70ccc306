/*
 * late_image.c - the program exec_after_leak.c execs into in the lifecycle
 * test, built static: its allocator is the executable itself, a file the
 * image before the exec never mapped, so memtrace must find and hook it
 * after the exec (`-- CMD` mode).
 *
 * It first sleeps 300 ms: memtrace sees the exec and hooks the new image
 * within milliseconds, and what it allocates before that is not seen. Then
 * late_image_leak() is called 20 times, each malloc of 500 bytes kept
 *   -> late_image_leak: 10000 B in 20 allocations
 * and the program sleeps 1 s and exits 0. Writes nothing to stdout.
 */
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define LEAKS 20
#define LEAK_SIZE 500

static void *kept[LEAKS];

__attribute__((noinline)) void *late_image_leak(void) {
    void *p = malloc(LEAK_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x55, LEAK_SIZE);
    return p;
}

int main(void) {
    sleep_ms(300);
    for (int i = 0; i < LEAKS; i++)
        kept[i] = late_image_leak();
    sleep_ms(1000);
    return 0;
}
