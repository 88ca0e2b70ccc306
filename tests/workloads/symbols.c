/*
 * symbols.c - frames that need more than a symbol table to name right
 * (`-- CMD` mode; compiled with -O2 by the tests). Writes nothing to stdout.
 *
 * - read_table() calls extend_table(), a static function the compiler
 *   inlines into it; extend_table mallocs TABLE_SIZE bytes, kept. Expected:
 *   frames [extend_table (inlined) at symbols.c:LINE_MALLOC, read_table at
 *   symbols.c:LINE_EXTEND, main], the first two at the same address.
 * - main strdup()s NAME_COUNT names, kept: glibc's symbol table names that
 *   code __GI___strdup and __strdup as well; expected strdup.
 * - main calls setlocale(LC_ALL, "C.UTF-8"), which keeps copies of the
 *   locale's name (glibc's __GI_setlocale; expected setlocale).
 * - main writes a character to a FILE on /dev/null, never closed: its
 *   buffer is allocated under _IO_new_file_overflow (exported as
 *   _IO_file_overflow).
 */
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define TABLE_SIZE 40000
#define NAME_COUNT 3

static char *table;
static char *names[NAME_COUNT];
static FILE *sink;

static inline __attribute__((always_inline)) void extend_table(size_t n) {
    char *t = malloc(n); /* LINE_MALLOC */
    if (!t)
        die("malloc");
    memset(t, 0x5a, n);
    table = t;
}

__attribute__((noinline)) void read_table(size_t n) {
    extend_table(n); /* LINE_EXTEND */
    __asm__ volatile("" ::: "memory");
}

int main(void) {
    read_table(TABLE_SIZE);
    for (int i = 0; i < NAME_COUNT; i++) {
        names[i] = strdup("a name kept until exit");
        if (!names[i])
            die("strdup");
    }
    if (!setlocale(LC_ALL, "C.UTF-8"))
        die("setlocale");
    sink = fopen("/dev/null", "w");
    if (!sink || fputc('x', sink) == EOF)
        die("/dev/null");
    __asm__ volatile("" ::: "memory");
    return table[1] == 0x5a ? 0 : 1;
}
