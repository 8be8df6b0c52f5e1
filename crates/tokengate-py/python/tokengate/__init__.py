"""tokengate: keep programs that call LLM APIs under their provider's rate limits.

Requests, input, output and combined tokens per minute and per day, and requests in flight,
all at once; exact waits in FIFO order; reserve an estimate, settle with the real usage;
provider headers and 429s fed back; limits shared by processes through Redis. Every rule is
the Rust ``tokengate`` crate's, compiled into this package.

Quick start::

    import tokengate

    limiter = tokengate.Limiter(rpm=500, input_tpm=30_000, output_tpm=8_000, max_in_flight=10)

    async with limiter.acquire(input=1200, output=800) as permit:
        reply = await client.chat.completions.create(...)
        permit.settle(reply.usage)

    with limiter.acquire_blocking(input=1200, output=800, timeout=30) as permit:
        ...

    client = tokengate.wrap(openai.AsyncOpenAI(), limiter)   # every SDK call limited and settled
"""

from importlib.metadata import PackageNotFoundError, version

from ._decorators import limit
from ._errors import (
    AcquireTimeout,
    ConfigError,
    ForkError,
    RateLimitExceeded,
    RequestTooLarge,
    StoreError,
    TokengateError,
    UnknownModel,
    UsageError,
)
from ._limiter import Acquisition, Limiter, Permit
from ._sdk import AsyncTransport, Transport, wrap

try:
    __version__ = version("tokengate")
except PackageNotFoundError:  # pragma: no cover - imported from a source tree
    __version__ = "0+unknown"

__all__ = [
    "AcquireTimeout",
    "Acquisition",
    "AsyncTransport",
    "ConfigError",
    "ForkError",
    "Limiter",
    "Permit",
    "RateLimitExceeded",
    "RequestTooLarge",
    "StoreError",
    "TokengateError",
    "Transport",
    "UnknownModel",
    "UsageError",
    "limit",
    "wrap",
]
