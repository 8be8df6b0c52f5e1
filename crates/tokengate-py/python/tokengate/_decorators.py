"""``@tokengate.limit``: a function's calls limited by a :class:`Limiter`, sync or async."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, Union, cast

from ._limiter import Limiter, Permit

__all__ = ["limit"]

F = TypeVar("F", bound=Callable[..., Any])
Amount = Union[int, Callable[..., int]]
UsageOf = Callable[[Any], Any]


def _amount(amount: Amount, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    return amount(*args, **kwargs) if callable(amount) else amount


def _usage_in(result: Any) -> Any:
    """The usage a result carries (``result.usage`` or ``result["usage"]``), else ``None``."""
    if isinstance(result, dict):
        return result.get("usage")
    return getattr(result, "usage", None)


def _end(permit: Permit, result: Any, usage: UsageOf | None) -> None:
    used = usage(result) if usage is not None else _usage_in(result)
    if used is None:
        permit.release()
    else:
        permit.settle(used)


def limit(
    limiter: Limiter,
    *,
    model: str | None = None,
    tenant: str | None = None,
    input: Amount = 0,
    output: Amount = 0,
    timeout: float | None = None,
    usage: UsageOf | None = None,
) -> Callable[[F], F]:
    """Limits every call of the decorated function (``def`` or ``async def``) by ``limiter``.

    Each call waits for admission (asyncio or trio for a coroutine function; the thread, GIL
    released, for a plain one), runs, and ends its permit: settled with the usage of the
    result (``usage(result)`` if given, else ``result.usage`` or ``result["usage"]``, such as
    an OpenAI or Anthropic reply), or released with its reservation counted when there is none.

    ``input`` and ``output`` are token counts, or functions of the call's arguments that
    return them::

        @tokengate.limit(limiter, model="gpt-4o", input=lambda text: len(text) // 3, output=300)
        async def summarise(text: str) -> str: ...

    Errors as :meth:`Limiter.acquire`.
    """

    def decorate(function: F) -> F:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def limited_async(*args: Any, **kwargs: Any) -> Any:
                acquisition = limiter.acquire(
                    model=model,
                    tenant=tenant,
                    input=_amount(input, args, kwargs),
                    output=_amount(output, args, kwargs),
                    timeout=timeout,
                )
                permit = await acquisition
                try:
                    result = await function(*args, **kwargs)
                except BaseException:
                    permit.release()
                    raise
                _end(permit, result, usage)
                return result

            return cast(F, limited_async)

        @functools.wraps(function)
        def limited(*args: Any, **kwargs: Any) -> Any:
            permit = limiter.acquire_blocking(
                model=model,
                tenant=tenant,
                input=_amount(input, args, kwargs),
                output=_amount(output, args, kwargs),
                timeout=timeout,
            )
            try:
                result = function(*args, **kwargs)
            except BaseException:
                permit.release()
                raise
            _end(permit, result, usage)
            return result

        return cast(F, limited)

    return decorate
