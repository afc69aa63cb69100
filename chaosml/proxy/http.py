"""Minimal HTTP/1.1 over asyncio streams, parsed with httptools (uvicorn's parser).

Two readers. ``StreamParser`` (the proxy's data path) gives each message's head as soon as its
headers are in and then its body as it arrives, so a body can be relayed without being held; it
caps headers at ``MAX_HEAD`` (then ``HeadTooLarge``), answers ``Expect: 100-continue`` itself,
skips interim 1xx answers and hands over what follows an upgrade's head. ``MessageReader`` (the
control API) reads whole messages with their bodies (up to ``MAX_BODY``; headers also capped at
``MAX_HEAD``), keep-alive and pipelining included. HEAD answers are read as headers only
(``read_head``), whatever their Content-Length says.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import cast

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
STREAM_READ = 262144  # a streamed body's reads (and its reader's buffer): fewer, larger pieces
MAX_BODY = 64 * 1024 * 1024
MAX_HEAD = 1024 * 1024  # request or response headers, as Go's net/http (then 431)
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


HEAD_TOO_LARGE = "request headers too large"


class HeadTooLarge(ValueError):
    """A message's headers exceed ``MAX_HEAD`` bytes (answered 431)."""


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
        self.heading = False  # between a message's first byte and the end of its headers

    def on_message_begin(self) -> None:
        self.current, self.body, self.size = Message(), [], 0
        self.in_message = self.heading = True

    def on_url(self, url: bytes) -> None:
        self.current.url += url

    def on_status(self, reason: bytes) -> None:
        self.current.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.heading = False
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
        self.head_size = 0

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
        began = collector.heading
        try:
            collector.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.error = ValueError("protocol upgrades are not proxied")
        except httptools.HttpParserError as exc:
            self.error = ValueError(f"malformed HTTP: {exc}")
        # headers are bounded by what was fed while they were incomplete (the parser itself
        # would hold a header of any size); one read past the limit at most
        self.head_size = self.head_size + len(data) if began or collector.heading else 0
        if collector.heading and self.head_size > MAX_HEAD:
            self.error = HeadTooLarge(HEAD_TOO_LARGE)
        if self.error is not None and not collector.done:
            raise self.error
        if collector.expects_continue:
            collector.expects_continue = False
            if self.writer is not None and collector.in_message:
                self.writer.write(CONTINUE)

    async def read_head(self) -> Message | None:
        """A response to HEAD: status and headers only (its Content-Length describes the body a
        GET would have had). Interim 1xx responses are skipped."""
        return await read_head(self.reader)


@dataclass
class Clock:
    """When a connection's reader began waiting for a message, or began receiving one."""

    idle_since: float | None = None
    started: float | None = None


async def close_listener(server: asyncio.base_events.Server) -> None:
    """Stop accepting on ``server``, then close it. On asyncio's own loop a connection accepted
    just before ``close()`` gets a transport one loop turn later, whose creation fails on the
    closed server and leaks the socket unclosed, its client left hanging; so the listening
    sockets stop being read first, and the connections accepted by then get their transports
    (their handlers then find the server closed, and close them). uvloop has no such turn."""
    loop = asyncio.get_running_loop()
    if isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
        for sock in server.sockets:
            loop.remove_reader(sock.fileno())
        for _ in range(2):  # the accept task's first step, which builds the transport
            await asyncio.sleep(0)
    server.close()


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
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
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


@dataclass
class Head(Message):
    """A message's head, read before its body: how the body is framed, and whether the
    connection switches protocol after it."""

    version: str = "1.1"
    length: int | None = None  # Content-Length
    chunked: bool = False
    upgrade: bool = False  # ``Upgrade`` with ``Connection: upgrade`` (or a 101 answer)
    size: int = 0  # bytes of the head as received


class StreamParser:
    """HTTP/1 messages read incrementally from a stream: each message's head as soon as its
    headers are in (``head``), then its body as it arrives, de-chunked (``piece``).

    Malformed input raises ``ValueError`` (headers over ``max_head`` bytes: ``HeadTooLarge``), once
    what came before it has been read. After an upgrade's head, ``upgraded`` holds the bytes that
    followed it (the start of the other protocol). With a ``writer`` (the server side) a request
    that expects ``100 Continue`` gets it as soon as its headers are in; with a ``clock``, it
    marks when the reader waits for a request and when one is being received, for
    ``Connections.sweep``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        *,
        response: bool = False,
        writer: asyncio.StreamWriter | None = None,
        initial: bytes = b"",
        clock: Clock | None = None,
        max_head: int = MAX_HEAD,
    ) -> None:
        self.reader, self.writer, self.clock, self.max_head = reader, writer, clock, max_head
        self.response = response
        self.restart(initial)
        self.error: ValueError | None = None
        self.upgraded: bytes | None = None
        self.eof = False
        self.stop_at_body = False  # hold back what follows the next head (``at_body`` then)

    def restart(self, data: bytes = b"") -> None:
        """A fresh parser (``data``: what it has to parse first), after a body read elsewhere."""
        self.parser: httptools.HttpRequestParser | httptools.HttpResponseParser = (
            httptools.HttpResponseParser(self)
            if self.response
            else httptools.HttpRequestParser(self)
        )
        self.events: deque[Head | bytes | None] = deque()  # heads, body pieces, ends (None)
        self.pending = data
        self.current = Head()
        self.in_message = self.heading = self.interim = False
        self.at_body = False  # a head was given, and nothing of its body parsed
        self.head_size = 0
        self.tail = b""  # the last bytes fed while a head came in (its end may span two reads)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.current = Head()
        self.in_message = self.heading = True

    def on_url(self, url: bytes) -> None:
        self.current.url += url

    def on_status(self, reason: bytes) -> None:
        self.current.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        head, parser = self.current, self.parser
        self.heading = False
        head.keep_alive = parser.should_keep_alive()
        head.upgrade = parser.should_upgrade()
        head.version = parser.get_http_version()
        head.size = self.head_size
        for name, value in head.headers:
            lowered = name.lower()
            if lowered == b"content-length":
                head.length = int(value) if value.strip().isdigit() else None
            elif lowered == b"transfer-encoding":
                head.chunked = b"chunked" in value.lower()
        if self.response:
            head.status = parser.get_status_code()  # type: ignore[union-attr]
            if 100 <= head.status < 200 and head.status != 101:
                self.interim = True  # 100 Continue, 103 Early Hints: the final answer follows
                return
        else:
            head.method = parser.get_method()  # type: ignore[union-attr]
            expect = (head.header(b"expect") or b"").lower()
            if expect == b"100-continue" and self.writer is not None:
                self.writer.write(CONTINUE)
        self.events.append(head)

    def on_body(self, body: bytes) -> None:
        if body and not self.interim:
            self.events.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        if self.interim:
            self.interim = False
        else:
            self.events.append(None)

    def _feed(self, data: bytes) -> None:
        if self.stop_at_body and (self.heading or not self.in_message):
            data = self._feed_head(data)
            if self.at_body:
                self.pending = data
                return
        if data:  # (b"" would tell httptools the stream ended)
            self._feed_part(data)

    def _feed_head(self, data: bytes) -> bytes:
        """Feed ``data`` up to the end of the next final head (1xx ones are skipped), which
        httptools, strict about CRLF, ends at its first blank line; what follows it."""
        given = len(self.events)
        while data:
            tail = self.tail if self.heading else b""
            joined = tail + data
            end = joined.find(b"\r\n\r\n")
            if end < 0:
                self.tail = joined[-3:]
                return data
            cut, self.tail = end + 4 - len(tail), b""
            self._feed_part(data[:cut])
            data = data[cut:]
            if self.error is not None:
                return b""
            if self.upgraded is not None:  # what follows is another protocol's
                self.upgraded += data
                return b""
            if len(self.events) > given:  # the final head came: its body follows, or it ended
                head = self.events[-1]
                length = head.length if isinstance(head, Head) else None
                # (a body that came whole with its head is parsed with it)
                self.at_body = isinstance(head, Head) and (length is None or len(data) < length)
                return data
        return data

    def resume(self) -> None:
        """Parse what was held back after the head: its body is read here after all."""
        if self.at_body:
            data, self.pending = self.pending, b""
            if data:
                self._feed_part(data)
            self.at_body = False

    def take_body(self) -> bytes:
        """What was read after the head given last, whose body is read elsewhere from here on
        (then ``restart``)."""
        data, self.pending, self.at_body = self.pending, b"", False
        return data

    def _feed_part(self, data: bytes) -> None:
        self.at_body = False
        began = self.heading or not self.in_message
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgraded = data[exc.args[0] :] if exc.args else b""
        except httptools.HttpParserError as exc:
            self.error = ValueError(f"malformed HTTP: {exc}")
        # headers are bounded by what was fed while they were incomplete (the parser itself
        # would hold a header of any size): one read past the limit at most
        self.head_size = self.head_size + len(data) if began else len(data)
        if self.heading and self.head_size > self.max_head:
            self.error = HeadTooLarge(HEAD_TOO_LARGE)
        if not self.in_message and not self.heading:
            self.head_size = 0

    async def _more(self) -> bool:
        """Read and parse more of the stream; False at its end."""
        if self.error is not None:
            raise self.error
        if self.upgraded is not None:
            return False  # what follows is another protocol's
        data, self.pending = self.pending, b""
        if not data:
            data = await self.reader.read(STREAM_READ)
            if not data:
                self.eof = True
                return False
        clock = self.clock
        if clock is not None and not self.in_message:
            clock.started, clock.idle_since = asyncio.get_running_loop().time(), None
        self._feed(data)
        if clock is not None and self.in_message and clock.started is None:
            clock.started, clock.idle_since = asyncio.get_running_loop().time(), None
        return True

    async def head(self) -> Head | None:
        """The next message's head; None at a clean end of the stream."""
        if self.clock is not None and not self.events and not self.in_message:
            self.clock.idle_since, self.clock.started = asyncio.get_running_loop().time(), None
        while not self.events:
            if not await self._more():
                if self.in_message and self.response and not self.heading:
                    break
                if self.in_message:
                    raise ConnectionError("the stream ended inside a message")
                return None
        event = self.events.popleft()
        if not isinstance(event, Head):  # pragma: no cover - pieces are always read first
            raise ValueError("a message's body was left unread")
        return event

    async def piece(self) -> bytes | None:
        """The next piece of the current message's body; None at its end (for an answer
        without a length, at the end of the stream)."""
        while not self.events:
            if not await self._more():
                if self.response and self.in_message and not self.heading:
                    self.in_message = False
                    return None  # a body read until close
                raise ConnectionError("the stream ended inside a message")
            if self.clock is not None and self.events and self.in_message:
                self.clock.started = asyncio.get_running_loop().time()  # it keeps coming
        event = self.events.popleft()
        if event is None:
            if self.clock is not None:
                self.clock.started = None
            return None
        assert isinstance(event, bytes)
        return event

    def ready(self) -> tuple[list[bytes], bool]:
        """The body pieces already read (without waiting), and whether the body ended there."""
        pieces: list[bytes] = []
        while self.events and isinstance(self.events[0], bytes):
            pieces.append(cast(bytes, self.events.popleft()))
        ended = bool(self.events) and self.events[0] is None
        if ended:
            self.events.popleft()
            if self.clock is not None:
                self.clock.started = None
        return pieces, ended

    @property
    def clean(self) -> bool:
        """Nothing read beyond the messages taken (a connection fit to be reused)."""
        return not self.events and not self.in_message and not self.pending and not self.eof


async def read_head(reader: asyncio.StreamReader) -> Message | None:
    """A response to HEAD: status and headers only (its Content-Length describes the body a
    GET would have had). Interim 1xx responses are skipped."""
    while True:
        try:
            block = await reader.readuntil(b"\r\n\r\n")
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


FRAMING = {b"content-length", b"transfer-encoding"}
UPGRADE_KEEP = {b"connection", b"upgrade"}


def serialize_head(
    head: Message,
    *,
    length: int | None = None,
    chunked: bool = False,
    close: bool = False,
    upgrade: bool = False,
    request: bool = True,
) -> bytes:
    """A request's (``request``) or response's head with its hop-by-hop headers dropped, framed
    by ``length`` or ``chunked`` (neither: no body, or a body until close); ``upgrade`` keeps
    ``Connection`` and ``Upgrade`` (and all the rest) as they came."""
    if request:
        lines = [head.method + b" " + head.url + b" HTTP/1.1"]
    else:
        lines = [b"HTTP/1.1 " + str(head.status).encode() + b" " + head.reason]
    if upgrade:
        lines += [k + b": " + v for k, v in head.headers if k.lower() not in FRAMING]
    else:
        lines += [k + b": " + v for k, v in forwarded_headers(head.headers)]
    if length is not None:
        lines.append(b"Content-Length: " + str(length).encode())
    elif chunked:
        lines.append(b"Transfer-Encoding: chunked")
    if close and not upgrade:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked body (b"": the last chunk)."""
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b"0\r\n\r\n"
