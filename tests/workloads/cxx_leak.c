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
 */
#include <string.h>

#include "common.h"

#define SESSIONS 100
#define CHURN 500
#define SESSION_BYTES 4096

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
    wait_for_go();
    for (int i = 0; i < SESSIONS; i++)
        store.remember(i);
    store.churn();
    printf("done\n");
    fflush(stdout);
    for (;;)
        sleep_ms(1000);
}
