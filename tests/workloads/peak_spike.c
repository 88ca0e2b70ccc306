/*
 * peak_spike.c - a spike held and freed before the end, then a small leak
 * (`--pid` mode; peaks).
 *
 * Prints "ready" on stdout and waits for SIGUSR1; then spike() mallocs 64
 * blocks of 64 KiB (4 MiB, below glibc's mmap threshold: heap blocks),
 * touches them, and main prints "held". It holds them until a second
 * SIGUSR1, then frees them all; small_leak() mallocs 10 blocks of 1000
 * bytes, never freed; main prints "done" and exits. Both are called from
 * main; nothing else allocates once traced. Expected: spike's stack with
 * 4 MiB at its peak and nothing outstanding, small_leak's with 10000 bytes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define SPIKE_COUNT 64
#define SPIKE_SIZE (64 * KiB)
#define LEAK_COUNT 10
#define LEAK_SIZE 1000

static void *held[SPIKE_COUNT];
static void *kept[LEAK_COUNT];

__attribute__((noinline)) void *spike(void) {
    void *p = malloc(SPIKE_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x5a, SPIKE_SIZE);
    return p;
}

__attribute__((noinline)) void *small_leak(void) {
    void *p = malloc(LEAK_SIZE);
    if (!p)
        die("malloc");
    memset(p, 0x3c, LEAK_SIZE);
    return p;
}

int main(void) {
    wait_for_go();
    for (int i = 0; i < SPIKE_COUNT; i++)
        held[i] = spike();
    go_signalled = 0;
    printf("held\n");
    fflush(stdout);
    while (!go_signalled)
        sleep_ms(10);
    for (int i = 0; i < SPIKE_COUNT; i++)
        free(held[i]);
    for (int i = 0; i < LEAK_COUNT; i++)
        kept[i] = small_leak();
    printf("done\n");
    fflush(stdout);
    return 0;
}
