/*
 * fork_follow.c - a process that forks a child, which forks a grandchild
 * (fork following: `-- CMD` mode, and `--pid` with and without
 * --follow-forks).
 *
 * With the argument "wait" it first prints "ready" on stdout and waits for
 * SIGUSR1 (--pid mode); without it, it writes nothing to stdout.
 * Every process it forks waits for a SIGUSR1 of its own before it
 * allocates (what a followed child allocates before memtrace's probes are
 * in place for it is not seen: the test sends it once memtrace says they
 * are, within milliseconds of the fork here, but later when other runs
 * keep the kernel's uprobe locks busy).
 *   parent_leak      10 x 1000 B, kept by the parent       -> 10000 B (parent)
 *   fork(); the child waits for its SIGUSR1, then:
 *     free_inherited frees the child's copies of the parent's 10 blocks:
 *                    frees of blocks the child never allocated; the
 *                    parent's own blocks stay outstanding
 *     child_leak     20 x 2000 B, kept                     -> 40000 B (child)
 *     fork(); the grandchild waits for its SIGUSR1, then
 *       grandchild_leak 5 x 3000 B, kept                   -> 15000 B (grandchild)
 *       and exits 0;
 *     the child waits for it and exits 0;
 *   the parent waits for the child, sleeps 300 ms and exits 0.
 * Exit code 3 if a child did not exit 0.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define PARENT_LEAKS 10
#define PARENT_SIZE 1000
#define CHILD_LEAKS 20
#define CHILD_SIZE 2000
#define GRANDCHILD_LEAKS 5
#define GRANDCHILD_SIZE 3000

static void *kept[32];

__attribute__((noinline)) void parent_leak(void) {
    KEEP_IN(kept, PARENT_LEAKS, PARENT_SIZE, 0x31);
}

__attribute__((noinline)) void free_inherited(void) {
    for (int i = 0; i < PARENT_LEAKS; i++)
        free(kept[i]);
}

__attribute__((noinline)) void child_leak(void) {
    KEEP_IN(kept, CHILD_LEAKS, CHILD_SIZE, 0x32);
}

__attribute__((noinline)) void grandchild_leak(void) {
    KEEP_IN(kept, GRANDCHILD_LEAKS, GRANDCHILD_SIZE, 0x33);
}

/* Waits for SIGUSR1, blocked in every process of the family since before
 * the first fork: one sent early stays pending. */
static void wait_released(void) {
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    int sig;
    if (sigwait(&usr1, &sig) != 0)
        die("sigwait");
}

static void grandchild(void) {
    wait_released();
    grandchild_leak();
    exit(0);
}

static void child(void) {
    wait_released();
    free_inherited();
    child_leak();
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0)
        grandchild();
    reap(pid);
    exit(0);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "wait") == 0)
        wait_for_go();
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    if (sigprocmask(SIG_BLOCK, &usr1, NULL) != 0)
        die("sigprocmask");
    parent_leak();
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0)
        child();
    reap(pid);
    sleep_ms(300);
    return 0;
}
