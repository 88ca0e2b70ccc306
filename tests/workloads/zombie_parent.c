/*
 * zombie_parent.c - a parent that never reaps its child, for a zombie the
 * tests can count on.
 *
 * Forks a child that exits at once, prints the child's pid on stdout and
 * blocks for ever without waiting for it: the child is a zombie from its
 * exit until this process is killed. (SIGCHLD is set to its default action:
 * inheriting SIG_IGN would have the kernel reap the child.)
 */
#include <signal.h>
#include <unistd.h>

#include "common.h"

int main(void) {
    signal(SIGCHLD, SIG_DFL);
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0)
        _exit(0);
    printf("%d\n", (int)child);
    fflush(stdout);
    for (;;)
        pause();
}
