/*
 * leak_in_script.c - a short leaky program started through a shell script
 * (`-- script.sh` mode) or with a closed stdout.
 *
 * leak_in_script() is called 30 times, 10 ms apart; each call mallocs 2000
 * bytes that are never freed. Then the program exits 0. Expected report:
 * the leak_in_script stack holds 60000 bytes in 30 allocations. Writes
 * nothing to stdout.
 */
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define LEAK_COUNT 30
#define LEAK_SIZE 2000

static void *kept[LEAK_COUNT];

__attribute__((noinline)) void *leak_in_script(void) {
    void *p = malloc(LEAK_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x66, LEAK_SIZE);
    return p;
}

int main(void) {
    for (int i = 0; i < LEAK_COUNT; i++) {
        kept[i] = leak_in_script();
        sleep_ms(10);
    }
    return 0;
}
