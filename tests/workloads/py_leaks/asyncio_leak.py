"""A leak inside an asyncio task: the task's handler keeps every response
it renders in a module-level list.

Each step, the coroutine handle() (awaited by the task serve()) renders a
~380-byte response string at the marked line. 1800 steps a second,
~670 KiB/s: twice the others' rate, so that in a few seconds it holds
more than importing asyncio allocated (2-3 MiB, by version). Command
line: see leakrun.py.
"""
import asyncio

import leakrun

responses = []


async def handle(i):
    responses.append("response " * 36 + str(i))  # leak: handle


async def serve():
    async for i in leakrun.apaced(1800):
        await handle(i)


async def main():
    await asyncio.ensure_future(serve())


asyncio.run(main())
leakrun.finish()
