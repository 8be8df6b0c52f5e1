"""try_acquire, permits, settle in every form, and the errors of arguments."""

from __future__ import annotations

from typing import Any

import pytest

import tokengate


def limits(limiter: tokengate.Limiter) -> dict[str, dict[str, Any]]:
    return {limit["dimension"]: limit for limit in limiter.stats()["limits"]}


def test_try_acquire_admits_then_names_the_wait() -> None:
    limiter = tokengate.Limiter(rpm=60, output_tpm=60_000)
    permit = limiter.try_acquire(input=10, output=100)
    assert (permit.requests, permit.input, permit.output) == (1, 10, 100)
    with pytest.raises(tokengate.RateLimitExceeded) as denied:
        limiter.try_acquire()
    error = denied.value
    assert error.dimension == "requests"
    assert error.cost == 1
    assert error.reason == "rate_limited"
    assert error.limit == "60 per minute"
    # One a second, plus the safety margin: generous bounds.
    assert error.wait is not None and 0.5 < error.wait <= 1.5
    assert "retry in" in str(error)
    assert limiter.stats()["denied"] == 1


def test_in_flight_slot_is_freed_when_the_block_ends() -> None:
    limiter = tokengate.Limiter(rpm=6_000, max_in_flight=1)
    with limiter.try_acquire() as permit:
        assert limiter.stats()["in_flight"] == 1
        with pytest.raises(tokengate.RateLimitExceeded) as denied:
            limiter.try_acquire()
        assert denied.value.reason == "in_flight"
        assert denied.value.dimension == "in_flight"
        assert denied.value.wait is None
    assert permit.ended
    assert limiter.stats()["in_flight"] == 0
    limiter.try_acquire().release()


def test_settle_with_numbers_refunds_what_was_not_used() -> None:
    limiter = tokengate.Limiter(input_tpm=60_000, output_tpm=60_000)
    permit = limiter.try_acquire(input=1_000, output=800)
    assert (limits(limiter)["input_tokens"]["used"], limits(limiter)["output_tokens"]["used"]) == (1_000, 800)
    permit.settle(input=900, output=312)
    assert limits(limiter)["input_tokens"]["used"] == 900
    assert limits(limiter)["output_tokens"]["used"] == 312
    assert limiter.stats()["settled"] == 1


def test_release_keeps_the_reservation_and_cancel_gives_it_back() -> None:
    limiter = tokengate.Limiter(output_tpm=60_000)
    limiter.try_acquire(output=300).release()
    assert limits(limiter)["output_tokens"]["used"] == 300
    limiter.try_acquire(output=500).cancel()
    assert limits(limiter)["output_tokens"]["used"] == 300


def test_a_permit_settles_once() -> None:
    limiter = tokengate.Limiter(output_tpm=60_000)
    permit = limiter.try_acquire(output=100)
    permit.settle(output=10)
    with pytest.raises(tokengate.UsageError, match="settles once"):
        permit.settle(output=10)
    permit.release()  # nothing happens: already ended
    permit.cancel()
    assert limits(limiter)["output_tokens"]["used"] == 10


class OpenAIUsage:
    """The shape of ``openai.types.CompletionUsage`` (attributes, no model_dump)."""

    def __init__(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.total_tokens = prompt_tokens + completion_tokens
        self.prompt_tokens_details = None


class AnthropicUsage:
    """The shape of ``anthropic.types.Usage``."""

    def __init__(self, input_tokens: int, output_tokens: int, cache_read: int = 0) -> None:
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cache_creation_input_tokens = 0
        self.cache_read_input_tokens = cache_read


class Pydantic:
    """A pydantic-style object: read through ``model_dump()``."""

    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    def model_dump(self) -> dict[str, Any]:
        return dict(self.fields)


def settled(usage: Any) -> tuple[int, int]:
    limiter = tokengate.Limiter(input_tpm=60_000, output_tpm=60_000)
    limiter.try_acquire(input=1_000, output=800).settle(usage)
    return limits(limiter)["input_tokens"]["used"], limits(limiter)["output_tokens"]["used"]


def test_settle_with_an_openai_usage_keeps_the_output_reserved() -> None:
    # OpenAI counts max_tokens against the limit whatever the call produced: so does tokengate.
    assert settled(OpenAIUsage(900, 312)) == (900, 800)
    assert settled({"prompt_tokens": 900, "completion_tokens": 312}) == (900, 800)
    assert settled(OpenAIUsage(900, 1_200)) == (900, 1_200)


def test_settle_with_an_anthropic_usage_refunds_the_output() -> None:
    assert settled(AnthropicUsage(900, 312)) == (900, 312)
    assert settled({"input_tokens": 900, "output_tokens": 312}) == (900, 312)
    # Anthropic does not count cache reads against its input limit.
    assert settled(AnthropicUsage(30, 312, cache_read=5_000)) == (30, 312)


def test_settle_with_a_model_dump_or_a_whole_reply() -> None:
    assert settled(Pydantic(input_tokens=700, output_tokens=100)) == (700, 100)
    reply = {"object": "chat.completion", "choices": [],
             "usage": {"prompt_tokens": 600, "completion_tokens": 50}}
    assert settled(reply) == (600, 800)
    responses = Pydantic(object="response", usage={"input_tokens": 500, "output_tokens": 40,
                                                   "total_tokens": 540})
    assert settled(responses) == (500, 800)  # OpenAI Responses: output kept as reserved too


def test_settle_errors_say_what_is_wrong() -> None:
    limiter = tokengate.Limiter(output_tpm=60_000)
    permit = limiter.try_acquire(output=100)
    with pytest.raises(tokengate.UsageError, match="cannot read a usage from a object"):
        permit.settle(object())
    with pytest.raises(tokengate.UsageError, match="negative"):
        permit.settle({"prompt_tokens": -1, "completion_tokens": 2})
    with pytest.raises(tokengate.UsageError, match="not both"):
        permit.settle({"input_tokens": 1, "output_tokens": 1}, output=3)
    assert not permit.ended  # a failed settle leaves the permit as it was
    permit.settle(output=20)
    assert limits(limiter)["output_tokens"]["used"] == 20


def test_a_request_above_every_limit_is_too_large() -> None:
    limiter = tokengate.Limiter(input_tpm=30_000)
    with pytest.raises(tokengate.RequestTooLarge) as too_large:
        limiter.try_acquire(input=40_000)
    assert (too_large.value.dimension, too_large.value.cost, too_large.value.capacity) == (
        "input_tokens", 40_000, 30_000)
    assert isinstance(too_large.value, ValueError)
    with pytest.raises(tokengate.RequestTooLarge):
        limiter.acquire_blocking(input=40_000, timeout=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({}, "no limit"), ({"rpm": 0}, "amount is 0"), ({"max_in_flight": 0}, "max_in_flight is 0")],
)
def test_limits_that_make_no_policy_are_a_config_error(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(tokengate.ConfigError, match=message) as error:
        tokengate.Limiter(**kwargs)
    assert error.value.file is None
    assert isinstance(error.value, tokengate.TokengateError)


def test_a_bad_store_error_policy_is_a_config_error() -> None:
    with pytest.raises(tokengate.ConfigError, match="on_store_error") as error:
        tokengate.Limiter(rpm=10, redis="redis://127.0.0.1:1/0", on_store_error="sometimes")
    assert error.value.field == "on_store_error"
    with pytest.raises(tokengate.ConfigError):
        tokengate.Limiter(rpm=10, redis="redis://127.0.0.1:1/0", on_store_error=1.5)


def test_stats_are_plain_dicts() -> None:
    limiter = tokengate.Limiter(rpm=600, max_in_flight=3)
    with limiter.try_acquire():
        stats = limiter.stats()
    assert stats["budget"] == "limiter" and stats["kind"] == "limiter"
    assert (stats["in_flight"], stats["max_in_flight"], stats["admitted"]) == (1, 3, 1)
    requests = stats["limits"][0]
    assert requests["limit"] == "600 per minute" and requests["period"] == 60.0
    assert requests["used"] == 1
    assert set(stats["waits"]) == {"waited", "count", "total", "max", "p50", "p99"}
    assert limiter.store_stats() == {"calls": 0, "errors": 0, "fail_open": 0, "local_share": 0,
                                     "in_flight_polls": 0}
    assert not limiter.shared
