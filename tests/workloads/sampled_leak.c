/*
 * sampled_leak.c - a leak big enough to be estimated from samples
 * (--sample-bytes), with churn around it.
 *
 * Prints "ready" and waits for SIGUSR1; then 209,715 times: leak_small()
 * mallocs 100 bytes and keeps them, churn() mallocs 64 bytes and frees
 * them; then leak_big() mallocs 300,000 bytes 70 times (served by mmap
 * inside malloc) and keeps them. Prints "done" and idles until killed.
 * Truth: leak_small holds 20,971,500 bytes in 209,715 blocks, leak_big
 * 21,000,000 bytes in 70 blocks; churn nothing.
 *
 * sampled_leak large: after SIGUSR1, leak_large() mallocs 64 KiB 16,384
 * times and keeps them (from the heap: below glibc's mmap threshold, and
 * only each block's header page is touched). Truth: 1 GiB in 16,384
 * blocks.
 */
#include <string.h>

#include "common.h"

static void *kept_small[209715];
static void *kept_big[70];

__attribute__((noinline)) void *leak_small(void) { return malloc(100); }
__attribute__((noinline)) void *leak_big(void) { return malloc(300000); }
__attribute__((noinline)) void *leak_large(void) { return malloc(65536); }
__attribute__((noinline)) void churn(void) {
    void *p = malloc(64);
    free(p);
}

static void *kept_large[16384];

int main(int argc, char **argv) {
    int large = argc > 1 && strcmp(argv[1], "large") == 0;
    wait_for_go();
    if (large) {
        for (long i = 0; i < 16384; i++)
            if (!(kept_large[i] = leak_large()))
                die("malloc");
        printf("done\n");
        fflush(stdout);
        for (;;)
            sleep_ms(1000);
    }
    for (long i = 0; i < 209715; i++) {
        kept_small[i] = leak_small();
        churn();
    }
    for (long i = 0; i < 70; i++)
        kept_big[i] = leak_big();
    printf("done\n");
    fflush(stdout);
    for (;;)
        sleep_ms(1000);
}
