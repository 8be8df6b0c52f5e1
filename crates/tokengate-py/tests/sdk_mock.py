"""A mock LLM provider for the SDK tests: OpenAI Chat Completions and Responses, Anthropic
Messages, streamed (server-sent events, chunked) and not, on a free loopback port, in a thread
of its own.

Each reply reports the usage set on the server (``input``, ``output``) and the rate-limit
headers set in ``headers``; ``fail_next(n, ...)`` answers the next ``n`` model calls with a 429
and a ``retry-after``; ``gzip`` compresses JSON replies; ``hold`` stops a stream after its first
events until the event is set (or ``HOLD_LIMIT`` passes), so that a client can close it early.
``delay`` makes each model call take that long, and ``most_at_once`` counts the most calls the
server was answering at once. Every request is recorded (path, headers, raw body).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip as gzip_module
import json
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import tokengate
from tokengate import _tokengate

# The longest a held stream waits for its release before it ends anyway.
HOLD_LIMIT = 10.0
# The longest a test's awaits may take (`bounded`).
BOUND = 10.0


@contextlib.asynccontextmanager
async def bounded(seconds: float = BOUND) -> AsyncIterator[None]:
    """``asyncio.timeout`` on Python 3.10 too: the block may take ``seconds`` at most, then
    it is cancelled and ``TimeoutError`` raised."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            yield
        return
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    handle = asyncio.get_running_loop().call_later(seconds, expire)
    try:
        yield
    except asyncio.CancelledError:
        if expired:
            raise TimeoutError(f"the block took more than {seconds} s") from None
        raise
    finally:
        handle.cancel()


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class MockProvider:
    """What the server answers; change the fields between calls."""

    input: int = 21
    output: int = 7
    headers: dict[str, str] = field(default_factory=dict)
    gzip: bool = False
    hold: threading.Event | None = None
    # Seconds each model call takes before its reply; the most calls seen at once.
    delay: float = 0.0
    most_at_once: int = 0
    _at_once: int = 0
    requests: list[Recorded] = field(default_factory=list)
    _fail: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail_next(self, n: int = 1, *, retry_after: str = "1", headers: dict[str, str] | None = None,
                  anthropic: bool = False) -> None:
        """Answers the next ``n`` model calls with a 429 carrying ``retry-after``."""
        if anthropic:
            body = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
        else:
            body = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
        reply = ({"retry-after": retry_after, **(headers or {})}, json.dumps(body).encode())
        with self._lock:
            self._fail.extend([reply] * n)

    def take_failure(self) -> tuple[dict[str, str], bytes] | None:
        with self._lock:
            return self._fail.pop(0) if self._fail else None


def _chat_events(mock: MockProvider, body: dict[str, Any]) -> Iterator[bytes]:
    model = body.get("model", "")
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model}
    for i, text in enumerate(["Hel", "lo", "!"]):
        delta: dict[str, Any] = {"content": text}
        if i == 0:
            delta["role"] = "assistant"
        yield _data({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    yield _data({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": mock.input, "completion_tokens": mock.output,
                 "total_tokens": mock.input + mock.output}
        yield _data({**base, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def _responses_usage(mock: MockProvider) -> dict[str, Any]:
    return {"input_tokens": mock.input, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": mock.output, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": mock.input + mock.output}


def _response(model: str, usage: dict[str, Any] | None, status: str = "completed") -> dict[str, Any]:
    return {
        "id": "resp_1", "object": "response", "created_at": 1, "model": model, "status": status,
        "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hello!", "annotations": []}]}],
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "usage": usage,
    }


def _responses_events(mock: MockProvider, body: dict[str, Any]) -> Iterator[bytes]:
    model = body.get("model", "")
    yield _event("response.created", {"type": "response.created", "sequence_number": 0,
                                      "response": _response(model, None, "in_progress")})
    yield _event("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 1,
                                                "item_id": "msg_1", "output_index": 0, "content_index": 0,
                                                "delta": "Hello!", "logprobs": []})
    yield _event("response.completed", {"type": "response.completed", "sequence_number": 2,
                                        "response": _response(model, _responses_usage(mock))})


def _message(mock: MockProvider, model: str) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": {"input_tokens": mock.input, "output_tokens": mock.output}}


def _anthropic_events(mock: MockProvider, body: dict[str, Any]) -> Iterator[bytes]:
    start = _message(mock, body.get("model", ""))
    start.update(content=[], stop_reason=None, usage={"input_tokens": mock.input, "output_tokens": 1})
    yield _event("message_start", {"type": "message_start", "message": start})
    yield _event("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}})
    for text in ["Hel", "lo", "!"]:
        yield _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": text}})
    yield _event("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield _event("message_delta", {"type": "message_delta",
                                   "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                   "usage": {"output_tokens": mock.output}})
    yield _event("message_stop", {"type": "message_stop"})


def _data(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _event(name: str, obj: Any) -> bytes:
    return f"event: {name}\n".encode() + _data(obj)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._json(200, {"object": "list", "data": []})

    def do_POST(self) -> None:
        mock = self.server.mock
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length)
        mock.requests.append(Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, raw))
        with mock._lock:
            mock._at_once += 1
            mock.most_at_once = max(mock.most_at_once, mock._at_once)
        try:
            if mock.delay:
                time.sleep(mock.delay)
            self._answer(mock, raw)
        finally:
            with mock._lock:
                mock._at_once -= 1

    def _answer(self, mock: MockProvider, raw: bytes) -> None:
        failure = mock.take_failure()
        if failure is not None:
            headers, payload = failure
            self._send(429, {**mock.headers, **headers}, payload)
            return
        body = json.loads(raw)
        model = body.get("model", "")
        path = self.path.split("?")[0]
        stream = body.get("stream") is True
        if path.endswith("/chat/completions"):
            if stream:
                self._stream(_chat_events(mock, body))
            else:
                self._json(200, {
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "Hello!"}}],
                    "usage": {"prompt_tokens": mock.input, "completion_tokens": mock.output,
                              "total_tokens": mock.input + mock.output},
                })
        elif path.endswith("/responses"):
            if stream:
                self._stream(_responses_events(mock, body))
            else:
                self._json(200, _response(model, _responses_usage(mock)))
        elif path.endswith("/messages"):
            if stream:
                self._stream(_anthropic_events(mock, body))
            else:
                self._json(200, _message(mock, model))
        else:
            self._json(404, {"error": {"message": f"no route {path}"}})

    def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, status: int, obj: Any) -> None:
        mock = self.server.mock
        payload = json.dumps(obj).encode()
        headers = dict(mock.headers)
        if mock.gzip and "gzip" in self.headers.get("accept-encoding", ""):
            payload = gzip_module.compress(payload)
            headers["content-encoding"] = "gzip"
        self._send(status, headers, payload)

    def _stream(self, events: Iterator[bytes]) -> None:
        mock = self.server.mock
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        for name, value in mock.headers.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            for i, event in enumerate(events):
                if i == 2 and mock.hold is not None:
                    mock.hold.wait(HOLD_LIMIT)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    mock: MockProvider

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (a stream closed early, a cancelled call) is expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def start() -> MockProvider:
    """A mock provider serving on a free loopback port; ``stop`` it."""
    server = _Server(("127.0.0.1", 0), _Handler)
    mock = MockProvider(server=server)
    server.mock = mock
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return mock


def stop(mock: MockProvider) -> None:
    if mock.hold is not None:
        mock.hold.set()
    assert mock.server is not None
    mock.server.shutdown()
    mock.server.server_close()


# ---- what the SDK tests share ---------------------------------------------------------------

# Limits far above what the tests send: every call is admitted at once unless a test says.
LIMITS: dict[str, Any] = dict(
    rpm=60_000, input_tpm=6_000_000, output_tpm=6_000_000, max_in_flight=8
)
PROMPT = "Summarise the plot of Hamlet in three sentences, for a reader who has not seen it. " * 4


def limits(limiter: tokengate.Limiter) -> dict[str, dict[str, Any]]:
    """A limiter's limits by dimension, from its stats."""
    return {limit["dimension"]: limit for limit in limiter.stats()["limits"]}


def priced(recorded: Recorded) -> _tokengate.PricedCall:
    """The price tokengate puts on a request the mock received."""
    call = _tokengate.Pricer().price("POST", recorded.path, recorded.body)
    assert call is not None
    return call
