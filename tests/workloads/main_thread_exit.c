/*
 * main_thread_exit.c - a program whose main thread calls pthread_exit()
 * while another thread runs on (`-- CMD` mode).
 *
 * The main thread starts late_worker() and exits with pthread_exit(): the
 * process's leader is then a zombie (/proc/PID/stat says Z) while its
 * worker runs. The worker waits until it sees that, then keeps LEAKS
 * blocks of SIZE bytes in late_leak(), one every 10 ms (2 s in all), and
 * returns, which ends the process.
 *   late_leak: LEAKS allocations, LEAKS x SIZE bytes outstanding
 * Writes nothing to stdout.
 */
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

#define LEAKS 200
#define SIZE 4096

static void *kept[LEAKS];

/* The state letter of this process's leader, read without the allocator. */
static char leader_state(void) {
    char buf[512];
    int fd = open("/proc/self/stat", O_RDONLY);
    if (fd < 0)
        return '?';
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return '?';
    buf[n] = 0;
    char *close_paren = strrchr(buf, ')');
    return close_paren && close_paren[1] == ' ' ? close_paren[2] : '?';
}

__attribute__((noinline)) void late_leak(void) {
    for (int i = 0; i < LEAKS; i++) {
        kept[i] = malloc(SIZE);
        if (!kept[i])
            abort();
        memset(kept[i], i, SIZE);
        sleep_ms(10);
    }
}

static void *late_worker(void *arg) {
    (void)arg;
    while (leader_state() != 'Z')
        sched_yield();
    late_leak();
    return NULL;
}

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, late_worker, NULL) != 0)
        abort();
    pthread_exit(NULL);
}
