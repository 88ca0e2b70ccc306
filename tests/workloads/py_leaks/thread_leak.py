"""A leak inside a thread: a threading.Thread records every line of a log
into a list that is never trimmed, while the main thread waits for it.

Each step, record() builds a ~360-byte bytes line at the marked line
(from pymalloc's arenas). 900 steps a second, ~350 KiB/s. Command line:
see leakrun.py.
"""
import threading

import leakrun

log = []


def record(i):
    log.append(b"log line " * 40 + b"%d" % i)  # leak: record


def worker():
    for i in leakrun.paced(900):
        record(i)


thread = threading.Thread(target=worker, name="recorder")
thread.start()
thread.join()
leakrun.finish()
