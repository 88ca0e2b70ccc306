/*
 * secret_leak.c - leaks buffers full of a secret (`-- CMD` mode), for the
 * test that reports hold addresses, sizes and symbols, never memory.
 *
 * The secret, MEMTRACE-SECRET-5f0c2e91, is decoded at run time (it is not
 * a string in the binary either). hold_secret() is called 40 times, 20 ms
 * apart; each call mallocs 4096 bytes, fills them with the secret and
 * keeps them; map_secret() mmaps 64 KiB once, filled the same way, and
 * keeps it. Expected report: hold_secret with 40 * 4096 bytes in 40
 * allocations (heap), map_secret with 65536 bytes (mmap), and the secret
 * nowhere. Writes nothing to stdout (memtrace's report goes there).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common.h"

#define HOLDS 40
#define HOLD_SIZE 4096
#define MAP_SIZE (64 * KiB)

/* "MEMTRACE-SECRET-5f0c2e91" xor 0x5a. */
static const unsigned char encoded[] = {
    0x17, 0x1f, 0x17, 0x0e, 0x08, 0x1b, 0x19, 0x1f, 0x77, 0x09, 0x1f, 0x19,
    0x08, 0x1f, 0x0e, 0x77, 0x6f, 0x3c, 0x6a, 0x39, 0x68, 0x3f, 0x63, 0x6b,
};
static char secret[sizeof encoded + 1];
static void *kept[HOLDS];

static void fill(char *p, size_t size) {
    for (size_t i = 0; i < size; i++)
        p[i] = secret[i % (sizeof secret - 1)];
}

__attribute__((noinline)) void *hold_secret(void) {
    char *p = malloc(HOLD_SIZE);
    if (!p)
        die("malloc");
    fill(p, HOLD_SIZE);
    return p;
}

__attribute__((noinline)) void *map_secret(void) {
    char *p = mmap(NULL, MAP_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap");
    fill(p, MAP_SIZE);
    return p;
}

int main(void) {
    for (size_t i = 0; i < sizeof encoded; i++)
        secret[i] = (char)(encoded[i] ^ 0x5a);
    void *mapped = map_secret();
    for (int i = 0; i < HOLDS; i++) {
        kept[i] = hold_secret();
        sleep_ms(20);
    }
    (void)mapped;
    return 0;
}
