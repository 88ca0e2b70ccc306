"""A known Python stack for memtrace's frame walk to read from outside.

The main thread runs <module> -> outer() -> Box.middle() -> Box.inner(),
which prints "ready" and blocks reading a pipe nobody writes, on one line
(so the frame is on that line from the print on). With the argument
"threads", two threads first block in worker_a() and worker_b() (each on
a barrier that never fills), and one line per thread, before "ready",
says "thread NAME IDENT NATIVE_ID" so the test can match them. Each line
the test checks ends with a "# line: NAME" marker.
"""
import os
import sys
import threading
import time

r, w = os.pipe()


class Box:
    def inner(self):
        print("ready", flush=True); os.read(r, 1)  # line: inner

    def middle(self):
        self.inner()  # line: middle


def outer():
    Box().middle()  # line: outer


def worker_a(barrier):
    barrier.wait()  # line: worker_a


def worker_b(barrier):
    barrier.wait()  # line: worker_b


if sys.argv[1:] == ["threads"]:
    barrier = threading.Barrier(3)
    workers = [
        threading.Thread(target=f, args=(barrier,), daemon=True)
        for f in (worker_a, worker_b)
    ]
    for t in workers:
        t.start()
    # Each worker's frame is on its barrier line once it waits there.
    while barrier.n_waiting < 2:
        time.sleep(0.001)
    for t in workers:
        print("thread", t._target.__name__, t.ident, t.native_id, flush=True)
    print("thread main", threading.get_ident(), threading.get_native_id(), flush=True)
outer()  # line: module
