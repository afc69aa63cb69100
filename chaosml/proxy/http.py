"""Minimal HTTP/1.1 over asyncio streams, parsed with httptools (uvicorn's parser).

Just what the proxy needs on both sides: whole messages with bodies (chunked bodies are de-chunked
and re-sent with Content-Length), keep-alive and pipelining.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

import httptools

HOP_BY_HOP = {
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

    def on_message_begin(self) -> None:
        self.current, self.body, self.size = Message(), [], 0
        self.in_message = True

    def on_url(self, url: bytes) -> None:
        self.current.url += url

    def on_status(self, reason: bytes) -> None:
        self.current.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name, value))

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
        else:
            message.method = self.parser.get_method()  # type: ignore[union-attr]
        self.done.append(message)


class MessageReader:
    """Reads whole HTTP messages from a stream; ``None`` at a clean end of stream."""

    def __init__(self, reader: asyncio.StreamReader, *, response: bool = False) -> None:
        self.reader = reader
        self.collector = _Collector(response)

    async def read(self) -> Message | None:
        collector = self.collector
        while not collector.done:
            data = await self.reader.read(READ_SIZE)
            if not data:
                if collector.response and collector.in_message:  # a body read until close
                    collector.parser.feed_data(b"")
                    collector.in_message = False
                    if collector.done:
                        break
                return None
            collector.parser.feed_data(data)
        return collector.done.popleft()


class Connections:
    """Open server-side connections and their handler tasks, so a server can close them all."""

    def __init__(self) -> None:
        self._open: dict[asyncio.StreamWriter, asyncio.Task[object]] = {}

    def add(self, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[writer] = task

    def discard(self, writer: asyncio.StreamWriter) -> None:
        self._open.pop(writer, None)
        if not writer.is_closing():
            writer.close()

    async def close_all(self) -> None:
        tasks = list(self._open.values())
        for writer, task in list(self._open.items()):
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
    status: int, reason: bytes, headers: Headers, body: bytes, *, keep_alive: bool = True
) -> bytes:
    lines = [b"HTTP/1.1 " + str(status).encode() + b" " + reason]
    lines += [k + b": " + v for k, v in forwarded_headers(headers)]
    lines.append(b"Content-Length: " + str(len(body)).encode())
    if not keep_alive:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


REASONS = {
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    409: b"Conflict",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
}


def json_response(
    status: int, body: bytes, *, keep_alive: bool = True, content_type: bytes = b"application/json"
) -> bytes:
    headers = [(b"Content-Type", content_type)] if body or status != 204 else []
    return serialize_response(
        status, REASONS.get(status, b"Error"), headers, body, keep_alive=keep_alive
    )
