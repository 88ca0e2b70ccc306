/*
 * rss_only.c - memory that grows outside every traced allocator call
 * (`--pid` mode): after the go signal, every 50 ms, grow_heap_directly()
 * extends the program break by 64 KiB with sbrk() and writes every page.
 * brk is not an allocator function memtrace hooks (nor an anonymous mmap),
 * so no stack records this memory, yet the process's anonymous RSS grows by
 * 1.25 MiB/s (4.4 GiB/h). Expected: the target's memory alert fires,
 * traced growth stays ~0 and explains none of it. Stops after 10 minutes.
 * Writes nothing after "ready".
 */
#define _GNU_SOURCE
#include <string.h>
#include <unistd.h>

#include "common.h"

#define STEP (64 * KiB)
#define TICK_MS 50
#define MAX_TICKS (10 * 60 * 1000 / TICK_MS)

__attribute__((noinline)) void grow_heap_directly(void) {
    void *p = sbrk(STEP);
    if (p == (void *)-1)
        die("sbrk");
    memset(p, 0x5a, STEP);
}

int main(void) {
    wait_for_go();
    for (int tick = 0; tick < MAX_TICKS; tick++) {
        grow_heap_directly();
        sleep_ms(TICK_MS);
    }
    return 0;
}
