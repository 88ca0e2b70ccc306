/*
 * free_first.c - a thread whose first allocator call is free() (`-- CMD`
 * mode).
 *
 * make_blocks() (main thread) mallocs 10 blocks of 1000 bytes; a second
 * thread, release_blocks(), frees them all. Its first free() makes glibc
 * set up that thread's tcache, which creates a new arena: an mmap of
 * 128 MiB (PROT_NONE, MAP_NORESERVE) trimmed to 64 MiB, made *inside*
 * free(). That mapping is the allocator's own heap and must not be
 * reported as an "mmap" leak. The thread gets a 256 KiB stack so that the
 * only legitimate mapping (the thread stack) is small.
 *   make_blocks: nothing outstanding (10 allocations, 10 frees)
 *   mmap-kind stacks: at most the 256 KiB thread stack
 * The program then sleeps 1.5 s and exits. Writes nothing to stdout.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define BLOCKS 10
#define BLOCK_SIZE 1000

static void *blocks[BLOCKS];

__attribute__((noinline)) void make_blocks(void) {
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc(BLOCK_SIZE);
        if (!blocks[i])
            die("malloc");
        memset(blocks[i], 0x99, BLOCK_SIZE);
    }
}

__attribute__((noinline)) void *release_blocks(void *arg) {
    (void)arg;
    for (int i = 0; i < BLOCKS; i++)
        free(blocks[i]);
    return NULL;
}

int main(void) {
    make_blocks();
    pthread_attr_t attr;
    pthread_t t;
    if (pthread_attr_init(&attr) != 0 ||
        pthread_attr_setstacksize(&attr, 256 * KiB) != 0)
        die("pthread_attr");
    if (pthread_create(&t, &attr, release_blocks, NULL) != 0)
        die("pthread_create");
    pthread_join(t, NULL);
    sleep_ms(1500);
    return 0;
}
