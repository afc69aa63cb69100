"""The control API's HTTP front: requests read within limits, who may call it, routing to the
operations, and the answers' bytes.

Limits, as Toxiproxy's API has them through Go's net/http: a request's line and headers up to
1 MiB (``MAX_HEADERS``, plus Go's 4 KiB of slack), else 431 and the connection closed, so a client
streaming headers cannot grow the server's memory. Toxiproxy's API sets no body limit (only its
15 s read timeout); chaosml caps a body at ``MAX_BODY`` (413), far above any control request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import math
import re
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httptools

from chaosml._net import split_address as _split
from chaosml.proxy.http import (
    CONTINUE,
    READ_SIZE,
    REASONS,
    Clock,
    Connections,
    Message,
    close_listener,
    serialize_response,
)
from chaosml.proxy.toxics import ApiError

TOKEN_REQUIRED = "refusing to bind the control API to {address} without a token (use --token)"
BROWSER = "refusing a request from a web browser: the control API is for test tools"
MAX_INT = 2**64  # seeds are 64-bit; anything larger is a mistake, not a value
MAX_HEADERS = 1 << 20  # Go's http.DefaultMaxHeaderBytes, which Toxiproxy's API keeps
LINGER_BYTES = 1 << 20  # read and dropped after refusing a request, at most
HEADER_SLACK = 4096  # what Go's server reads on top of MaxHeaderBytes before refusing
MAX_BODY = 16 << 20
HEADERS_TOO_LARGE = "request headers too large: the limit is 1 MiB"
BODY_TOO_LARGE = "request body too large: the limit is 16 MiB"
Handler = Callable[..., Awaitable[tuple[int, Any]]]


def is_loopback(address: str) -> bool:
    try:
        host, _ = _split(address)
    except ValueError as exc:
        raise ApiError(str(exc), 400) from exc
    return is_loopback_host(host)


def is_loopback_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """The name in a ``Host`` header: ``[::1]:8474`` -> ``::1``, ``localhost:8474`` ->
    ``localhost``, ``10.0.0.5`` -> ``10.0.0.5``."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if ":" in host else host


def parse_json(raw: bytes) -> Any:
    """Strict JSON: no NaN/Infinity, no number that overflows to one (``1e400``), no integer
    beyond 64 bits, so every answer stays readable by strict parsers (Go, JavaScript)."""

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"number out of range: {text[:40]}")
        return value

    def integer(text: str) -> int:
        value = int(text)
        if abs(value) >= MAX_INT:
            raise ValueError(f"number out of range: {text[:40]}")
        return value

    def constant(name: str) -> Any:
        raise ValueError(f"not a JSON value: {name}")

    try:
        return json.loads(raw, parse_float=finite, parse_int=integer, parse_constant=constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(f"bad request body: {exc}", 400) from None


def answer(
    status: int, body: bytes, *, keep_alive: bool, request_id: bytes, content_type: bytes
) -> bytes:
    headers = [(b"Content-Type", content_type)] if status != 204 else []
    return serialize_response(
        status,
        REASONS.get(status, b"Error"),
        headers,
        body if status != 204 else b"",
        keep_alive=keep_alive,
        request_id=request_id,
    )


def error_answer(error: ApiError, keep_alive: bool, request_id: bytes) -> bytes:
    """Toxiproxy's error body; a partly applied ``/populate`` also lists what it applied."""
    shown: dict[str, Any] = {"error": error.message, "status": error.status}
    proxies = getattr(error, "proxies", None)
    if proxies is not None:
        shown["proxies"] = proxies
    return answer(
        error.status,
        json.dumps(shown).encode(),
        keep_alive=keep_alive,
        request_id=request_id,
        content_type=b"application/json",
    )


class TooLarge(ValueError):
    """A request past a limit: answered with ``status``, then the connection is closed."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.error = ApiError(message, status)


class _Requests:
    """httptools callbacks: whole requests in order, the body within ``MAX_BODY``."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.done: deque[Message] = deque()
        self.in_message = False
        self.in_head = True  # the bytes fed count toward the header limit
        self.current = Message()
        self.body: list[bytes] = []
        self.size = 0
        self.expects_continue = False
        self.too_large: TooLarge | None = None

    def on_message_begin(self) -> None:
        self.current, self.body, self.size = Message(), [], 0
        self.in_message = self.in_head = True

    def on_url(self, url: bytes) -> None:
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        if (self.current.header(b"expect") or b"").lower() == b"100-continue":
            self.expects_continue = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_BODY:
            self.too_large = TooLarge(BODY_TOO_LARGE, 413)
            raise httptools.HttpParserError("body too large")
        self.body.append(body)

    def on_message_complete(self) -> None:
        message = self.current
        message.body = b"".join(self.body)
        message.keep_alive = self.parser.should_keep_alive()
        message.method = self.parser.get_method()
        self.in_message, self.in_head = False, True
        self.done.append(message)


class RequestReader:
    """Reads whole requests from a control-API connection; ``None`` at a clean end of stream.

    Malformed input raises ``ValueError`` and a request past a limit ``TooLarge``, each only
    once the requests before it (pipelined on the same connection) have been read. A request
    that expects ``100 Continue`` gets it as soon as its headers are in. The reader keeps the
    ``clock`` that ``Connections.sweep`` reads (idle, or a request half-sent)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, clock: Clock
    ) -> None:
        self.reader, self.writer, self.clock = reader, writer, clock
        self.requests = _Requests()
        self.error: ValueError | None = None
        self.head = 0  # bytes fed since the current request began (or the last one ended)

    async def read(self) -> Message | None:
        requests, clock = self.requests, self.clock
        if requests.done:
            return self._done()
        if self.error is not None:
            raise self.error
        now = asyncio.get_running_loop().time()
        if requests.in_message:
            clock.started = clock.started or now
        else:
            clock.idle_since = now
        while not requests.done:
            data = await self.reader.read(READ_SIZE)
            if not data:
                return None
            if clock.started is None:
                clock.started, clock.idle_since = asyncio.get_running_loop().time(), None
            self._feed(data)
        return self._done()

    def _done(self) -> Message:
        requests = self.requests
        self.clock.idle_since = None
        self.clock.started = asyncio.get_running_loop().time() if requests.in_message else None
        return requests.done.popleft()

    def _feed(self, data: bytes) -> None:
        requests = self.requests
        if requests.in_head:
            self.head += len(data)
        try:
            requests.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.error = ValueError("protocol upgrades are not served")
        except httptools.HttpParserError as exc:
            self.error = requests.too_large or ValueError(f"malformed HTTP: {exc}")
        if not requests.in_head:
            self.head = 0
        elif self.head > MAX_HEADERS + HEADER_SLACK and self.error is None:
            self.error = TooLarge(HEADERS_TOO_LARGE, 431)
        if self.error is not None and not requests.done:
            raise self.error
        if requests.expects_continue:
            requests.expects_continue = False
            if requests.in_message:
                self.writer.write(CONTINUE)


@dataclass(kw_only=True)
class Front:
    """The control API's listener: who may call it, and which operation answers what."""

    token: str | None
    routes: list[tuple[str, str, Handler]]
    metrics: Callable[[], bytes]  # the Prometheus text of ``GET /metrics``
    newline_after: Handler | None = None  # Toxiproxy ends this one's body with a newline
    _server: asyncio.base_events.Server | None = field(default=None, init=False)
    _table: list[tuple[str, re.Pattern[str], Handler]] = field(default_factory=list, init=False)
    _connections: Connections = field(default_factory=Connections, init=False)

    def __post_init__(self) -> None:
        self._table = [(m, re.compile(p + "$"), h) for m, p, h in self.routes]

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def start(self, host: str, port: int, *, idle: float, request: float) -> str:
        """Listen on ``host:port``; the address bound, as ``host:port`` (IPv6 in brackets)."""
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        bound = self._server.sockets[0].getsockname()
        self._connections.sweep(idle, request)
        return f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"

    async def stop(self) -> None:
        if self._server is not None:
            await close_listener(self._server)
            await self._connections.close_all()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clock = self._connections.add(writer)
        if clock is None:
            return
        requests = RequestReader(reader, writer, clock)
        try:
            while True:
                try:
                    request = await requests.read()  # the sweeper closes idle and half-sent
                except TooLarge as exc:
                    writer.write(error_answer(exc.error, False, b""))
                    await _linger(reader, writer)
                    break
                except ValueError:  # not HTTP, or a malformed request
                    writer.write(error_answer(ApiError("bad request", 400), False, b""))
                    break
                if request is None:
                    break
                writer.write(await self.respond(request))
                await writer.drain()
                if not request.keep_alive:
                    break
        except (OSError, asyncio.CancelledError):  # the client went away (reset, closed)
            pass
        except RuntimeError:  # uvloop: a write to a transport the client reset meanwhile
            if not writer.is_closing():
                raise
        finally:
            self._connections.discard(writer)
            writer.close()  # this side is done with it, whatever the client does next
            with contextlib.suppress(Exception):  # a reset's error, retrieved: nothing logged
                await writer.wait_closed()

    def _refused(self, request: Message) -> ApiError | None:
        """Why a request may not reach the API: a browser (Toxiproxy refuses those too, so a web
        page cannot drive it), a ``Host`` not naming this API (DNS rebinding), or no token."""
        agent = request.header(b"user-agent") or b""
        if (
            agent.startswith(b"Mozilla/")
            or request.header(b"origin") is not None
            or request.header(b"sec-fetch-mode") is not None
        ):
            return ApiError(BROWSER, 403)
        if self.token is not None:
            given = request.header(b"authorization") or b""
            if not hmac.compare_digest(given, f"Bearer {self.token}".encode()):
                return ApiError("missing or wrong token", 401)
            return None
        host = (request.header(b"host") or b"").decode("latin-1")
        if host and not is_loopback_host(_host_name(host)):
            return ApiError(
                f"refusing Host {host!r}: without a token the control API answers only to "
                "loopback names",
                403,
            )
        return None

    async def respond(self, request: Message) -> bytes:
        keep = request.keep_alive
        request_id = secrets.token_hex(10).encode()
        refused = self._refused(request)
        if refused is not None:
            return error_answer(refused, keep, request_id)
        path = request.url.split(b"?")[0].decode("latin-1")
        if path == "/metrics" and request.method == b"GET":
            return answer(
                200,
                self.metrics(),
                keep_alive=keep,
                content_type=b"text/plain; version=0.0.4",
                request_id=request_id,
            )
        method = request.method.decode("latin-1")
        matched = [(m, found, h) for m, p, h in self._table if (found := p.match(path))]
        handler = next(((found, h) for m, found, h in matched if method in m.split("|")), None)
        if handler is None:
            status = 405 if matched else 404
            error = ApiError("method not allowed" if matched else "not found", status)
            return error_answer(error, keep, request_id)
        found, function = handler
        try:
            try:
                names = {k: unquote(v, errors="strict") for k, v in found.groupdict().items()}
            except UnicodeDecodeError:
                raise ApiError("bad request: a name in the path is not UTF-8", 400) from None
            body = None
            if method in ("POST", "PATCH") and request.body.strip():
                body = parse_json(request.body)
            status, data = await _completed(function(body, **names))
        except ApiError as exc:
            return error_answer(exc, keep, request_id)
        text = json.dumps(data, allow_nan=False).encode() + (
            b"\n" if function == self.newline_after else b""
        )
        return answer(
            status, text, keep_alive=keep, request_id=request_id, content_type=b"application/json"
        )


async def _completed(operation: Awaitable[tuple[int, Any]]) -> tuple[int, Any]:
    """``operation``'s result; it runs to its end even if this request's connection is closed
    meanwhile (a create then either registers its proxy or leaves nothing bound)."""
    task = asyncio.ensure_future(operation)
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return await asyncio.shield(task)


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After refusing a request mid-stream: send the answer, stop writing, and read (and drop)
    what the client still sends for a moment, so it reads the answer instead of a reset (Go's
    server does the same): half a second, or until it sent ``LINGER_BYTES`` more, so a flood
    is cut off rather than drained."""
    with contextlib.suppress(OSError, RuntimeError, asyncio.TimeoutError):
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        dropped = 0
        async with asyncio.timeout(0.5):
            while dropped < LINGER_BYTES and (data := await reader.read(READ_SIZE)):
                dropped += len(data)
