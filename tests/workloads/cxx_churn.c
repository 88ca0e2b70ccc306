/*
 * cxx_churn.c - C++ (compiled with g++): `new`/`delete` and `new[]`/
 * `delete[]` at once from main, as a C++ program does all the time.
 * libstdc++'s operator delete frees through free(): the free inside is
 * part of the delete, never a free of an unknown block.
 *
 *   PAIRS   x new Node + delete            (freed)
 *   ARRAYS  x new char[ARRAY_BYTES] + delete[]  (freed)
 *   KEPT    x new Node, kept by keep_nodes()    -> KEPT x NODE_BYTES
 * Exits 0.
 */
#include "common.h"

#define PAIRS 300
#define ARRAYS 50
#define ARRAY_BYTES 3000
#define KEPT 20
#define NODE_BYTES 256

struct Node {
    Node *next;
    char payload[NODE_BYTES - sizeof(Node *)];
};

static Node *kept;

__attribute__((noipa)) void churn_nodes() {
    for (int i = 0; i < PAIRS; i++) {
        Node *n = new Node;
        n->payload[0] = (char)i;
        delete n;
    }
}

__attribute__((noipa)) void churn_arrays() {
    for (int i = 0; i < ARRAYS; i++) {
        char *a = new char[ARRAY_BYTES];
        a[0] = (char)i;
        delete[] a;
    }
}

__attribute__((noipa)) void keep_nodes() {
    for (int i = 0; i < KEPT; i++) {
        Node *n = new Node;
        n->next = kept;
        kept = n;
    }
}

int main() {
    churn_nodes();
    churn_arrays();
    keep_nodes();
    return 0;
}
