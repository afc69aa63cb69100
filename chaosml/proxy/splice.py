"""Bodies moved from one socket to another inside the kernel: Linux ``splice`` through a pipe,
waited for on the event loop.

The raw TCP relay moves a direction's bytes this way while no toxic acts on it (``stream``). The
HTTP path moves an answer's body this way when nothing acts on it (no transport toxic on the
answer, no fault reading it, no shadow or recording copying it): only the framing
passes through Python (a chunk's size line, looked at where it waits and moved with its data
when the proxy would write it the same; the bytes read with the head), the body's bytes
never do. A chunked body leaves as it does otherwise, each chunk framed again by the proxy and
trailers dropped; a body with a Content-Length leaves byte for byte. Where ``splice`` is missing
(not Linux) or a connection has no socket of its own, bodies are relayed as they come.

The sockets are duplicated, so their transports stay as they are: the source's stops reading
meanwhile (what it had read is taken first), and the target's has written all it held before
the first byte is spliced after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaosml.proxy.http import Head
    from chaosml.proxy.upstream import Upstream

AVAILABLE = hasattr(os, "splice") and hasattr(os, "pipe2")
PIPE = 1024 * 1024  # the pipe's size, if the system allows: the most one splice carries
F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032  # fcntl's names for them came with Python 3.10
FROM = 64 * 1024  # bytes of a body left to read from which a pipe is worth setting up
STAGED = 64 * 1024  # bytes from Python (small chunks, say) sent on before more are read
LINE = 512  # bytes read at once for a chunk's size line (the data after them is spliced)
MAX_LINE = 64 * 1024  # a chunk's size line (or trailer line) longer than this is malformed
SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(;[^\r\n]*)?")  # a chunk's size, its extensions
SAME = re.compile(rb"[1-9a-f][0-9a-f]{0,15}")  # a size as the proxy writes it (not the last)


def buffered(reader: asyncio.StreamReader) -> bytearray:
    """What ``reader`` read and holds unread (asyncio's StreamReader keeps it in ``_buffer``)."""
    buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
    return buffer


def socket_of(writer: asyncio.StreamWriter) -> int | None:
    """The connection's socket, if it has one of its own (not TLS, not a pipe)."""
    if writer.get_extra_info("sslcontext") is not None:
        return None
    sock = writer.get_extra_info("socket")
    return None if sock is None else int(sock.fileno())


class Splicer:
    """One body's way from the ``source`` connection (``reader``'s) to ``target``."""

    def __init__(self, reader: asyncio.StreamReader, source: int, target: asyncio.StreamWriter):
        self.reader, self.target = reader, target
        self.loop = asyncio.get_running_loop()
        self.source = self.out = self.pipe_in = self.pipe_out = -1
        self.transport: Any = None  # the source's, paused while its socket is spliced
        self.held = 0  # bytes in the pipe
        self.staged: list[bytes] = []  # bytes from Python for the pipe, written in one go
        self.staged_size = 0
        self.pipe_out, self.pipe_in = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        copy = -1
        try:
            self.out = os.dup(target.get_extra_info("socket").fileno())
            copy = os.dup(source)
            self.sock = socket.socket(fileno=copy)  # (to peek at what it holds)
        except OSError:
            for fd in (self.out, copy, self.pipe_in, self.pipe_out):
                if fd >= 0:
                    os.close(fd)
            raise
        self.sock.setblocking(False)
        self.source = self.sock.fileno()
        with contextlib.suppress(OSError):  # above the system's limit: the pipe as it is
            fcntl.fcntl(self.pipe_in, F_SETPIPE_SZ, PIPE)
        self.size = fcntl.fcntl(self.pipe_in, F_GETPIPE_SZ)

    @classmethod
    def between(
        cls,
        reader: asyncio.StreamReader,
        source: asyncio.StreamWriter,
        target: asyncio.StreamWriter,
    ) -> Splicer | None:
        """A splicer from ``source``'s connection (read by ``reader``) to ``target``'s, None if
        either has no socket of its own."""
        fd = socket_of(source)
        if not AVAILABLE or fd is None or socket_of(target) is None:
            return None
        try:
            splicer = cls(reader, fd, target)
        except OSError:  # out of descriptors, say: relayed as they come
            return None
        splicer.transport = source.transport
        return splicer

    def take(self) -> bytes:
        """Stop the source's transport reading, and what it had read."""
        self.transport.pause_reading()
        buffer = buffered(self.reader)
        data = bytes(buffer)
        buffer.clear()
        return data

    def close(self) -> None:
        """Give the source's socket back to its transport."""
        self.sock.close()
        for fd in (self.out, self.pipe_in, self.pipe_out):
            if fd >= 0:
                os.close(fd)
        self.source = self.out = self.pipe_in = self.pipe_out = -1
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    async def _ready(self, fd: int, add: Callable[..., Any], remove: Callable[[int], Any]) -> None:
        future = self.loop.create_future()
        add(fd, _wake, future)
        try:
            await future
        finally:
            remove(fd)

    async def recv(self, count: int) -> bytes:
        """Up to ``count`` bytes from the source into Python (b"" at its end); while the source
        has none, what the pipe holds goes on, so nothing waits while the source is silent."""
        if self.staged_size >= STAGED:
            await self.flush()
        while True:
            try:
                return os.read(self.source, count)
            except BlockingIOError:
                await self._idle()

    async def fill(self, count: int) -> int:
        """Up to ``count`` bytes from the source into the pipe (0 at the source's end)."""
        while (moved := await self.fill_now(count)) is None:
            await self._idle()
        return moved

    async def peek(self, count: int) -> bytes:
        """Up to ``count`` bytes of what the source holds (b"" at its end), left there; waits
        until it holds something."""
        while True:
            if self.held * 2 >= self.size:
                await self.flush()
            try:
                return self.sock.recv(count, socket.MSG_PEEK)
            except BlockingIOError:
                await self._idle()

    async def move(self, count: int) -> None:
        """``count`` bytes the source holds into the pipe (``peek`` saw them; they fit)."""
        while count:
            moved = await self.fill(count)
            if not moved:
                raise ConnectionError("the stream ended inside a message")
            count -= moved

    async def fill_now(self, count: int) -> int | None:
        """Up to ``count`` bytes the source holds into the pipe (0 at its end), None if it holds
        none yet."""
        await self._stage()
        if self.held >= self.size:
            await self.flush()
        try:
            moved = os.splice(
                self.source, self.pipe_in, min(count, self.size - self.held), flags=MOVE
            )
        except BlockingIOError:
            return None
        self.held += moved
        return moved

    async def readable(self) -> None:
        """Until the source holds something, or ended."""
        await self._ready(self.source, self.loop.add_reader, self.loop.remove_reader)

    async def _idle(self) -> None:
        """The source has nothing yet: what the pipe holds goes on; then, if the source still
        has nothing, wait for it."""
        if self.held or self.staged:
            await self.flush()
        else:
            await self._ready(self.source, self.loop.add_reader, self.loop.remove_reader)

    def put(self, data: bytes) -> None:
        """``data`` from Python to the target, after what the pipe holds."""
        if data:
            self.staged.append(data)
            self.staged_size += len(data)

    async def _stage(self) -> None:
        """The staged bytes into the pipe."""
        if not self.staged:
            return
        view = memoryview(b"".join(self.staged))
        self.staged.clear()
        self.staged_size = 0
        while view:
            if self.held >= self.size:
                await self.flush()
            try:
                written = os.write(self.pipe_in, view[: self.size - self.held])
            except BlockingIOError:  # (the pipe's size was rounded down)
                await self.flush()
                continue
            self.held += written
            view = view[written:]

    async def flush(self) -> None:
        """Everything staged or in the pipe to the target."""
        await self._stage()
        if not self.held:
            return
        transport = self.target.transport
        if transport.get_write_buffer_size():  # what it holds leaves first
            low, high = transport.get_write_buffer_limits()
            transport.set_write_buffer_limits(0)  # drain waits until it is all sent
            try:
                await self.target.drain()
            finally:
                transport.set_write_buffer_limits(high, low)
        while self.held:
            try:
                self.held -= os.splice(self.pipe_out, self.out, self.held, flags=MOVE)
            except BlockingIOError:
                await self._ready(self.out, self.loop.add_writer, self.loop.remove_writer)


MOVE = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def worth_moving(conn: Upstream, answer: Head) -> bool:
    """Whether the body of ``answer`` (the head ``conn``'s parser gave last, with nothing of its
    body parsed) is to move by splice: framed by a length or chunked, and not all read already."""
    parser, length = conn.parser, answer.length
    if not parser.at_body or not AVAILABLE:
        return False
    read = buffered(conn.reader)
    if length is not None:  # (not worth a pipe if most of it was read with the head)
        return not answer.chunked and length - len(parser.pending) - len(read) >= FROM
    # (a body until close is read as before, and one read whole with its head most likely was)
    end = (parser.pending[-7:] + read[-7:]).endswith(b"\r\n0\r\n\r\n")
    return answer.chunked and not end


async def move_body(
    conn: Upstream, target: asyncio.StreamWriter, answer: Head, *, framed: bool
) -> bool:
    """The body of ``answer`` (the head ``conn``'s parser gave last, with nothing of its body
    parsed, ``worth_moving``) from ``conn`` to ``target``, chunks ``framed`` again if it is
    chunked (all but the last); False if it cannot move this way (then the parser reads it)."""
    parser, length = conn.parser, answer.length
    splicer = Splicer.between(conn.reader, conn.writer, target) if parser.at_body else None
    if splicer is None:
        parser.resume()
        return False
    try:
        data = parser.take_body() + splicer.take()
        try:
            if length is None:
                rest = await chunked_body(splicer, data, framed)
            else:
                rest = await body_with_length(splicer, data, length)
        except (ValueError, ConnectionError):  # what came before the fault is delivered
            with contextlib.suppress(OSError):
                await splicer.flush()
            raise
    finally:
        splicer.close()
    parser.restart(rest)  # (what followed the body: the connection is not reused)
    return True


async def body_with_length(splicer: Splicer, data: bytes, length: int) -> bytes:
    """A ``length``-byte body (``data``: what was read of it and after it) to the target; what
    followed it."""
    splicer.put(data[:length])
    left = length - min(len(data), length)
    while left:
        moved = await splicer.fill(left)
        if not moved:
            raise ConnectionError("the stream ended inside a message")
        left -= moved
    await splicer.flush()
    return data[length:]


async def chunked_body(splicer: Splicer, data: bytes, framed: bool) -> bytes:
    """A chunked body (``data``: what was read of it) to the target, its chunks framed again
    (``framed``; else their data only) up to its last one, which is left to the caller, and its
    trailers dropped; what followed it. Chunks already framed as the proxy frames them move as
    they came, size lines included; the others have their size line read and written anew."""
    due = False  # a chunk's data went on: its CRLF is next (in, and out if ``framed``)
    while True:
        if framed and not data:
            whole = next_chunk(await splicer.peek(HEAD), due)
            if whole:
                await splicer.move(whole)
                due = True
                continue
        if due:
            end, data = await _line(splicer, data)
            if end:
                raise ValueError("malformed HTTP: a chunk longer than its size")
            if framed:
                splicer.put(b"\r\n")
            due = False
        line, data = await _line(splicer, data)
        found = SIZE.fullmatch(line)
        if found is None:
            raise ValueError("malformed HTTP: invalid chunk size")
        size = int(found.group(1), 16)
        if not size:
            while True:  # trailers, up to the empty line
                line, data = await _line(splicer, data)
                if not line:
                    break
            await splicer.flush()
            return data
        if framed:
            splicer.put(b"%x\r\n" % size)
        splicer.put(data[:size])
        left, data = size - min(len(data), size), data[size:]
        while left:
            moved = await splicer.fill(left)
            if not moved:
                raise ConnectionError("the stream ended inside a message")
            left -= moved
        due = True


HEAD = 20  # bytes that hold a chunk's size line as the proxy writes it, and the CRLF before it


def next_chunk(data: bytes, due: bool) -> int:
    """How many bytes the next chunk takes (its size line, its data; the CRLF before it first if
    ``due``) when ``data``, the source's first bytes, shows the proxy would frame it as it is;
    0 if it would not (the last chunk, a size with extensions or leading zeros, a line not all
    there). The CRLF after its data is checked as the next chunk's ``due``."""
    start = 2 if due else 0
    if due and not data.startswith(b"\r\n"):
        return 0
    line = data.find(b"\r\n", start, start + 18)
    if line < 0 or SAME.fullmatch(data, start, line) is None:
        return 0
    return line + 2 + int(data[start:line], 16)


async def _line(splicer: Splicer, data: bytes) -> tuple[bytes, bytes]:
    """The line that starts ``data`` (read on as needed), without its CRLF, and what follows."""
    while (end := data.find(b"\r\n")) < 0:
        if len(data) > MAX_LINE:
            raise ValueError("malformed HTTP: chunk line too long")
        more = await splicer.recv(LINE)
        if not more:
            raise ConnectionError("the stream ended inside a message")
        data += more
    return data[:end], data[end + 2 :]
