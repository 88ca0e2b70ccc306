"""Forked workers, gunicorn style: the parent imports its code, forks
WORKERS workers and waits for them; each worker handles requests for
SECONDS, keeping every response it makes in a module-level list (the
marked line), then ends with os._exit(0).

    python py_fork_workers.py SECONDS

Prints "ready" before forking, each worker "worker N" when it starts.
"""
import os
import sys
import time

WORKERS = 2
RATE = 400  # requests a second, each worker

kept = []


def handle(worker, n):
    kept.append("response %d of worker %d " % (n, worker) * 8)  # leak: handle


def serve(worker, seconds):
    print("worker %d" % worker, flush=True)
    start = time.monotonic()
    done = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            break
        due = int(elapsed * RATE) + 1
        for n in range(done, due):
            handle(worker, n)
        done = max(done, due)
        time.sleep(0.01)
    os._exit(0)


seconds = float(sys.argv[1])
print("ready", flush=True)
children = []
for w in range(WORKERS):
    pid = os.fork()
    if pid == 0:
        serve(w, seconds)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
os._exit(0)
