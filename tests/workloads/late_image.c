/*
 * late_image.c - the program exec_after_leak.c execs into in the lifecycle
 * test, built static: its allocator is the executable itself, a file the
 * image before the exec never mapped, so memtrace must find and hook it
 * after the exec (`-- CMD` mode).
 *
 * It first waits until the file named by its argument exists (the test
 * creates it once memtrace says it hooked this image: what the image
 * allocates before that is not seen; at most 30 s, else exit 2). Then
 * late_image_leak() is called 20 times, each malloc of 500 bytes kept
 *   -> late_image_leak: 10000 B in 20 allocations
 * and the program sleeps 1 s and exits 0. Writes nothing to stdout.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: late_image GO_FILE\n");
        return 2;
    }
    for (int waited = 0; access(argv[1], F_OK) != 0; waited += 5) {
        if (waited > 30000)
            die("late_image: no go file");
        sleep_ms(5);
    }
    for (int i = 0; i < LEAKS; i++)
        kept[i] = late_image_leak();
    sleep_ms(1000);
    return 0;
}
