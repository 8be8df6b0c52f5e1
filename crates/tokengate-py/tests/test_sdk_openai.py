"""The openai SDK through tokengate's transports, against the local mock provider: every call
priced from its body, admitted, settled from its usage (streamed or not), corrected from the
rate-limit headers and 429s."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import openai
import pytest

import tokengate

import sdk_mock
from sdk_mock import LIMITS, PROMPT, limits, priced



def sync_client(mock: sdk_mock.MockProvider, limiter: tokengate.Limiter, **options: Any) -> openai.OpenAI:
    base = openai.OpenAI(api_key="sk-test", base_url=mock.base_url + "/v1", max_retries=0, timeout=10)
    return tokengate.wrap(base, limiter, **options)


def async_client(mock: sdk_mock.MockProvider, limiter: tokengate.Limiter, max_retries: int = 0,
                 **options: Any) -> openai.AsyncOpenAI:
    base = openai.AsyncOpenAI(api_key="sk-test", base_url=mock.base_url + "/v1",
                              max_retries=max_retries, timeout=10)
    return tokengate.wrap(base, limiter, **options)


def test_a_chat_completion_is_charged_its_price_and_settled_to_its_usage(mock: sdk_mock.MockProvider) -> None:
    limiter = tokengate.Limiter(**LIMITS)
    client = sync_client(mock, limiter)
    reply = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": PROMPT}], max_tokens=300
    )
    assert reply.usage is not None and reply.usage.prompt_tokens == mock.input
    call = priced(mock.requests[0])
    # The body's price: its prompt counted (well above the 21 the mock reports), its cap reserved.
    assert call.model == "gpt-4o" and call.output == 300 and call.input > 60
    used = limits(limiter)
    assert used["input_tokens"]["charged"] == call.input
    assert used["input_tokens"]["used"] == mock.input
    assert used["input_tokens"]["refunded"] == call.input - mock.input
    # OpenAI counts max_tokens: the output reservation stays charged.
    assert used["output_tokens"]["used"] == 300
    assert used["requests"]["used"] == 1
    stats = limiter.stats()
    assert (stats["admitted"], stats["settled"], stats["in_flight"]) == (1, 1, 0)


async def test_an_async_stream_settles_when_consumed_not_before(mock: sdk_mock.MockProvider) -> None:
    limiter = tokengate.Limiter(**LIMITS)
    client = async_client(mock, limiter)
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], max_tokens=200,
        stream=True, stream_options={"include_usage": True},
    )
    # The reply's headers are in; its body is not read: the call is still in flight.
    assert limiter.stats()["in_flight"] == 1
    text, usage = "", None
    async with sdk_mock.bounded():
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            usage = chunk.usage or usage
    assert text == "Hello!" and usage is not None
    stats = limiter.stats()
    assert (stats["in_flight"], stats["settled"]) == (0, 1)
    call = priced(mock.requests[0])
    assert limits(limiter)["input_tokens"]["used"] == mock.input
    assert limits(limiter)["input_tokens"]["refunded"] == call.input - mock.input


async def test_a_stream_closed_early_frees_its_slot_and_keeps_its_reservation(
    mock: sdk_mock.MockProvider,
) -> None:
    mock.hold = threading.Event()
    limiter = tokengate.Limiter(**LIMITS)
    client = async_client(mock, limiter)
    async with sdk_mock.bounded():
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": PROMPT}], max_tokens=200,
            stream=True, stream_options={"include_usage": True},
        )
        first = await stream.__anext__()
        assert first.choices[0].delta.content == "Hel"
        assert limiter.stats()["in_flight"] == 1
        await stream.close()
    mock.hold.set()
    stats = limiter.stats()
    # Cut short before its usage: released, not settled; the whole reservation stands.
    assert (stats["in_flight"], stats["settled"]) == (0, 0)
    call = priced(mock.requests[0])
    assert limits(limiter)["input_tokens"]["used"] == call.input
    assert limits(limiter)["output_tokens"]["used"] == 200


def test_a_sync_stream_broken_off_settles_when_the_client_closes_it(mock: sdk_mock.MockProvider) -> None:
    mock.hold = threading.Event()
    limiter = tokengate.Limiter(**LIMITS)
    client = sync_client(mock, limiter)
    with client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=50, stream=True,
    ) as stream:
        for chunk in stream:
            assert chunk.choices[0].delta.content == "Hel"
            break
        assert limiter.stats()["in_flight"] == 1
    mock.hold.set()
    assert limiter.stats()["in_flight"] == 0


def test_responses_settle_from_the_body_and_from_the_stream(mock: sdk_mock.MockProvider) -> None:
    limiter = tokengate.Limiter(**LIMITS)
    client = sync_client(mock, limiter)
    reply = client.responses.create(model="gpt-4.1", input=PROMPT, max_output_tokens=100)
    assert reply.usage is not None and reply.usage.input_tokens == mock.input
    assert limits(limiter)["input_tokens"]["used"] == mock.input
    mock.input = 40
    events = [event.type for event in client.responses.create(
        model="gpt-4.1", input=PROMPT, max_output_tokens=100, stream=True)]
    assert events[-1] == "response.completed"
    assert limits(limiter)["input_tokens"]["used"] == 21 + 40
    assert limits(limiter)["output_tokens"]["used"] == 200
    stats = limiter.stats()
    assert (stats["settled"], stats["in_flight"]) == (2, 0)


def test_a_gzipped_reply_is_read_and_handed_on(mock: sdk_mock.MockProvider) -> None:
    mock.gzip = True
    limiter = tokengate.Limiter(**LIMITS)
    reply = sync_client(mock, limiter).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=10
    )
    assert reply.choices[0].message.content == "Hello!"
    assert limits(limiter)["input_tokens"]["used"] == mock.input


def test_rate_limit_headers_lower_the_limiter(mock: sdk_mock.MockProvider) -> None:
    # Another client on the key: the provider has counted 500 requests and 400,000 tokens.
    mock.headers = {
        "x-ratelimit-limit-requests": "60000", "x-ratelimit-remaining-requests": "59500",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "6000000", "x-ratelimit-remaining-tokens": "5600000",
        "x-ratelimit-reset-tokens": "4s",
    }
    limiter = tokengate.Limiter(rpm=60_000, tpm=6_000_000)
    sync_client(mock, limiter).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=10
    )
    used = limits(limiter)
    assert used["requests"]["used"] == 500
    assert used["tokens"]["used"] >= 400_000


def test_a_429_pauses_the_limiter_and_gives_the_tokens_back(mock: sdk_mock.MockProvider) -> None:
    limiter = tokengate.Limiter(**LIMITS)
    mock.fail_next(1, retry_after="20")
    with pytest.raises(openai.RateLimitError):
        sync_client(mock, limiter).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": PROMPT}], max_tokens=300
        )
    stats = limiter.stats()
    assert stats["throttled"] == 1 and stats["in_flight"] == 0
    assert stats["paused_for"] is not None and 15 < stats["paused_for"] <= 20
    used = limits(limiter)
    assert used["requests"]["used"] == 1
    assert (used["input_tokens"]["used"], used["output_tokens"]["used"]) == (0, 0)
    with pytest.raises(tokengate.RateLimitExceeded):
        limiter.try_acquire(input=1)


async def test_the_sdks_retry_after_a_429_waits_for_admission_again(mock: sdk_mock.MockProvider) -> None:
    limiter = tokengate.Limiter(**LIMITS)
    mock.fail_next(1, retry_after="1", headers={"retry-after-ms": "300"})
    client = async_client(mock, limiter, max_retries=1)
    async with sdk_mock.bounded():
        reply = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=10
        )
    assert reply.choices[0].message.content == "Hello!"
    stats = limiter.stats()
    assert (stats["admitted"], stats["throttled"], stats["in_flight"]) == (2, 1, 0)
    assert len(mock.requests) == 2


async def test_calls_wait_for_an_in_flight_slot(mock: sdk_mock.MockProvider) -> None:
    mock.hold = threading.Event()
    limiter = tokengate.Limiter(rpm=60_000, max_in_flight=1)
    client = async_client(mock, limiter, timeout=0.3)
    async with sdk_mock.bounded():
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=10, stream=True
        )
        # The slot is held by the open stream: the next call times out waiting for it, and
        # the SDK hands on the limiter's error as it is.
        with pytest.raises(tokengate.AcquireTimeout):
            await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=10
            )
        assert len(mock.requests) == 1
        mock.hold.set()
        async for _ in stream:
            pass
        await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=10
        )
    assert limiter.stats()["in_flight"] == 0
    assert len(mock.requests) == 2


async def test_concurrent_calls_never_exceed_the_in_flight_cap(mock: sdk_mock.MockProvider) -> None:
    mock.delay = 0.05
    limiter = tokengate.Limiter(rpm=60_000, max_in_flight=2)
    client = async_client(mock, limiter)

    async def call() -> None:
        await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=10
        )

    async with sdk_mock.bounded():
        await asyncio.gather(*(call() for _ in range(8)))
    assert len(mock.requests) == 8
    assert mock.most_at_once == 2
    stats = limiter.stats()
    assert (stats["admitted"], stats["settled"], stats["in_flight"]) == (8, 8, 0)
    assert stats["waits"]["count"] >= 6


@pytest.mark.parametrize("flavour", ["httpx", "httpx2"])
def test_the_transports_with_plain_httpx_clients(mock: sdk_mock.MockProvider, flavour: str) -> None:
    httpx = pytest.importorskip(flavour)
    limiter = tokengate.Limiter(**LIMITS)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 100,
            "stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client(transport=tokengate.Transport(limiter), base_url=mock.base_url) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert limiter.stats()["in_flight"] == 1
            assert b"[DONE]" in response.read()
        assert client.post("/v1/chat/completions", json={**body, "stream": False}).json()["usage"]
    stats = limiter.stats()
    assert (stats["settled"], stats["in_flight"]) == (2, 0)
    assert limits(limiter)["input_tokens"]["used"] == 2 * mock.input


async def test_the_async_transport_with_plain_httpx_clients(mock: sdk_mock.MockProvider) -> None:
    import httpx2

    limiter = tokengate.Limiter(**LIMITS)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100}
    async with sdk_mock.bounded():
        async with httpx2.AsyncClient(transport=tokengate.AsyncTransport(limiter), base_url=mock.base_url) as client:
            reply = await client.post("/v1/chat/completions", json=body)
    assert reply.json()["usage"]["prompt_tokens"] == mock.input
    assert limiter.stats()["settled"] == 1


def test_requests_that_are_not_model_calls_pass_through(mock: sdk_mock.MockProvider) -> None:
    limiter = tokengate.Limiter(**LIMITS)
    sync_client(mock, limiter).models.list()
    assert limiter.stats()["admitted"] == 0


def test_the_transport_given_to_an_http_client_of_ones_own(mock: sdk_mock.MockProvider) -> None:
    limiter = tokengate.Limiter(**LIMITS)
    http_client = openai.DefaultHttpxClient(transport=tokengate.Transport(limiter))
    client = openai.OpenAI(api_key="sk-test", base_url=mock.base_url + "/v1", max_retries=0,
                           http_client=http_client)
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=5)
    assert limiter.stats()["settled"] == 1
    client.close()


def test_tenants_from_the_option_and_from_a_header(mock: sdk_mock.MockProvider, tmp_path: Any) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(
        "[models.gpt-4o]\nrequests_per_minute = 60000\ntokens_per_minute = 6000000\n"
        "[defaults.tenant]\ntokens_per_minute = 600000\n"
    )
    limiter = tokengate.Limiter.from_config(path)
    client = sync_client(mock, limiter, tenant="acme", tenant_header="x-tenant")
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=5)
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=5,
                                   extra_headers={"x-tenant": "globex"})
    budgets = {s["budget"]: s for s in limiter.all_stats()}
    assert budgets["tenant acme"]["admitted"] == 1
    assert budgets["tenant globex"]["admitted"] == 1
    assert budgets["model gpt-4o"]["admitted"] == 2
    # The header is the limiter's, not the provider's.
    assert "x-tenant" not in mock.requests[1].headers


def test_wrap_refuses_what_is_not_an_sdk_client() -> None:
    with pytest.raises(TypeError, match="openai or anthropic client"):
        tokengate.wrap(object(), tokengate.Limiter(**LIMITS))
