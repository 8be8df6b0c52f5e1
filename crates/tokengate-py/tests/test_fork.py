"""Fork safety: gunicorn, Celery and multiprocessing fork workers from a parent that may have
made (and used) a limiter."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable

import pytest

import tokengate

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")

BOUND = 30.0


def in_child(body: Callable[[], None]) -> int:
    """Runs `body` in a forked child; its exit status: 0 when it returned, 1 when it raised."""
    with warnings.catch_warnings():
        # Python 3.12 warns that forking a multi-threaded process may deadlock the child:
        # what this file checks tokengate never does.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        status = 1
        try:
            body()
            status = 0
        except BaseException:  # noqa: BLE001 - the child reports and exits
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(status)
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child did not finish within {BOUND} s (a deadlock after fork?)")


def test_a_limiter_in_memory_tells_the_child_what_to_do() -> None:
    limiter = tokengate.Limiter(rpm=600)
    # Used in the parent first: its runtime has threads, which the child does not inherit.
    asyncio.run(asyncio.wait_for(limiter.acquire().__aenter__(), 10)).release()

    def child() -> None:
        with pytest.raises(tokengate.ForkError, match="Make the limiter in each process") as e:
            limiter.try_acquire()
        assert "redis" in str(e.value)
        with pytest.raises(tokengate.ForkError):
            limiter.acquire_blocking(timeout=1)
        # A limiter made in the child works, on a runtime of the child's own.
        own = tokengate.Limiter(rpm=6_000, output_tpm=60_000)
        own.try_acquire(output=10).release()
        own.acquire_blocking(output=1, timeout=10).release()
        asyncio.run(asyncio.wait_for(own.acquire(output=1).__aenter__(), 10)).release()

    assert in_child(child) == 0
    limiter.try_acquire().release()  # the parent's is untouched


def test_a_limiter_on_redis_reconnects_in_the_child(redis_server: str, namespace: str) -> None:
    limiter = tokengate.Limiter(rpd=10, output_tpm=6_000, redis=redis_server, namespace=namespace)
    # Connected, with a runtime and a permit, in the parent before the fork.
    permit = limiter.acquire_blocking(output=100, timeout=10)

    def child() -> None:
        # The parent's permit is not the child's to settle.
        with pytest.raises(tokengate.ForkError):
            permit.settle(output=1)
        for _ in range(3):
            limiter.acquire_blocking(timeout=10).release()
        asyncio.run(asyncio.wait_for(limiter.acquire().__aenter__(), 10)).release()
        assert limiter.store_stats()["errors"] == 0

    assert in_child(child) == 0
    permit.settle(output=10)
    # One request in the parent, four in the child: 5 of the day's 10 left, shared.
    for _ in range(5):
        limiter.acquire_blocking(timeout=10).release()
    with pytest.raises(tokengate.RateLimitExceeded):
        limiter.try_acquire()
