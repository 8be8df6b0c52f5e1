"""Four Python processes share one limit through Redis, under load, against a mock provider.

Each process (tests/processes_worker.py, started with `sys.executable`) runs asyncio tasks
that acquire from a limiter made from the same limits file on the suite's Redis, call a mock
provider on a loopback port, and settle with its usage, for RUN seconds. The mock admits every
request and logs each one as it arrives (its time, the model, the amounts): that log, the
merged traffic of the four processes as the provider sees it, must pass the independent
checker `check-admissions` under both readings of every limit a strict provider enforces (at
most N in any 60 s window, and a bucket of a second's worth, N/60 at once refilled at N/60 a
second), so that such a provider would have refused none of them; and the binding limit must
be used to at least 95% over the steady part of the run (its first 2 s, the first bucket,
and its last second left out).

The limits: 2,400 requests and 900,000 input tokens a minute (40 requests and 15,000 tokens a
second), prompts of 200-1,000 tokens, so that input tokens bind at about 25 requests a second
and requests run at about 62% of theirs. That pace keeps the machine mostly idle: the
processes, Redis and the mock use a few percent of a core each, so a loaded 2-core CI machine
still runs them close to their instants. The margin (the limits file's `margin`) is 250 ms
rather than the library's 50 ms: it is what the limiter keeps clear of the jitter between an
admission and the provider's count of it, and here that jitter is a Python process's
(waking from the Redis wait, the event loop, the HTTP request, the mock's own loop) on a CI
machine that may be busy with other builds (measured on a 2-core VM running four busy loops
besides: a request reached the mock 0.4 ms after its admission at the median, 19 ms at
most). It costs nothing here: every prompt is far below a second's bucket less 250 ms of it
(11,250 tokens).

The checker is named by TOKENGATE_CHECK_ADMISSIONS (`.ci/run` sets it), else found beside the
checkout (`../shared/tools/check-admissions`); without it the test fails, saying so.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

PROCESSES = 4
TASKS = 4
RUN = 20.0
MODEL = "mock-model"
RPM = 2_400
INPUT_TPM = 900_000
TOKENS = (200, 1_000)
MARGIN = "250ms"
WORKER = Path(__file__).with_name("processes_worker.py")


def checker() -> Path:
    named = os.environ.get("TOKENGATE_CHECK_ADMISSIONS")
    if named:
        if not Path(named).is_file():
            pytest.fail(f"TOKENGATE_CHECK_ADMISSIONS names {named}, which is not a file")
        return Path(named)
    beside = Path(__file__).resolve().parents[3].parent / "shared" / "tools" / "check-admissions"
    if not beside.is_file():
        pytest.fail("the independent checker check-admissions is not here: set "
                    "TOKENGATE_CHECK_ADMISSIONS to its path (.ci/run does, from "
                    f"../shared/tools/check-admissions), or put it at {beside}")
    return beside


class MockProvider:
    """An LLM provider on a loopback port, on an event loop of its own thread: it admits every
    request, logs it when its body has arrived, waits 20-80 ms (the model), and answers with
    an OpenAI Chat Completions usage."""

    def __init__(self) -> None:
        self.log: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self.serve, "127.0.0.1", 0), self.loop).result(10)
        self.port: int = self.server.sockets[0].getsockname()[1]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rng = random.Random(len(self.log))
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                request = json.loads(await reader.readexactly(length))
                arrived = time.monotonic()
                self.log.append({"t": arrived, "key": request["model"], "requests": 1,
                                 "input_tokens": request["input_tokens"],
                                 "process": request["process"],
                                 "late": arrived - request["admitted"]})
                await asyncio.sleep(rng.uniform(0.02, 0.08))
                output = rng.randint(1, request["max_tokens"])
                body = json.dumps({"usage": {
                    "prompt_tokens": request["input_tokens"], "completion_tokens": output,
                    "total_tokens": request["input_tokens"] + output}}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def share(log: list[dict[str, Any]], field: str, per_second: float) -> tuple[float, float]:
    """The amount of `field` that arrived in the steady part of the run, as a share of
    `per_second`; and the steady part's length in seconds."""
    times = [row["t"] for row in log]
    start, end = min(times) + 2.0, max(times) - 1.0
    amount = sum(row[field] for row in log if start <= row["t"] < end)
    return amount / (per_second * (end - start)), end - start


def test_four_processes_share_one_redis_limit(
        tmp_path: Path, redis_server: str, namespace: str) -> None:
    tool = checker()
    limits = tmp_path / "limits.toml"
    limits.write_text(f'margin = "{MARGIN}"\n\n[models.{MODEL}]\n'
                      f"requests_per_minute = {RPM}\ninput_tokens_per_minute = {INPUT_TPM}\n")
    mock = MockProvider()
    began = time.monotonic()
    try:
        start = time.monotonic() + 2.0  # time for every process to start and connect
        workers = [
            subprocess.Popen(
                [sys.executable, "-X", "faulthandler", str(WORKER), json.dumps({
                    "index": i, "limits": str(limits), "redis": redis_server,
                    "namespace": namespace, "model": MODEL, "port": mock.port,
                    "tasks": TASKS, "tokens": TOKENS, "start": start, "until": start + RUN})],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(PROCESSES)
        ]
        summaries = []
        for worker in workers:
            try:
                out, err = worker.communicate(timeout=RUN + 30)
            except subprocess.TimeoutExpired:
                for w in workers:
                    w.kill()
                pytest.fail("a worker process did not finish in time")
            assert worker.returncode == 0, f"a worker failed:\n{err}"
            summaries.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        mock.close()
    elapsed = time.monotonic() - began

    log = sorted(mock.log, key=lambda row: row["t"])
    path = tmp_path / "admissions.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in log))
    late = sorted(row["late"] for row in log)
    tokens_used, steady = share(log, "input_tokens", INPUT_TPM / 60)
    requests_used, _ = share(log, "requests", RPM / 60)
    print(f"\n{len(log)} requests from {PROCESSES} processes x {TASKS} tasks in {elapsed:.1f} s; "
          f"per process {[s['admitted'] for s in summaries]}; from admission to the mock: "
          f"median {late[len(late) // 2] * 1e3:.1f} ms, max {late[-1] * 1e3:.1f} ms; "
          f"steady part {steady:.1f} s: input tokens {tokens_used:.1%} of the limit "
          f"(binding), requests {requests_used:.1%}")

    # Every request the processes counted reached the mock, and none other; Redis answered.
    assert len(log) == sum(s["admitted"] for s in summaries)
    assert sum(row["input_tokens"] for row in log) == sum(s["input_tokens"] for s in summaries)
    for s in summaries:
        assert s["admitted"] > 0 and s["store"]["errors"] == 0, s
    assert len(log) > 200, f"too few requests for a check: {len(log)}"

    # Both readings of both limits, on the times the provider saw.
    args = [f"--key={MODEL}",
            f"--limit=requests={RPM}/60", f"--limit=input_tokens={INPUT_TPM}/60",
            f"--bucket=requests={RPM / 60:g}:{RPM // 60}",
            f"--bucket=input_tokens={INPUT_TPM / 60:g}:{INPUT_TPM // 60}"]
    checked = subprocess.run([sys.executable, str(tool), str(path), *args],
                             capture_output=True, text=True, timeout=60)
    print(checked.stdout + checked.stderr)
    assert checked.returncode == 0 and "violations: 0" in checked.stdout, (
        f"check-admissions {' '.join(args)}:\n{checked.stdout}{checked.stderr}")

    # The binding limit, used: input tokens at their rate, requests below theirs.
    assert tokens_used >= 0.95, f"input tokens used at {tokens_used:.1%} of the limit"
    assert requests_used < tokens_used
