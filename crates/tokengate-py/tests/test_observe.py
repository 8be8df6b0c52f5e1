"""Provider feedback: rate-limit headers lower the limiter, a 429 pauses it."""

from __future__ import annotations

import pytest

import tokengate


def test_openai_headers_lower_the_limiter_when_the_provider_counted_more() -> None:
    limiter = tokengate.Limiter(rpm=500)
    limiter.try_acquire().release()
    lowered = limiter.observe(
        {"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "480"})
    assert lowered == 19
    requests = limiter.stats()["limits"][0]
    assert (requests["used"], requests["lowered"], requests["reported_amount"]) == (20, 19, 500)


def test_headers_as_pairs_or_bytes() -> None:
    limiter = tokengate.Limiter(rpm=500)
    limiter.try_acquire().release()
    pairs = [(b"x-ratelimit-limit-requests", b"500"), (b"X-RateLimit-Remaining-Requests", b"490")]
    assert limiter.observe(pairs) == 9


def test_a_429_pauses_until_its_retry_after_or_a_resume() -> None:
    limiter = tokengate.Limiter(rpm=6_000)
    limiter.observe({"retry-after": "30"}, status=429)
    stats = limiter.stats()
    assert stats["throttled"] == 1
    assert stats["paused_for"] is not None and 25 < stats["paused_for"] <= 30
    with pytest.raises(tokengate.RateLimitExceeded) as error:
        limiter.try_acquire()
    assert error.value.reason == "paused" and error.value.wait is not None
    limiter.resume()
    limiter.try_acquire().release()


def test_a_retry_after_without_a_429_is_ignored() -> None:
    limiter = tokengate.Limiter(rpm=6_000)
    limiter.observe({"retry-after": "30"})
    assert limiter.stats()["paused_for"] is None
    limiter.try_acquire().release()


def test_pause_on_a_models_budget(tmp_path: object) -> None:
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "limits.toml"
    path.write_text("[models.gpt-4o]\nrequests_per_minute = 600\n[models.o3]\nrequests_per_minute = 600\n")
    limiter = tokengate.Limiter.from_config(path)
    limiter.observe({"retry-after-ms": "20000"}, status=429, model="gpt-4o")
    with pytest.raises(tokengate.RateLimitExceeded):
        limiter.try_acquire(model="gpt-4o")
    limiter.try_acquire(model="o3").release()  # other models go on
    limiter.resume(model="gpt-4o")
    limiter.try_acquire(model="gpt-4o").release()
