"""Limits files: keys, config errors with file, line and field, unknown models, reload."""

from __future__ import annotations

from pathlib import Path

import pytest

import tokengate

LIMITS = """
[account]
requests_per_minute = 6000

[models.gpt-4o]
requests_per_minute = 600
tokens_per_minute = 60_000

[tenants.acme]
requests_per_minute = 60
"""


def write(tmp_path: Path, text: str, name: str = "limits.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_request_is_charged_to_its_model_and_tenant_together(tmp_path: Path) -> None:
    limiter = tokengate.Limiter.from_config(write(tmp_path, LIMITS))
    assert not limiter.shared
    permit = limiter.try_acquire(model="gpt-4o", tenant="acme", input=500, output=200)
    budgets = {s["budget"]: s for s in limiter.key_stats(model="gpt-4o", tenant="acme")}
    assert set(budgets) == {"limiter", "model gpt-4o", "tenant acme"}
    assert budgets["model gpt-4o"]["kind"] == "model" and budgets["model gpt-4o"]["name"] == "gpt-4o"
    assert all(s["in_flight"] == 1 or s["max_in_flight"] is None for s in budgets.values())
    tokens = budgets["model gpt-4o"]["limits"][1]
    assert (tokens["dimension"], tokens["used"]) == ("tokens", 700)
    permit.settle(input=500, output=50)
    tokens = limiter.key_stats(model="gpt-4o", tenant="acme")[1]["limits"][1]
    assert tokens["used"] == 550
    # acme may send one a second; another tenant is not held back by acme's budget.
    with pytest.raises(tokengate.RateLimitExceeded) as denied:
        limiter.try_acquire(model="gpt-4o", tenant="acme")
    assert (denied.value.dimension, denied.value.limit) == ("requests", "60 per minute")
    limiter.try_acquire(model="gpt-4o", tenant="globex").release()
    assert len(limiter.all_stats()) >= 3


def test_a_config_error_names_file_line_column_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "[models.gpt-4o]\nrequests_per_minute = 0\n")
    with pytest.raises(tokengate.ConfigError) as error:
        tokengate.Limiter.from_config(path)
    e = error.value
    assert (e.file, e.line, e.column) == (str(path), 2, 23)
    assert e.field == "models.gpt-4o.requests_per_minute"
    assert e.kind == "invalid_value"
    assert str(e).startswith(f"{path}:2:23: field `models.gpt-4o.requests_per_minute`: ")
    assert isinstance(e, ValueError)


def test_an_unknown_field_and_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(tokengate.ConfigError) as error:
        tokengate.Limiter.from_config(write(tmp_path, "[models.gpt-4o]\nrequest_per_minute = 5\n"))
    assert (error.value.line, error.value.kind) == (2, "unknown_field")
    assert "requests_per_minute" in str(error.value)  # the message lists the fields allowed
    with pytest.raises(tokengate.ConfigError) as error:
        tokengate.Limiter.from_config(tmp_path / "absent.toml")
    assert (error.value.line, error.value.field, error.value.kind) == (None, None, "io")


def test_a_model_the_file_does_not_list_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    limiter = tokengate.Limiter.from_config(write(tmp_path, LIMITS))
    with pytest.raises(tokengate.UnknownModel) as error:
        limiter.try_acquire(model="gpt4o")
    assert (error.value.model, error.value.suggestion) == ("gpt4o", "gpt-4o")
    assert error.value.listed == ["gpt-4o"]
    assert isinstance(error.value, LookupError)


async def test_an_unknown_model_fails_an_async_acquisition_too(tmp_path: Path) -> None:
    limiter = tokengate.Limiter.from_config(write(tmp_path, LIMITS))
    with pytest.raises(tokengate.UnknownModel):
        async with limiter.acquire(model="gpt4o"):
            pass


def test_reload_changes_the_limits_and_keeps_them_on_a_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[models.gpt-4o]\nrequests_per_minute = 1\n")
    limiter = tokengate.Limiter.from_config(path)
    limiter.try_acquire(model="gpt-4o").release()
    with pytest.raises(tokengate.RateLimitExceeded):
        limiter.try_acquire(model="gpt-4o")
    bad = write(tmp_path, "[models.gpt-4o]\nrequests_per_minute = -3\n", "bad.toml")
    with pytest.raises(tokengate.ConfigError) as error:
        limiter.reload(bad)
    assert error.value.line == 2
    with pytest.raises(tokengate.RateLimitExceeded):
        limiter.try_acquire(model="gpt-4o")
    limiter.reload(write(tmp_path, "[models.gpt-4o]\nrequests_per_minute = 6000\n", "more.toml"))
    limiter.try_acquire(model="gpt-4o").release()


def test_limits_made_in_code_from_toml_text() -> None:
    # What keywords cannot say: a per-second limit, a bucket's algorithm, a burst, a margin
    # (none here: the counts below are exact at once).
    limiter = tokengate.Limiter.from_toml(
        """
        margin = "0s"

        [account]
        requests_per_second = { amount = 2, burst = 2 }

        [models.gpt-4o]
        limits = [{ dimension = "output_tokens", amount = 1_000, per = "1m",
                    algorithm = "token_bucket", burst = 1_000 }]
        """
    )
    limiter.try_acquire(model="gpt-4o", output=1_000).release()  # the whole burst at once
    with pytest.raises(tokengate.RateLimitExceeded) as denied:
        limiter.try_acquire(model="gpt-4o", output=1)
    assert denied.value.dimension == "output_tokens"
    limiter.try_acquire().release()  # the account's second request of this second
    with pytest.raises(tokengate.RateLimitExceeded) as denied:
        limiter.try_acquire()
    assert (denied.value.dimension, denied.value.limit) == ("requests", "2 per second")


def test_a_mistake_in_toml_text_names_its_source_line_and_field() -> None:
    with pytest.raises(tokengate.ConfigError) as error:
        tokengate.Limiter.from_toml("[account]\nrequests_per_minute = -5\n", source="settings.py")
    e = error.value
    assert (e.file, e.line, e.field) == ("settings.py", 2, "account.requests_per_minute")
    with pytest.raises(tokengate.ConfigError) as error:
        tokengate.Limiter.from_toml("[account]\nrequests_per_minute = 5\nburst = 2\n")
    assert (error.value.file, error.value.line) == ("<toml>", 3)
