"""asyncio: acquisitions await a Rust future, never block the loop, and give their
reservation back when cancelled."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
from typing import Any

import pytest

import tokengate
from conftest import held_back, output_tokens

# Every wait below is bounded: no test can hang on a lost wake-up.
BOUND = 10.0


async def until(predicate: Any, bound: float = BOUND) -> None:
    """Waits (polling the loop) until `predicate()` holds, at most `bound` seconds."""
    deadline = asyncio.get_running_loop().time() + bound
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_async_with_admits_and_releases() -> None:
    limiter = tokengate.Limiter(rpm=600, output_tpm=60_000, max_in_flight=2)
    async with limiter.acquire(input=10, output=100) as permit:
        assert isinstance(permit, tokengate.Permit)
        assert limiter.stats()["in_flight"] == 1
        permit.settle(output=40)
    assert limiter.stats()["in_flight"] == 0
    assert output_tokens(limiter)["used"] == 40
    permit = await limiter.acquire(output=5)
    permit.release()
    assert limiter.stats()["admitted"] == 2


async def test_waiting_never_blocks_the_event_loop() -> None:
    limiter, first = held_back()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        permit = await asyncio.wait_for(limiter.acquire(output=1_000).__aenter__(), BOUND)
        permit.release()
    finally:
        ticker.cancel()
    # The wait was about a second of the loop's time: a blocked loop would have ticked ~0.
    assert ticks >= 10
    assert limiter.stats()["waits"]["waited"] == 1
    first.release()


async def test_many_tasks_are_all_admitted_in_order() -> None:
    # 100 requests a second, 100 at once: 150 requests take about half a second.
    limiter = tokengate.Limiter(rpm=6_000)
    order: list[int] = []

    async def one(i: int) -> None:
        async with limiter.acquire():
            order.append(i)

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(150))), BOUND)
    assert sorted(order) == list(range(150))
    assert limiter.stats()["admitted"] == 150
    # The queued ones (past the first 100) were admitted first come, first served.
    assert order[100:] == sorted(order[100:])


async def test_cancelling_a_waiting_task_gives_the_reservation_back() -> None:
    limiter, first = held_back()
    waiting = asyncio.create_task(limiter.acquire(output=1_000).__aenter__())
    await until(lambda: limiter.stats()["waiters"] == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # By the time the cancellation reaches the caller, the budget is whole again: nothing
    # of the cancelled request is counted, and nobody waits.
    stats = limiter.stats()
    assert (stats["waiters"], stats["cancelled"], stats["admitted"]) == (0, 1, 1)
    assert output_tokens(limiter)["charged"] == 1_000
    first.cancel()
    assert output_tokens(limiter)["used"] == 0


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is Python 3.11+")
async def test_asyncio_timeout_gives_the_reservation_back() -> None:
    limiter, first = held_back()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            async with limiter.acquire(output=1_000):
                raise AssertionError("admitted within 50 ms of a ~1 s wait")
    stats = limiter.stats()
    assert (stats["waiters"], stats["cancelled"]) == (0, 1)
    assert output_tokens(limiter)["charged"] == 1_000
    first.release()


async def test_wait_for_gives_the_reservation_back() -> None:
    limiter, first = held_back()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(limiter.acquire(output=1_000).__aenter__(), 0.05)
    assert (limiter.stats()["waiters"], limiter.stats()["cancelled"]) == (0, 1)
    assert output_tokens(limiter)["charged"] == 1_000
    first.release()


async def test_a_cancelled_waiter_lets_the_next_one_go_first() -> None:
    limiter = tokengate.Limiter(output_tpm=60_000)
    first = limiter.try_acquire(output=1_000)
    big = asyncio.create_task(limiter.acquire(output=1_000).__aenter__())
    await until(lambda: limiter.stats()["waiters"] == 1)
    small = asyncio.create_task(limiter.acquire(output=1).__aenter__())
    await until(lambda: limiter.stats()["waiters"] == 2)
    big.cancel()
    permit = await asyncio.wait_for(small, BOUND)
    assert permit.output == 1
    assert limiter.stats()["cancelled"] == 1
    first.release()
    permit.release()


async def test_a_timeout_known_to_be_too_short_fails_at_once() -> None:
    limiter, first = held_back()
    with pytest.raises(tokengate.AcquireTimeout) as error:
        await asyncio.wait_for(limiter.acquire(output=1_000, timeout=0.01).__aenter__(), BOUND)
    e = error.value
    assert (e.dimension, e.cost, e.reason, e.timeout) == ("output_tokens", 1_000, "timeout", 0.01)
    assert e.wait is not None and 0.5 < e.wait <= 1.5
    assert isinstance(e, tokengate.RateLimitExceeded) and isinstance(e, TimeoutError)
    first.release()


async def test_an_impossible_request_fails_without_waiting() -> None:
    limiter = tokengate.Limiter(input_tpm=30_000)
    with pytest.raises(tokengate.RequestTooLarge):
        await asyncio.wait_for(limiter.acquire(input=40_000).__aenter__(), BOUND)


async def _waits_then_cancels(limiter: tokengate.Limiter) -> tuple[int, int]:
    """A request that waits about a second, admitted; then one cancelled while it waits.
    Returns the output tokens charged after each."""
    permit = await asyncio.wait_for(limiter.acquire(output=1_000).__aenter__(), BOUND)
    permit.release()
    after_admitted = output_tokens(limiter)["charged"]
    waiting = asyncio.create_task(limiter.acquire(output=1_000).__aenter__())
    await until(lambda: limiter.stats()["waiters"] == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    return after_admitted, output_tokens(limiter)["charged"]


class NoReaders(asyncio.SelectorEventLoop):
    """A loop that cannot watch a socket, as Windows' proactor."""

    def add_reader(self, *args: Any) -> None:
        raise NotImplementedError


def test_a_loop_that_cannot_watch_a_socket_is_woken_by_a_call() -> None:
    # Answers then come through call_soon_threadsafe, with the same waits and the same
    # cancellation.
    limiter, first = held_back()
    loop = NoReaders()
    try:
        charged = loop.run_until_complete(_waits_then_cancels(limiter))
    finally:
        loop.close()
    assert charged == (2_000, 2_000)
    stats = limiter.stats()
    assert (stats["admitted"], stats["cancelled"], stats["waiters"]) == (2, 1, 0)
    first.release()


def test_every_event_loop_gets_its_own_answers() -> None:
    # One limiter, waited on from two loops at once (one a thread's), then from a loop made
    # after both closed: each loop hears of its own acquisitions only.
    limiter = tokengate.Limiter(rpm=6_000)  # 100 at once, then one every 10 ms
    limiter.try_acquire(requests=100).release()

    async def some(n: int) -> int:
        async def one() -> None:
            async with limiter.acquire(timeout=BOUND):
                pass

        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), BOUND)
        return n

    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(asyncio.run(some(20))))
    thread.start()
    results.append(asyncio.run(some(20)))
    thread.join(BOUND)
    assert not thread.is_alive()
    results.append(asyncio.run(some(5)))
    assert sorted(results) == [5, 20, 20]
    stats = limiter.stats()
    assert (stats["admitted"], stats["waiters"]) == (46, 0)
    assert stats["waits"]["waited"] >= 40


def test_uvloop_waits_and_cancels_as_asyncio_does() -> None:
    # uvicorn's loop: the bridge's socket is watched by libuv.
    uvloop = pytest.importorskip("uvloop")
    limiter, first = held_back()
    loop = uvloop.new_event_loop()
    try:
        charged = loop.run_until_complete(_waits_then_cancels(limiter))
    finally:
        loop.close()
    assert charged == (2_000, 2_000)
    assert (limiter.stats()["cancelled"], limiter.stats()["waiters"]) == (1, 0)
    first.release()


@pytest.mark.parametrize("make_loop", [asyncio.new_event_loop, NoReaders], ids=["socket", "call"])
def test_a_loop_closed_under_a_waiting_task_keeps_nothing(make_loop: Any) -> None:
    # The task is destroyed with its loop, never cancelled: its coroutine is closed, and the
    # acquisition it waited for is dropped rather than admitted into a loop that is gone.
    limiter = tokengate.Limiter(output_tpm=60_000, max_in_flight=2)
    first = limiter.try_acquire(output=1_000)
    loop = make_loop()
    task = loop.create_task(limiter.acquire(output=1_000).__aenter__())
    loop.run_until_complete(asyncio.sleep(0.05))
    assert limiter.stats()["waiters"] == 1
    loop.close()
    del task
    gc.collect()
    deadline = time.monotonic() + BOUND
    while limiter.stats()["waiters"] != 0:
        assert time.monotonic() < deadline, "the closed waiter was never dropped"
        time.sleep(0.005)
    time.sleep(1.5)  # past the instant it would have been admitted at
    stats = limiter.stats()
    assert (stats["admitted"], stats["cancelled"], stats["in_flight"]) == (1, 1, 1)
    assert output_tokens(limiter)["charged"] == 1_000
    first.release()
