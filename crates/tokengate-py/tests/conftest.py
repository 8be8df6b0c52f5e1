"""Shared fixtures and helpers: a hang guard for every test, a Redis server of the suite's
own, the SDK tests' mock provider, and a limiter that makes the next request wait."""

from __future__ import annotations

import faulthandler
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import sdk_mock
import tokengate

# No test may hang the suite: past this, the process prints every thread's stack and exits.
HANG_LIMIT = 120


@pytest.fixture(autouse=True)
def hang_guard() -> Iterator[None]:
    faulthandler.dump_traceback_later(HANG_LIMIT, exit=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A `redis-server` started for this suite on a free loopback port, in a temporary
    directory, stopped at the end. Never a server someone else started."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not on the PATH (Debian: apt-get install redis-server)")
    directory = tempfile.mkdtemp(prefix="tokengate-py-redis-")
    for _attempt in range(5):
        port = _free_port()
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
             "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            if _pings(port):
                break
            time.sleep(0.02)
        if process.poll() is None and _pings(port):
            try:
                yield f"redis://127.0.0.1:{port}/0"
            finally:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
                shutil.rmtree(directory, ignore_errors=True)
            return
        process.kill()
        process.wait(timeout=10)
    shutil.rmtree(directory, ignore_errors=True)
    pytest.fail("redis-server did not start on a free port in 5 attempts")


@pytest.fixture
def namespace() -> str:
    """A namespace of its own for each test: limiters share limits only within one."""
    return f"test-{uuid.uuid4().hex}"


def closed_port() -> int:
    """A loopback port nothing listens on (as far as can be known)."""
    return _free_port()


@pytest.fixture
def mock() -> Iterator[sdk_mock.MockProvider]:
    """The mock LLM provider of the SDK tests, on a free loopback port, stopped at the end."""
    provider = sdk_mock.start()
    yield provider
    sdk_mock.stop(provider)


# ---- limiters the waiting tests share -------------------------------------------------------


def output_tokens(limiter: tokengate.Limiter) -> dict[str, Any]:
    """The stats of the limiter's output-token limit."""
    return next(l for l in limiter.stats()["limits"] if l["dimension"] == "output_tokens")


def held_back() -> tuple[tokengate.Limiter, tokengate.Permit]:
    """A limiter whose output bucket (1,000 at once, a second's worth) is spent: the next
    request of 1,000 waits about a second."""
    limiter = tokengate.Limiter(output_tpm=60_000)
    return limiter, limiter.try_acquire(output=1_000)
