"""Minimal HTTP/1.1 over asyncio streams, parsed with httptools (uvicorn's parser).

Just what the proxy needs on both sides: whole messages with bodies (chunked bodies are de-chunked
and re-sent with Content-Length), keep-alive and pipelining, ``Expect: 100-continue`` (answered by the
proxy, which reads the whole body before forwarding), interim 1xx responses (skipped), and HEAD
responses (headers only, whatever their Content-Length says).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

import httptools

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
HOP_BY_HOP = {
    b"expect",
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"content-length",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"upgrade",
}
READ_SIZE = 65536
MAX_BODY = 64 * 1024 * 1024
Headers = list[tuple[bytes, bytes]]


@dataclass
class Message:
    """A parsed request (``method``/``url``) or response (``status``/``reason``)."""

    headers: Headers = field(default_factory=list)
    body: bytes = b""
    keep_alive: bool = True
    method: bytes = b""
    url: bytes = b""
    status: int = 0
    reason: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class _Collector:
    """httptools callbacks: collect complete messages in order."""

    def __init__(self, response: bool) -> None:
        self.parser: httptools.HttpRequestParser | httptools.HttpResponseParser = (
            httptools.HttpResponseParser(self) if response else httptools.HttpRequestParser(self)
        )
        self.response = response
        self.done: deque[Message] = deque()
        self.in_message = False
        self.current = Message()
        self.body: list[bytes] = []
        self.size = 0
        self.expects_continue = False

    def on_message_begin(self) -> None:
        self.current, self.body, self.size = Message(), [], 0
        self.in_message = True

    def on_url(self, url: bytes) -> None:
        self.current.url += url

    def on_status(self, reason: bytes) -> None:
        self.current.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if not self.response and (self.current.header(b"expect") or b"").lower() == b"100-continue":
            self.expects_continue = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_BODY:
            raise httptools.HttpParserError("body too large")
        self.body.append(body)

    def on_message_complete(self) -> None:
        message = self.current
        message.body = b"".join(self.body)
        self.in_message = False
        message.keep_alive = self.parser.should_keep_alive()
        if self.response:
            message.status = self.parser.get_status_code()  # type: ignore[union-attr]
            if 100 <= message.status < 200 and message.status != 101:
                return  # interim (100 Continue, 103 Early Hints): the final answer follows
        else:
            message.method = self.parser.get_method()  # type: ignore[union-attr]
        self.done.append(message)


class MessageReader:
    """Reads whole HTTP messages from a stream; ``None`` at a clean end of stream.

    Malformed input raises ``ValueError``, but only once the messages before it (pipelined on
    the same connection) have been read. With a ``writer`` (the server side), a request that
    expects ``100 Continue`` gets it as soon as its headers are in."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        *,
        response: bool = False,
        writer: asyncio.StreamWriter | None = None,
        initial: bytes = b"",
        clock: Clock | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.collector = _Collector(response)
        self.error: ValueError | None = None
        self.pending = initial
        self.clock = clock

    @property
    def partial(self) -> bool:
        """Part of a message has been read (a half-sent request, if reading stops here)."""
        return self.collector.in_message or bool(self.pending)

    async def read(self) -> Message | None:
        """The next message (None at a clean end of stream). With a ``clock``, marks when the
        reader started waiting and when a message's first bytes came, for ``Connections.sweep``."""
        collector, clock = self.collector, self.clock
        if collector.done:
            return self._done()
        if self.error is not None:
            raise self.error
        if clock is not None:
            now = asyncio.get_running_loop().time()
            if self.partial:
                clock.started = clock.started or now
            else:
                clock.idle_since = now
        if self.pending:
            data, self.pending = self.pending, b""
            self._feed(data)
        while not collector.done:
            data = await self.reader.read(READ_SIZE)
            if not data:
                if collector.response and collector.in_message:  # a body read until close
                    collector.parser.feed_data(b"")
                    collector.in_message = False
                    if collector.done:
                        break
                return None
            if clock is not None and clock.started is None:
                clock.started, clock.idle_since = asyncio.get_running_loop().time(), None
            self._feed(data)
        return self._done()

    def _done(self) -> Message:
        if self.clock is not None:
            self.clock.idle_since = None
            self.clock.started = (
                asyncio.get_running_loop().time() if self.collector.in_message else None
            )
        return self.collector.done.popleft()

    def _feed(self, data: bytes) -> None:
        collector = self.collector
        try:
            collector.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.error = ValueError("protocol upgrades are not proxied")
        except httptools.HttpParserError as exc:
            self.error = ValueError(f"malformed HTTP: {exc}")
        if self.error is not None and not collector.done:
            raise self.error
        if collector.expects_continue:
            collector.expects_continue = False
            if self.writer is not None and collector.in_message:
                self.writer.write(CONTINUE)

    async def read_head(self) -> Message | None:
        """A response to HEAD: status and headers only (its Content-Length describes the body a
        GET would have had). Interim 1xx responses are skipped."""
        while True:
            try:
                block = await self.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return None
            except asyncio.LimitOverrunError as exc:
                raise ValueError("response headers too large") from exc
            collector = _Collector(response=True)  # a header block alone: no body follows
            try:
                collector.parser.feed_data(block)
            except httptools.HttpParserError as exc:
                raise ValueError(f"malformed HTTP: {exc}") from exc
            message = collector.current
            message.status = collector.parser.get_status_code()  # type: ignore[union-attr]
            if not 100 <= message.status < 200:
                message.keep_alive = collector.parser.should_keep_alive()
                return message


@dataclass
class Clock:
    """When a connection's reader began waiting for a message, or began receiving one."""

    idle_since: float | None = None
    started: float | None = None


class Connections:
    """Open server-side connections and their handler tasks, so a server can close them all,
    and close the ones a client left idle or half-sent (``sweep``)."""

    def __init__(self) -> None:
        self._open: dict[asyncio.StreamWriter, tuple[asyncio.Task[object], Clock]] = {}
        self._sweeper: asyncio.Future[None] | None = None
        self.closed = False

    def add(self, writer: asyncio.StreamWriter) -> Clock | None:
        """Track ``writer``'s connection, with the clock its reader keeps; None (and closed) if
        the server already closed them all (a connection accepted just before, whose handler
        only starts now)."""
        if self.closed:
            writer.close()
            return None
        task = asyncio.current_task()
        assert task is not None
        clock = Clock()
        self._open[writer] = (task, clock)
        return clock

    def discard(self, writer: asyncio.StreamWriter) -> None:
        self._open.pop(writer, None)
        if not writer.is_closing():
            writer.close()

    def sweep(self, idle: float, whole: float) -> None:
        """Until ``close_all``: close connections idle for ``idle`` seconds, and answer 408 to
        those whose request has not arrived whole ``whole`` seconds after its first bytes. One
        task per server instead of a timer per read: the hot path only notes the time."""
        self._sweeper = asyncio.ensure_future(self._sweep(idle, whole))

    async def _sweep(self, idle: float, whole: float) -> None:
        loop = asyncio.get_running_loop()
        every = max(min(idle, whole) / 4, 0.02)
        while True:
            await asyncio.sleep(every)
            now = loop.time()
            for writer, (_, clock) in list(self._open.items()):
                if clock.started is not None and now - clock.started > whole:
                    error = b'{"error": "request timeout", "status": 408}'
                    writer.write(json_response(408, error, keep_alive=False))
                    writer.close()
                elif clock.idle_since is not None and now - clock.idle_since > idle:
                    writer.close()

    async def close_all(self) -> None:
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        tasks = [task for task, _ in self._open.values()]
        for writer, (task, _) in list(self._open.items()):
            writer.close()
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._open.clear()


def forwarded_headers(headers: Headers) -> Headers:
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]


def serialize_request(message: Message, body: bytes | None = None) -> bytes:
    body = message.body if body is None else body
    lines = [message.method + b" " + message.url + b" HTTP/1.1"]
    lines += [k + b": " + v for k, v in forwarded_headers(message.headers)]
    lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def serialize_response(
    status: int,
    reason: bytes,
    headers: Headers,
    body: bytes,
    *,
    keep_alive: bool = True,
    head: bool = False,
    request_id: bytes | None = None,
) -> bytes:
    """A response with ``body`` (for ``head``, none: the headers' own Content-Length is kept)."""
    lines = [b"HTTP/1.1 " + str(status).encode() + b" " + reason]
    lines += [k + b": " + v for k, v in forwarded_headers(headers)]
    if head:
        length = next((v for k, v in headers if k.lower() == b"content-length"), None)
        if length is not None:
            lines.append(b"Content-Length: " + length)
        body = b""
    elif status >= 200 and status not in (204, 304):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    if request_id is not None:
        lines.append(b"X-Toxiproxy-Request-Id: " + request_id)
    if not keep_alive:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


REASONS = {
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    409: b"Conflict",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
}


def json_response(
    status: int,
    body: bytes,
    *,
    keep_alive: bool = True,
    content_type: bytes = b"application/json",
    request_id: bytes | None = None,
) -> bytes:
    headers = [(b"Content-Type", content_type)] if body or status != 204 else []
    return serialize_response(
        status,
        REASONS.get(status, b"Error"),
        headers,
        body,
        keep_alive=keep_alive,
        request_id=request_id,
    )
