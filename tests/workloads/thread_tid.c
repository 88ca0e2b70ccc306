/*
 * thread_tid.c - a process with a second thread (--pid with a thread id).
 *
 * Starts a thread that prints "tid N" (its thread id, from
 * syscall(SYS_gettid)) on stdout and sleeps; the main thread waits for it
 * forever. Memtrace must refuse `--pid N`: N is a thread, not a process.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common.h"

static void *sleeper(void *arg) {
    (void)arg;
    printf("tid %ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    for (;;)
        sleep_ms(1000);
    return NULL;
}

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, sleeper, NULL) != 0)
        die("pthread_create");
    pthread_join(t, NULL);
    return 0;
}
