"""Raw TCP through a proxy: bytes relayed both ways, transport toxics acted out on each direction
with Toxiproxy's semantics (``upstream``: client to server, ``downstream``: server to client).

Per direction, as Toxiproxy's toxics do on their stream: each chunk is delayed by ``latency`` ±
``jitter`` from when it arrived, the chunks pipelined (up to ``IN_FLIGHT`` bytes under way, so
latency does not cut throughput); ``slicer`` cuts a chunk Toxiproxy's way and waits ``delay`` after
each piece, and ``bandwidth`` waits each piece's time at ``rate`` before sending it, the waits
summed so that delays finer than the event loop's timers keep their total (``Pacer``);
``limit_data`` closes the connection once that many bytes passed since the toxic came (the bytes
up to the limit are delivered). ``timeout`` drops the data, and closes the connection once no data
came for its timeout (with 0: never); removing it closes every connection that had it, since data
it dropped would leave a hole in the stream. ``reset_peer`` waits for data (or the end of the
stream) in its direction, drops it and everything after it, and resets both sides (TCP RST) its
timeout later, also if the toxic is removed meanwhile. ``slow_close`` delays passing on the end of
the stream.

Toxicity is rolled when a connection first meets a toxic, and again when the toxic's attributes
or toxicity are updated (a lease renewal that changes nothing is no update). Toxics added, changed
or removed while a connection is open apply from its next chunk; a chunk waiting out a latency is
released as soon as the latency shrinks or goes. Payload toxics and ``http_error`` have no meaning
on a raw stream: each is counted once per connection as skipped. While no toxic acts on a
direction (and every chunk read before was delivered), its bytes move from socket to socket inside
the kernel (``chaosml.proxy.splice``), the toxics looked at again before each piece.

Two differences from Toxiproxy, on purpose: the end of one direction is passed on as a half-close
(Toxiproxy closes the whole connection), and ``reset_peer`` always resets (Toxiproxy sends a FIN
instead when the toxic was added after the connection opened).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from chaosml._net import split_address
from chaosml.faults.evidence import skip_reason
from chaosml.faults.transport import Effect, slices
from chaosml.proxy.http import READ_SIZE
from chaosml.proxy.splice import Splicer, buffered
from chaosml.proxy.toxics import STREAMS, Toxic, effect_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from chaosml.proxy.server import Proxy

AHEAD = 256 * 1024  # bytes read ahead of a direction whose data is not delayed
IN_FLIGHT = 32 * 1024 * 1024  # bytes under way while a latency holds them (Toxiproxy: 1024 reads)
WATCH = 0.01  # seconds between checks of toxics that end a connection while no data flows
QUANTUM = 0.001  # a wait shorter than this is owed, and paid with the next ones (timer resolution)
CREDIT = 0.05  # seconds a late timer may pay in advance of the next waits


def acts_on_streams(toxic: Toxic) -> bool:
    return "tcp" in toxic.fault.places()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed peer would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Pacer:
    """Waits that keep their total however fine each is: a wait under ``QUANTUM`` is owed, and
    the owed time is slept in one go once it reaches it; a timer that fires late pays the next
    waits in advance (up to ``CREDIT``). 10,000 waits of 100 µs take 1 s, not 10,000 timer ticks
    (asyncio: ~10 s) or none at all (uvloop rounds them to 0 ms)."""

    def __init__(self) -> None:
        self.owed = 0.0

    async def wait(self, seconds: float) -> None:
        self.owed += seconds
        if self.owed < QUANTUM:
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(self.owed)
        self.owed = max(self.owed - (loop.time() - start), -CREDIT)


async def write_shaped(
    writer: asyncio.StreamWriter,
    data: bytes,
    rate: int,
    cut: tuple[int, int, float] | None,
    rng: np.random.Generator,
    pacer: Pacer | None = None,
) -> None:
    """Write ``data`` cut into ``slicer`` pieces (``cut``: average size, variation, delay after
    each piece) and paced to ``rate`` KB/s (``bandwidth``, 0: unpaced; each piece of up to 0.1 s
    of data waits its time before it is sent, as in Toxiproxy). ``pacer`` carries owed waits
    from one call to the next (a stream's chunks); without it they start from nothing."""
    pacer = Pacer() if pacer is None else pacer
    pieces = [data] if cut is None else slices(data, cut[0], cut[1], rng)
    for piece in pieces:
        if rate:
            step = max(rate * 100, 1)  # a tenth of a second's worth
            for start in range(0, len(piece), step):
                chunk = piece[start : start + step]
                await pacer.wait(len(chunk) / (rate * 1000))
                writer.write(chunk)
                await writer.drain()
        elif piece:
            writer.write(piece)
            await writer.drain()
        if cut is not None and cut[2]:
            await pacer.wait(cut[2])


@dataclass(eq=False)
class _Met:
    """What one connection keeps of one toxic it met (Toxiproxy's per-connection stub)."""

    toxic: Toxic
    hit: bool  # the toxicity roll
    effect: Effect  # what the toxic alone does (its timeout, limit, reset)
    started: float  # timeout: when its timer last (re)started: met, updated, or data dropped
    passed: int = 0  # limit_data: bytes passed since the toxic came


class _Line:
    """Chunks read in one direction and not yet delivered, with when each arrived; the reader
    waits for room (``capacity`` bytes), so a slow direction pushes back on its sender."""

    def __init__(self) -> None:
        self.items: deque[tuple[float, bytes] | None] = deque()
        self.size = 0
        self.busy = False  # the chunk taken last is being delivered
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._drained = asyncio.Event()

    async def room(self, capacity: Callable[[], int]) -> None:
        while self.size >= capacity():
            self._room.clear()
            await self._room.wait()

    def wake(self) -> None:
        """Have a waiting reader look at its capacity again."""
        self._room.set()

    def put(self, item: tuple[float, bytes] | None) -> None:
        self.items.append(item)
        self.size += len(item[1]) if item else 0
        self._ready.set()

    async def get(self) -> tuple[float, bytes] | None:
        while not self.items:
            self._ready.clear()
            await self._ready.wait()
        item = self.items.popleft()
        self.size -= len(item[1]) if item else 0
        self.busy = item is not None
        self._room.set()
        return item

    def delivered(self) -> None:
        """The chunk taken last reached the other side."""
        self.busy = False
        if not self.items:
            self._drained.set()

    async def drained(self) -> None:
        """Until every chunk put has been delivered."""
        while self.items or self.busy:
            self._drained.clear()
            await self._drained.wait()


class Link:
    reason = skip_reason("raw")  # how a payload toxic met on this stream is counted as skipped

    """One client connection relayed raw to the proxy's upstream."""

    def __init__(
        self,
        proxy: Proxy,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        first: bytes = b"",
    ) -> None:
        self.proxy, self.reader, self.writer, self.first = proxy, reader, writer, first
        self.met: dict[str, _Met] = {}  # the toxics this connection met, by name
        self.skipped: set[str] = set()
        self.payload: list[Toxic] = []  # active toxics that cannot act on a stream
        self.seen: tuple[int, ...] = ()  # ids of the proxy's toxics at the last look
        self.changed = asyncio.Event()  # set (and replaced) when the toxics changed
        self.reset_at: float | None = None  # when a reset_peer resets this connection
        self.nudge = asyncio.Event()  # wakes the watch: a reset was armed
        self.stopped: set[str] = set()  # streams whose data a pending reset_peer drops
        self.delayed = dict.fromkeys(STREAMS, False)  # a latency holds this stream's chunks
        self.lines = {stream: _Line() for stream in STREAMS}
        self.pacers = {stream: Pacer() for stream in STREAMS}
        self.unspliced: set[str] = set()  # streams whose sockets cannot be spliced
        self.holed = False  # a timeout that dropped data was removed: the connection ends

    def look(self) -> None:
        """Bring ``met`` up to date with the proxy's toxics; ``_Closed`` if a ``timeout`` this
        connection met was removed (its dropped data would leave a hole in the stream), and
        again on every later look, whichever direction looked first."""
        if self.holed:
            raise _Closed("timeout removed")
        active = self.proxy.active()
        seen = tuple(map(id, active))
        if seen == self.seen:
            return
        self.seen = seen
        now = asyncio.get_running_loop().time()
        names, moved, payload = set(), False, []
        for toxic in active:
            names.add(toxic.name)
            if not acts_on_streams(toxic):
                payload.append(toxic)
                continue
            met = self.met.get(toxic.name)
            if met is None:
                self.met[toxic.name] = self._meet(toxic, now)
                moved = True
            elif met.toxic is not toxic:
                if (met.toxic.toxicity, met.toxic.fault) == (toxic.toxicity, toxic.fault):
                    met.toxic = toxic  # a lease renewal: nothing changes
                else:  # Toxiproxy restarts an updated toxic: rolled again, timer anew
                    passed = met.passed
                    met = self.met[toxic.name] = self._meet(toxic, now)
                    met.passed = passed  # limit_data counts on (Toxiproxy keeps its state)
                    moved = True
        for name in [n for n in self.met if n not in names]:
            gone = self.met.pop(name)
            if gone.effect.hold is not None:
                self.holed = True
                raise _Closed("timeout removed")
            moved = True
        self.payload = payload
        if moved:
            self.changed.set()
            self.changed = asyncio.Event()

    def _meet(self, toxic: Toxic, now: float) -> _Met:
        hit = toxic.hits()
        if hit:
            metrics = self.proxy.metrics
            metrics.series(metrics.toxics, self.proxy.name, toxic.type).inc()
            toxic.evidence.act()
        return _Met(toxic=toxic, hit=hit, effect=effect_of([toxic], 0), started=now)

    def _skip(self, toxic: Toxic) -> None:
        if toxic.name not in self.skipped:
            self.skipped.add(toxic.name)
            metrics = self.proxy.metrics
            metrics.series(metrics.skipped, self.proxy.name, toxic.type).inc()
            if toxic.hits():
                toxic.evidence.skip(self.reason)

    def hitting(self, stream: str) -> list[_Met]:
        """The toxics on ``stream`` whose roll hit this connection, in the order they came."""
        return [m for m in self.met.values() if m.hit and m.toxic.stream == stream]

    def toxics(self, stream: str) -> list[Toxic]:
        """The proxy's active toxics on ``stream`` that hit this connection."""
        self.look()
        return [m.toxic for m in self.hitting(stream)]

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
        await self.relay(upstream_reader, upstream_writer)

    async def relay(
        self,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
        said: bytes = b"",
    ) -> None:
        """Pump both ways until both ends closed, or a toxic (or an error) ends the connection;
        ``said``: what the upstream already sent, delivered first."""
        pumps = [
            asyncio.ensure_future(
                self.pump("upstream", self.reader, upstream_writer, self.first, self.writer)
            ),
            asyncio.ensure_future(
                self.pump("downstream", upstream_reader, self.writer, said, upstream_writer)
            ),
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
        source: asyncio.StreamWriter | None = None,
    ) -> None:
        """Relay one direction until its reader ends, then half-close the other side; while no
        toxic acts on it, its bytes move in the kernel (``source``: the reader's connection)."""
        loop = asyncio.get_running_loop()
        line = self.lines[stream]

        def capacity() -> int:
            return IN_FLIGHT if self.delayed[stream] else AHEAD

        async def read() -> None:
            if first:
                line.put((loop.time(), first))
            try:
                with contextlib.suppress(OSError):
                    while True:
                        await line.room(capacity)
                        if source is not None and await self.bare(stream, line, reader):
                            if await self.spliced(stream, reader, source, writer):
                                break
                            continue
                        chunk = await reader.read(READ_SIZE)
                        if not chunk:
                            break
                        line.put((loop.time(), chunk))
            finally:
                line.put(None)

        reading = asyncio.ensure_future(read())
        try:
            while (item := await line.get()) is not None:
                await self.deliver(stream, *item, writer)
                line.delivered()
            failed = reading.exception() if reading.done() and not reading.cancelled() else None
            if failed is not None:
                raise failed  # spliced bytes could not be delivered
            await self.end(stream, writer)
        finally:
            reading.cancel()
            if reading.done() and not reading.cancelled():
                reading.exception()  # (retrieved: raised above, or ended with the connection)

    def untouched(self, stream: str) -> bool:
        """No toxic acts on ``stream``'s data now."""
        self.look()
        return stream not in self.stopped and not self.hitting(stream)

    async def bare(self, stream: str, line: _Line, reader: asyncio.StreamReader) -> bool:
        """Whether ``stream``'s next bytes may be spliced: no toxic acts on it, and every byte
        read before has been delivered (waited for)."""
        if stream in self.unspliced or not self.untouched(stream):
            return False
        await line.drained()
        return not buffered(reader) and self.untouched(stream)

    async def spliced(
        self,
        stream: str,
        reader: asyncio.StreamReader,
        source: asyncio.StreamWriter,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Move ``stream``'s bytes in the kernel, a piece at a time, the toxics looked at again
        before each piece: True at the stream's end, False once a toxic acts on it (or the
        sockets cannot be spliced)."""
        splicer = Splicer.between(reader, source, writer)
        if splicer is None:
            self.unspliced.add(stream)
            return False
        splicer.put(splicer.take())  # (nothing: its reader held none)
        try:
            while self.untouched(stream):
                moved = await splicer.fill_now(splicer.size)
                if moved is None:  # nothing yet: what came goes on, and the toxics are looked
                    await self.delivered(splicer)  # at again once more comes
                    await splicer.readable()
                    continue
                if not moved:
                    await self.delivered(splicer)
                    return True
                for toxic in self.payload:  # counted by the data they could not act on
                    self._skip(toxic)
                await self.delivered(splicer)
            return False
        finally:
            splicer.close()

    async def delivered(self, splicer: Splicer) -> None:
        try:
            await splicer.flush()
        except OSError as exc:  # the other side's error, not this stream's end
            raise Undeliverable(str(exc)) from exc

    async def deliver(
        self, stream: str, arrived: float, data: bytes, writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.look()
            for toxic in self.payload:  # counted by the data they could not act on
                self._skip(toxic)
            if self._dropped(stream, loop.time()):
                return
            met = self.hitting(stream)
            effect = effect_of([m.toxic for m in met], len(data))
            if self.delayed[stream] != (effect.delay > 0):
                self.delayed[stream] = effect.delay > 0
                self.lines[stream].wake()
            wait = arrived + effect.delay - loop.time()
            if wait <= 0 or not await self._changes_within(wait):
                break  # its time came (else the toxics changed: what do they say now?)
        limits = [(m, m.effect.limit) for m in met if m.effect.limit is not None]
        for m, limit in limits:
            data = data[: max(limit - m.passed, 0)]
        pacer = self.pacers[stream]
        await write_shaped(writer, data, effect.rate, effect.slices, self.proxy.rng, pacer)
        for m, limit in limits:
            m.passed += len(data)
            if m.passed >= limit:
                raise _Closed("limit_data")

    def _dropped(self, stream: str, now: float) -> bool:
        """True if a toxic on ``stream`` takes this chunk: a ``timeout`` (its timer restarts, as
        in Toxiproxy) or a ``reset_peer`` (armed by the first chunk it sees)."""
        if stream in self.stopped:
            return True
        for met in self.hitting(stream):
            if met.effect.hold is not None:
                met.started = now
                return True
            if met.effect.reset_after is not None:
                self._arm(stream, now + met.effect.reset_after)
                return True
        return False

    def _arm(self, stream: str, at: float) -> None:
        self.stopped.add(stream)
        self.reset_at = at if self.reset_at is None else min(self.reset_at, at)
        self.nudge.set()  # the watch may be asleep for longer than this reset is away

    async def _changes_within(self, seconds: float) -> bool:
        """Wait ``seconds``; True as soon as the toxics change meanwhile (seen by ``watch``)."""
        changed = self.changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await changed.wait()
                return True
        return False

    async def end(self, stream: str, writer: asyncio.StreamWriter) -> None:
        """The end of ``stream``: a ``reset_peer`` takes it as data (and resets later),
        ``slow_close`` delays it, else the other side is half-closed."""
        self.look()
        if stream in self.stopped:
            return
        met = self.hitting(stream)
        resets = [m.effect.reset_after for m in met if m.effect.reset_after is not None]
        if resets:
            self._arm(stream, asyncio.get_running_loop().time() + min(resets))
            return
        close_delay = effect_of([m.toxic for m in met], 0).close_delay
        if close_delay:
            await asyncio.sleep(close_delay)
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()  # half-close: the other direction may still be answering

    async def watch(self, upstream: asyncio.StreamWriter) -> None:
        """Act out what ends a connection whether or not data flows: a ``reset_peer`` armed, a
        ``timeout`` whose timer ran out, a ``timeout`` removed; notice changed toxics."""
        loop = asyncio.get_running_loop()
        while True:
            self.look()
            now = loop.time()
            due = [now + WATCH]
            if self.reset_at is not None:
                if now >= self.reset_at:
                    reset(self.writer)
                    reset(upstream)
                    raise _Closed("reset_peer")
                due.append(self.reset_at)
            for met in self.met.values():
                hold = met.effect.hold
                if met.hit and hold is not None and not math.isinf(hold) and hold > 0:
                    if now - met.started >= hold:
                        raise _Closed("timeout")
                    due.append(met.started + hold)
            self.nudge.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(min(due) - now, 0)):
                    await self.nudge.wait()


class _Closed(Exception):
    """A toxic ended the connection."""


class Undeliverable(Exception):
    """Spliced bytes could not be written (as a write error when delivering a chunk)."""
