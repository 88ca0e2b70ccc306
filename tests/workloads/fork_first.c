/*
 * fork_first.c - processes that allocate the instant they exist: a
 * followed child must be traced from its first allocation, exec'd or not.
 * Nothing waits for memtrace (fork_follow.c waits; this one must not need
 * to).
 *
 * Without arguments (the family's head):
 *   FORKS children by fork(); each, at once, keeps
 *     forked_leak     CHILD_LEAKS x CHILD_SIZE             -> 8 x 4000 B
 *   and _exits 0 (no exit handlers: nothing else allocates);
 *   one child by vfork() + execv(argv0 of `spawned`, "exec") and one by
 *   posix_spawn(`spawned`, "spawn"), where `spawned` is the path given as
 *   the first argument: a copy of this program under another name. In it,
 *     early_leak      a constructor's, before main: 3 x 5000 B
 *     exec_leak/spawn_leak in main:                        4 x 6000 B
 *   one child by fork() that keeps forked_leak at once and forks a
 *   grandchild, which keeps grandchild_leak at once       -> 2 x 7000 B
 *   The head reaps them all and exits 0; 3 if one did not exit 0.
 */
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define FORKS 8
#define CHILD_LEAKS 8
#define CHILD_SIZE 4000
#define EARLY_LEAKS 3
#define EARLY_SIZE 5000
#define EXEC_LEAKS 4
#define EXEC_SIZE 6000
#define GRANDCHILD_LEAKS 2
#define GRANDCHILD_SIZE 7000

extern char **environ;

static void *kept[16];

__attribute__((noinline)) void forked_leak(void) {
    KEEP_IN(kept, CHILD_LEAKS, CHILD_SIZE, 0x41);
}

__attribute__((noinline)) void grandchild_leak(void) {
    KEEP_IN(kept, GRANDCHILD_LEAKS, GRANDCHILD_SIZE, 0x42);
}

__attribute__((noinline)) void exec_leak(void) {
    KEEP_IN(kept, EXEC_LEAKS, EXEC_SIZE, 0x43);
}

__attribute__((noinline)) void spawn_leak(void) {
    KEEP_IN(kept, EXEC_LEAKS, EXEC_SIZE, 0x44);
}

static int is_spawned;

__attribute__((noinline)) void early_leak(void) {
    KEEP_IN(kept, EARLY_LEAKS, EARLY_SIZE, 0x45);
}

/* Runs before main (glibc passes constructors argc and argv): in the
 * exec'd copies only, the earliest a program's own code allocates. */
__attribute__((constructor)) static void early(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "exec") == 0 || strcmp(argv[1], "spawn") == 0)) {
        is_spawned = 1;
        early_leak();
    }
}

int main(int argc, char **argv) {
    if (is_spawned) {
        if (strcmp(argv[1], "exec") == 0)
            exec_leak();
        else
            spawn_leak();
        _exit(0);
    }
    if (argc < 2) {
        fprintf(stderr, "usage: fork_first SPAWNED_COPY\n");
        return 2;
    }
    pid_t pids[FORKS + 3];
    int n = 0;
    for (int i = 0; i < FORKS; i++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            forked_leak();
            _exit(0);
        }
        pids[n++] = pid;
    }
    char *exec_argv[] = {argv[1], "exec", NULL};
    pid_t pid = vfork();
    if (pid < 0)
        die("vfork");
    if (pid == 0) {
        execv(argv[1], exec_argv);
        _exit(127);
    }
    pids[n++] = pid;
    char *spawn_argv[] = {argv[1], "spawn", NULL};
    if (posix_spawn(&pid, argv[1], NULL, NULL, spawn_argv, environ) != 0)
        die("posix_spawn");
    pids[n++] = pid;
    pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        forked_leak();
        pid_t grandchild = fork();
        if (grandchild < 0)
            die("fork");
        if (grandchild == 0) {
            grandchild_leak();
            _exit(0);
        }
        reap(grandchild);
        _exit(0);
    }
    pids[n++] = pid;
    for (int i = 0; i < n; i++)
        reap(pids[i]);
    return 0;
}
