"""The anthropic SDK through tokengate's transports, against the local mock provider: every
call priced from its body, admitted, settled from its usage (streamed or not), corrected from
the anthropic-ratelimit-* headers and 429s."""

from __future__ import annotations

import asyncio
import datetime
import gc
import threading
from typing import Any

import anthropic
import pytest

import tokengate

import sdk_mock
from sdk_mock import LIMITS, PROMPT, limits, priced

MODEL = "claude-sonnet-4-5"


def sync_client(mock: sdk_mock.MockProvider, limiter: tokengate.Limiter, **options: Any) -> anthropic.Anthropic:
    base = anthropic.Anthropic(api_key="sk-ant-test", base_url=mock.base_url, max_retries=0, timeout=10)
    return tokengate.wrap(base, limiter, **options)


def async_client(mock: sdk_mock.MockProvider, limiter: tokengate.Limiter, max_retries: int = 0,
                 **options: Any) -> anthropic.AsyncAnthropic:
    base = anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=mock.base_url,
                                    max_retries=max_retries, timeout=10)
    return tokengate.wrap(base, limiter, **options)


def test_a_message_is_charged_its_price_and_settled_to_its_usage(mock: sdk_mock.MockProvider) -> None:
    limiter = tokengate.Limiter(**LIMITS)
    message = sync_client(mock, limiter).messages.create(
        model=MODEL, max_tokens=400, system="Be brief.", messages=[{"role": "user", "content": PROMPT}]
    )
    assert message.usage.input_tokens == mock.input
    call = priced(mock.requests[0])
    assert call.model == MODEL and call.output == 400 and call.input > 60
    used = limits(limiter)
    assert used["input_tokens"]["charged"] == call.input
    assert used["input_tokens"]["used"] == mock.input
    # Anthropic counts the output produced: the rest of max_tokens comes back.
    assert used["output_tokens"]["charged"] == 400
    assert used["output_tokens"]["used"] == mock.output
    stats = limiter.stats()
    assert (stats["admitted"], stats["settled"], stats["in_flight"]) == (1, 1, 0)


async def test_an_async_stream_settles_when_it_ends(mock: sdk_mock.MockProvider) -> None:
    limiter = tokengate.Limiter(**LIMITS)
    client = async_client(mock, limiter)
    async with sdk_mock.bounded():
        async with client.messages.stream(
            model=MODEL, max_tokens=300, messages=[{"role": "user", "content": PROMPT}]
        ) as stream:
            assert limiter.stats()["in_flight"] == 1
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
    assert text == "Hello!" and final.usage.output_tokens == mock.output
    stats = limiter.stats()
    assert (stats["in_flight"], stats["settled"]) == (0, 1)
    used = limits(limiter)
    assert (used["input_tokens"]["used"], used["output_tokens"]["used"]) == (mock.input, mock.output)


def test_a_sync_stream_settles_when_it_ends(mock: sdk_mock.MockProvider) -> None:
    limiter = tokengate.Limiter(**LIMITS)
    events = list(sync_client(mock, limiter).messages.create(
        model=MODEL, max_tokens=300, messages=[{"role": "user", "content": "Hi"}], stream=True
    ))
    assert events[-1].type == "message_stop"
    used = limits(limiter)
    assert (used["input_tokens"]["used"], used["output_tokens"]["used"]) == (mock.input, mock.output)
    assert limiter.stats()["in_flight"] == 0


async def test_a_stream_closed_early_settles_its_input_and_keeps_its_output(
    mock: sdk_mock.MockProvider,
) -> None:
    mock.hold = threading.Event()
    limiter = tokengate.Limiter(**LIMITS)
    client = async_client(mock, limiter)
    async with sdk_mock.bounded():
        stream = await client.messages.create(
            model=MODEL, max_tokens=300, messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        first = await stream.__anext__()
        assert first.type == "message_start"
        await stream.close()
    mock.hold.set()
    stats = limiter.stats()
    assert (stats["in_flight"], stats["settled"]) == (0, 1)
    used = limits(limiter)
    # message_start showed the input; the output seen is a lower bound: its reservation stands.
    assert used["input_tokens"]["used"] == mock.input
    assert used["output_tokens"]["used"] == 300


def test_a_stream_dropped_unclosed_frees_its_slot(mock: sdk_mock.MockProvider) -> None:
    mock.hold = threading.Event()
    limiter = tokengate.Limiter(**LIMITS)
    client = sync_client(mock, limiter)

    def read_one_event() -> None:
        stream = client.messages.create(
            model=MODEL, max_tokens=300, messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        assert next(iter(stream)).type == "message_start"
        assert limiter.stats()["in_flight"] == 1

    read_one_event()  # the stream is dropped, never closed
    gc.collect()
    mock.hold.set()
    assert limiter.stats()["in_flight"] == 0
    assert limits(limiter)["input_tokens"]["used"] == mock.input


async def test_a_task_cancelled_mid_stream_frees_its_slot(mock: sdk_mock.MockProvider) -> None:
    mock.hold = threading.Event()
    limiter = tokengate.Limiter(**LIMITS)
    client = async_client(mock, limiter)
    started = asyncio.Event()

    async def consume() -> None:
        stream = await client.messages.create(
            model=MODEL, max_tokens=300, messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        async for _ in stream:
            started.set()

    task = asyncio.create_task(consume())
    async with sdk_mock.bounded():
        await started.wait()
        assert limiter.stats()["in_flight"] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    gc.collect()
    mock.hold.set()
    assert limiter.stats()["in_flight"] == 0


def test_anthropic_headers_lower_the_limiter(mock: sdk_mock.MockProvider) -> None:
    reset = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=30)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    mock.headers = {
        "anthropic-ratelimit-requests-limit": "60000", "anthropic-ratelimit-requests-remaining": "59000",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-input-tokens-limit": "6000000",
        "anthropic-ratelimit-input-tokens-remaining": "5000000",
        "anthropic-ratelimit-input-tokens-reset": reset,
    }
    limiter = tokengate.Limiter(**LIMITS)
    sync_client(mock, limiter).messages.create(
        model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
    )
    used = limits(limiter)
    assert used["requests"]["used"] == 1000
    # Anthropic rounds its token figures to thousands: the provider's count is known to 500.
    assert 999_500 <= used["input_tokens"]["used"] <= 1_000_500


async def test_a_429_pauses_the_limiter(mock: sdk_mock.MockProvider) -> None:
    limiter = tokengate.Limiter(**LIMITS)
    mock.fail_next(1, retry_after="20", anthropic=True)
    with pytest.raises(anthropic.RateLimitError):
        async with sdk_mock.bounded():
            await async_client(mock, limiter).messages.create(
                model=MODEL, max_tokens=300, messages=[{"role": "user", "content": PROMPT}]
            )
    stats = limiter.stats()
    assert stats["throttled"] == 1 and stats["in_flight"] == 0
    assert stats["paused_for"] is not None and 15 < stats["paused_for"] <= 20
    used = limits(limiter)
    assert (used["requests"]["used"], used["input_tokens"]["used"], used["output_tokens"]["used"]) == (1, 0, 0)


def test_a_limiter_error_reaches_the_caller_through_the_sdk(mock: sdk_mock.MockProvider) -> None:
    limiter = tokengate.Limiter(rpm=60_000, output_tpm=60_000)
    # 100,000 output tokens can never fit under 60,000 a minute: nothing is sent.
    with pytest.raises((tokengate.RequestTooLarge, anthropic.APIConnectionError)) as raised:
        sync_client(mock, limiter).messages.create(
            model=MODEL, max_tokens=100_000, messages=[{"role": "user", "content": "Hi"}]
        )
    error = raised.value
    cause = error if isinstance(error, tokengate.RequestTooLarge) else error.__cause__
    assert isinstance(cause, tokengate.RequestTooLarge) and cause.dimension == "output_tokens"
    assert mock.requests == []
