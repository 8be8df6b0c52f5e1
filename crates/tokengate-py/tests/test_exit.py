"""A process that exits while acquisitions on Redis are still waiting exits cleanly.

At interpreter exit the package's runtime threads live on; a task of theirs that calls into
Python while the interpreter finalizes used to crash the process: about one exit in six
here, so 16 exits catch it 19 times in 20. Answers to an asyncio loop go through a socket
and call no Python from those threads; a loop that cannot watch a socket is woken by a call
into Python from them, behind the exit gate. Each child below leaves eight tasks waiting for
admission when its event loop ends, on each kind of loop.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CHILD = """
import asyncio, sys, tokengate

async def one(limiter):
    while True:
        async with limiter.acquire(input=10, timeout=5) as permit:
            permit.settle(input=10)

async def main():
    limiter = tokengate.Limiter(rpm=600, redis=sys.argv[1], namespace=sys.argv[2])
    for _ in range(8):
        asyncio.get_running_loop().create_task(one(limiter))
    await asyncio.sleep(0.3)

class NoReaders(asyncio.SelectorEventLoop):
    def add_reader(self, *args):
        raise NotImplementedError

if sys.argv[3] == "socket":
    asyncio.run(main())
else:
    loop = NoReaders()
    loop.run_until_complete(main())
    loop.close()
"""

RUNS = 16


@pytest.mark.parametrize("wake", ["socket", "call"])
def test_exit_with_waiting_acquisitions_is_clean(
    redis_server: str, namespace: str, wake: str
) -> None:
    codes = []
    for run in range(RUNS):
        child = subprocess.run(
            [sys.executable, "-c", CHILD, redis_server, f"{namespace}-{wake}-{run}", wake],
            capture_output=True,
            timeout=30,
        )
        codes.append(child.returncode)
    assert codes == [0] * RUNS, codes
