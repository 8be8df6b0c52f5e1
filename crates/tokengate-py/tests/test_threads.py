"""Threads: acquire_blocking releases the GIL while it waits and answers Ctrl-C."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import tokengate

BOUND = 10.0


def test_blocking_acquire_admits_and_times_out() -> None:
    limiter = tokengate.Limiter(rpm=60)
    with limiter.acquire_blocking(timeout=BOUND) as permit:
        assert isinstance(permit, tokengate.Permit)
    with pytest.raises(tokengate.AcquireTimeout) as error:
        limiter.acquire_blocking(timeout=0.01)
    assert error.value.dimension == "requests"
    assert error.value.wait is not None and 0.5 < error.value.wait <= 1.5


def test_threads_share_one_limiter() -> None:
    # 100 requests a second, 100 at once: 8 threads x 20 requests take well under a second.
    limiter = tokengate.Limiter(rpm=6_000, max_in_flight=4)
    errors: list[BaseException] = []
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal peak
        try:
            for _ in range(20):
                with limiter.acquire_blocking(timeout=BOUND):
                    with lock:
                        peak = max(peak, limiter.stats()["in_flight"])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND * 2)
        assert not t.is_alive()
    assert errors == []
    assert limiter.stats()["admitted"] == 160
    assert 1 <= peak <= 4
    assert limiter.stats()["in_flight"] == 0


def test_the_gil_is_released_while_a_thread_waits() -> None:
    limiter = tokengate.Limiter(rpm=60)
    limiter.try_acquire().release()
    done = threading.Event()

    def wait() -> None:
        limiter.acquire_blocking(timeout=BOUND).release()
        done.set()

    thread = threading.Thread(target=wait)
    thread.start()
    # Pure-Python work on this thread while the other waits about a second for its turn.
    spins = 0
    while not done.is_set():
        spins += 1
        assert spins < 10**9
    thread.join(BOUND)
    # A waiter holding the GIL would have left this loop a handful of turns at most.
    assert spins > 10_000
    assert limiter.stats()["waits"]["waited"] == 1


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals reach the main thread only")
def test_ctrl_c_interrupts_a_blocking_wait_and_gives_the_reservation_back() -> None:
    # One request a minute: the second waits about a minute, unless interrupted.
    limiter = tokengate.Limiter(rpm=1, output_tpm=60_000)
    limiter.try_acquire().release()
    timer = threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            limiter.acquire_blocking(output=500)
    finally:
        timer.cancel()
    # Interrupted at once (it checks for signals every 50 ms), not after the minute.
    assert time.monotonic() - started < BOUND
    deadline = time.monotonic() + BOUND
    while limiter.stats()["waiters"] and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = limiter.stats()
    assert (stats["waiters"], stats["cancelled"], stats["admitted"]) == (0, 1, 1)
    output = next(l for l in stats["limits"] if l["dimension"] == "output_tokens")
    assert output["charged"] == 0


def test_try_acquire_never_waits() -> None:
    limiter = tokengate.Limiter(rpm=1)
    limiter.try_acquire().release()
    started = time.monotonic()
    with pytest.raises(tokengate.RateLimitExceeded) as error:
        limiter.try_acquire()
    assert time.monotonic() - started < 1.0
    assert error.value.wait is not None and error.value.wait > 30
