/*
 * thread_storm.c - 1000 threads created and joined while traced (`-- CMD`
 * mode).
 *
 * 20 rounds of 50 threads at once; each thread calls storm_churn() 100
 * times (malloc of 16 to 1024 B, written, freed at once) and storm_leak()
 * once (1000 B, kept in a global array), then exits; every round is joined
 * before the next starts.
 *   -> storm_leak: 1,000,000 B in 1000 allocations, exactly
 *   -> storm_churn: nothing outstanding; 100,000 allocations and as many
 *      frees
 * The program then sleeps 1.5 s and exits. Writes nothing to stdout.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define ROUNDS 20
#define PER_ROUND 50
#define THREADS (ROUNDS * PER_ROUND)
#define CHURN 100
#define LEAK_SIZE 1000

static void *kept[THREADS];

__attribute__((noinline)) void storm_churn(long n) {
    size_t size = 16 + (size_t)(n * 37) % 1009;
    char *p = malloc(size);
    if (!p)
        die("malloc");
    memset(p, 0x51, size);
    free(p);
}

__attribute__((noinline)) void *storm_leak(void) {
    void *p = malloc(LEAK_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x52, LEAK_SIZE);
    return p;
}

static void *storm_thread(void *arg) {
    long i = (long)arg;
    for (long n = 0; n < CHURN; n++)
        storm_churn(i * CHURN + n);
    kept[i] = storm_leak();
    return NULL;
}

int main(void) {
    pthread_t threads[PER_ROUND];
    for (int r = 0; r < ROUNDS; r++) {
        for (int t = 0; t < PER_ROUND; t++) {
            long i = (long)r * PER_ROUND + t;
            if (pthread_create(&threads[t], NULL, storm_thread, (void *)i) != 0)
                die("pthread_create");
        }
        for (int t = 0; t < PER_ROUND; t++)
            if (pthread_join(threads[t], NULL) != 0)
                die("pthread_join");
    }
    sleep_ms(1500);
    return 0;
}
