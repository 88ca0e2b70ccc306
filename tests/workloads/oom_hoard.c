/*
 * oom_hoard.c - a process that leaks until the kernel OOM-kills it. The
 * test puts it in a memory cgroup with a small limit first.
 *
 * Prints "ready" on stdout and waits for SIGUSR1 (memtrace attaches in
 * between); then grow_hoard() calls hoard_chunk() forever, 5 ms apart:
 * each mallocs 1 MiB, writes every page (so it is resident and charged to
 * the cgroup) and keeps it in a list that is never freed. Expected: the
 * kernel kills it when the cgroup's limit is reached, and memtrace's
 * report names this pid with hoard_chunk holding close to the limit.
 */
#include <string.h>

#include "common.h"

struct chunk {
    struct chunk *next;
    char data[MiB - sizeof(struct chunk *)];
};

static struct chunk *hoard; /* never freed */

__attribute__((noinline)) void hoard_chunk(void) {
    struct chunk *c = malloc(sizeof *c);
    if (!c)
        die("malloc");
    memset(c->data, 0x5a, sizeof c->data);
    c->next = hoard;
    hoard = c;
}

__attribute__((noinline)) void grow_hoard(void) {
    for (;;) {
        hoard_chunk();
        sleep_ms(5);
    }
}

int main(void) {
    wait_for_go();
    grow_hoard();
    return 0;
}
