/*
 * plugin.c - a shared library that alloc_leak dlopen()s after memtrace has
 * attached (build with -shared -fPIC).
 *
 * plugin_leak(count, size) mallocs count blocks of size bytes and keeps
 * them: a leak inside a library loaded late, whose frames must still be
 * named. myalloc_malloc/myalloc_calloc/myalloc_realloc/myalloc_free are an
 * allocator API under its own prefix (wrapping libc's), for
 * --symbol-prefix and --allocator-lib.
 */
#include <stdlib.h>
#include <string.h>

static void *plugin_kept[1000];

__attribute__((noinline)) void plugin_leak(int count, size_t size) {
    for (int i = 0; i < count && i < 1000; i++) {
        plugin_kept[i] = malloc(size);
        if (plugin_kept[i])
            memset(plugin_kept[i], 4, size);
    }
}

__attribute__((noinline)) void *myalloc_malloc(size_t size) { return malloc(size); }

__attribute__((noinline)) void *myalloc_calloc(size_t n, size_t size) {
    return calloc(n, size);
}

__attribute__((noinline)) void *myalloc_realloc(void *p, size_t size) {
    return realloc(p, size);
}

__attribute__((noinline)) void myalloc_free(void *p) { free(p); }
