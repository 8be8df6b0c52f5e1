"""@tokengate.limit on plain and async functions."""

from __future__ import annotations

import asyncio

import pytest

import tokengate


def output_used(limiter: tokengate.Limiter) -> int:
    return next(l["used"] for l in limiter.stats()["limits"] if l["dimension"] == "output_tokens")


def test_a_plain_function_is_limited_and_settled_from_its_usage() -> None:
    limiter = tokengate.Limiter(rpm=600, input_tpm=60_000, output_tpm=60_000)

    @tokengate.limit(limiter, input=lambda text: len(text), output=500)
    def summarise(text: str) -> dict[str, object]:
        return {"text": text[:3], "usage": {"input_tokens": len(text), "output_tokens": 20}}

    assert summarise.__name__ == "summarise"
    assert summarise("abcdef")["text"] == "abc"
    stats = limiter.stats()
    assert (stats["admitted"], stats["settled"]) == (1, 1)
    assert output_used(limiter) == 20


def test_a_result_without_usage_keeps_the_reservation() -> None:
    limiter = tokengate.Limiter(output_tpm=60_000)

    @tokengate.limit(limiter, output=300)
    def call() -> str:
        return "ok"

    assert call() == "ok"
    assert output_used(limiter) == 300
    assert limiter.stats()["settled"] == 0


def test_an_exception_releases_the_slot_and_propagates() -> None:
    limiter = tokengate.Limiter(rpm=600, max_in_flight=1)

    @tokengate.limit(limiter)
    def fails() -> None:
        assert limiter.stats()["in_flight"] == 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        fails()
    assert limiter.stats()["in_flight"] == 0


async def test_an_async_function_is_limited_and_settled() -> None:
    limiter = tokengate.Limiter(rpm=600, output_tpm=60_000, max_in_flight=2)
    seen: list[int] = []

    class Reply:
        def __init__(self, output: int) -> None:
            self.usage = {"input_tokens": 5, "output_tokens": output}

    @tokengate.limit(limiter, model="gpt-4o", output=400)
    async def ask(n: int) -> Reply:
        seen.append(limiter.stats()["in_flight"])
        await asyncio.sleep(0.01)
        return Reply(n)

    replies = await asyncio.wait_for(asyncio.gather(*(ask(n) for n in (10, 20, 30))), 10)
    assert [r.usage["output_tokens"] for r in replies] == [10, 20, 30]
    assert max(seen) <= 2
    assert limiter.stats()["settled"] == 3
    assert output_used(limiter) == 60


async def test_a_custom_usage_reader() -> None:
    limiter = tokengate.Limiter(output_tpm=60_000)

    @tokengate.limit(limiter, output=100, usage=lambda r: {"input_tokens": 0, "output_tokens": r})
    async def produce() -> int:
        return 7

    assert await produce() == 7
    assert output_used(limiter) == 7
