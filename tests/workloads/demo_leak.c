/*
 * demo_leak.c - a tiny "request handler" with one real leak, used by
 * `cargo xtask demo` to show what memtrace reports.
 *
 * A worker thread serves ~50 requests/s for ~20 s (override with argv[1],
 * in seconds). Per request it:
 *   - remember_session(): mallocs a 512-byte session that goes into a global
 *     list and is never freed                    -> grows forever (the leak)
 *   - cache_insert():     callocs a cache entry; the cache holds at most 200
 *     entries and frees the oldest when full     -> grows, then stays flat
 *   - build_response():   mallocs a 4 KiB buffer and frees it before
 *     returning                                  -> no outstanding memory
 *
 * Build: gcc -O1 -g -fno-omit-frame-pointer -pthread -o demo_leak demo_leak.c
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SESSION_SIZE 512
#define CACHE_CAPACITY 200
#define REQUESTS_PER_SEC 50

struct session {
    struct session *next;
    unsigned long id;
    char data[SESSION_SIZE - sizeof(struct session *) - sizeof(unsigned long)];
};

struct cache_entry {
    unsigned long key;
    char value[248];
};

static struct session *all_sessions;                  /* never freed */
static struct cache_entry *cache[CACHE_CAPACITY];     /* ring buffer */
static unsigned cache_next;
static volatile unsigned long checksum;               /* defeats DCE */

__attribute__((noinline)) void remember_session(unsigned long id) {
    struct session *s = malloc(sizeof *s);
    if (!s)
        abort();
    s->id = id;
    memset(s->data, (int)(id & 0xff), sizeof s->data);
    s->next = all_sessions; /* BUG: sessions are never removed */
    all_sessions = s;
}

__attribute__((noinline)) void cache_insert(unsigned long key) {
    struct cache_entry *e = calloc(1, sizeof *e);
    if (!e)
        abort();
    e->key = key;
    snprintf(e->value, sizeof e->value, "value-%lu", key);
    free(cache[cache_next]); /* evict the oldest entry once full */
    cache[cache_next] = e;
    cache_next = (cache_next + 1) % CACHE_CAPACITY;
}

__attribute__((noinline)) void build_response(unsigned long id) {
    char *buf = malloc(4096);
    if (!buf)
        abort();
    int n = snprintf(buf, 4096, "HTTP/1.1 200 OK\r\nX-Request: %lu\r\n\r\n", id);
    for (int i = 0; i < n; i++)
        checksum += (unsigned char)buf[i];
    free(buf);
}

__attribute__((noinline)) void handle_request(unsigned long id) {
    remember_session(id);
    cache_insert(id % 1000);
    build_response(id);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *serve(void *arg) {
    double run_for = *(double *)arg, start = now_seconds();
    const struct timespec pause = {0, 1000000000L / REQUESTS_PER_SEC};
    for (unsigned long id = 1; now_seconds() - start < run_for; id++) {
        handle_request(id);
        nanosleep(&pause, NULL);
    }
    return NULL;
}

int main(int argc, char **argv) {
    double run_for = argc > 1 ? atof(argv[1]) : 20.0;
    pthread_t worker;
    fprintf(stderr, "demo_leak: serving ~%d requests/s for %.0f s\n",
            REQUESTS_PER_SEC, run_for);
    if (pthread_create(&worker, NULL, serve, &run_for) != 0)
        return 1;
    pthread_join(worker, NULL);
    return 0;
}
