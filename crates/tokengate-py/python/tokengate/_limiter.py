"""``Limiter``: the context managers and keyword defaults over the extension's ``LimiterCore``."""

from __future__ import annotations

import asyncio
import os
import sys
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Union

from . import _tokengate
from ._tokengate import Acquisition, Bridge, Permit

__all__ = ["Acquisition", "Limiter", "Permit"]

Headers = Union[Mapping[str, str], Mapping[bytes, bytes], Iterable[tuple[Any, Any]], Any]


# How long a cancelled acquisition waits, at most, for the Rust side to give its reservation
# back before the cancellation propagates (it takes microseconds; this bounds a stuck loop).
_CANCEL_WAIT = 1.0


async def _quietly(future: asyncio.Future[None], timeout: float) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(future), timeout)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        pass


# Each event loop's bridge: the waiting acquisitions' answers come back through it (see
# `Bridge`). Known here weakly: a loop's reader holds its bridge, and so does every coroutine
# waiting on it, so a loop closed under waiting tasks leaves a cycle (bridge, future, task,
# loop) that the garbage collector ends, its acquisitions dropped.
_bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.ref[Bridge]] = (
    weakref.WeakKeyDictionary()
)
# The last loop and bridge used, for the common case of one loop (replaced whole, read once:
# threads running loops of their own share it).
_last: tuple[weakref.ref[asyncio.AbstractEventLoop], weakref.ref[Bridge]] | None = None


def _bridge_of(loop: asyncio.AbstractEventLoop) -> Bridge:
    global _last
    last = _last
    if last is not None and last[0]() is loop:
        bridge = last[1]()
        if bridge is not None and not bridge.stale:
            return bridge
    held = _bridges.get(loop)
    bridge = held() if held is not None else None
    if held is None or bridge is None or bridge.stale:
        # One of a loop never seen (or whose bridge nobody needed any more), or made before a
        # fork (its socket is the parent's).
        if bridge is not None and bridge.fileno() >= 0:
            loop.remove_reader(bridge.fileno())
        bridge = Bridge()
        try:
            loop.add_reader(bridge.fileno(), bridge.drain)
        except (NotImplementedError, ValueError):
            # A loop that cannot watch a socket (as Windows' proactor): woken by a call.
            bridge = Bridge.calling()
            bridge.wake_with(_waker(loop, bridge))
        held = weakref.ref(bridge)
        _bridges[loop] = held
    _last = (weakref.ref(loop), held)
    return bridge


def _waker(loop: asyncio.AbstractEventLoop, bridge: Bridge) -> Callable[[], None]:
    # Weak references: the bridge holds the waker, and must not keep its loop alive.
    loop_ref, bridge_ref = weakref.ref(loop), weakref.ref(bridge)

    def wake() -> None:
        loop, bridge = loop_ref(), bridge_ref()
        if loop is not None and bridge is not None and not loop.is_closed():
            loop.call_soon_threadsafe(bridge.drain)

    return wake


async def _wait(acquisition: Acquisition) -> Permit:
    """Waits (on tokengate's runtime) for a request the limits do not admit at once."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return await _wait_elsewhere(acquisition)
    bridge = _bridge_of(loop)
    future: asyncio.Future[Permit] = loop.create_future()
    ident = acquisition._submit(bridge, future)
    try:
        return await future
    except GeneratorExit:
        # Closed unfinished (its task destroyed with its loop): it cannot wait any more, so
        # the acquisition is dropped without a word back.
        bridge.cancel(ident)
        raise
    except asyncio.CancelledError:
        over: asyncio.Future[None] = loop.create_future()
        if bridge.cancel(ident, over):
            # The Rust acquisition is dropped on tokengate's own thread: wait for it, so that
            # the reservation is back by the time the cancellation propagates.
            await _quietly(over, _CANCEL_WAIT)
        elif future.done() and not future.cancelled() and future.exception() is None:
            # Admitted just as the task was cancelled: the call will not be made.
            future.result().cancel()
        raise


async def _wait_elsewhere(acquisition: Acquisition) -> Permit:
    """Waits under trio (or anyio on trio), the one library besides asyncio supported."""
    if "trio" in sys.modules:  # never imported here: a trio run has imported it already
        from . import _trio

        if _trio.running():
            return await _trio.wait(acquisition)
    raise RuntimeError(
        "tokengate: acquire() waits on a running asyncio event loop or in a trio run; "
        "from other code, use acquire_blocking()"
    )


async def _enter(acquisition: Acquisition) -> Permit:
    """``async with`` of a request that must wait: the permit, kept for ``__aexit__``."""
    permit = await _wait(acquisition)
    acquisition._hold(permit)
    return permit


async def _ready(value: Any) -> Any:
    """An awaitable of ``value``, at once."""
    return value


_tokengate.set_waiting(_enter, _wait, _ready)


class Limiter:
    """Keeps calls under every limit at once: requests, input, output and combined tokens per
    minute and per day, and requests in flight. Exact waits, FIFO, reserve then settle.

    Every limit is optional; give at least one::

        limiter = tokengate.Limiter(rpm=500, input_tpm=30_000, output_tpm=8_000, max_in_flight=10)

    Args:
        rpm, rpd: requests per minute, per day.
        tpm, tpd: tokens per minute, per day, input and output together.
        input_tpm, input_tpd: input (prompt) tokens per minute, per day.
        output_tpm, output_tpd: output (completion) tokens per minute, per day.
        max_in_flight: requests running at once.
        redis: a Redis URL (``redis://``, ``rediss://``): every limiter with the same limits on
            it (in any process) shares them.
        namespace: with ``redis``, limiters share limits only within one namespace.
        on_store_error: what an acquisition does while Redis fails: ``"fail_closed"`` (the
            default: raise :class:`StoreError`), ``"fail_open"`` (no limits), or a share in
            (0, 1] of every limit to decide on in this process (``1/n`` for ``n`` processes).

    Raises:
        ConfigError: limits that make no policy (none at all, or a 0).

    The limiter is safe to share between threads and tasks. After a fork, a limiter on Redis
    reconnects in the child; one whose limits live in the parent's memory raises
    :class:`ForkError` there (make it in each process, or share it through Redis).
    """

    __slots__ = ("_core", "__weakref__")

    def __init__(
        self,
        *,
        rpm: int | None = None,
        rpd: int | None = None,
        tpm: int | None = None,
        tpd: int | None = None,
        input_tpm: int | None = None,
        input_tpd: int | None = None,
        output_tpm: int | None = None,
        output_tpd: int | None = None,
        max_in_flight: int | None = None,
        redis: str | None = None,
        namespace: str | None = None,
        on_store_error: str | float | None = None,
    ) -> None:
        self._core = _tokengate.LimiterCore.from_limits(
            rpm=rpm,
            rpd=rpd,
            tpm=tpm,
            tpd=tpd,
            input_tpm=input_tpm,
            input_tpd=input_tpd,
            output_tpm=output_tpm,
            output_tpd=output_tpd,
            max_in_flight=max_in_flight,
            redis=redis,
            namespace=namespace,
            on_store_error=on_store_error,
        )

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str],
        *,
        redis: str | None = None,
        namespace: str | None = None,
        on_store_error: str | float | None = None,
    ) -> Limiter:
        """A limiter of the models, families and tenants of a limits file (TOML).

        With ``redis`` (or a ``[store]`` in the file), the limits are shared through that
        Redis by every process using them; ``redis`` and ``on_store_error`` given here take
        precedence over the file's ``[store]`` (whose namespace, timeout and lease are kept).
        Nothing connects before the first acquisition.

        Raises:
            ConfigError: the file's first mistake, with its ``file``, ``line``, ``column``
                and ``field``.
        """
        limiter = cls.__new__(cls)
        limiter._core = _tokengate.LimiterCore.from_config(
            os.fspath(path), redis=redis, namespace=namespace, on_store_error=on_store_error
        )
        return limiter

    @classmethod
    def from_toml(
        cls,
        text: str,
        *,
        source: str = "<toml>",
        redis: str | None = None,
        namespace: str | None = None,
        on_store_error: str | float | None = None,
    ) -> Limiter:
        """A limiter of a limits file's text, as :meth:`from_config` reads a file: for limits
        made in code with everything a file offers (per-second and per-hour limits,
        algorithms, bursts, margins, models, families, tenants)::

            limiter = tokengate.Limiter.from_toml('''
                [account]
                requests_per_second = 20
                output_tokens_per_minute = { amount = 8_000, burst = 8_000 }
            ''')

        Raises:
            ConfigError: the text's first mistake, with its ``line``, ``column`` and
                ``field``; ``file`` is ``source``.
        """
        limiter = cls.__new__(cls)
        limiter._core = _tokengate.LimiterCore.from_toml(
            text, source=source, redis=redis, namespace=namespace, on_store_error=on_store_error
        )
        return limiter

    @property
    def shared(self) -> bool:
        """Whether the limits live in Redis, shared by processes."""
        return self._core.shared

    def acquire(
        self,
        *,
        model: str | None = None,
        tenant: str | None = None,
        input: int = 0,
        output: int = 0,
        requests: int = 1,
        timeout: float | None = None,
    ) -> Acquisition:
        """Waits (asyncio or trio) until a request is admitted on every limit: ``async with``
        it, or ``await`` it for the :class:`Permit`.

        Args:
            model, tenant: the budgets of a limits file to charge, together with the
                limiter's own (``[account]``); ignored by a limiter of one policy.
            input: input (prompt) tokens to reserve.
            output: output tokens to reserve (the request's ``max_tokens``).
            requests: requests to count (1).
            timeout: seconds to wait at most; ``None`` waits as long as the limits need.

        Raises:
            AcquireTimeout: not admitted within ``timeout`` (at once when the wait needed is
                known to exceed it).
            RequestTooLarge: a cost no limit can ever admit.
            UnknownModel: a model the limits file does not cover.
            StoreError: Redis failed (``on_store_error="fail_closed"``).
        """
        return self._core.acquisition(model, tenant, input, output, requests, timeout)

    def acquire_blocking(
        self,
        *,
        model: str | None = None,
        tenant: str | None = None,
        input: int = 0,
        output: int = 0,
        requests: int = 1,
        timeout: float | None = None,
    ) -> Permit:
        """Blocks this thread until a request is admitted and returns its :class:`Permit`
        (use it as a context manager: ``with limiter.acquire_blocking(...) as permit:``).

        The GIL is released while it waits, and Ctrl-C interrupts the wait (the reservation
        is given back). Arguments and errors as :meth:`acquire`. Do not call it from a
        coroutine: it blocks the event loop.
        """
        return self._core.acquire_blocking(
            model=model,
            tenant=tenant,
            input=input,
            output=output,
            requests=requests,
            timeout=timeout,
        )

    def try_acquire(
        self,
        *,
        model: str | None = None,
        tenant: str | None = None,
        input: int = 0,
        output: int = 0,
        requests: int = 1,
    ) -> Permit:
        """Admits a request now, or raises :class:`RateLimitExceeded` naming the dimension,
        the cost and the seconds to wait. Never waits, and never overtakes waiting requests
        (FIFO). On a limiter shared through Redis it asks Redis, with a timeout of 0.
        """
        return self._core.try_acquire(
            model=model, tenant=tenant, input=input, output=output, requests=requests
        )

    def observe(
        self,
        headers: Headers = None,
        *,
        status: int = 200,
        model: str | None = None,
        tenant: str | None = None,
    ) -> int:
        """Learns from a provider's reply: its rate-limit headers (OpenAI ``x-ratelimit-*``,
        Anthropic ``anthropic-ratelimit-*``) lower the limiter when the provider has counted
        more (another client shares the key); a ``status`` of 429 also pauses the model for
        its ``retry-after`` (at most 5 minutes) and lowers the limits it refused.

        ``headers`` may be a dict, an ``httpx.Headers``, any mapping, or (name, value) pairs.
        Returns the units taken off the limiter.
        """
        return self._core.observe(headers, status=status, model=model, tenant=tenant)

    def pause(
        self, seconds: float, *, model: str | None = None, tenant: str | None = None
    ) -> None:
        """Admits nothing more for ``seconds`` (on the model's budget, or the limiter's own)."""
        self._core.pause(seconds, model=model, tenant=tenant)

    def resume(self, *, model: str | None = None, tenant: str | None = None) -> None:
        """Lifts a pause."""
        self._core.resume(model=model, tenant=tenant)

    def stats(self) -> dict[str, Any]:
        """The limiter's own budget: every limit's ``used``, ``remaining``, ``reset_in`` ...,
        ``in_flight``, ``waiters`` and totals (``admitted``, ``denied``, ``settled`` ...), as a
        dict. Durations are in seconds."""
        return self._core.stats()

    def key_stats(
        self, *, model: str | None = None, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        """The stats of every budget a request of ``model`` for ``tenant`` is charged to: the
        limiter's own, the model's (or its family's), the tenant's."""
        return self._core.key_stats(model=model, tenant=tenant)

    def all_stats(self) -> list[dict[str, Any]]:
        """The stats of every budget the limiter holds now."""
        return self._core.all_stats()

    def shared_state(
        self, *, model: str | None = None, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        """What Redis holds now for every budget a request of ``model`` for ``tenant`` is
        charged to (the limiter's own budget when neither is given), as every process
        sharing it sees it; ``stats()`` is this process's view. Charges nothing.

        Each budget is a dict: ``budget`` (its name, such as ``"model gpt-4o"``), ``limits``
        (per limit ``dimension``, ``amount``, ``period`` in seconds, ``used`` and
        ``remaining``: what it would admit now), ``in_flight``, ``max_in_flight`` and
        ``paused_for`` (seconds). One call to Redis per budget, with the GIL released: from
        asyncio, ``await limiter.shared_state_async()``.

        Raises:
            StoreError: the limiter is not shared through Redis, or Redis failed.
            UnknownModel: a model the limits file does not cover.
        """
        return self._core.shared_state(model=model, tenant=tenant)

    async def shared_state_async(
        self, *, model: str | None = None, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        """:meth:`shared_state` from asyncio: read in a worker thread, the loop free."""
        return await asyncio.to_thread(self.shared_state, model=model, tenant=tenant)

    def store_stats(self) -> dict[str, int]:
        """How the limiter has used Redis: ``calls``, ``errors``, ``fail_open``,
        ``local_share``, ``in_flight_polls`` (all 0 without Redis)."""
        return self._core.store_stats()

    def reload(self, path: str | os.PathLike[str]) -> None:
        """Puts the limits of a file in force now, keeping what is counted. The file's
        ``[store]`` must be the one the limiter was made with.

        Raises:
            ConfigError: the file's first mistake; the limits in force are unchanged.
        """
        self._core.reload(os.fspath(path))

    def __repr__(self) -> str:
        return f"<tokengate.Limiter shared={self.shared}>"
