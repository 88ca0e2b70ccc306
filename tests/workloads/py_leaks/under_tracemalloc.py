"""Runs a Python script under tracemalloc and writes where the memory it
still holds at its end was allocated, as JSON, to a file.

    python under_tracemalloc.py OUT.json SCRIPT [ARGS...]

tracemalloc starts (25 frames) before SCRIPT runs, as __main__ through
runpy, with sys.argv = [SCRIPT, ARGS...] and SCRIPT's directory first on
sys.path, as `python SCRIPT ARGS...` would. At its end, whether it returns
or calls os._exit() (as the py_leaks workloads do, so that finalization
frees nothing), a snapshot is taken and OUT.json gets:

    {"lines": [{"file", "line", "size", "count"}, ...],
     "tracebacks": [{"size", "count", "frames": [{"file", "line"}, ...]}, ...],
     "traced_bytes": N, "peak_bytes": N}

"lines" are the 20 lines holding the most (statistics('lineno'): each
block counts at the innermost Python frame of its traceback), "tracebacks"
the 5 biggest of statistics('traceback'), frames innermost first; sizes
are the bytes requested of CPython's allocators, as tracemalloc counts
them. Nothing is written to the script's stdout.
"""
import json
import os
import runpy
import sys
import tracemalloc

tracemalloc.start(25)


def _dump(out):
    snapshot = tracemalloc.take_snapshot()
    traced, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    def frames(traceback):
        # Traceback lists frames oldest first (Python 3.7+).
        return [{"file": f.filename, "line": f.lineno} for f in reversed(traceback)]

    lines = []
    for stat in snapshot.statistics("lineno")[:20]:
        frame = stat.traceback[0]
        lines.append({"file": frame.filename, "line": frame.lineno,
                      "size": stat.size, "count": stat.count})
    tracebacks = [{"size": s.size, "count": s.count, "frames": frames(s.traceback)}
                  for s in snapshot.statistics("traceback")[:5]]
    with open(out, "w") as f:
        json.dump({"lines": lines, "tracebacks": tracebacks,
                   "traced_bytes": traced, "peak_bytes": peak}, f, indent=1)


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: under_tracemalloc.py OUT.json SCRIPT [ARGS...]")
    out, script = sys.argv[1], sys.argv[2]
    real_exit = os._exit

    def exit_after_dump(code):
        _dump(out)
        real_exit(code)

    os._exit = exit_after_dump
    sys.argv = sys.argv[2:]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")
    _dump(out)


main()
