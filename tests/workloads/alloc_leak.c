/*
 * alloc_leak.c - leaks exactly LEAK_COUNT blocks of LEAK_SIZE bytes through
 * one allocator API, for the allocator-discovery tests.
 *
 * Usage: alloc_leak malloc | churn | mi | sdallocx | plugin PATH | myalloc PATH
 * Prints "ready" and waits for SIGUSR1 (memtrace attaches in between), then:
 *   malloc:       leak_blocks() mallocs the blocks with whatever malloc the
 *                 program is linked with (glibc, musl, static, jemalloc,
 *                 tcmalloc);
 *   churn:        churn_free() mallocs and frees CHURN_COUNT blocks one by
 *                 one with plain free, then leak_blocks();
 *   mi:           leak_blocks_mi() with mimalloc's mi_malloc (only when
 *                 built with -DWITH_MIMALLOC);
 *   sdallocx:     churn_sized() mallocs CHURN_COUNT blocks and frees each
 *                 with jemalloc's sdallocx (as Rust's tikv-jemallocator
 *                 does), then leak_blocks() (only with -DWITH_JEMALLOC);
 *   plugin PATH:  dlopen()s the shared library PATH, prints "loaded", waits
 *                 for SIGUSR1 again, and calls its plugin_leak(), which
 *                 mallocs the blocks;
 *   myalloc PATH: dlopen()s PATH, prints "loaded", waits for SIGUSR1 again,
 *                 and leak_blocks_myalloc() leaks through its allocator
 *                 API myalloc_malloc.
 * Then prints "done" and sleeps until killed.
 */
#include <dlfcn.h>
#include <string.h>

#include "common.h"

#define LEAK_COUNT 100
#define LEAK_SIZE 10000

static void *kept[LEAK_COUNT];

__attribute__((noinline)) void leak_blocks(void) {
    for (int i = 0; i < LEAK_COUNT; i++) {
        kept[i] = malloc(LEAK_SIZE);
        if (!kept[i])
            die("malloc");
        memset(kept[i], 1, LEAK_SIZE);
    }
}

#define CHURN_COUNT 1000

__attribute__((noinline)) void churn_free(void) {
    for (int i = 0; i < CHURN_COUNT; i++) {
        char *p = malloc(LEAK_SIZE);
        if (!p)
            die("malloc");
        memset(p, 4, LEAK_SIZE);
        free(p);
    }
}

#ifdef WITH_JEMALLOC
void sdallocx(void *ptr, size_t size, int flags);

__attribute__((noinline)) void churn_sized(void) {
    for (int i = 0; i < CHURN_COUNT; i++) {
        char *p = malloc(LEAK_SIZE);
        if (!p)
            die("malloc");
        memset(p, 5, LEAK_SIZE);
        sdallocx(p, LEAK_SIZE, 0);
    }
}
#endif

#ifdef WITH_MIMALLOC
void *mi_malloc(size_t size);

__attribute__((noinline)) void leak_blocks_mi(void) {
    for (int i = 0; i < LEAK_COUNT; i++) {
        kept[i] = mi_malloc(LEAK_SIZE);
        if (!kept[i])
            die("mi_malloc");
        memset(kept[i], 2, LEAK_SIZE);
    }
}
#endif

__attribute__((noinline)) void leak_blocks_myalloc(void *(*my_malloc)(size_t)) {
    for (int i = 0; i < LEAK_COUNT; i++) {
        kept[i] = my_malloc(LEAK_SIZE);
        if (!kept[i])
            die("myalloc_malloc");
        memset(kept[i], 3, LEAK_SIZE);
    }
}

/* dlopen()s `path` after the go, says so, and waits for the next go. */
static void *load(const char *path) {
    void *lib = dlopen(path, RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "dlopen %s: %s\n", path, dlerror());
        exit(2);
    }
    go_signalled = 0;
    printf("loaded\n");
    fflush(stdout);
    while (!go_signalled)
        sleep_ms(10);
    return lib;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    wait_for_go();
    if (strcmp(argv[1], "malloc") == 0) {
        leak_blocks();
    } else if (strcmp(argv[1], "churn") == 0) {
        churn_free();
        leak_blocks();
#ifdef WITH_JEMALLOC
    } else if (strcmp(argv[1], "sdallocx") == 0) {
        churn_sized();
        leak_blocks();
#endif
#ifdef WITH_MIMALLOC
    } else if (strcmp(argv[1], "mi") == 0) {
        leak_blocks_mi();
#endif
    } else if (strcmp(argv[1], "plugin") == 0 && argc > 2) {
        void (*plugin_leak)(int, size_t) =
            (void (*)(int, size_t))dlsym(load(argv[2]), "plugin_leak");
        if (!plugin_leak)
            die("dlsym plugin_leak");
        plugin_leak(LEAK_COUNT, LEAK_SIZE);
    } else if (strcmp(argv[1], "myalloc") == 0 && argc > 2) {
        void *(*my_malloc)(size_t) =
            (void *(*)(size_t))dlsym(load(argv[2]), "myalloc_malloc");
        if (!my_malloc)
            die("dlsym myalloc_malloc");
        leak_blocks_myalloc(my_malloc);
    } else {
        return 2;
    }
    printf("done\n");
    fflush(stdout);
    for (;;)
        sleep_ms(1000);
}
