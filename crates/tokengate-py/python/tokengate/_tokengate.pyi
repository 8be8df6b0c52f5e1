"""Type stubs of the extension module ``tokengate._tokengate`` (written by hand)."""

import asyncio
import os
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, final

__all__ = [
    "Acquisition",
    "Bridge",
    "LimiterCore",
    "Permit",
    "PricedCall",
    "Pricer",
    "ReplyMeter",
    "set_waiting",
]

@final
class Permit:
    """An admission: holds its in-flight slot and its reservation until it ends."""

    @property
    def requests(self) -> int:
        """Requests reserved."""
    @property
    def input(self) -> int:
        """Input tokens reserved."""
    @property
    def output(self) -> int:
        """Output tokens reserved."""
    @property
    def ended(self) -> bool:
        """Whether the permit has ended (settled, released or cancelled)."""
    def settle(
        self,
        usage: Any = None,
        *,
        input: int | None = None,
        output: int | None = None,
        requests: int | None = None,
    ) -> None:
        """Settles with what the call used: an OpenAI or Anthropic usage object (or reply), a
        dict, or ``input=``/``output=``. Raises :class:`tokengate.UsageError` for a usage
        that cannot be read or a permit that already ended."""
    def release(self) -> None:
        """Ends the permit, its reservation counted as used; frees its in-flight slot."""
    def cancel(self) -> None:
        """Gives the whole reservation back: the call was not made."""
    def __enter__(self) -> Permit: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...

@final
class Acquisition:
    """An asynchronous acquisition: ``async with`` it, or ``await`` it for the :class:`Permit`.

    ``async with limiter.acquire(...) as permit:`` waits (FIFO, never blocking the event
    loop) until the request is admitted, and releases the permit at the end of the block
    unless it was settled. Cancelling the waiting task (or ``asyncio.timeout``) gives the
    reservation back whole.
    """

    def __aenter__(self) -> Awaitable[Permit]:
        """Waits for admission; the permit."""
    def __aexit__(self, *_exc: object) -> Awaitable[None]:
        """Releases the permit unless it was settled (or cancelled)."""
    def __await__(self) -> Generator[Any, None, Permit]:
        """``permit = await limiter.acquire(...)``: the permit, to end yourself."""
    def _submit(self, bridge: Bridge, future: asyncio.Future[Permit]) -> int:
        """Starts waiting on ``bridge``; ``future`` gets the permit. Its id on the bridge."""
    def _hold(self, permit: Permit) -> None:
        """Keeps the permit an ``async with`` waited for, for ``__aexit__``."""

@final
class Bridge:
    """The answers of one event loop's waiting acquisitions, carried to its thread."""

    def __new__(cls) -> Bridge: ...
    @staticmethod
    def calling() -> Bridge:
        """A bridge that wakes its loop by calling back (``wake_with``), not by a socket."""
    def fileno(self) -> int:
        """The descriptor the loop watches (``add_reader``); -1 where there is none."""
    @property
    def stale(self) -> bool:
        """Whether it was made before a fork."""
    def wake_with(self, wake: Callable[[], object]) -> None:
        """Wakes the loop by calling ``wake``, which schedules ``drain`` on it."""
    def drain(self) -> None:
        """Sets the futures of every answer that came back."""
    def cancel(self, id: int, over: asyncio.Future[None] | None = None) -> bool:
        """Drops acquisition ``id``; true when ``over`` will be set once it is gone."""
    def __len__(self) -> int:
        """Acquisitions waiting now."""

def set_waiting(
    enter: Callable[[Acquisition], Awaitable[Permit]],
    wait: Callable[[Acquisition], Awaitable[Permit]],
    ready: Callable[[Any], Awaitable[Any]],
) -> None:
    """Hands over the package's coroutine functions: for requests that wait, and an
    awaitable of a value at once."""

@final
class LimiterCore:
    """The Rust limiter under :class:`tokengate.Limiter`."""

    @staticmethod
    def from_limits(
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
    ) -> LimiterCore:
        """A limiter of the limits given."""
    @staticmethod
    def from_config(
        path: str | os.PathLike[str],
        *,
        redis: str | None = None,
        namespace: str | None = None,
        on_store_error: str | float | None = None,
    ) -> LimiterCore:
        """A limiter of a limits file."""
    @staticmethod
    def from_toml(
        text: str,
        *,
        source: str | None = None,
        redis: str | None = None,
        namespace: str | None = None,
        on_store_error: str | float | None = None,
    ) -> LimiterCore:
        """A limiter of a limits file's text."""
    @property
    def shared(self) -> bool:
        """Whether the limits live in Redis."""
    def try_acquire(
        self,
        *,
        model: str | None = None,
        tenant: str | None = None,
        input: int = 0,
        output: int = 0,
        requests: int = 1,
    ) -> Permit:
        """Admits now or raises :class:`tokengate.RateLimitExceeded`."""
    def acquisition(
        self,
        model: str | None,
        tenant: str | None,
        input: int,
        output: int,
        requests: int,
        timeout: float | None,
        /,
    ) -> Acquisition:
        """An asynchronous acquisition."""
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
        """The permit, waited for with the GIL released."""
    def observe(
        self,
        headers: Any = None,
        *,
        status: int = 200,
        model: str | None = None,
        tenant: str | None = None,
    ) -> int:
        """Learns from a reply's headers (and a 429)."""
    def pause(
        self, seconds: float, *, model: str | None = None, tenant: str | None = None
    ) -> None:
        """Pauses admissions."""
    def resume(self, *, model: str | None = None, tenant: str | None = None) -> None:
        """Lifts a pause."""
    def stats(self) -> dict[str, Any]:
        """The limiter's own budget's stats."""
    def key_stats(
        self, *, model: str | None = None, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        """The stats of a key's budgets."""
    def all_stats(self) -> list[dict[str, Any]]:
        """The stats of every budget."""
    def shared_state(
        self, *, model: str | None = None, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        """What the store holds now for a key's budgets."""
    def store_stats(self) -> dict[str, int]:
        """How the limiter has used its store."""
    def reload(self, path: str | os.PathLike[str]) -> None:
        """Puts a limits file in force."""

@final
class Pricer:
    """Prices model calls from their path and JSON body."""

    def __new__(cls, *, default_max_tokens: int | None = None) -> Pricer: ...
    def price(self, method: str, path: str, body: bytes) -> PricedCall | None:
        """The priced call, or ``None`` when it is not a model call."""

@final
class PricedCall:
    """One model call's price and what settling it needs."""

    @property
    def model(self) -> str | None:
        """The ``model`` the body names."""
    @property
    def requests(self) -> int:
        """Requests to reserve."""
    @property
    def input(self) -> int:
        """Input tokens to reserve."""
    @property
    def output(self) -> int:
        """Output tokens to reserve."""
    @property
    def stream(self) -> bool:
        """Whether the body asks for a streamed reply."""
    def meter(self, permit: Permit) -> ReplyMeter:
        """The meter that settles ``permit`` from the reply."""

@final
class ReplyMeter:
    """Settles one call's permit from its reply."""

    def reply(self, content_type: str | None) -> str:
        """``"stream"``, ``"json"`` or ``"none"`` (the permit released)."""
    def push(self, chunk: bytes) -> None:
        """Feeds bytes of a streamed reply."""
    def finish(self) -> bool:
        """Settles with what the stream showed; whether a usage was read."""
    def settle_json(self, body: bytes) -> bool:
        """Settles from a JSON body; whether a usage was read."""
    def refused(self) -> None:
        """Settles a 429: the request counted, its tokens back."""
    def unprocessed(self) -> None:
        """Settles a call that never reached the provider."""
    def release(self) -> None:
        """Ends the permit, its reservation standing."""
    @property
    def ended(self) -> bool:
        """Whether the permit has ended."""
