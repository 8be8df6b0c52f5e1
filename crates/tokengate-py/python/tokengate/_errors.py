"""The exceptions tokengate raises. Every one is a :class:`TokengateError`."""

from __future__ import annotations

__all__ = [
    "AcquireTimeout",
    "ConfigError",
    "ForkError",
    "RateLimitExceeded",
    "RequestTooLarge",
    "StoreError",
    "TokengateError",
    "UnknownModel",
    "UsageError",
]


class TokengateError(Exception):
    """The base class of every error tokengate raises."""


class RateLimitExceeded(TokengateError):
    """A request that is not admitted now (``try_acquire``) or within its timeout.

    Attributes:
        dimension: the dimension that holds it back (``"requests"``, ``"input_tokens"``,
            ``"output_tokens"``, ``"tokens"``, ``"in_flight"``), or ``None`` when no one
            dimension does (a pause, a queue ahead).
        cost: the request's cost on that dimension, or ``None``.
        wait: seconds until it would be admitted, when known (``inf`` for never, by time
            alone); ``None`` when unknown (a full in-flight cap frees when a request ends).
        limit: the limit as written (``"500 per minute"``), when one holds it back.
        reason: ``"rate_limited"``, ``"in_flight"``, ``"paused"`` (a 429's retry-after),
            ``"queued"`` (others wait ahead, FIFO) or ``"timeout"``.
        waiters_ahead: requests queued ahead, for ``"queued"``.
        timeout: the timeout given, in seconds, for an :class:`AcquireTimeout`.
    """

    def __init__(
        self,
        message: str,
        *,
        dimension: str | None = None,
        cost: int | None = None,
        wait: float | None = None,
        limit: str | None = None,
        reason: str = "rate_limited",
        waiters_ahead: int | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(message)
        self.dimension = dimension
        self.cost = cost
        self.wait = wait
        self.limit = limit
        self.reason = reason
        self.waiters_ahead = waiters_ahead
        self.timeout = timeout


class AcquireTimeout(RateLimitExceeded, TimeoutError):
    """A request not admitted within its ``timeout``: raised at once when the wait it needs is
    known to exceed the timeout. Also a :class:`TimeoutError`."""


class RequestTooLarge(TokengateError, ValueError):
    """A request that can never be admitted: its cost on ``dimension`` is above what the limit
    admits at once (``capacity``). Split the request or raise the limit.

    Attributes:
        dimension: the dimension whose limit is too small.
        cost: the request's cost on it (``None`` when the figures overflow 64 bits).
        capacity: the most the limit admits at once.
        limit: the limit as written.
    """

    def __init__(
        self,
        message: str,
        *,
        dimension: str | None = None,
        cost: int | None = None,
        capacity: int | None = None,
        limit: str | None = None,
    ) -> None:
        super().__init__(message)
        self.dimension = dimension
        self.cost = cost
        self.capacity = capacity
        self.limit = limit


class UnknownModel(TokengateError, LookupError):
    """A model the limits file does not cover: admitting it would skip every model limit.

    Attributes:
        model: the model asked for.
        suggestion: the closest name the file lists, if one is close (a typo).
        listed: the models and families the file lists (the first 20).
        file: the limits file.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        suggestion: str | None = None,
        listed: list[str] | None = None,
        file: str = "",
    ) -> None:
        super().__init__(message)
        self.model = model
        self.suggestion = suggestion
        self.listed = listed or []
        self.file = file


class ConfigError(TokengateError, ValueError):
    """A mistake in a limits file, or in the limits given as arguments.

    ``str(error)`` reads ``FILE:LINE:COL: field `FIELD`: MESSAGE``.

    Attributes:
        file: the limits file, or ``None`` for arguments.
        line: the line (from 1), or ``None`` when the mistake is about the whole file.
        column: the column (from 1), or ``None``.
        field: the field as a TOML path (``models."gpt-4o".requests_per_minute``), or the
            argument's name; ``None`` when the mistake is in no one field (a syntax error).
        kind: ``"io"``, ``"syntax"``, ``"unknown_field"``, ``"wrong_type"``,
            ``"invalid_value"``, ``"missing"``, ``"duplicate"``, ``"overlap"``, ``"empty"``,
            ``"policy"``, ``"unsupported"`` or ``"store_changed"``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
        kind: str = "invalid_value",
    ) -> None:
        super().__init__(message)
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        self.kind = kind


class StoreError(TokengateError):
    """The store (Redis) could not decide: it failed under ``on_store_error="fail_closed"``
    (the default), or holds other limits for a budget than this process. The message says
    which, and what to do."""


class UsageError(TokengateError, ValueError):
    """A usage that cannot be read (``Permit.settle``), or a permit settled twice."""


class ForkError(TokengateError, RuntimeError):
    """A limiter whose limits live in a parent process's memory, used in a child after a
    fork. The message says what to do: make the limiter in each process, or share its
    limits through Redis."""
