/*
 * common.h - tiny helpers shared by the integration-test workloads.
 *
 * Nothing here allocates: the workloads must make exactly the allocator
 * calls the tests count, and nothing else while they are traced.
 */
#ifndef MEMTRACE_WORKLOAD_COMMON_H
#define MEMTRACE_WORKLOAD_COMMON_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define KiB (1024UL)
#define MiB (1024UL * KiB)

/* Sleep for `ms` milliseconds, restarting after signal interruptions. */
static inline void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Seconds on the monotonic clock. */
static inline double now_secs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Print a message to stderr and exit non-zero. */
#define die(msg)                                                               \
    do {                                                                       \
        perror(msg);                                                           \
        exit(2);                                                               \
    } while (0)

static volatile sig_atomic_t go_signalled;

static void on_go_signal(int sig) {
    (void)sig;
    go_signalled = 1;
}

/*
 * Installs a SIGUSR1 handler, prints "ready" on stdout (the test waits for
 * it, then attaches memtrace) and waits for SIGUSR1 (the test's go). The
 * first printf allocates stdout's buffer: before tracing, as intended.
 */
static inline void wait_for_go(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_go_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        die("sigaction");
    printf("ready\n");
    fflush(stdout);
    while (!go_signalled)
        sleep_ms(10);
}

/* Keeps `n` blocks of `size` bytes, filled with `fill`, in `array`,
 * allocated from the calling function (a macro: no frame of its own).
 * Needs <string.h>. */
#define KEEP_IN(array, n, size, fill)                                          \
    for (int i = 0; i < (n); i++) {                                            \
        (array)[i] = malloc(size);                                             \
        if (!(array)[i])                                                       \
            die("malloc");                                                     \
        memset((array)[i], (fill), (size));                                    \
    }

#ifdef _SYS_WAIT_H
/* Waits for `pid`; exits 3 unless it exited 0 (with <sys/wait.h>). */
static inline void reap(pid_t pid) {
    int status;
    if (waitpid(pid, &status, 0) != pid)
        die("waitpid");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        exit(3);
}
#endif

#endif
