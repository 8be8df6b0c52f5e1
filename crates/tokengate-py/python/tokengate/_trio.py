"""Waiting under trio (and anyio on trio): the bridge asyncio uses, its answers handed to the
trio run by its token.

A request the limits admit at once never gets here: ``Acquisition`` decides it and returns a
plain coroutine, which any library awaits. Only one that waits does, and this module is only
imported then, inside a trio run.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

import trio

from ._limiter import _CANCEL_WAIT
from ._tokengate import Acquisition, Bridge, Permit

# The bridge of the current trio run.
_bridge: trio.lowlevel.RunVar[Bridge] = trio.lowlevel.RunVar("tokengate.bridge")


class _Answer:
    """What the bridge answers (it calls ``done``, ``set_result``, ``set_exception``, as on an
    asyncio future), waited for with a trio event."""

    __slots__ = ("_event", "_value", "_error")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._event.is_set()

    def set_result(self, value: Any) -> None:
        self._value = value
        self._event.set()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._event.set()

    async def get(self) -> Any:
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._value


def running() -> bool:
    """Whether this is a trio run."""
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


def _wake(token: trio.lowlevel.TrioToken, bridge: weakref.ref[Bridge]) -> None:
    # Called by tokengate's thread: the answers are taken on the run's own thread.
    held = bridge()
    if held is not None:
        try:
            token.run_sync_soon(held.drain)
        except trio.RunFinishedError:
            pass


def _bridge_of_run() -> Bridge:
    try:
        bridge: Bridge | None = _bridge.get()
    except LookupError:
        bridge = None
    if bridge is None or bridge.stale:
        bridge = Bridge.calling()
        token = trio.lowlevel.current_trio_token()
        bridge.wake_with(functools.partial(_wake, token, weakref.ref(bridge)))
        _bridge.set(bridge)
    return bridge


async def wait(acquisition: Acquisition) -> Permit:
    """Waits (on tokengate's runtime) for a request the limits do not admit at once. A
    cancellation (a cancel scope, ``trio.move_on_after``) gives the reservation back before
    it propagates."""
    bridge = _bridge_of_run()
    answer = _Answer()
    ident = acquisition._submit(bridge, answer)  # type: ignore[arg-type]
    try:
        permit: Permit = await answer.get()
        return permit
    except GeneratorExit:
        # Closed unfinished: it cannot wait any more, so the acquisition is dropped without
        # a word back.
        bridge.cancel(ident)
        raise
    except BaseException:
        over = _Answer()
        if bridge.cancel(ident, over):  # type: ignore[arg-type]
            with trio.move_on_after(_CANCEL_WAIT) as scope:
                scope.shield = True
                await over.get()
        elif answer.done() and isinstance(answer._value, Permit):
            # Admitted just as the wait was cancelled: the call will not be made.
            answer._value.cancel()
        raise
