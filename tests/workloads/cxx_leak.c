/*
 * cxx_leak.c - C++ (compiled with g++, which treats .c files as C++): a
 * member function leaks through `new`. Named .c so the workload builder
 * finds it; g++ compiles it as C++.
 *
 * Usage: cxx_leak
 * Prints "ready", waits for SIGUSR1 (memtrace attaches in between), then
 * SessionStore::remember() news SESSIONS Session objects (SESSION_BYTES
 * each) and keeps them in an intrusive list, never deleted; then
 * SessionStore::churn() news and deletes CHURN Session objects. Prints
 * "done" and sleeps until killed.
 *
 * With -DOWN_OPERATORS the program has its own global operator new and
 * operator delete, as groff's troff does: new calls malloc first thing,
 * delete calls free unless the pointer is null. It then runs at once (to
 * be traced from its first instruction), prints nothing and exits.
 */
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define SESSIONS 100
#define CHURN 500
#define SESSION_BYTES 4096

#ifdef OWN_OPERATORS
__attribute__((noinline)) void *operator new(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

__attribute__((noinline)) void operator delete(void *p) noexcept {
    if (p)
        free(p);
}

__attribute__((noinline)) void operator delete(void *p, size_t) noexcept {
    if (p)
        free(p);
}
#endif

struct Session {
    Session *next;
    char payload[SESSION_BYTES - sizeof(Session *)];
};

class SessionStore {
  public:
    __attribute__((noipa)) void remember(int id) {
        Session *s = new Session;
        memset(s->payload, id, sizeof s->payload);
        s->next = head;
        head = s;
    }

    __attribute__((noipa)) void churn() {
        for (int i = 0; i < CHURN; i++) {
            Session *s = new Session;
            s->payload[0] = (char)i;
            delete s;
        }
    }

  private:
    Session *head = nullptr;
};

static SessionStore store;

int main() {
#ifndef OWN_OPERATORS
    wait_for_go();
#endif
    for (int i = 0; i < SESSIONS; i++)
        store.remember(i);
    store.churn();
#ifndef OWN_OPERATORS
    printf("done\n");
    fflush(stdout);
    for (;;)
        sleep_ms(1000);
#endif
}
