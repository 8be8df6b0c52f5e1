"""README's "Coming from another library": every tokengate block runs as written.

The blocks that start with `import tokengate` run (top-level `await` allowed), with
`call_model()` / `call_model_blocking()` standing for the provider call, the section's TOML
block as `limits.toml` in the working directory, and the suite's Redis for the address the
README shows. The other libraries' blocks are not installed here: they are only compiled.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Coming from another library"
README_REDIS = "redis://127.0.0.1:6379/0"
# aiolimiter, limits, pyrate-limiter, token-throttle, llmratelimiter, and the seeds'
# RateLimitContext and ModelRateLimiter (one section, one block).
SECTIONS = 6


def section() -> str:
    text = README.read_text()
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    rest = text.split(SECTION, 1)[1]
    return rest.split("\n## ", 1)[0]


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", section(), re.S | re.M)


OURS = [b for b in blocks("python") if b.startswith("import tokengate")]


def reply(prompt: int = 1_200, completion: int = 150) -> SimpleNamespace:
    """A reply with an OpenAI Chat Completions usage."""
    return SimpleNamespace(usage=SimpleNamespace(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion))


async def call_model(*args: Any, **kwargs: Any) -> SimpleNamespace:
    await asyncio.sleep(0)
    return reply()


def call_model_blocking(*args: Any, **kwargs: Any) -> SimpleNamespace:
    return reply()


def compiled(source: str, name: str) -> Any:
    return compile(source, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_every_library_has_a_tokengate_block() -> None:
    assert len(OURS) == SECTIONS
    for n, source in enumerate(blocks("python")):
        compiled(source, f"README block {n}")  # the other libraries' code: valid Python


@pytest.mark.parametrize("source", OURS, ids=[f"block{n}" for n in range(len(OURS))])
def test_the_block_runs(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        request: pytest.FixtureRequest) -> None:
    monkeypatch.chdir(tmp_path)
    (toml,) = blocks("toml")
    (tmp_path / "limits.toml").write_text(toml)
    if README_REDIS in source:
        source = source.replace(README_REDIS, request.getfixturevalue("redis_server"))
    names: dict[str, Any] = {"call_model": call_model, "call_model_blocking": call_model_blocking}
    result = eval(compiled(source, "README"), names)  # noqa: S307 - the README's own code
    if inspect.iscoroutine(result):
        asyncio.run(asyncio.wait_for(result, 30))
