"""A class-level registry: every Listener registers itself in a list that
is a class attribute, so none is ever freed.

Each step's biggest allocation is the listener's 360-byte bytearray
buffer, at the marked line in Listener.__init__ (the bytearray object and
its buffer are two allocations of that line; the buffer, 361 B, is the
bigger). 800 steps a second, ~350 KiB/s. Command line: see leakrun.py.
"""
import leakrun


class Listener:
    registry = []

    def __init__(self):
        self.buffer = bytearray(360)  # leak: Listener.__init__
        Listener.registry.append(self)


for _ in leakrun.paced(800):
    Listener()
leakrun.finish()
