/*
 * fork_memalign.c - two traced processes calling the same allocation
 * functions at the same time, each with probes of its own: a parent and
 * the child it forks at once.
 *
 *   fork(); then, in both, while the other is alive:
 *     parent: parent_memalign  LEAKS x posix_memalign(ALIGN, SIZE), kept
 *     child:  child_memalign   LEAKS x posix_memalign(ALIGN, SIZE), kept
 *     each also makes CHURN malloc/free pairs of its own
 *   The child waits for the parent's allocations to end (a pipe closed by
 *   the parent) before it exits 0; the parent reaps it and exits 0 (3 if
 *   the child did not exit 0). Nothing is timed: the pipe orders them.
 * glibc serves an alignment of 16 or less with malloc: each
 * posix_memalign holds a nested malloc call, as a C++ new or a
 * realloc(NULL) does.
 *
 * On older kernels (6.1, not 6.18) a uretprobe's program also ran for the
 * returns of every other process whose entry trapped; each return ran once
 * per traced process: the inner malloc's second return closed
 * posix_memalign's record, whose own return then had none (6.1 found 2 of
 * 400 blocks and counted the others as failed calls).
 */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define LEAKS 200
#define SIZE 256
#define ALIGN 16
#define CHURN 300

static void *kept[LEAKS];

__attribute__((noinline)) static void churn(void) {
    for (int i = 0; i < CHURN; i++) {
        void *volatile p = malloc(48 + i % 7);
        free(p);
    }
}

__attribute__((noinline)) void parent_memalign(void) {
    for (int i = 0; i < LEAKS; i++)
        if (posix_memalign(&kept[i], ALIGN, SIZE) != 0)
            exit(2);
}

__attribute__((noinline)) void child_memalign(void) {
    for (int i = 0; i < LEAKS; i++)
        if (posix_memalign(&kept[i], ALIGN, SIZE) != 0)
            exit(2);
}

int main(void) {
    int done[2];
    if (pipe(done) != 0)
        die("pipe");
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        close(done[1]);
        child_memalign();
        churn();
        char byte;
        /* EOF once the parent's allocations are over. */
        while (read(done[0], &byte, 1) > 0) {
        }
        _exit(0);
    }
    close(done[0]);
    parent_memalign();
    churn();
    close(done[1]);
    int status;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        return 3;
    return 0;
}
