"""One worker process of test_processes.py (not a test): asyncio tasks that call the mock
provider through a limiter shared on Redis until a deadline, then print a JSON summary.

    python processes_worker.py '{"limits": ..., "redis": ..., "namespace": ..., ...}'

Times are `time.monotonic()`, which on Linux is one clock for every process of the machine:
the parent gives the instant to start and the instant to stop acquiring.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

import tokengate


async def post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               body: dict[str, Any]) -> dict[str, Any]:
    """One HTTP/1.1 request on a kept-alive connection; the reply's JSON body."""
    data = json.dumps(body).encode()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: mock\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data)
                 + data)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    reply: dict[str, Any] = json.loads(await reader.readexactly(length))
    if status != 200:
        raise RuntimeError(f"the mock answered {status}: {reply}")
    return reply


async def task(limiter: tokengate.Limiter, spec: dict[str, Any], rng: random.Random,
               counts: dict[str, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", spec["port"])
    low, high = spec["tokens"]
    while True:
        left = spec["until"] - time.monotonic()
        if left <= 0:
            break
        tokens = rng.randint(low, high)
        try:
            async with limiter.acquire(model=spec["model"], input=tokens, timeout=left) as permit:
                body = {"model": spec["model"], "input_tokens": tokens, "max_tokens": 200,
                        "process": spec["index"], "admitted": time.monotonic()}
                reply = await post(reader, writer, body)
                permit.settle(reply["usage"])  # an OpenAI Chat Completions usage, as a dict
        except tokengate.AcquireTimeout:
            counts["timed_out"] += 1
            break
        counts["admitted"] += 1
        counts["input_tokens"] += tokens
    writer.close()


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    limiter = tokengate.Limiter.from_config(spec["limits"], redis=spec["redis"],
                                            namespace=spec["namespace"])
    counts = {"admitted": 0, "input_tokens": 0, "timed_out": 0}
    await asyncio.sleep(max(0.0, spec["start"] - time.monotonic()))
    await asyncio.gather(*(task(limiter, spec, random.Random(spec["index"] * 1_000 + n), counts)
                           for n in range(spec["tasks"])))
    return {**counts, "store": limiter.store_stats()}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))), flush=True)
