/*
 * threads.c - concurrent leaks and cross-thread frees (`-- CMD` mode).
 *
 *   4 leaker threads start together (barrier) and each calls thread_leak()
 *   1000 times; each call mallocs 100 bytes that are kept
 *       -> thread_leak: 400000 bytes outstanding in 4000 allocations
 *   a producer thread calls cross_alloc() 1000 times (256 bytes each) and
 *   hands every block through a mutex/condvar-protected queue to a consumer
 *   thread, which frees it
 *       -> cross_alloc: nothing outstanding; 1000 allocations, 1000 frees
 * All threads are joined, then the program sleeps 1.5 s and exits.
 * Writes nothing to stdout.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define LEAK_THREADS 4
#define LEAKS_PER_THREAD 1000
#define LEAK_SIZE 100
#define CROSS_COUNT 1000
#define CROSS_SIZE 256
#define QUEUE_CAP 16

static void *kept[LEAK_THREADS][LEAKS_PER_THREAD];
static pthread_barrier_t start_barrier;

static void *queue[QUEUE_CAP];
static int q_head, q_len;
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_not_empty = PTHREAD_COND_INITIALIZER;
static pthread_cond_t q_not_full = PTHREAD_COND_INITIALIZER;

__attribute__((noinline)) void *thread_leak(void) {
    void *p = malloc(LEAK_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x77, LEAK_SIZE);
    return p;
}

__attribute__((noinline)) void *cross_alloc(void) {
    void *p = malloc(CROSS_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x88, CROSS_SIZE);
    return p;
}

__attribute__((noinline)) void cross_free(void *p) { free(p); }

static void queue_push(void *p) {
    pthread_mutex_lock(&q_lock);
    while (q_len == QUEUE_CAP)
        pthread_cond_wait(&q_not_full, &q_lock);
    queue[(q_head + q_len) % QUEUE_CAP] = p;
    q_len++;
    pthread_cond_signal(&q_not_empty);
    pthread_mutex_unlock(&q_lock);
}

static void *queue_pop(void) {
    pthread_mutex_lock(&q_lock);
    while (q_len == 0)
        pthread_cond_wait(&q_not_empty, &q_lock);
    void *p = queue[q_head];
    q_head = (q_head + 1) % QUEUE_CAP;
    q_len--;
    pthread_cond_signal(&q_not_full);
    pthread_mutex_unlock(&q_lock);
    return p;
}

static void *leaker_main(void *arg) {
    long t = (long)arg;
    pthread_barrier_wait(&start_barrier);
    for (int i = 0; i < LEAKS_PER_THREAD; i++)
        kept[t][i] = thread_leak();
    return NULL;
}

static void *producer_main(void *arg) {
    (void)arg;
    for (int i = 0; i < CROSS_COUNT; i++)
        queue_push(cross_alloc());
    return NULL;
}

static void *consumer_main(void *arg) {
    (void)arg;
    for (int i = 0; i < CROSS_COUNT; i++)
        cross_free(queue_pop());
    return NULL;
}

int main(void) {
    pthread_t leakers[LEAK_THREADS], producer, consumer;
    if (pthread_barrier_init(&start_barrier, NULL, LEAK_THREADS) != 0)
        die("pthread_barrier_init");
    for (long t = 0; t < LEAK_THREADS; t++)
        if (pthread_create(&leakers[t], NULL, leaker_main, (void *)t) != 0)
            die("pthread_create");
    if (pthread_create(&consumer, NULL, consumer_main, NULL) != 0)
        die("pthread_create");
    if (pthread_create(&producer, NULL, producer_main, NULL) != 0)
        die("pthread_create");
    for (int t = 0; t < LEAK_THREADS; t++)
        pthread_join(leakers[t], NULL);
    pthread_join(producer, NULL);
    pthread_join(consumer, NULL);
    sleep_ms(1500);
    return 0;
}
