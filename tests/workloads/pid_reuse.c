/*
 * pid_reuse.c - a traced process exits and its pid goes at once to another
 * process (`--pid` mode; root only: clone3 with set_tid).
 *
 * The program forks A and prints "A <pid>"; A prints "ready" and waits for
 * SIGUSR1 (the test attaches memtrace to A, then signals it), then
 * first_life() leaks 10 x 100 B and A exits 0. The program reaps A at once
 * and creates B with A's pid (clone3, set_tid), printing "reused <pid>"
 * (or "not reused <errno>"). B execs this program again as "impostor",
 * which maps 256 KiB (impostor_map), then leaks 50 x 1000 B from
 * impostor_leak() over 1.5 s and exits 0. The program waits for B and
 * exits 0. A tracer of A must see A exit, keep what A held (first_life:
 * 1000 B in 10 allocations; B's exec is not A's) and count nothing of B.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sched.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define FIRST_LEAKS 10
#define FIRST_SIZE 100
#define IMPOSTOR_LEAKS 50
#define IMPOSTOR_SIZE 1000

static void *kept[IMPOSTOR_LEAKS];
static void *mapped;

__attribute__((noinline)) void first_life(void) {
    for (int i = 0; i < FIRST_LEAKS; i++) {
        kept[i] = malloc(FIRST_SIZE);
        if (!kept[i])
            die("malloc");
        memset(kept[i], 0x41, FIRST_SIZE);
    }
}

__attribute__((noinline)) void *impostor_map(void) {
    char *p = mmap(NULL, 256 * KiB, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap");
    memset(p, 0x43, 256 * KiB);
    return p;
}

__attribute__((noinline)) void impostor_leak(void) {
    for (int i = 0; i < IMPOSTOR_LEAKS; i++) {
        kept[i] = malloc(IMPOSTOR_SIZE);
        if (!kept[i])
            die("malloc");
        memset(kept[i], 0x42, IMPOSTOR_SIZE);
        sleep_ms(30);
    }
}

/* A child with pid `pid` (fork semantics), or -1 with errno set. */
static pid_t fork_as(pid_t pid) {
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.exit_signal = SIGCHLD;
    args.set_tid = (uint64_t)(uintptr_t)&pid;
    args.set_tid_size = 1;
    return (pid_t)syscall(SYS_clone3, &args, sizeof args);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "impostor") == 0) {
        mapped = impostor_map();
        impostor_leak();
        return 0;
    }
    pid_t a = fork();
    if (a < 0)
        die("fork");
    if (a == 0) {
        wait_for_go();
        first_life();
        return 0;
    }
    printf("A %d\n", (int)a);
    fflush(stdout);
    if (waitpid(a, NULL, 0) != a)
        die("waitpid");
    pid_t b = fork_as(a);
    if (b == 0) {
        /* Raw clone3: glibc's view of this process is its parent's; exec
         * at once. */
        execl("/proc/self/exe", argv[0], "impostor", (char *)NULL);
        _exit(127);
    }
    if (b < 0) {
        printf("not reused %d\n", errno);
        fflush(stdout);
        return 0;
    }
    printf("reused %d\n", (int)b);
    fflush(stdout);
    int status;
    if (waitpid(b, &status, 0) != b)
        die("waitpid");
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 3;
}
