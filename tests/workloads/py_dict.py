# py_dict.py - a Python program with an unbounded dict: every 20 ms
# remember_session() stores 200 new entries (a key string and a 1 KiB bytes
# value each) and never removes any. CPython allocates each value with
# PyObject_Malloc (which takes it from malloc: over 512 bytes) and the
# dict's table grows by doubling; memtrace names the Python line.
#
# Prints "ready", then grows until killed.
import sys
import time

sessions = {}
counter = 0


def remember_session():
    global counter
    for _ in range(200):
        sessions["session-%d" % counter] = bytes(1024)
        counter += 1


print("ready", flush=True)
while True:
    remember_session()
    time.sleep(0.02)
