"""The ``openai`` and ``anthropic`` SDKs, limited: httpx transports and :func:`wrap`.

Both SDKs send every call through an httpx client (``httpx2`` in their current releases,
``httpx`` in older ones), and both take one as ``http_client=``. A transport sits where that
client sends a request: it sees the method, path and JSON body of every call, and the status,
headers and body of every reply, streamed or not, whatever SDK method made it. So the
transports here price each model call from its body, wait for admission, send it, feed the
reply's rate-limit headers (and a 429) back to the limiter, and settle from the reply's
usage, with the Rust crate's own readers (``_tokengate.Pricer``, ``ReplyMeter``): nothing is
re-implemented here. They are duck-typed to both httpx flavours (an httpx client calls
``handle_request`` / ``handle_async_request`` and never checks the transport's class), and
build their responses with the classes of the request they are given.
"""

from __future__ import annotations

import importlib
import inspect
import threading
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

from . import _tokengate
from ._limiter import Limiter

__all__ = ["AsyncTransport", "Transport", "wrap"]

_Client = TypeVar("_Client")

# What the SDKs' own http clients allow (their DEFAULT_CONNECTION_LIMITS); an httpx client
# given a transport leaves its pool to the transport, so `wrap` sets them on the one it makes.
_MAX_CONNECTIONS = 1000
_MAX_KEEPALIVE = 100


def _httpx_of(obj: object) -> types.ModuleType:
    """The httpx flavour (``httpx`` or ``httpx2``) an httpx object belongs to."""
    return importlib.import_module(type(obj).__module__.partition(".")[0])


_STREAM_CLASSES: dict[str, tuple[type[Any], type[Any]]] = {}


def _stream_classes(httpx: types.ModuleType) -> tuple[type[Any], type[Any]]:
    """The metered body classes for ``httpx``: subclasses of its ``SyncByteStream`` and
    ``AsyncByteStream``, as its client checks."""
    made = _STREAM_CLASSES.get(httpx.__name__)
    if made is None:
        sync = type("MeteredStream", (_MeteredStream, httpx.SyncByteStream), {})
        async_ = type("AsyncMeteredStream", (_AsyncMeteredStream, httpx.AsyncByteStream), {})
        made = _STREAM_CLASSES[httpx.__name__] = (sync, async_)
    return made


class _MeteredStream:
    """A streamed reply's body: every chunk passes through the meter on its way to the SDK;
    the permit settles when the stream ends or is closed (the SDK closes it when a stream is
    consumed, broken off, or left by ``with``)."""

    def __init__(self, response: Any, meter: _tokengate.ReplyMeter) -> None:
        self._response = response
        self._meter = meter

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._response.iter_bytes():
            self._meter.push(chunk)
            yield chunk
        self._meter.finish()

    def close(self) -> None:
        try:
            self._response.close()
        finally:
            self._meter.finish()


class _AsyncMeteredStream:
    """:class:`_MeteredStream` for an async client."""

    def __init__(self, response: Any, meter: _tokengate.ReplyMeter) -> None:
        self._response = response
        self._meter = meter

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.aiter_bytes():
            self._meter.push(chunk)
            yield chunk
        self._meter.finish()

    async def aclose(self) -> None:
        try:
            await self._response.aclose()
        finally:
            self._meter.finish()


def _decoded_headers(response: Any) -> Any:
    """The reply's headers for its body as handed on, decoded: without ``content-encoding``
    (and the length of the encoded body) when the transport decoded it."""
    headers = response.headers.copy()
    if "content-encoding" in headers:
        del headers["content-encoding"]
        headers.pop("content-length", None)
    return headers


class _Gate:
    """What both transports share: the limiter, the pricer, the options."""

    def __init__(
        self,
        limiter: Limiter,
        transport: Any,
        tenant: str | None,
        tenant_header: str | None,
        timeout: float | None,
        feedback: bool,
        default_max_tokens: int | None,
    ) -> None:
        if not isinstance(limiter, Limiter):
            raise TypeError(f"limiter must be a tokengate.Limiter, not {type(limiter).__name__}")
        self.limiter = limiter
        self.inner = transport
        self._made = threading.Lock()
        self.tenant = tenant
        self.tenant_header = tenant_header
        self.timeout = timeout
        self.feedback = feedback
        self.pricer = _tokengate.Pricer(default_max_tokens=default_max_tokens)

    def read(self, request: Any) -> tuple[_tokengate.PricedCall | None, str | None]:
        """The request's price (``None``: not a model call) and tenant. The tenant header,
        if configured, is for the limiter, not the provider: it is removed."""
        tenant = self.tenant
        if self.tenant_header is not None and self.tenant_header in request.headers:
            tenant = request.headers[self.tenant_header].strip()
            del request.headers[self.tenant_header]
        try:
            body = request.content
        except Exception:  # a streamed upload (httpx's RequestNotRead): not a model call
            return None, tenant
        return self.pricer.price(request.method, request.url.path, body), tenant

    def cost(self, priced: _tokengate.PricedCall, tenant: str | None) -> dict[str, Any]:
        """The acquisition of a priced call, as keyword arguments."""
        return {
            "model": priced.model,
            "tenant": tenant,
            "input": priced.input,
            "output": priced.output,
            "requests": priced.requests,
            "timeout": self.timeout,
        }

    def sender(self, request: Any, name: str) -> Any:
        """The transport that sends: the one given, else the request's httpx flavour's
        ``name`` (``HTTPTransport``, ``AsyncHTTPTransport``), made once."""
        if self.inner is None:
            with self._made:
                if self.inner is None:
                    self.inner = getattr(_httpx_of(request), name)()
        return self.inner

    def observe(self, response: Any, model: str | None, tenant: str | None) -> None:
        if self.feedback:
            self.limiter.observe(
                response.headers, status=response.status_code, model=model, tenant=tenant
            )

    def answered(
        self,
        response: Any,
        meter: _tokengate.ReplyMeter,
        priced: _tokengate.PricedCall,
        tenant: str | None,
    ) -> str:
        """A model call's reply observed, and what comes next: ``"stream"`` (metered as it
        passes), ``"json"`` (settled from its body), else returned as it is (a 429, settled
        here, or a reply without usage)."""
        if response.status_code == 429:
            # Settled first, as the provider counts a refused call: the limits the 429
            # lowers then no longer take back the tokens of permits admitted before.
            meter.refused()
            self.observe(response, priced.model, tenant)
            return "refused"
        self.observe(response, priced.model, tenant)
        kind: str = meter.reply(response.headers.get("content-type"))
        return kind

    @staticmethod
    def streamed(request: Any, response: Any, stream: Any) -> Any:
        """The reply, its body read through ``stream`` (which meters it)."""
        return _httpx_of(request).Response(
            response.status_code,
            headers=_decoded_headers(response),
            stream=stream,
            extensions=response.extensions,
        )

    @staticmethod
    def settled(request: Any, response: Any, meter: _tokengate.ReplyMeter, body: bytes) -> Any:
        """The reply, its JSON body read whole and the call settled from it."""
        meter.settle_json(body)
        return _httpx_of(request).Response(
            response.status_code,
            headers=_decoded_headers(response),
            content=body,
            extensions=response.extensions,
        )

    def failed(self, request: Any, meter: _tokengate.ReplyMeter, error: BaseException) -> None:
        """The send raised: a connection never made gives the tokens back; anything else
        (a timeout, a broken connection, a cancellation) may have reached the provider."""
        httpx = _httpx_of(request)
        if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)):
            meter.unprocessed()
        else:
            meter.release()


class _Gated:
    """What both transports are made of: a :class:`_Gate`."""

    def __init__(
        self,
        limiter: Limiter,
        *,
        transport: Any = None,
        tenant: str | None = None,
        tenant_header: str | None = None,
        timeout: float | None = None,
        feedback: bool = True,
        default_max_tokens: int | None = None,
    ) -> None:
        self._gate = _Gate(
            limiter, transport, tenant, tenant_header, timeout, feedback, default_max_tokens
        )

    @property
    def limiter(self) -> Limiter:
        """The limiter."""
        return self._gate.limiter


class Transport(_Gated):
    """An httpx transport that limits the model calls sent through it with a
    :class:`Limiter`: for ``openai.OpenAI`` and ``anthropic.Anthropic`` (or any httpx
    ``Client``) calling OpenAI- or Anthropic-style endpoints::

        client = openai.OpenAI(http_client=openai.DefaultHttpxClient(
            transport=tokengate.Transport(limiter)))

    Each ``POST`` to ``.../chat/completions``, ``.../responses``, ``.../messages``,
    ``.../completions`` or ``.../embeddings`` is priced from its JSON body (the prompt's
    tokens counted, the output reserved up to its ``max_tokens``), waits for admission (this
    thread blocks, the GIL released), is sent, and settles from the reply's ``usage``: a
    JSON reply at once, a streamed one (server-sent events) when the stream ends or is
    closed, with what it showed. Every reply's rate-limit headers correct the limiter; a 429
    pauses it for its ``retry-after`` (the SDK's own retries then wait for admission again).
    Other requests pass through, their headers observed.

    Args:
        limiter: the limits to keep.
        transport: the transport that sends (default: the httpx flavour's
            ``HTTPTransport()``, made at the first request).
        tenant: the tenant every call is charged to (with a limits file's ``[tenants]``).
        tenant_header: a request header naming the call's tenant instead (set it per call
            with the SDK's ``extra_headers``); removed before the request is sent.
        timeout: seconds a call waits for admission at most (``AcquireTimeout``).
        feedback: whether replies' headers and 429s correct the limiter (default on).
        default_max_tokens: the output reserved for a request that sets no cap (default
            4,096).

    The limiter's errors (``AcquireTimeout``, ``RequestTooLarge``, ``UnknownModel``) are
    raised from the send; the SDKs retry them as connection errors and then raise their
    ``APIConnectionError``, whose ``__cause__`` is the tokengate error.
    """

    def handle_request(self, request: Any) -> Any:
        """Limits, sends and settles one request (called by the httpx client)."""
        gate = self._gate
        inner = gate.sender(request, "HTTPTransport")
        priced, tenant = gate.read(request)
        if priced is None:
            response = inner.handle_request(request)
            gate.observe(response, None, tenant)
            return response
        permit = gate.limiter.acquire_blocking(**gate.cost(priced, tenant))
        meter = priced.meter(permit)
        try:
            response = inner.handle_request(request)
        except BaseException as error:
            gate.failed(request, meter, error)
            raise
        return self._reply(request, response, meter, priced, tenant)

    def _reply(
        self,
        request: Any,
        response: Any,
        meter: _tokengate.ReplyMeter,
        priced: _tokengate.PricedCall,
        tenant: str | None,
    ) -> Any:
        gate = self._gate
        try:
            kind = gate.answered(response, meter, priced, tenant)
            if kind == "stream":
                stream = _stream_classes(_httpx_of(request))[0](response, meter)
                return gate.streamed(request, response, stream)
            if kind == "json":
                return gate.settled(request, response, meter, response.read())
            return response
        except BaseException:
            meter.release()
            response.close()
            raise

    def close(self) -> None:
        """Closes the transport that sends."""
        if self._gate.inner is not None:
            self._gate.inner.close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncTransport(_Gated):
    """:class:`Transport` for asyncio clients (``openai.AsyncOpenAI``,
    ``anthropic.AsyncAnthropic``, an httpx ``AsyncClient``)::

        client = openai.AsyncOpenAI(http_client=openai.DefaultAsyncHttpxClient(
            transport=tokengate.AsyncTransport(limiter)))

    A call waits for admission without blocking the event loop; cancelling it while it
    waits gives the reservation back, and cancelling it later ends its permit (the call may
    have reached the provider: its reservation stands). Arguments as :class:`Transport`
    (``transport``: the flavour's ``AsyncHTTPTransport()`` by default).
    """

    async def handle_async_request(self, request: Any) -> Any:
        """Limits, sends and settles one request (called by the httpx client)."""
        gate = self._gate
        inner = gate.sender(request, "AsyncHTTPTransport")
        priced, tenant = gate.read(request)
        if priced is None:
            response = await inner.handle_async_request(request)
            gate.observe(response, None, tenant)
            return response
        permit = await gate.limiter.acquire(**gate.cost(priced, tenant))
        meter = priced.meter(permit)
        try:
            response = await inner.handle_async_request(request)
        except BaseException as error:
            gate.failed(request, meter, error)
            raise
        return await self._reply(request, response, meter, priced, tenant)

    async def _reply(
        self,
        request: Any,
        response: Any,
        meter: _tokengate.ReplyMeter,
        priced: _tokengate.PricedCall,
        tenant: str | None,
    ) -> Any:
        gate = self._gate
        try:
            kind = gate.answered(response, meter, priced, tenant)
            if kind == "stream":
                stream = _stream_classes(_httpx_of(request))[1](response, meter)
                return gate.streamed(request, response, stream)
            if kind == "json":
                return gate.settled(request, response, meter, await response.aread())
            return response
        except BaseException:
            meter.release()
            await response.aclose()
            raise

    async def aclose(self) -> None:
        """Closes the transport that sends."""
        if self._gate.inner is not None:
            await self._gate.inner.aclose()

    async def __aenter__(self) -> AsyncTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def wrap(
    client: _Client,
    limiter: Limiter,
    *,
    tenant: str | None = None,
    tenant_header: str | None = None,
    timeout: float | None = None,
    feedback: bool = True,
    default_max_tokens: int | None = None,
) -> _Client:
    """A copy of an ``openai`` or ``anthropic`` client whose every call is limited by
    ``limiter``: priced from its body, admitted, settled from its usage (streamed or not),
    and corrected from the provider's rate-limit headers and 429s::

        client = tokengate.wrap(openai.AsyncOpenAI(), limiter)
        client = tokengate.wrap(anthropic.Anthropic(), limiter, tenant="acme")

    The copy (``client.with_options(http_client=...)``) keeps the client's key, base URL,
    timeouts and retries, and sends through a new http client of the SDK's defaults whose
    transport is :class:`AsyncTransport` (or :class:`Transport` for a sync client). That
    http client ignores proxies from the environment (``HTTPS_PROXY``: httpx would send
    through them around the transport); to use a proxy, or http client settings of your
    own, build the client with the transport yourself. Arguments as :class:`Transport`.
    """
    with_options = getattr(client, "with_options", None)
    sdk = importlib.import_module(type(client).__module__.partition(".")[0])
    if with_options is None or not hasattr(sdk, "DefaultAsyncHttpxClient"):
        raise TypeError(
            f"tokengate.wrap takes an openai or anthropic client, not a {type(client).__name__}: "
            "for another httpx client, pass transport=tokengate.Transport(limiter) "
            "(or AsyncTransport) to it"
        )
    options: dict[str, Any] = {
        "tenant": tenant,
        "tenant_header": tenant_header,
        "timeout": timeout,
        "feedback": feedback,
        "default_max_tokens": default_max_tokens,
    }
    asynchronous = inspect.iscoroutinefunction(getattr(type(client), "close", None))
    http_client_class = sdk.DefaultAsyncHttpxClient if asynchronous else sdk.DefaultHttpxClient
    httpx = _httpx_of_class(http_client_class)
    limits = httpx.Limits(max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_KEEPALIVE)
    if asynchronous:
        gate: Any = AsyncTransport(
            limiter, transport=httpx.AsyncHTTPTransport(limits=limits), **options
        )
    else:
        gate = Transport(limiter, transport=httpx.HTTPTransport(limits=limits), **options)
    http_client = http_client_class(transport=gate, trust_env=False)
    wrapped: _Client = with_options(http_client=http_client)
    return wrapped


def _httpx_of_class(cls: type[Any]) -> types.ModuleType:
    """The httpx flavour an SDK's http client class derives from."""
    for base in cls.__mro__:
        root = base.__module__.partition(".")[0]
        if root in ("httpx", "httpx2"):
            return importlib.import_module(root)
    raise TypeError(f"{cls.__name__} is not an httpx client")
