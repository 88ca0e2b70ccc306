"""A bounded cache: functools.lru_cache(maxsize=2000) in front of render(),
called with a new key each step, so every call misses and, once 2000
results are cached, evicts the oldest.

Each step, render() makes a ~380-byte string at the marked line; what the
cache holds grows for 1.25 s (2000 steps at 1600 a second, ~740 KiB),
then stays flat: a plateau, not a leak. Command line: see leakrun.py.
"""
import functools

import leakrun


@functools.lru_cache(maxsize=2000)
def render(i):
    return "rendered " * 36 + str(i)  # leak: render


for i in leakrun.paced(1600):
    render(i)
leakrun.finish()
