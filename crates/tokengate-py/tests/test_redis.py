"""Limits shared through Redis: a server of the suite's own (conftest.redis_server)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import tokengate
from conftest import closed_port

BOUND = 10.0


def test_two_limiters_on_one_redis_share_the_limits(redis_server: str, namespace: str) -> None:
    a = tokengate.Limiter(rpd=3, redis=redis_server, namespace=namespace)
    b = tokengate.Limiter(rpd=3, redis=redis_server, namespace=namespace)
    assert a.shared and b.shared
    # Each admission keeps a safety margin (50 ms) from the next: wait for it.
    a.acquire_blocking(timeout=1).release()
    a.acquire_blocking(timeout=1).release()
    b.acquire_blocking(timeout=1).release()
    for limiter in (a, b):
        with pytest.raises(tokengate.RateLimitExceeded) as error:
            limiter.try_acquire()
        assert error.value.dimension == "requests"
        assert error.value.wait is not None and error.value.wait > 3600  # the day's cap
    # Another namespace shares nothing.
    other = tokengate.Limiter(rpd=3, redis=redis_server, namespace=namespace + "-other")
    other.try_acquire().release()
    assert a.store_stats()["errors"] == 0


def test_a_settlement_reaches_every_process(redis_server: str, namespace: str) -> None:
    a = tokengate.Limiter(output_tpd=1_000, redis=redis_server, namespace=namespace)
    b = tokengate.Limiter(output_tpd=1_000, redis=redis_server, namespace=namespace)
    a.try_acquire(output=1_000).settle(output=100)
    # The settlement goes to Redis in a task of its own: b sees it a moment later.
    deadline = time.monotonic() + BOUND
    while True:
        try:
            permit = b.try_acquire(output=900)
            break
        except tokengate.RateLimitExceeded:
            assert time.monotonic() < deadline, "the settlement never reached Redis"
            time.sleep(0.01)
    permit.release()
    with pytest.raises(tokengate.RateLimitExceeded):
        a.try_acquire(output=1)


async def test_async_acquisitions_on_redis(redis_server: str, namespace: str) -> None:
    limiter = tokengate.Limiter(rpm=6_000, output_tpm=600_000, redis=redis_server,
                                namespace=namespace)

    async def one() -> None:
        async with limiter.acquire(output=100) as permit:
            permit.settle(output=10)

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(40))), BOUND)
    assert limiter.store_stats()["errors"] == 0
    assert limiter.store_stats()["calls"] >= 40


async def test_cancelling_a_wait_on_redis_gives_its_place_back(
        redis_server: str, namespace: str) -> None:
    # Two requests a minute, one at a time: the second waits about 30 s on Redis.
    a = tokengate.Limiter(rpm=2, redis=redis_server, namespace=namespace)
    b = tokengate.Limiter(rpm=2, redis=redis_server, namespace=namespace)
    (await a.acquire()).release()
    waiting = asyncio.create_task(b.acquire().__aenter__())
    await asyncio.sleep(0.2)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # The cancelled request holds no place: the next one is told about 30 s, not 60 s (nor
    # that a request is queued ahead). Its place goes back to Redis in a task of its own.
    deadline = time.monotonic() + BOUND
    while True:
        with pytest.raises(tokengate.AcquireTimeout) as error:
            a.try_acquire()
        if error.value.reason != "queued" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    assert error.value.wait is not None and 20 < error.value.wait < 45
    assert a.store_stats()["errors"] == 0 and b.store_stats()["errors"] == 0


def test_blocking_acquisitions_from_threads_on_redis(redis_server: str, namespace: str) -> None:
    import threading

    limiter = tokengate.Limiter(rpm=6_000, max_in_flight=3, redis=redis_server,
                                namespace=namespace)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                with limiter.acquire_blocking(timeout=BOUND):
                    pass
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND * 3)
        assert not t.is_alive()
    assert errors == []
    assert limiter.store_stats()["errors"] == 0


def test_a_limits_file_shared_through_redis(tmp_path: Path, redis_server: str, namespace: str) -> None:
    path = tmp_path / "limits.toml"
    path.write_text("[models.gpt-4o]\nrequests_per_day = 2\n")
    a = tokengate.Limiter.from_config(path, redis=redis_server, namespace=namespace)
    b = tokengate.Limiter.from_config(path, redis=redis_server, namespace=namespace)
    assert a.shared
    a.acquire_blocking(model="gpt-4o", timeout=1).release()
    b.acquire_blocking(model="gpt-4o", timeout=1).release()
    with pytest.raises(tokengate.RateLimitExceeded):
        a.try_acquire(model="gpt-4o")
    with pytest.raises(tokengate.UnknownModel):
        a.try_acquire(model="gpt4o")


def test_shared_state_is_what_every_process_sees(
    tmp_path: Path, redis_server: str, namespace: str
) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(
        "[models.gpt-4o]\nrequests_per_day = 100\noutput_tokens_per_day = 10000\n"
        "[defaults.tenant]\nrequests_per_day = 50\n"
    )
    a = tokengate.Limiter.from_config(path, redis=redis_server, namespace=namespace)
    b = tokengate.Limiter.from_config(path, redis=redis_server, namespace=namespace)
    a.acquire_blocking(model="gpt-4o", tenant="acme", output=800, timeout=1).cancel()
    a.acquire_blocking(model="gpt-4o", tenant="acme", output=300, timeout=1).release()
    # The cancel and the release go to Redis in tasks of their own: b sees them a moment later.
    deadline = time.monotonic() + BOUND
    while True:
        shared = b.shared_state(model="gpt-4o", tenant="acme")
        used = {s["budget"]: [(l["dimension"], l["used"]) for l in s["limits"]] for s in shared}
        expected = {
            "model gpt-4o": [("requests", 1), ("output_tokens", 300)],
            "tenant acme": [("requests", 1)],
        }
        if used == expected or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert used == expected
    assert all(s["in_flight"] == 0 and s["paused_for"] == 0 for s in shared)
    # This process's own view counts nothing: it decided nothing.
    assert b.stats()["admitted"] == 0
    with pytest.raises(tokengate.UnknownModel):
        b.shared_state(model="gpt4o")
    with pytest.raises(tokengate.StoreError):
        tokengate.Limiter(rpm=60).shared_state()
    # Neither a model nor a tenant: the limiter's own budget.
    own = tokengate.Limiter(rpm=600, redis=redis_server, namespace=namespace + "-own")
    own.try_acquire().release()
    shared = own.shared_state()
    assert [s["budget"] for s in shared] == ["account"]
    assert shared[0]["limits"][0]["used"] == 1
    # From asyncio, the same read in a worker thread.
    assert asyncio.run(asyncio.wait_for(own.shared_state_async(), BOUND)) == shared


def test_the_files_store_section(tmp_path: Path, redis_server: str, namespace: str) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(
        f'[store]\nurl = "{redis_server}"\nnamespace = "{namespace}"\n\n'
        "[account]\nrequests_per_day = 1\n")
    a = tokengate.Limiter.from_config(path)
    b = tokengate.Limiter.from_config(path)
    assert a.shared
    a.try_acquire().release()
    with pytest.raises(tokengate.RateLimitExceeded):
        b.try_acquire()


def test_a_redis_that_does_not_answer(redis_server: str, namespace: str) -> None:
    down = f"redis://127.0.0.1:{closed_port()}/0"
    closed = tokengate.Limiter(rpm=600, redis=down, namespace=namespace)
    with pytest.raises(tokengate.StoreError):
        closed.acquire_blocking(timeout=BOUND)
    assert closed.store_stats()["errors"] >= 1
    open_ = tokengate.Limiter(rpm=600, redis=down, namespace=namespace, on_store_error="fail_open")
    open_.acquire_blocking(timeout=BOUND).release()
    assert open_.store_stats()["fail_open"] == 1
    share = tokengate.Limiter(rpd=2, redis=down, namespace=namespace, on_store_error=0.5)
    share.acquire_blocking(timeout=BOUND).release()  # a local limiter of 1 a day
    with pytest.raises(tokengate.RateLimitExceeded):
        share.acquire_blocking(timeout=0)
    assert share.store_stats()["local_share"] >= 1


def test_redis_overrides_the_files_store(tmp_path: Path, redis_server: str, namespace: str) -> None:
    path = tmp_path / "limits.toml"
    down = f"redis://127.0.0.1:{closed_port()}/0"
    path.write_text(f'[store]\nurl = "{down}"\nnamespace = "{namespace}"\n'
                    "[account]\nrequests_per_day = 1\n")
    limiter = tokengate.Limiter.from_config(path, redis=redis_server)
    limiter.try_acquire().release()
    assert limiter.store_stats()["errors"] == 0


def test_a_429_seen_by_one_process_pauses_every_process(redis_server: str, namespace: str) -> None:
    a = tokengate.Limiter(rpm=6_000, redis=redis_server, namespace=namespace)
    b = tokengate.Limiter(rpm=6_000, redis=redis_server, namespace=namespace)
    b.acquire_blocking(timeout=BOUND).release()
    a.observe({"retry-after": "30"}, status=429)
    # The pause goes to Redis in a task of its own: b hears of it a moment later.
    deadline = time.monotonic() + BOUND
    while True:
        try:
            b.try_acquire().release()
        except tokengate.RateLimitExceeded as error:
            assert error.wait is not None and 20 < error.wait <= 30.1
            break
        assert time.monotonic() < deadline, "the pause never reached the other limiter"
        time.sleep(0.01)
    a.resume()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads Linux's /proc")
def test_store_calls_run_on_the_packages_own_runtime(redis_server: str, namespace: str) -> None:
    # The Rust crate starts a process-wide thread of its own ("tokengate-store") for store
    # calls made outside any runtime; a fork would leave a child with its handle and without
    # its thread. The package makes every call on its own per-process runtime instead.
    limiter = tokengate.Limiter(rpm=6_000, max_in_flight=2, redis=redis_server,
                                namespace=namespace)
    limiter.acquire_blocking(timeout=BOUND).settle(requests=1)
    with limiter.try_acquire():
        pass
    asyncio.run(asyncio.wait_for(limiter.acquire().__aenter__(), BOUND)).release()
    limiter.observe({"x-ratelimit-limit-requests": "6000",
                     "x-ratelimit-remaining-requests": "5000"})
    limiter.pause(0.01)
    limiter.resume()
    time.sleep(0.1)  # let the tasks that settle and pause run
    names = {p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm")}
    assert "tokengate" in names
    assert "tokengate-store" not in names
    assert limiter.store_stats()["errors"] == 0


def test_the_files_failure_policy_or_the_keyword(tmp_path: Path, namespace: str) -> None:
    down = f"redis://127.0.0.1:{closed_port()}/0"
    path = tmp_path / "limits.toml"
    path.write_text(f'[store]\nurl = "{down}"\nnamespace = "{namespace}"\non_error = "fail_open"\n'
                    "[account]\nrequests_per_minute = 600\n")
    # The file's policy: admitted without limits while Redis does not answer.
    from_file = tokengate.Limiter.from_config(path)
    from_file.acquire_blocking(timeout=BOUND).release()
    assert from_file.store_stats()["fail_open"] == 1
    # The keyword's, over the file's.
    closed = tokengate.Limiter.from_config(path, on_store_error="fail_closed")
    with pytest.raises(tokengate.StoreError, match="store"):
        closed.acquire_blocking(timeout=BOUND)
    assert closed.store_stats()["fail_open"] == 0
