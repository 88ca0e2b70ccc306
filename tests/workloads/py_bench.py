"""The Python workload of `cargo xtask bench`: what tracing costs an
interpreter that allocates, per step of a loop.

    py_bench.py churn N   N steps, each making and dropping a two-item
                          list and a one-key dict holding it (4 object
                          allocations and 4 frees: the list, its items
                          array, the dict and the int i + 1)
    py_bench.py dicts N   N steps, each adding one entry to a dict that is
                          then kept, a string key and a tuple value (the
                          dict grows, its table is reallocated now and then)

It prints "ready", waits for a line on stdin (the tracer is attached by
then), runs the steps, and prints "ns_per_step X".
"""
import sys
import time


def churn(n):
    for i in range(n):
        x = [i, i + 1]
        y = {"a": x}
    del x, y


def dicts(n):
    d = {}
    for i in range(n):
        d["k%d" % i] = (i, i)
    return d


def main():
    mode, n = sys.argv[1], int(sys.argv[2])
    step = {"churn": churn, "dicts": dicts}[mode]
    print("ready", flush=True)
    sys.stdin.readline()
    t = time.perf_counter()
    step(n)
    ns = (time.perf_counter() - t) * 1e9 / n
    print("ns_per_step %.1f" % ns, flush=True)


main()
