/*
 * leak_exit.c - leaks for about a second, then exits 0 (`-- CMD` mode).
 *
 * leak_on_exit() is called 50 times, 20 ms apart; each call mallocs 2000
 * bytes that are never freed. Expected report: the top stack's frames[0] is
 * leak_on_exit with 100000 bytes outstanding in 50 allocations.
 * Writes nothing to stdout (memtrace's report goes there).
 */
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define LEAK_COUNT 50
#define LEAK_SIZE 2000

static void *kept[LEAK_COUNT];

__attribute__((noinline)) void *leak_on_exit(void) {
    void *p = malloc(LEAK_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x11, LEAK_SIZE);
    return p;
}

int main(void) {
    for (int i = 0; i < LEAK_COUNT; i++) {
        kept[i] = leak_on_exit();
        sleep_ms(20);
    }
    return 0;
}
