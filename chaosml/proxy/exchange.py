"""HTTP/1 through a proxy: each request relayed to the upstream as it arrives, its answer relayed
back as it comes, with the toxics rolled for the request acted out on the way.

A body is streamed (chunked, server-sent events, a token stream, a body of any size) unless a
payload fault must read it: then it is held, up to the proxy's buffer limit, decoded, faulted
and sent again with its new length. A body over the limit, or of a content type no codec reads,
is relayed as it comes and counted as a skip in the evidence of each toxic that wanted it.
Transport toxics act on the bytes as on a raw stream: ``latency`` delays each piece from its
arrival, ``bandwidth`` and ``slicer`` pace and cut the bytes written, ``limit_data`` closes once
that many bytes passed, in the direction of their stream. An answer's body that nothing reads or
shapes moves from socket to socket inside the kernel (``chaosml.proxy.splice``).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chaosml.codecs import CODECS, CodecError
from chaosml.faults import PayloadFault, RequestFault, ResponseFault, TransportFault
from chaosml.faults.evidence import skip_reason
from chaosml.faults.transport import Effect
from chaosml.proxy.canary import Arm, Split, key_bytes
from chaosml.proxy.http import (
    Head,
    HeadTooLarge,
    StreamParser,
    chunk,
    json_response,
    read_head,
    serialize_head,
)
from chaosml.proxy.pipeline import Framed, acted, skip, unreadable_type
from chaosml.proxy.splice import FROM as SPLICE_FROM
from chaosml.proxy.splice import move_body, worth_moving
from chaosml.proxy.stream import reset, write_shaped
from chaosml.proxy.toxics import Toxic, effect_of
from chaosml.proxy.upstream import Pool, Upstream

if TYPE_CHECKING:
    from chaosml.proxy.server import Proxy

REPLAY = 1024 * 1024  # request bytes kept to resend on a fresh connection if a pooled one was stale
HOLD_CHECK = 0.02  # seconds between checks that a holding ``timeout`` toxic is still on
NO_BODY = (204, 304)


@dataclass(frozen=True)
class Plan:
    """A set of toxics rolled for a request, sorted by what each does to the exchange."""

    toxics: tuple[Toxic, ...] = ()
    counters: tuple[Any, ...] = ()  # their toxics-applied counters
    upstream: list[Toxic] = field(default_factory=list)
    downstream: list[Toxic] = field(default_factory=list)
    early: bool = False  # a transport toxic acts before the request is forwarded
    request: list[Toxic] = field(default_factory=list)  # request faults, in order
    framing: list[Toxic] = field(default_factory=list)  # response faults reading request rows
    decode: bool = False  # the request payload is read (to change it, or to frame an answer's)
    reads: tuple[str, ...] | None = None  # the columns read, sorted (None: the whole table)
    routed: list[Toxic] = field(default_factory=list)  # toxics answering from elsewhere
    stale: str | None = None  # the upstream they send requests to
    changers: list[Toxic] = field(default_factory=list)  # response faults changing the answer
    late: bool = False  # a transport toxic acts on the answer

    @classmethod
    def of(cls, toxics: list[Toxic], counters: list[Any]) -> Plan:
        upstream = [t for t in toxics if t.stream == "upstream"]
        downstream = [t for t in toxics if t.stream == "downstream"]
        request = [t for t in upstream if isinstance(t.fault, RequestFault)]
        framing = [t for t in downstream if isinstance(t.fault, ResponseFault) and t.fault.where]
        routed = [t for t in downstream if t.fault.routes]
        reads = [t.fault.reads() for t in request + framing if isinstance(t.fault, PayloadFault)]
        return cls(
            toxics=tuple(toxics),
            counters=tuple(counters),
            upstream=upstream,
            downstream=downstream,
            early=any(isinstance(t.fault, TransportFault) for t in upstream),
            request=request,
            framing=framing,
            decode=bool(request or framing),
            reads=None if None in reads else tuple(sorted(set().union(*reads))),  # type: ignore[arg-type]
            routed=routed,
            stale=next((route.upstream for t in routed if (route := t.fault.route())), None),
            changers=[
                t for t in downstream if isinstance(t.fault, ResponseFault) and not t.fault.routes
            ],
            late=any(isinstance(t.fault, TransportFault) for t in downstream),
        )


NO_TOXICS = Plan()
NO_EFFECT = Effect()  # read only: what no transport toxic does


class Shaper:
    """Writes one direction of an exchange as its transport toxics shape it."""

    def __init__(self, writer: asyncio.StreamWriter, effect: Effect, proxy: Proxy) -> None:
        self.writer, self.effect, self.proxy = writer, effect, proxy
        self.plain = not effect.rate and effect.slices is None
        self.sent = 0

    @property
    def spent(self) -> bool:
        """``limit_data``: as many bytes as it allows have passed; the connection closes."""
        return self.effect.limit is not None and self.sent >= self.effect.limit

    async def write(self, data: bytes) -> None:
        limit = self.effect.limit
        if limit is not None:
            data = data[: max(limit - self.sent, 0)]
        self.sent += len(data)
        if self.plain:
            self.writer.write(data)
            await self.writer.drain()
        else:
            await write_shaped(
                self.writer, data, self.effect.rate, self.effect.slices, self.proxy.rng
            )


class Ended(Exception):
    """The exchange ended the connection (a toxic, an upstream that went away mid-answer)."""


@dataclass
class Body:
    """A request body on its way: held whole (``whole``), or streamed from the client with what
    was sent of it kept (up to ``REPLAY`` bytes) to resend on a fresh connection."""

    whole: bytes | None = None
    held: list[bytes] = field(default_factory=list)  # read before streaming began
    sent: list[bytes] = field(default_factory=list)
    size: int = 0
    done: bool = False  # the client's body was read to its end
    received: bytes | None = None  # the client's body as it came, when held whole
    unheld: str = "body not held"  # why it was not (a split's unkeyed reason)

    @property
    def replayable(self) -> bool:
        return self.whole is not None or self.size <= REPLAY


class Exchange:
    """One client connection served as HTTP/1."""

    def __init__(
        self,
        proxy: Proxy,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: StreamParser,
    ) -> None:
        self.proxy, self.reader, self.writer, self.client = proxy, reader, writer, client
        self.answered = False  # bytes of the current request's answer were written
        self.shadowed: bytes | None = None  # the request body a shadow copies, once answered
        self.upstream = proxy.upstream  # the address the current request went to
        self.split: Split | None = None  # the split the current request was routed by
        self.arm: Arm | None = None  # and its arm
        self.recorded: bytes | None = None  # the request body a split records, once answered
        self.keyed: bytes | None = None  # and its key (None: none was read)
        self.status: int | None = None  # its upstream's answer (0: unreachable, None: none yet)
        self.bare = False  # nothing reads or shapes the current answer: its body may be spliced
        self._peer: bytes | None = None

    async def run(self) -> Head | None:
        """Serve requests until the connection ends; the head of a request that upgrades the
        connection to another protocol (the caller relays the rest), else None."""
        writer = self.writer
        while True:
            try:
                head = await self.client.head()
            except HeadTooLarge as exc:
                writer.write(error(431, str(exc)))
                break
            except ValueError as exc:
                writer.write(error(400, f"bad request: {exc}"))
                break
            if head is None:
                break
            if head.upgrade:
                return head
            self.answered = False
            try:
                keep = await self.exchange(head)
            except (Ended, ConnectionError):
                keep = False
            except Exception as exc:  # a proxy bug must not look like a dead service
                if not self.answered:
                    writer.write(error(502, f"chaosml proxy: {type(exc).__name__}: {exc}"))
                keep = False
            if not keep:
                break
        await writer.drain()
        return None

    def plan(self) -> Plan:
        proxy = self.proxy
        proxy.count_request()
        toxics = [t for t in proxy.active() if t.hits()] if proxy.toxics else None
        if not toxics:
            return NO_TOXICS
        plan = proxy.plan(toxics)
        for counter in plan.counters:
            counter.inc()
        return plan

    async def exchange(self, head: Head) -> bool:
        """Relay one request and its answer; whether the connection serves another."""
        split = self.proxy.split
        if split is None:
            return await self.relayed(head, None)
        start = time.perf_counter()
        self.split, self.arm, self.recorded, self.status = split, None, None, None
        try:
            return await self.relayed(head, split)
        finally:
            arm, self.split, self.recorded = self.arm, None, None  # none left for the next
            if arm is not None and self.status is not None:
                seconds = time.perf_counter() - start
                if self.status:
                    arm.answered(self.status, seconds)
                else:
                    arm.failed(seconds)

    async def relayed(self, head: Head, split: Split | None) -> bool:
        plan = self.plan()
        up = NO_EFFECT
        if plan.early:
            acted(plan.upstream)
            up = effect_of(plan.upstream, head.length or 0)
            ended = await self.act(up, head, plan.upstream)
            if ended is not None:
                return ended
        body, framed = await self.request_body(head, plan, split)
        feedback = self.feedback(head, body, split)
        mirrored = self.proxy.mirror is not None and body.whole and not feedback
        self.shadowed = body.whole if mirrored else None
        if plan.stale is not None:
            acted(plan.routed)
        address = self.proxy.upstream
        if split is not None and feedback:  # to its user's arm, but neither counted nor recorded
            address = split.arm_of(self.key(split, head, body)[0]).address or address
        elif split is not None:
            self.keyed, source = self.key(split, head, body)
            self.arm = arm = split.route(self.keyed, source)
            address = arm.address or address
            if split.recorder is not None:
                if body.whole:
                    self.recorded = body.whole
                else:
                    split.unrecorded(f"request: {body.unheld}")
        self.upstream = address = plan.stale or address
        # (held back for a splice only once this proxy met an answer worth one: holding back
        # costs a small answer a few microseconds, and most models' answers are small)
        self.bare = self.proxy.large_answers and not (
            plan.late or plan.changers or self.recorded is not None or self.shadowed is not None
        )
        sent = await self.forward(address, head, body, Shaper(self.writer, up, self.proxy))
        if sent is None:
            self.record(502, b"")  # a split's request answered by the proxy: recorded as such
            return head.keep_alive and body.done
        conn, answer = sent
        if split is not None:
            self.status = answer.status
        try:
            down = NO_EFFECT
            if plan.late:
                acted(plan.downstream)
                down = effect_of(plan.downstream, answer.length or 0)
                ended = await self.act(down, head, plan.downstream, conn)
                if ended is not None:
                    return ended
            keep = await self.answer(head, conn, answer, plan, framed, down)
        except BaseException:
            conn.close()
            raise
        if down.close_delay:
            await asyncio.sleep(down.close_delay)
        return keep

    async def act(
        self, effect: Effect, head: Head, toxics: list[Toxic], conn: Upstream | None = None
    ) -> bool | None:
        """Wait out the effect's delay; whether the connection goes on if the effect ends the
        exchange here (``conn``: the upstream connection whose answer is then dropped), else
        None."""
        if effect.delay:
            await asyncio.sleep(effect.delay)
        if effect.hold is None and effect.reset_after is None and effect.status is None:
            return None
        if conn is not None:
            conn.close()
        if effect.hold is not None:
            if math.isinf(effect.hold):  # until the toxic is removed, then closed (Toxiproxy)
                holding = [t for t in toxics if t.type == "timeout"]
                while any(map(self.proxy.store.holds, holding)):
                    await asyncio.sleep(HOLD_CHECK)
            else:
                await asyncio.sleep(effect.hold)
            return False
        if effect.reset_after is not None:
            await asyncio.sleep(effect.reset_after)
            reset(self.writer)
            return False
        assert effect.status is not None
        if conn is None:  # the request never reaches the upstream: read past its body
            while await self.client.piece() is not None:
                pass
        self.writer.write(json_response(effect.status, effect.body, keep_alive=head.keep_alive))
        return head.keep_alive

    async def hold(self, parser: StreamParser, limit: int) -> tuple[list[bytes], bool]:
        """A body's pieces up to ``limit`` bytes, and whether that was all of it."""
        pieces, ended = parser.ready()  # often the whole body, read with its head
        size = sum(map(len, pieces))
        if ended and size <= limit:
            return pieces, True
        while size <= limit:
            piece = await parser.piece()
            if piece is None:
                return pieces, True
            pieces.append(piece)
            size += len(piece)
        return pieces, False

    async def request_body(
        self, head: Head, plan: Plan, split: Split | None = None
    ) -> tuple[Body, Framed]:
        bodiless = not head.chunked and not head.length
        if bodiless:
            await self.client.piece()  # no body: its end
            if not plan.decode:
                return Body(whole=b"", done=True, received=b"", unheld="no body"), Framed()
        if not plan.decode:
            mirror = self.proxy.mirror
            if (mirror is None and (split is None or not split.holds)) or bodiless:
                return Body(), Framed()
            copied, whole = await self.hold(self.client, self.proxy.limits.body)  # to copy
            if not whole:
                if mirror is not None:
                    mirror.drop("request body too large")
                return Body(held=copied, unheld="body too large"), Framed()
            data = b"".join(copied)
            return Body(whole=data, done=True, received=data), Framed()
        readers = plan.request + plan.framing
        kind = unreadable_type(head.headers)
        if kind is not None and not bodiless:
            skip(readers, skip_reason("content type", kind))
            return Body(unheld="body unreadable"), Framed()
        pieces: list[bytes] = []
        whole = True
        if not bodiless:  # (a missing payload is read as it is: unreadable, and counted so)
            pieces, whole = await self.hold(self.client, self.proxy.limits.body)
        if not whole:
            skip(readers, skip_reason("size", "request body"))
            return Body(held=pieces, unheld="body too large"), Framed()
        data = b"".join(pieces)
        new, framed = self.proxy.pipeline().request(
            data, head.headers, plan.request, readers, plan.reads
        )
        body = Body(whole=data if new is None else new, done=True, received=data)
        return body, framed

    def feedback(self, head: Head, body: Body, split: Split | None) -> bool:
        """Whether the request is feedback (labels) for the shadow's or the split's recording:
        its body as the client sent it goes to each that records the feedback path."""
        mirror, found = self.proxy.mirror, False
        for labels in (mirror and mirror.labels, split and split.labels):
            if labels and labels.matches(head.method, head.url):
                found = True
                if body.received is None:
                    labels.drop(f"feedback {body.unheld}")
                else:
                    labels.put((body.received, time.time()))
        return found

    def key(self, split: Split, head: Head, body: Body) -> tuple[bytes | None, str]:
        """The request's key for ``split`` (None if it has none) and where it came from (or why
        there was none): a header, a column of the client's first row, else its address."""
        kind = split.key.kind
        if kind == "header":
            value = head.header(split.key.header)
            return (value, "header") if value is not None else (None, "header missing")
        if kind is None:
            if self._peer is None:
                peer = self.writer.get_extra_info("peername")
                self._peer = str(peer[0] if isinstance(peer, tuple) else peer or "").encode()
            return (self._peer, "address") if self._peer else (None, "address unknown")
        if body.received is None:
            return None, body.unheld
        if not body.received:
            return None, "no body"
        assert split.codec is not None
        try:
            batch = CODECS[split.codec].decode_request(json.loads(body.received))
        except (CodecError, ValueError, TypeError, KeyError):
            return None, "body unreadable"
        column = batch.columns.get(split.key.name)
        if column is None or not len(column):
            return None, "column missing"
        value = key_bytes(column[0])
        return (value, "column") if value is not None else (None, "column null")

    async def forward(
        self, address: str, head: Head, body: Body, shaper: Shaper
    ) -> tuple[Upstream, Head] | None:
        """Send the request (on a pooled connection if a live one is left, again on a fresh one
        if that was stale) and read its answer's head; None if the client got a 502 instead."""
        pool = self.proxy.pool(address)
        failure: Exception | None = None
        for attempt in (0, 1):
            conn = pool.take() if attempt == 0 else None
            answer = None
            try:
                conn = conn or await pool.open()
                conn.parser.stop_at_body = self.bare and head.method != b"HEAD"
                shaper.writer = conn.writer
                await self.send(head, body, shaper)
                answer = await self.answer_head(head, conn)
            except (OSError, ValueError) as exc:
                failure = exc
            except BaseException:
                if conn is not None:
                    conn.close()
                raise
            if answer is not None:
                assert conn is not None
                return conn, answer
            if conn is not None:
                conn.close()
            if not (conn is not None and conn.reused and body.replayable):
                break
            shaper.sent = 0  # a stale keep-alive connection: once more on a fresh one
        metrics = self.proxy.metrics
        metrics.series(metrics.upstream_errors, self.proxy.name).inc()
        self.status = 0  # (a split counts it as its arm's unreachable upstream)
        why = failure if failure is not None else f"{address} closed the connection"
        message = json.dumps({"error": f"upstream {address} unreachable: {why}"}).encode()
        self.answered = True
        if not body.done:  # the rest of the request goes nowhere: the connection ends with it
            self.writer.write(json_response(502, message, keep_alive=False))
            raise Ended("upstream")
        self.writer.write(json_response(502, message, keep_alive=head.keep_alive))
        return None

    async def answer_head(self, head: Head, conn: Upstream) -> Head | None:
        if head.method != b"HEAD":
            return await conn.parser.head()
        found = await read_head(conn.reader)  # headers only, whatever their length says
        if found is None:
            return None
        answer = Head(**vars(found))
        length = answer.header(b"content-length")
        answer.length = int(length) if length is not None and length.strip().isdigit() else None
        return answer

    async def send(self, head: Head, body: Body, shaper: Shaper) -> None:
        """The request to the upstream: held whole, or streamed from the client as it comes
        (what was sent of it first again, on a second attempt)."""
        if body.whole is not None:
            await shaper.write(serialize_head(head, length=len(body.whole)) + body.whole)
        else:
            length = None if head.chunked else head.length
            out = serialize_head(head, length=length, chunked=head.chunked)
            out += b"".join(self.framed(head, body.sent))
            pieces, body.held = body.held, []
            while True:
                if not body.done:
                    ready, body.done = self.client.ready()
                    pieces += ready
                out += self.kept(head, body, pieces)
                if body.done:
                    await shaper.write(out + (chunk(b"") if head.chunked else b""))
                    break
                await shaper.write(out)
                if shaper.spent:
                    break
                piece = await self.client.piece()
                body.done, pieces, out = piece is None, [] if piece is None else [piece], b""
        if shaper.spent:
            raise Ended("limit_data")

    def framed(self, head: Head, pieces: list[bytes]) -> list[bytes]:
        return [chunk(p) for p in pieces] if head.chunked else pieces

    def kept(self, head: Head, body: Body, pieces: list[bytes]) -> bytes:
        """``pieces`` as sent, kept for a second attempt while the body is small enough."""
        for piece in pieces:
            body.size += len(piece)
            if body.size <= REPLAY:
                body.sent.append(piece)
            else:
                body.sent.clear()
        return b"".join(self.framed(head, pieces))

    async def answer(
        self, head: Head, conn: Upstream, answer: Head, plan: Plan, framed: Framed, effect: Effect
    ) -> bool:
        """Relay the answer to the client; whether the connection serves another request."""
        pool = self.proxy.pool(self.upstream)
        shaper = Shaper(self.writer, effect, self.proxy)
        bodiless = head.method == b"HEAD" or answer.status in NO_BODY or answer.status < 200
        if bodiless:
            self.unrecorded("answer without body")
            if plan.changers:  # no answer to change
                why = "HEAD answer" if head.method == b"HEAD" else f"HTTP {answer.status} answer"
                reason = skip_reason("unreadable", f"response body ({why})")
                self.proxy.pipeline().unread("response", plan.changers, reason)
            length = answer.length if head.method == b"HEAD" else None
            await self.emit(
                shaper,
                serialize_head(answer, length=length, close=not head.keep_alive, request=False),
            )
            if head.method != b"HEAD":
                await conn.parser.piece()  # its end
            pool.give(conn, answer.keep_alive)
            return head.keep_alive and not shaper.spent
        changers = plan.changers
        mirror = self.proxy.mirror if self.shadowed is not None else None
        held: list[bytes] = []
        if changers or mirror is not None or self.recorded is not None:
            kind = unreadable_type(answer.headers)
            if kind is not None:
                if changers:
                    skip(changers, skip_reason("content type", kind))
                if mirror is not None:
                    mirror.drop("answer unreadable")
                self.unrecorded("answer unreadable")
            else:
                held, whole = await self.hold(conn.parser, self.proxy.limits.body)
                if whole:
                    data = b"".join(held)
                    if changers:
                        new = self.proxy.pipeline().response(
                            answer.status, answer.headers, data, plan.downstream, framed
                        )
                        data = data if new is None else new
                    out = serialize_head(
                        answer, length=len(data), close=not head.keep_alive, request=False
                    )
                    await self.emit(shaper, out + data)
                    pool.give(conn, answer.keep_alive)
                    # the client has its answer
                    if mirror is not None and self.shadowed is not None:
                        mirror.offer(head, self.shadowed, answer.status, data)
                    self.record(answer.status, data)
                    return head.keep_alive and not shaper.spent
                if changers:
                    skip(changers, skip_reason("size", "response body"))
                if mirror is not None:
                    mirror.drop("answer too large")
                self.unrecorded("answer too large")
        return await self.relay(head, conn, answer, held, shaper, pool)

    def record(self, status: int, answer: bytes) -> None:
        """The split's recording of the answered request (if it records this one)."""
        split, arm = self.split, self.arm
        if self.recorded is not None and split is not None and arm is not None:
            split.record(arm, status, self.recorded, answer, self.keyed)
            self.recorded = None

    def unrecorded(self, reason: str) -> None:
        split = self.split
        if self.recorded is not None and split is not None:
            split.unrecorded(reason)
            self.recorded = None

    async def emit(self, shaper: Shaper, data: bytes) -> None:
        self.answered = True
        await shaper.write(data)
        if shaper.spent:
            raise Ended("limit_data")

    async def relay(
        self,
        head: Head,
        conn: Upstream,
        answer: Head,
        held: list[bytes],
        shaper: Shaper,
        pool: Pool,
    ) -> bool:
        """Stream the answer's body to the client as it arrives."""
        chunked = answer.length is None and head.version == "1.1"
        until_close = answer.length is None and not chunked
        keep = head.keep_alive and not until_close
        out = serialize_head(
            answer, length=answer.length, chunked=chunked, close=not keep, request=False
        )
        if answer.chunked or (answer.length or 0) >= SPLICE_FROM:
            self.proxy.large_answers = True  # the next answers' bodies may be spliced
        if not worth_moving(conn, answer):
            conn.parser.resume()  # (its body, if held back, is read here after all)
        pieces, ended = conn.parser.ready()
        pieces = held + pieces
        frame = chunk if chunked else (lambda piece: piece)
        await self.emit(shaper, out + b"".join(frame(p) for p in pieces))
        if not ended and not await move_body(conn, self.writer, answer, framed=chunked):
            async for piece in self.pieces(conn.parser, shaper.effect.delay):
                await self.emit(shaper, frame(piece))
        if chunked:
            await self.emit(shaper, chunk(b""))
        pool.give(conn, answer.keep_alive)
        return keep

    async def pieces(self, parser: StreamParser, delay: float) -> AsyncIterator[bytes]:
        """A body's pieces as they arrive (``delay``: each held that long from its arrival, read
        ahead meanwhile, so latency does not cut throughput)."""
        if not delay:
            while (piece := await parser.piece()) is not None:
                yield piece
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(64)

        async def read() -> None:
            while (piece := await parser.piece()) is not None:
                await queue.put((loop.time(), piece))
            await queue.put((loop.time(), None))

        reading = asyncio.ensure_future(read())
        try:
            while True:
                arrived, piece = await queue.get()
                if piece is None:
                    break
                wait = arrived + delay - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                yield piece
            await reading
        finally:
            reading.cancel()


def error(status: int, message: str) -> bytes:
    return json_response(status, json.dumps({"error": message}).encode(), keep_alive=False)
