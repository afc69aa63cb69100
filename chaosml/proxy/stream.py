"""Raw TCP through a proxy: bytes relayed both ways, transport toxics acted out on each direction
with Toxiproxy's semantics (``upstream``: client to server, ``downstream``: server to client).

Each chunk is delayed by ``latency`` ± ``jitter`` from when it arrived (so latency does not cut
throughput), cut to ``slicer`` pieces, paced to ``bandwidth``; ``limit_data`` closes the connection
once that many bytes passed in its direction; ``timeout`` drops the data and closes after its
timeout (never, with 0, until it is removed); ``reset_peer`` resets after its timeout; ``slow_close``
delays the close. Toxicity is rolled once per connection and toxic. Toxics added, changed or removed
while a connection is open apply from its next chunk. Payload toxics and ``http_error`` have no
meaning on a raw stream: each is counted once per connection as skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
from typing import TYPE_CHECKING, cast

import numpy as np

from chaosml._net import split_address
from chaosml.faults.transport import Effect, slices
from chaosml.proxy.http import READ_SIZE
from chaosml.proxy.toxics import STREAMS, Toxic, effect_of

if TYPE_CHECKING:
    from chaosml.proxy.server import Proxy

QUEUE = 64  # chunks read ahead of a slow direction (bounded: a paced stream pushes back)
WATCH = 0.01  # seconds between checks of the timeout and reset_peer toxics


def acts_on_streams(toxic: Toxic) -> bool:
    return "tcp" in toxic.fault.places()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed peer would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def write_shaped(
    writer: asyncio.StreamWriter,
    data: bytes,
    rate: int,
    cut: tuple[int, int, float] | None,
    rng: np.random.Generator,
) -> None:
    """Write ``data`` cut into ``slicer`` pieces (``cut``: average size, variation, delay) and
    paced to ``rate`` KB/s (``bandwidth``; 0: unpaced)."""
    pieces = [data] if cut is None else slices(data, cut[0], cut[1], rng)
    for piece in pieces:
        if rate:
            step = max(rate * 100, 1)  # a tenth of a second's worth
            for start in range(0, len(piece), step):
                chunk = piece[start : start + step]
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(len(chunk) / (rate * 1000))
        elif piece:
            writer.write(piece)
            await writer.drain()
        if cut is not None and cut[2]:
            await asyncio.sleep(cut[2])


class Link:
    """One client connection relayed raw to the proxy's upstream."""

    def __init__(
        self,
        proxy: Proxy,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        first: bytes = b"",
    ) -> None:
        self.proxy, self.reader, self.writer, self.first = proxy, reader, writer, first
        self.rolled: dict[str, bool] = {}
        self.skipped: set[str] = set()
        self.sent = dict.fromkeys(STREAMS, 0)
        self.since: dict[str, float] = {}  # toxic name: when this link first saw it

    def toxics(self, stream: str) -> list[Toxic]:
        """The proxy's active toxics on ``stream`` that hit this connection."""
        hit = []
        for toxic in self.proxy.active():
            if toxic.stream != stream:
                continue
            if not acts_on_streams(toxic):
                if toxic.name not in self.skipped:
                    self.skipped.add(toxic.name)
                    metrics = self.proxy.metrics
                    metrics.series(metrics.skipped, self.proxy.name, toxic.type).inc()
                    if toxic.hits():
                        toxic.evidence.skip("raw TCP connection (not HTTP)")
                continue
            if toxic.name not in self.rolled:
                self.rolled[toxic.name] = toxic.hits()
                if self.rolled[toxic.name]:
                    metrics = self.proxy.metrics
                    metrics.series(metrics.toxics, self.proxy.name, toxic.type).inc()
                    toxic.evidence.act()
            if self.rolled[toxic.name]:
                hit.append(toxic)
        return hit

    def effect(self, stream: str, size: int) -> Effect:
        return effect_of(self.toxics(stream), size)

    async def run(self) -> None:
        try:
            host, port = split_address(self.proxy.upstream)
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        except (OSError, ValueError):
            metrics = self.proxy.metrics
            metrics.series(metrics.upstream_errors, self.proxy.name).inc()
            return
        pumps = [
            asyncio.ensure_future(self.pump("upstream", self.reader, upstream_writer, self.first)),
            asyncio.ensure_future(self.pump("downstream", upstream_reader, self.writer)),
        ]
        watch = asyncio.ensure_future(self.watch(upstream_writer))
        pending: set[asyncio.Future[None]] = {*pumps, watch}
        try:
            while not all(p.done() for p in pumps):
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if watch in done or any(t.exception() is not None for t in done):
                    break  # a toxic (or an error) ends the connection both ways
        finally:
            upstream_writer.close()  # first: the gather below may itself be cancelled
            for task in [*pumps, watch]:
                task.cancel()
            await asyncio.gather(*pumps, watch, return_exceptions=True)

    async def pump(
        self,
        stream: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        first: bytes = b"",
    ) -> None:
        """Relay one direction until its reader ends, then half-close the other side."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE)

        async def read() -> None:
            if first:
                await queue.put((loop.time(), first))
            with contextlib.suppress(OSError):
                while chunk := await reader.read(READ_SIZE):
                    await queue.put((loop.time(), chunk))
            await queue.put(None)

        reading = asyncio.ensure_future(read())
        try:
            while (item := await queue.get()) is not None:
                await self.deliver(stream, *item, writer)
            effect = self.effect(stream, 0)
            if effect.close_delay:
                await asyncio.sleep(effect.close_delay)
            with contextlib.suppress(OSError, RuntimeError):
                writer.write_eof()  # half-close: the other direction may still be answering
        finally:
            reading.cancel()

    async def deliver(
        self, stream: str, arrived: float, data: bytes, writer: asyncio.StreamWriter
    ) -> None:
        effect = self.effect(stream, len(data))
        if effect.hold is not None:
            return  # timeout: the data goes nowhere
        if effect.delay:
            wait = arrived + effect.delay - asyncio.get_running_loop().time()
            if wait > 0:
                await asyncio.sleep(wait)
        if effect.limit is not None:
            data = data[: max(effect.limit - self.sent[stream], 0)]
        await write_shaped(writer, data, effect.rate, effect.slices, self.proxy.rng)
        self.sent[stream] += len(data)
        if effect.limit is not None and self.sent[stream] >= effect.limit:
            raise _Closed("limit_data")

    async def watch(self, upstream: asyncio.StreamWriter) -> None:
        """Act out the toxics that end a connection whether or not data flows: ``timeout`` (close
        after its timeout) and ``reset_peer`` (reset after its timeout)."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            for stream in STREAMS:
                for toxic in self.toxics(stream):
                    effect = effect_of([toxic], 0)
                    if effect.hold is None and effect.reset_after is None:
                        continue
                    since = self.since.setdefault(toxic.name, now)
                    if effect.reset_after is not None and now - since >= effect.reset_after:
                        reset(self.writer)
                        reset(upstream)
                        raise _Closed("reset_peer")
                    held = effect.hold is not None and not math.isinf(effect.hold)
                    if held and now - since >= cast(float, effect.hold):
                        raise _Closed("timeout")
            await asyncio.sleep(WATCH)


class _Closed(Exception):
    """A toxic ended the connection."""
