"""The driver the py_leaks workloads share: their command line, their pace
and their end.

Each workload calls its step function (which leaks at a line marked
"# leak: QUALNAME") from `paced(rate)`, or `apaced(rate)` inside an
asyncio task, then calls `finish()`. Its command line, after the script:

    SECONDS      `rate` steps a second for SECONDS, then the end;
    --steps N    exactly N steps, as fast as they run, then the end (a fixed
                 amount of work, for comparing two tools' byte counts).

Steps are spread over 10 ms ticks by the clock (a late tick catches up),
so the leak grows at a steady rate whatever the machine's load. It prints
"ready" before the first step, and with SECONDS "leaking" once a second of
steps has run (a process that is already leaking, for --pid).

The end is os._exit(0): the interpreter's finalization would free what the
workload leaked (it clears the modules' globals), and what it leaked must
still be outstanding when the process ends, for memtrace's end-of-run report
and for under_tracemalloc.py's snapshot (which it takes in os._exit).
Nothing here allocates memory that stays live, but the small ints of
the step numbers a workload keeps.
"""
import os
import sys
import time

TICK = 0.01


def _ticks(rate):
    """Each tick's step numbers, as a range; the caller waits a tick
    between two."""
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "--steps":
        print("ready", flush=True)
        yield range(int(args[1]))
        return
    if len(args) != 1:
        sys.exit("usage: %s SECONDS | --steps N" % sys.argv[0])
    seconds = float(args[0])
    print("ready", flush=True)
    start = time.monotonic()
    done = 0
    said = False
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            return
        if not said and elapsed >= 1.0:
            print("leaking", flush=True)
            said = True
        due = int(elapsed * rate) + 1
        yield range(done, due)
        done = max(done, due)


def paced(rate):
    """Step numbers 0, 1, 2, ... at `rate` a second (see the module)."""
    for steps in _ticks(rate):
        yield from steps
        time.sleep(TICK)


async def apaced(rate):
    """`paced` for a coroutine: it waits with asyncio.sleep."""
    import asyncio  # only here: importing it allocates megabytes

    for steps in _ticks(rate):
        for i in steps:
            yield i
        await asyncio.sleep(TICK)


def finish():
    """Ends the process without finalization (see the module)."""
    sys.stdout.flush()
    os._exit(0)
