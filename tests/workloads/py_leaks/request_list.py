"""A list that keeps every request object it handles: handle() appends a
Request, whose constructor gives it a 400-byte body.

The biggest allocation each step is the body, at the marked line in
Request.__init__ (bytes(400): 433 B, from pymalloc's arenas); the instance
itself (at handle's line) and its path string are smaller. 600 steps a
second, ~350 KiB/s. Command line: see leakrun.py.
"""
import leakrun


class Request:
    def __init__(self, i):
        self.path = "/items/%d" % i
        self.body = bytes(400)  # leak: Request.__init__


handled = []


def handle(i):
    handled.append(Request(i))


for i in leakrun.paced(600):
    handle(i)
leakrun.finish()
