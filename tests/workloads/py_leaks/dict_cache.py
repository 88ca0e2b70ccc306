"""An unbounded dict cache: lookup() stores every profile it makes under a
new key and never evicts one.

Each step allocates, at the marked line, a key string (~60 B) and a
profile string of ~380 B (under 512 B: from pymalloc's arenas), and now
and then the dict's bigger table; 800 steps a second, ~350 KiB/s.
Command line: see leakrun.py.
"""
import leakrun

cache = {}


def lookup(i):
    cache["user-%d" % i] = "profile " * 40 + str(i)  # leak: lookup


for i in leakrun.paced(800):
    lookup(i)
leakrun.finish()
