/*
 * timed.c - runs a command and writes how long it ran: what `cargo xtask
 * bench` times of a whole program, the same way under every tracer (a
 * tracer's own start and exit are not the program's).
 *
 * Usage: timed OUT PROGRAM [ARGS...]
 * Reads the monotonic clock, forks, execs PROGRAM in the child, waits for
 * it, reads the clock again and writes the seconds between to the file
 * OUT ("%.6f\n"). Exits with the program's status (2 if it could not run,
 * 3 if it died of a signal). Allocates nothing of its own before the exec.
 */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: timed OUT PROGRAM [ARGS...]\n");
        return 2;
    }
    double start = now_secs();
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        _exit(2);
    }
    int status;
    if (waitpid(child, &status, 0) != child)
        die("waitpid");
    double secs = now_secs() - start;
    FILE *out = fopen(argv[1], "w");
    if (!out || fprintf(out, "%.6f\n", secs) < 0 || fclose(out) != 0)
        die(argv[1]);
    if (WIFSIGNALED(status))
        return 3;
    return WEXITSTATUS(status);
}
