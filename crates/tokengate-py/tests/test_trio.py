"""trio, and anyio on trio: waits and cancellation as under asyncio."""

from __future__ import annotations

import time
from typing import Any

import pytest

import tokengate
from conftest import held_back, output_tokens

trio = pytest.importorskip("trio")

# Every wait below is bounded: no test can hang on a lost wake-up.
BOUND = 10.0


def test_a_request_waits_for_admission_in_a_trio_run() -> None:
    limiter, first = held_back()
    ticks = 0

    async def main() -> float:
        nonlocal ticks

        async def tick() -> None:
            nonlocal ticks
            while True:
                await trio.sleep(0.01)
                ticks += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            start = time.monotonic()
            with trio.fail_after(BOUND):
                async with limiter.acquire(output=1_000) as permit:
                    waited = time.monotonic() - start
                    assert permit.output == 1_000
            permit = await limiter.acquire(output=1)  # `await`, the permit to end
            permit.release()
            nursery.cancel_scope.cancel()
        return waited

    waited = trio.run(main)
    assert 0.5 < waited < 2.0
    assert ticks >= 10  # the run went on while the request waited
    stats = limiter.stats()
    assert (stats["admitted"], stats["waiters"], stats["in_flight"]) == (3, 0, 0)
    first.release()


def test_a_cancel_scope_gives_the_reservation_back() -> None:
    limiter, first = held_back()

    async def main() -> None:
        with trio.move_on_after(0.05) as scope:
            async with limiter.acquire(output=1_000):
                raise AssertionError("admitted within 50 ms of a ~1 s wait")
        assert scope.cancelled_caught

    trio.run(main)
    # By the time the cancellation left the scope, nothing of the request was counted.
    stats = limiter.stats()
    assert (stats["waiters"], stats["cancelled"], stats["admitted"]) == (0, 1, 1)
    assert output_tokens(limiter)["charged"] == 1_000
    first.release()


def test_anyio_on_trio_waits_and_cancels() -> None:
    anyio = pytest.importorskip("anyio")
    limiter, first = held_back()

    async def main() -> None:
        with anyio.move_on_after(0.05):
            await limiter.acquire(output=1_000)
            raise AssertionError("admitted within 50 ms of a ~1 s wait")
        with anyio.fail_after(BOUND):
            async with limiter.acquire(output=1_000):
                pass

    anyio.run(main, backend="trio")
    stats = limiter.stats()
    assert (stats["admitted"], stats["cancelled"], stats["waiters"]) == (2, 1, 0)
    first.release()


def test_a_wait_outside_asyncio_and_trio_is_a_clear_error() -> None:
    # Admitted at once: any library may await it.
    coroutine = tokengate.Limiter(rpm=60).acquire().__aenter__()
    with pytest.raises(StopIteration) as done:
        coroutine.send(None)
    done.value.value.release()
    # One that must wait needs a loop to wait on.
    limiter, first = held_back()
    coroutine = limiter.acquire(output=1_000).__aenter__()
    with pytest.raises(RuntimeError, match="asyncio event loop or in a trio run"):
        coroutine.send(None)
    assert limiter.stats()["waiters"] == 0
    first.release()
