"""Closures kept by a callback list: subscribe() appends a lambda that
closes over its argument, and nothing ever unsubscribes.

Each step's biggest allocation is the function object the lambda
expression makes (~150-170 B, by version), at the marked line in
subscribe(); its closure tuple and the cell are smaller. 2000 steps a
second, ~330 KiB/s. Command line: see leakrun.py.
"""
import leakrun

callbacks = []


def subscribe(topic):
    callbacks.append(lambda event: (topic, event))  # leak: subscribe


for i in leakrun.paced(2000):
    subscribe(i)
leakrun.finish()
