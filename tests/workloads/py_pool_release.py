"""Small objects made and all released: a list of 400,000 short strings
(~60 B each, served by pymalloc from ~1,570 16-KiB pools in ~25 arenas),
built at the marked line and dropped. pymalloc then unmaps every arena
left empty; the pools of the few arenas other objects still use stay
with pymalloc. Prints "ready" first, "released" once the list is gone,
and ends with os._exit(0) (no finalization).
"""
import os

print("ready", flush=True)
strings = ["string number %d" % i for i in range(400000)]  # pools: build
del strings
print("released", flush=True)
os._exit(0)
