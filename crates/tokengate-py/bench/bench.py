"""tokengate beside the Python rate limiters its users come from, on the same workloads.

Prints one table (Markdown), a row a workload, a column a library:

- in process, acquire + release, 1 task: the time one call costs (asyncio, one task in a
  loop), in microseconds;
- the same with 16 tasks on one event loop: wall time / calls;
- on Redis, 16 tasks: decisions a second (one acquire + release each), and the p99 of one
  decision's latency, in milliseconds.

Every limiter gets one limit (requests per minute) so generous that nothing ever waits: what
is measured is each library's own cost of a decision. Each is used as its documentation says
(the calls below). The last column is not a limiter but the floor under every peer on Redis:
a script that only returns 1, sent by redis-py's asyncio client (which they all use) from the
same 16 tasks. A library that cannot do a workload (llmratelimiter keeps its state only
in Redis) says so in its cell; one that is not installed says so in its column.

The bench venv (not CI; Python 3.12, from the repository root):

    export CARGO_TARGET_DIR=/work/target-py        # optional: reuse a target dir
    python3.12 -m venv /work/venv-bench
    /work/venv-bench/bin/pip install ./crates/tokengate-py \\
        aiolimiter "limits[async-redis]" pyrate-limiter token-throttle llmratelimiter redis
    /work/venv-bench/bin/python crates/tokengate-py/bench/bench.py

`pip install ./crates/tokengate-py` builds the engine in release mode. The script starts its
own `redis-server` (it must be on the PATH) on a free loopback port and stops it. Run it on a
quiet machine (`uptime`: load below 0.5): the figures are wall-clock times. Each cell is
the median of `--rounds` rounds (3), the libraries in another order each round so that a
machine's drift falls on all of them alike, with the lowest and highest; `--seconds` sets
each measurement's length (default 1.5), `--only NAME,...` runs some columns. The last row,
the Redis server's CPU time a decision (from its `INFO cpu`), says why a column is where it
is: on a small machine the server shares the cores with the client.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from typing import Any, Iterator

LIMIT = 1_000_000_000  # a minute: nothing ever waits
TASKS = 16

Call = Callable[[], Awaitable[None]]
# A library's setups: in process, and on Redis (given the server's URL). Each returns the
# call to time (one acquire + release) and a function that closes what it opened. None: the
# library cannot do that workload (the reason is the next item).
Setup = Callable[[], Awaitable[tuple[Call, Callable[[], Awaitable[None]]]]]


async def _nothing() -> None:
    return None


# ---- tokengate ------------------------------------------------------------------------------

def tokengate_setups(url: str) -> tuple[Setup, Setup]:
    import tokengate

    async def memory() -> tuple[Call, Callable[[], Awaitable[None]]]:
        limiter = tokengate.Limiter(rpm=LIMIT)

        async def call() -> None:
            async with limiter.acquire():
                pass

        return call, _nothing

    async def redis() -> tuple[Call, Callable[[], Awaitable[None]]]:
        limiter = tokengate.Limiter(rpm=LIMIT, redis=url, namespace=uuid.uuid4().hex)

        async def call() -> None:
            async with limiter.acquire():
                pass

        return call, _nothing

    return memory, redis


# ---- aiolimiter -----------------------------------------------------------------------------

def aiolimiter_setups(url: str) -> tuple[Setup, str]:
    from aiolimiter import AsyncLimiter

    async def memory() -> tuple[Call, Callable[[], Awaitable[None]]]:
        limiter = AsyncLimiter(LIMIT, 60)

        async def call() -> None:
            async with limiter:  # acquire; there is nothing to release
                pass

        return call, _nothing

    return memory, "in process only"


# ---- limits ---------------------------------------------------------------------------------

def limits_setups(url: str) -> tuple[Setup, Setup]:
    from limits import RateLimitItemPerMinute
    from limits.aio import storage, strategies

    item = RateLimitItemPerMinute(LIMIT)
    # Its cheapest strategy, the fixed window (which lets twice the limit through across a
    # window's edge): the moving window, its exact one, cost 2-4x more here, and more the
    # more hits it holds (a list of them a key).
    strategy = strategies.FixedWindowRateLimiter

    async def memory() -> tuple[Call, Callable[[], Awaitable[None]]]:
        limiter = strategy(storage.MemoryStorage())

        async def call() -> None:
            assert await limiter.hit(item, "bench")  # a hit counts; nothing is released

        return call, _nothing

    async def redis() -> tuple[Call, Callable[[], Awaitable[None]]]:
        store = storage.RedisStorage(url.replace("redis://", "async+redis://"),
                                     key_prefix=uuid.uuid4().hex)
        limiter = strategy(store)

        async def call() -> None:
            assert await limiter.hit(item, "bench")

        return call, _nothing

    return memory, redis


# ---- pyrate-limiter -------------------------------------------------------------------------

def pyrate_setups(url: str) -> tuple[Setup, Setup]:
    from pyrate_limiter import BucketAsyncWrapper, Duration, InMemoryBucket, Limiter, Rate, RedisBucket

    rates = [Rate(LIMIT, Duration.MINUTE)]

    async def memory() -> tuple[Call, Callable[[], Awaitable[None]]]:
        limiter = Limiter(BucketAsyncWrapper(InMemoryBucket(rates)))

        async def call() -> None:
            assert await limiter.try_acquire_async("bench")  # nothing is released

        async def close() -> None:
            limiter.close()

        return call, close

    async def redis() -> tuple[Call, Callable[[], Awaitable[None]]]:
        from redis.asyncio import ConnectionPool, Redis

        client = Redis(connection_pool=ConnectionPool.from_url(url))
        bucket = await RedisBucket.init(rates, client, uuid.uuid4().hex)
        limiter = Limiter(bucket)

        async def call() -> None:
            assert await limiter.try_acquire_async("bench")

        async def close() -> None:
            limiter.close()
            await client.aclose()

        return call, close

    return memory, redis


# ---- token-throttle -------------------------------------------------------------------------

def token_throttle_setups(url: str) -> tuple[Setup, Setup]:
    from token_throttle import (
        MemoryBackendBuilder,
        PerModelConfig,
        Quota,
        RateLimiter,
        RedisBackendBuilder,
        UsageQuotas,
    )

    config = PerModelConfig(quotas=UsageQuotas([Quota(metric="requests", limit=LIMIT,
                                                      per_seconds=60)]))

    def call_of(limiter: Any) -> Call:
        async def call() -> None:
            async with limiter.reserve({"requests": 1}, model="bench") as handle:
                handle.set_actual_usage({"requests": 1})

        return call

    async def memory() -> tuple[Call, Callable[[], Awaitable[None]]]:
        limiter = RateLimiter(config, backend=MemoryBackendBuilder())
        return call_of(limiter), limiter.aclose

    async def redis() -> tuple[Call, Callable[[], Awaitable[None]]]:
        import redis.asyncio

        client = redis.asyncio.from_url(url)
        limiter = RateLimiter(config, backend=RedisBackendBuilder(
            client, key_prefix=uuid.uuid4().hex))

        async def close() -> None:
            await limiter.aclose()
            await client.aclose()

        return call_of(limiter), close

    return memory, redis


# ---- llmratelimiter -------------------------------------------------------------------------

def llmratelimiter_setups(url: str) -> tuple[str, Setup]:
    from llmratelimiter import RateLimiter

    async def redis() -> tuple[Call, Callable[[], Awaitable[None]]]:
        # Its pool holds 10 connections by default: 16 tasks get "Too many connections" (and
        # its retries) unless it is given one a task, as its `max_connections` allows.
        limiter = RateLimiter(url, uuid.uuid4().hex, rpm=LIMIT, max_connections=TASKS)

        async def call() -> None:
            await limiter.acquire(input_tokens=0)  # nothing to release (adjust is optional)

        return call, _nothing

    return "Redis only", redis


# ---- the ceiling of a library on redis-py -----------------------------------------------

def ceiling_setups(url: str) -> tuple[str, Setup]:
    """Not a limiter: the fastest round trip a Python library built on redis-py's asyncio
    client makes (every peer on Redis is), a script that only returns 1, 16 tasks sharing a
    pool as the peers do. A decision of such a library costs at least this."""
    import redis.asyncio

    async def redis_() -> tuple[Call, Callable[[], Awaitable[None]]]:
        client = redis.asyncio.Redis.from_url(url, max_connections=TASKS)
        script = client.register_script("return 1")

        async def call() -> None:
            assert await script(keys=["bench"]) == 1

        async def close() -> None:
            await client.aclose()

        return call, close

    return "Redis only", redis_


# Columns that are references, not peers: never "the best peer".
REFERENCES = {"redis-py: a script returning 1"}

LIBRARIES: list[tuple[str, str, Callable[[str], tuple[Any, Any]]]] = [
    ("tokengate", "tokengate", tokengate_setups),
    ("aiolimiter", "aiolimiter", aiolimiter_setups),
    ("limits", "limits", limits_setups),
    ("pyrate-limiter", "pyrate-limiter", pyrate_setups),
    ("token-throttle", "token-throttle", token_throttle_setups),
    ("llmratelimiter", "llmratelimiter", llmratelimiter_setups),
    ("redis-py: a script returning 1", "redis", ceiling_setups),
]


# ---- measuring ------------------------------------------------------------------------------

async def per_call(call: Call, tasks: int, seconds: float) -> float:
    """Wall time per call, in seconds, with `tasks` tasks calling in a loop: the median of 3
    runs of about `seconds` / 3 each, after a warm-up."""
    for _ in range(200):
        await call()
    # Calls a run: sized from a short probe, so that a run lasts about seconds / 3.
    start = time.perf_counter()
    probe = 0
    while time.perf_counter() - start < 0.05:
        await call()
        probe += 1
    per_run = max(tasks, int(probe / (time.perf_counter() - start) * seconds / 3))
    each = per_run // tasks

    async def worker() -> None:
        for _ in range(each):
            await call()

    results = []
    for _ in range(3):
        gc.collect()
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(tasks)))
        results.append((time.perf_counter() - start) / (each * tasks))
    return statistics.median(results)


def redis_cpu(url: str) -> float:
    """The CPU seconds the Redis server has used so far (user and system)."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"INFO cpu\r\n")
        data = b""
        while True:
            data += s.recv(65536)
            head, _, body = data.partition(b"\r\n")
            if body and len(body) >= int(head[1:]):
                break
    fields = dict(line.split(":", 1) for line in body.decode().splitlines() if ":" in line)
    return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])


async def on_redis(call: Call, tasks: int, seconds: float,
                   url: str) -> tuple[float, float, float]:
    """Decisions a second, the p99 latency of one, and the Redis server's CPU time a
    decision (seconds), `tasks` tasks calling in a loop for `seconds`, after a warm-up."""
    for _ in range(100):
        await call()
    await asyncio.sleep(0.2)  # what the warm-up left to send
    cpu = redis_cpu(url)
    latencies: list[float] = []
    until = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < until:
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    elapsed = time.perf_counter() - start
    await asyncio.sleep(0.2)  # settlements sent in tasks of their own
    cpu = redis_cpu(url) - cpu
    latencies.sort()
    n = len(latencies)
    return n / elapsed, latencies[int(n * 0.99)], cpu / n


async def measure(setup: Any, kind: str, seconds: float, url: str) -> list[float | str]:
    """The workload's figures: the seconds a call takes, or on Redis, decisions a second, the
    p99 in seconds and the Redis server's CPU seconds a decision. A string: why there are
    none."""
    cells = 3 if kind == "redis" else 1
    if isinstance(setup, str):
        return [setup] * cells
    try:
        call, close = await setup()
        try:
            if kind == "redis":
                return list(await on_redis(call, TASKS, seconds, url))
            return [await per_call(call, 1 if kind == "one" else TASKS, seconds)]
        finally:
            await close()
    except Exception as error:  # noqa: BLE001 - reported in the table
        return [f"failed: {type(error).__name__}: {str(error)[:60]}"] * cells


# ---- redis-server ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on the PATH (Debian: apt-get install redis-server)")
    directory = tempfile.mkdtemp(prefix="tokengate-bench-redis-")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                sys.exit("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def flush(url: str) -> None:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"FLUSHALL\r\n")
        s.recv(16)


# ---- the table ------------------------------------------------------------------------------

ROWS = [  # the label, how a figure is shown, and whether more is better (None: not compared)
    ("in process, 1 task: acquire + release, per call", lambda v: f"{v * 1e6:.2f} µs", False),
    ("in process, 16 tasks: acquire + release, per call", lambda v: f"{v * 1e6:.2f} µs", False),
    ("Redis, 16 tasks: decisions a second", lambda v: f"{v:,.0f}", True),
    ("Redis, 16 tasks: p99 of a decision", lambda v: f"{v * 1e3:.2f} ms", False),
    ("Redis, 16 tasks: the server's CPU time a decision", lambda v: f"{v * 1e6:.0f} µs", None),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", help="libraries to run, comma-separated")
    args = parser.parse_args()
    chosen = [lib for lib in LIBRARIES if not args.only or lib[0] in args.only.split(",")]
    figures: dict[str, list[list[float | str]]] = {}  # a library's rounds of figures
    versions: dict[str, str] = {}
    with redis_server() as url:
        for round_ in range(args.rounds):
            # Each round in another order: a machine's drift falls on every library alike.
            for name, dist, setups in chosen[round_ % len(chosen):] + chosen[:round_ % len(chosen)]:
                try:
                    versions[name] = importlib.metadata.version(dist)
                    memory, redis = setups(url)
                except ImportError as error:
                    figures[name] = [[f"not installed ({error.name})"] * len(ROWS)]
                    continue
                cells: list[float | str] = []
                for kind, setup in (("one", memory), ("many", memory), ("redis", redis)):
                    flush(url)
                    cells.extend(asyncio.run(measure(setup, kind, args.seconds, url)))
                print(f"round {round_ + 1}: {name}: {cells}", file=sys.stderr)
                figures.setdefault(name, []).append(cells)
    names = [name for name, _, _ in chosen]
    medians: dict[str, list[float | str]] = {}
    shown: dict[str, list[str]] = {}
    for name in names:
        medians[name], shown[name] = [], []
        for i, (_, show, _) in enumerate(ROWS):
            values = [r[i] for r in figures[name]]
            numbers = [v for v in values if isinstance(v, float)]
            if len(numbers) == len(values):
                median = statistics.median(numbers)
                medians[name].append(median)
                spread = f" ({show(min(numbers))} - {show(max(numbers))})" if len(numbers) > 1 else ""
                shown[name].append(show(median) + spread)
            else:
                medians[name].append(next(str(v) for v in values if isinstance(v, str)))
                shown[name].append(medians[name][-1])  # type: ignore[arg-type]
    print(f"\nPython {sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.2f} at the end; the median of {args.rounds} rounds (lowest - "
          "highest); " + ", ".join(f"{n} {v}" for n, v in versions.items()))
    header = ["", *names, "tokengate vs the best peer (above 1x: tokengate ahead)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for i, (row, _, more_is_better) in enumerate(ROWS):
        ratio = ""
        ours = medians.get("tokengate", [None] * len(ROWS))[i]
        peers = [(v, n) for n in names if n != "tokengate" and n not in REFERENCES
                 if isinstance(v := medians[n][i], float)]
        if isinstance(ours, float) and peers and more_is_better is not None:
            if more_is_better:
                best, who = max(peers)
                ratio = f"{ours / best:.2f}x ({who})"
            else:
                best, who = min(peers)
                ratio = f"{best / ours:.2f}x ({who})"
        print(f"| {row} | " + " | ".join(shown[n][i] for n in names) + f" | {ratio} |")


if __name__ == "__main__":
    main()
