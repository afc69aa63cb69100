"""The fault proxy's data plane: one listener per proxy, forwarding HTTP to its upstream and acting
out the toxics on the way.

With no toxic active a request is forwarded without parsing its payload. Payload toxics decode the
request/response with the proxy's codec, apply the fault, and encode it again; a payload the codec
cannot read passes through untouched and is counted. An upstream that cannot be reached gives the
client a 502.

A connection whose first bytes are not HTTP (or any connection, with codec ``tcp``) is relayed as a
raw byte stream with the transport toxics acted out on it (``chaosml.proxy.stream``), as Toxiproxy
does for any TCP protocol: a feature store, a database, a queue behind the model service.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import math
import os
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import orjson

from chaosml._net import split_address as _split
from chaosml._types import Table
from chaosml.codecs import Codec, CodecError, detect, get_codec, partial_table, patch_records
from chaosml.faults import PayloadFault, RequestFault, ResponseFault, TransportFault
from chaosml.faults.evidence import Change, Evidence, answer_changes, table_changes
from chaosml.faults.transport import Effect
from chaosml.proxy.http import (
    READ_SIZE,
    Clock,
    Connections,
    Message,
    MessageReader,
    json_response,
    serialize_request,
    serialize_response,
)
from chaosml.proxy.metrics import ProxyMetrics
from chaosml.proxy.stream import Link, reset, write_shaped
from chaosml.proxy.toxics import ApiError, Toxic, effect_of

# What a codec raises on a payload it cannot read; anything else in the payload path is a bug in a
# fault, counted as a fault error (not as an unreadable payload) so a game day can tell them apart.
UNREADABLE = (CodecError, ValueError, TypeError, KeyError, UnicodeDecodeError)


def split_address(address: str) -> tuple[str, int]:
    try:
        return _split(address)
    except ValueError as exc:
        raise ApiError(str(exc), 400) from exc


T = TypeVar("T")
RETIRED = 256  # removed toxics whose evidence a proxy keeps
REQUEST_LINE = re.compile(rb"[A-Z][A-Z_-]{0,23} \S+ HTTP/\d\.\d\r?")
METHOD = re.compile(rb"[A-Z][A-Z_-]{0,23}")


@dataclass(frozen=True)
class Timeouts:
    """How long a proxy (or the control API) waits on a client, in seconds."""

    idle: float = 60.0  # for the next request on a keep-alive connection
    request: float = 10.0  # for a request to arrive whole, from its first byte (then 408)
    sniff: float = (
        1.0  # codec auto: for a client's first bytes, then relay raw (server speaks first)
    )


def looks_like_http(data: bytes) -> bool | None:
    """Whether a connection's first bytes are an HTTP/1 request line (None: too few to tell)."""
    line, newline, _ = data.partition(b"\n")
    token = line.partition(b" ")[0]
    if not METHOD.fullmatch(token):
        return None if not token else False
    if newline:
        return REQUEST_LINE.fullmatch(line) is not None
    return None if len(data) < 8192 else True


def guarded(
    metrics: ProxyMetrics, point: str, toxic: Toxic, apply: Callable[..., T], *args: Any
) -> T | None:
    """``apply(*args)``; None if the fault failed, which is counted per fault type and in the
    toxic's evidence (the payload then passes through, as the fault could not change it)."""
    try:
        return apply(*args)
    except Exception:  # a bug in a fault must not take the service down with it
        metrics.series(metrics.fault_errors, point, toxic.type).inc()
        toxic.evidence.error()
        return None


Pending = list[tuple[Toxic, int, Change, set[str]]]  # evidence to record once the payload is sent


def apply_request_faults(
    toxics: list[Toxic], columns: Table, n: int, metrics: ProxyMetrics, point: str
) -> tuple[Table, Pending]:
    """``columns`` (``n`` rows) with each request toxic applied in order, and what each changed."""
    pending: Pending = []
    for toxic in toxics:
        fault = cast(RequestFault, toxic.fault)
        changed = guarded(metrics, point, toxic, fault.apply, columns, toxic.rng)
        if changed is None:
            continue
        absent = (fault.reads() or set()) - columns.keys()
        pending.append((toxic, n, table_changes(columns, changed, n), absent))
        columns = changed
    return columns, pending


def apply_response_faults(
    toxics: list[Toxic],
    rows: Table | None,
    predictions: npt.NDArray[Any],
    scores: npt.NDArray[np.float64] | None,
    metrics: ProxyMetrics,
    point: str,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64] | None, Pending]:
    """The answers with each response toxic applied in order (``rows``: the request's rows, for
    ``where``), and what each changed. A routing toxic (``stale_model``) does not change them."""
    pending: Pending = []
    n = len(predictions)
    for toxic in toxics:
        fault = toxic.fault
        if not isinstance(fault, ResponseFault) or fault.routes:
            continue
        answer = guarded(metrics, point, toxic, fault.apply, rows, predictions, scores, toxic.rng)
        if answer is None:
            continue
        absent = set(fault.predicate.columns) if fault.predicate is not None else set()
        absent -= set(rows or ())
        pending.append((toxic, n, answer_changes(predictions, scores, *answer), absent))
        predictions, scores = answer
    return predictions, scores, pending


def acted(toxics: list[Toxic]) -> None:
    """The transport and routing toxics among ``toxics`` act on this exchange."""
    for toxic in toxics:
        if isinstance(toxic.fault, TransportFault) or toxic.fault.routes:
            toxic.evidence.act()


def record(pending: Pending) -> None:
    for toxic, n, change, absent in pending:
        toxic.evidence.change(n, change, absent)


CODINGS = ("gzip", "x-gzip", "deflate")  # bodies the proxy decodes, faults and encodes again


def decoded(body: bytes, coding: str | None) -> bytes:
    """``body`` without its content coding (``ValueError`` if it is not what it says)."""
    try:
        if coding in ("gzip", "x-gzip"):
            return gzip.decompress(body)
        if coding == "deflate":  # zlib-wrapped, as HTTP means it, or raw as some servers send
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"not a {coding} body: {exc}") from exc
    return body


def encoded_as(body: bytes, coding: str | None) -> bytes:
    """``body`` with the content coding it arrived in."""
    if coding in ("gzip", "x-gzip"):
        return gzip.compress(body, compresslevel=1, mtime=0)
    if coding == "deflate":
        return zlib.compress(body, 1)
    return body


def coding_of(value: bytes | None) -> str | None:
    """A ``Content-Encoding`` value as a coding name (``gzip``, ...), None for identity."""
    coding = (value or b"").strip().decode("latin-1").lower()
    return None if coding in ("", "identity") else coding


def encoded(message: bytes) -> str | None:
    """The content coding of a serialized HTTP message's body, None for identity."""
    head = message.partition(b"\r\n\r\n")[0]
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-encoding":
            return coding_of(value)
    return None


@dataclass
class Reply:
    """What to send back, and how the connection behaves afterwards."""

    data: bytes = b""
    close: bool = False
    reset: bool = False
    close_delay: float = 0.0
    rate: int = 0  # KB/s, 0: unlimited
    limit: int | None = None  # bytes, then close
    slices: tuple[int, int, float] | None = None


@dataclass(frozen=True)
class _Plan:
    """A set of toxics rolled for a request, sorted by what each does to the exchange."""

    toxics: tuple[Toxic, ...]
    counters: tuple[Any, ...]  # their toxics-applied counters
    upstream: list[Toxic]
    downstream: list[Toxic]
    early: bool  # a transport toxic acts before the request is forwarded
    request: list[Toxic]  # request faults, in order
    framing: list[Toxic]  # response faults with ``where``: they read the request's rows
    decode: bool  # the request payload is read (to change it, or to frame a response fault)
    reads: tuple[str, ...] | None  # the columns read, sorted (None: the whole table)
    routed: list[Toxic]  # toxics that answer from elsewhere (a stale model)
    stale: str | None  # the upstream they send requests to
    respond: bool  # response faults change the answer
    late: bool  # a transport toxic acts on the answer

    @classmethod
    def of(cls, toxics: list[Toxic], counters: list[Any]) -> _Plan:
        upstream = [t for t in toxics if t.stream == "upstream"]
        downstream = [t for t in toxics if t.stream == "downstream"]
        request = [t for t in upstream if isinstance(t.fault, RequestFault)]
        framing = [t for t in downstream if isinstance(t.fault, ResponseFault) and t.fault.where]
        routed = [t for t in downstream if t.fault.routes]
        reads = [cast(PayloadFault, t.fault).reads() for t in request + framing]
        return cls(
            toxics=tuple(toxics),
            counters=tuple(counters),
            upstream=upstream,
            downstream=downstream,
            early=any(isinstance(t.fault, TransportFault) for t in upstream),
            request=request,
            framing=framing,
            decode=bool(request or framing),
            reads=None
            if None in reads
            else tuple(sorted(set().union(*cast(list[set[str]], reads)))),
            routed=routed,
            stale=next((route.upstream for t in routed if (route := t.fault.route())), None),
            respond=any(
                isinstance(t.fault, ResponseFault) and not t.fault.routes for t in downstream
            ),
            late=any(isinstance(t.fault, TransportFault) for t in downstream),
        )


class _Pool:
    """Idle keep-alive connections to one upstream address. A connection goes back to the pool
    only after its answer was read whole and nothing followed it."""

    def __init__(self) -> None:
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, MessageReader]] = []

    async def exchange(self, address: str, data: bytes, *, head: bool = False) -> Message:
        """Send one request and read its response, on an idle connection if a live one is left;
        a connection the upstream closed meanwhile is retried once on a fresh connection."""
        for attempt in (0, 1):
            conn = self._idle() if attempt == 0 else None
            fresh = conn is None
            if conn is None:
                host, port = split_address(address)
                reader, writer = await asyncio.open_connection(host, port)
                conn = (reader, writer, MessageReader(reader, response=True))
            reader, writer, messages = conn
            response = None
            try:
                writer.write(data)
                await writer.drain()
                response = await (messages.read_head() if head else messages.read())
            except ConnectionError:
                pass
            finally:
                if response is None:  # failed, cancelled, or the upstream closed: never reuse
                    writer.close()
            if response is None:
                if fresh:
                    raise ConnectionError(f"{address} closed the connection")
                continue  # a stale keep-alive connection: try a fresh one
            if response.keep_alive and not messages.partial and not messages.collector.done:
                self.idle.append(conn)
            else:
                writer.close()
            return response
        raise ConnectionError(address)  # pragma: no cover

    def _idle(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, MessageReader] | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn[0].at_eof() and not conn[1].is_closing():
                return conn
            conn[1].close()
        return None

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


@dataclass(kw_only=True)
class Proxy:
    name: str
    listen: str
    upstream: str
    metrics: ProxyMetrics
    enabled: bool = True
    codec: str = "auto"
    timeouts: Timeouts = field(default_factory=Timeouts)
    toxics: dict[str, Toxic] = field(default_factory=dict)
    _server: asyncio.base_events.Server | None = field(default=None, init=False)
    _pools: dict[str, _Pool] = field(default_factory=dict, init=False)
    _connections: Connections = field(default_factory=Connections, init=False)
    _counters: dict[str, Any] = field(default_factory=dict, init=False)
    _plans: dict[tuple[int, ...], _Plan] = field(default_factory=dict, init=False)
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    retired: dict[str, Evidence] = field(default_factory=dict)  # removed toxics' evidence

    def __post_init__(self) -> None:
        self._requests = self.metrics.series(self.metrics.requests, self.name)  # the hot path's

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "codec": self.codec,
            "toxics": [t.to_json() for t in self.toxics.values()],
        }

    def same_route(self, listen: str, upstream: str) -> bool:
        """Whether ``listen`` (as given, e.g. ``localhost:7070`` or port 0) names this proxy's
        listener and ``upstream`` its upstream."""
        if upstream != self.upstream:
            return False
        if listen == self.listen:
            return True
        (host, port), (own_host, own_port) = split_address(listen), split_address(self.listen)
        aliases = {"localhost": "127.0.0.1"}
        same_host = aliases.get(host, host) == aliases.get(own_host, own_host)
        return same_host and port in (0, own_port) and self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            return
        if self._connections.closed:
            self._connections = Connections()
        host, port = split_address(self.listen)
        try:
            self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        except OSError as exc:  # worded as Toxiproxy words it, which clients' tests compare
            reason = (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
            shown = "127.0.0.1" if host == "localhost" else host
            raise ApiError(f"listen tcp {shown}:{port}: bind: {reason}", 500) from exc
        bound = self._server.sockets[0].getsockname()
        self.listen = f"{bound[0]}:{bound[1]}"
        self._connections.sweep(self.timeouts.idle, self.timeouts.request)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._connections.close_all()
            await self._server.wait_closed()
            self._server = None
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        await asyncio.sleep(0)  # closed transports release their sockets

    def check(self, toxic: Toxic) -> None:
        """Refuse a toxic this fault point cannot act out (``ApiError`` 400). A proxy with codec
        ``auto`` takes HTTP faults; a connection it relays raw skips them, and says so."""
        refused = toxic.fault.runs_where("tcp" if self.codec == "tcp" else "proxy")
        if refused is not None:
            raise ApiError(refused, 400)

    def active(self) -> list[Toxic]:
        now = time.monotonic()
        for name in [n for n, t in self.toxics.items() if t.expired(now)]:
            self.remove(name, expired=True)
        return list(self.toxics.values())

    def remove(self, name: str, *, expired: bool = False) -> None:
        """Take toxic ``name`` off; its evidence stays readable (the last ``RETIRED`` ones)."""
        toxic = self.toxics.pop(name)
        toxic.evidence.expired = expired
        self.retired.pop(name, None)
        self.retired[name] = toxic.evidence
        while len(self.retired) > RETIRED:
            del self.retired[next(iter(self.retired))]

    def evidence(self, name: str) -> dict[str, Any] | None:
        """What toxic ``name`` did (active or removed), None if this proxy never had it."""
        toxic = self.toxics.get(name)
        found = toxic.evidence if toxic is not None else self.retired.get(name)
        return None if found is None else {"active": toxic is not None, **found.to_json()}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clock = self._connections.add(writer)
        if clock is None:
            return
        try:
            first = b"" if self.codec == "tcp" else await self._sniff(reader)
            if first is None:
                return
            if self.codec == "tcp" or looks_like_http(first) is not True:
                self._requests.inc()
                await Link(self, reader, writer, first).run()
            else:
                await self._http(reader, writer, first, clock)
        except (OSError, asyncio.CancelledError):  # the client went away (reset, closed)
            pass
        except RuntimeError:  # uvloop: a write to a transport the client reset meanwhile
            if not writer.is_closing():
                raise
        finally:
            self._connections.discard(writer)
            with contextlib.suppress(Exception):  # a reset's error, retrieved: nothing logged
                await writer.wait_closed()

    async def _sniff(self, reader: asyncio.StreamReader) -> bytes | None:
        """The connection's first bytes, enough to tell HTTP from another protocol; b"" if the
        client sent nothing for a while (it waits for the server to speak), None at once EOF."""
        data = b""
        try:
            async with asyncio.timeout(self.timeouts.sniff):
                while looks_like_http(data) is None:
                    chunk = await reader.read(READ_SIZE)
                    if not chunk:
                        return data or None
                    data += chunk
        except TimeoutError:
            pass
        return data

    async def _http(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes, clock: Clock
    ) -> None:
        messages = MessageReader(reader, writer=writer, initial=first, clock=clock)
        while True:
            try:
                request = await messages.read()  # the sweeper closes idle and half-sent ones
            except ValueError as exc:
                message = json.dumps({"error": f"bad request: {exc}"}).encode()
                writer.write(json_response(400, message, keep_alive=False))
                break
            if request is None:
                break
            try:
                reply = await self.handle(request)
            except Exception as exc:  # a proxy bug must not look like a dead service
                error = json.dumps({"error": f"chaosml proxy: {type(exc).__name__}: {exc}"})
                reply = Reply(json_response(502, error.encode(), keep_alive=False), close=True)
            if await self._send(writer, reply) or not request.keep_alive:
                break
        await writer.drain()

    async def _send(self, writer: asyncio.StreamWriter, reply: Reply) -> bool:
        """Send ``reply``; True if the connection must close afterwards."""
        if reply.reset:
            reset(writer)
            return True
        data, truncated = reply.data, reply.limit is not None and reply.limit < len(reply.data)
        if truncated:
            data = data[: reply.limit]
        await write_shaped(writer, data, reply.rate, reply.slices, self.rng)
        if reply.close_delay:
            await asyncio.sleep(reply.close_delay)
        return reply.close or truncated

    async def handle(self, request: Message) -> Reply:
        self._requests.inc()
        toxics = [t for t in self.active() if t.hits()] if self.toxics else None
        if not toxics:
            return await self._forward(self.upstream, request, request.body)
        plan = self._plan(toxics)
        for counter in plan.counters:
            counter.inc()
        return await self._handle_toxic(request, plan)

    def _plan(self, toxics: list[Toxic]) -> _Plan:
        """What the toxics rolled for a request do, sorted once per set of toxics (the hot
        path): the same set comes back on every request while a game day's faults stay on."""
        key = tuple(map(id, toxics))  # the plan holds the toxics, so their ids stay theirs
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= 64:  # many toxics with partial toxicity: many subsets
                self._plans.clear()
            plan = self._plans[key] = _Plan.of(toxics, [self._applied(t.type) for t in toxics])
        return plan

    def _applied(self, kind: str) -> Any:
        """The toxics-applied counter of ``kind`` on this proxy (cached: the hot path)."""
        counter = self._counters.get(kind)
        if counter is None:
            counter = self._counters[kind] = self.metrics.series(
                self.metrics.toxics, self.name, kind
            )
        return counter

    async def _handle_toxic(self, request: Message, plan: _Plan) -> Reply:
        if plan.early:
            acted(plan.upstream)
            early = await self._act(effect_of(plan.upstream, len(request.body)), request)
            if early is not None:
                return early
        body, frame, codec = self._request_faults(request, plan)
        if plan.stale is not None:
            acted(plan.routed)
        reply = await self._forward(plan.stale or self.upstream, request, body)
        if plan.respond and reply.data:
            reply.data = self._response_faults(reply.data, plan.downstream, frame, codec)
        if plan.late:
            acted(plan.downstream)
            effect = effect_of(plan.downstream, len(reply.data))
            late = await self._act(effect, request)
            if late is not None:
                return late
            reply.close_delay, reply.rate, reply.limit = (
                effect.close_delay,
                effect.rate,
                effect.limit,
            )
            reply.slices = effect.slices
        return reply

    async def _act(self, effect: Effect, request: Message) -> Reply | None:
        """Wait out the effect's delay; a Reply if it ends the exchange here, else None."""
        if effect.delay:
            await asyncio.sleep(effect.delay)
        if effect.hold is not None:
            forever = math.isinf(effect.hold)
            await (asyncio.Event().wait() if forever else asyncio.sleep(effect.hold))
            return Reply(close=True)
        if effect.reset_after is not None:
            await asyncio.sleep(effect.reset_after)
            return Reply(reset=True)
        if effect.status is not None:
            return Reply(json_response(effect.status, effect.body, keep_alive=request.keep_alive))
        return None

    def _codec(self, payload: Any) -> Codec | None:
        return detect(payload) if self.codec == "auto" else get_codec(self.codec)

    def _skip(self, toxics: list[Toxic], reason: str) -> None:
        for toxic in toxics:
            toxic.evidence.skip(reason)

    def _request_faults(
        self, request: Message, plan: _Plan
    ) -> tuple[bytes, Table | None, Codec | None]:
        if not plan.decode:
            return request.body, None, None
        readers = plan.request + plan.framing
        coding = coding_of(request.header(b"content-encoding"))
        if coding is not None and coding not in CODINGS:
            self.metrics.series(self.metrics.unparsed, self.name, "request").inc()
            self._skip(readers, f"request body {coding}-encoded")
            return request.body, None, None
        try:
            payload = orjson.loads(decoded(request.body, coding))
            codec = self._codec(payload)
            if codec is None:
                raise CodecError("no codec recognises the request")
            reads = plan.reads
            records = None if reads is None else codec.records(payload)
            if records is not None and reads is not None:  # decode only the columns read
                before = partial_table(records, reads)  # and patch them back in place
                batch = None
                n = len(records)
            else:
                batch = codec.decode_request(payload)
                before = batch.columns
                n = len(next(iter(before.values()))) if before else 0
        except UNREADABLE as exc:
            self.metrics.series(self.metrics.unparsed, self.name, "request").inc()
            self._skip(readers, f"unreadable request body ({type(exc).__name__})")
            return request.body, None, None
        columns, pending = apply_request_faults(plan.request, before, n, self.metrics, self.name)
        try:
            if records is not None:
                body = orjson.dumps(payload) if patch_records(records, before, columns) else None
            elif columns is before:
                body = None
            else:
                assert batch is not None
                batch.columns = columns
                body = orjson.dumps(codec.encode_request(batch))
            body = None if body is None else encoded_as(body, coding)
        except Exception:  # the faulted values could not be sent: the fault's failure
            for toxic, *_ in pending:
                self.metrics.series(self.metrics.fault_errors, self.name, toxic.type).inc()
                toxic.evidence.error()
            return request.body, None, None
        record(pending)
        return request.body if body is None else body, columns, codec

    def _response_faults(
        self, data: bytes, toxics: list[Toxic], table: Table | None, codec: Codec | None
    ) -> bytes:
        changers = [t for t in toxics if isinstance(t.fault, ResponseFault) and not t.fault.routes]
        coding = encoded(data)
        if coding is not None and coding not in CODINGS:
            self.metrics.series(self.metrics.unparsed, self.name, "response").inc()
            self._skip(changers, f"response body {coding}-encoded")
            return data
        head, _, body = data.partition(b"\r\n\r\n")
        try:
            payload = orjson.loads(decoded(body, coding))
            codec = codec or self._codec(payload) or get_codec("records")
            outputs = codec.decode_response(payload)
            predictions = np.asarray(outputs.predictions, dtype=object)
            scores = None if outputs.scores is None else np.asarray(outputs.scores, dtype=float)
        except UNREADABLE as exc:
            self.metrics.series(self.metrics.unparsed, self.name, "response").inc()
            status = head.split(b" ", 2)[1:2]
            why = f"HTTP {status[0].decode()} answer" if status and status[0][:1] != b"2" else ""
            self._skip(changers, f"unreadable response body ({why or type(exc).__name__})")
            return data
        n = len(predictions)
        rows = table if table and all(len(v) == n for v in table.values()) else None
        predictions, scores, pending = apply_response_faults(
            changers, rows, predictions, scores, self.metrics, self.name
        )
        outputs.predictions = predictions.tolist()
        outputs.scores = None if scores is None else scores.tolist()
        try:
            new_body = encoded_as(orjson.dumps(codec.encode_response(outputs)), coding)
        except Exception:  # the faulted answers could not be sent: the fault's failure
            for toxic, *_ in pending:
                self.metrics.series(self.metrics.fault_errors, self.name, toxic.type).inc()
                toxic.evidence.error()
            return data
        record(pending)
        lines = [
            line for line in head.split(b"\r\n") if not line.lower().startswith(b"content-length")
        ]
        lines.append(b"Content-Length: " + str(len(new_body)).encode())
        return b"\r\n".join(lines) + b"\r\n\r\n" + new_body

    async def _forward(self, address: str, request: Message, body: bytes) -> Reply:
        pool = self._pools.setdefault(address, _Pool())
        head = request.method == b"HEAD"
        try:
            response = await pool.exchange(address, serialize_request(request, body), head=head)
        except (OSError, ValueError, ApiError) as exc:
            self.metrics.series(self.metrics.upstream_errors, self.name).inc()
            error = json.dumps({"error": f"upstream {address} unreachable: {exc}"}).encode()
            return Reply(json_response(502, error, keep_alive=request.keep_alive))
        data = serialize_response(
            response.status,
            response.reason,
            response.headers,
            response.body,
            keep_alive=request.keep_alive,
            head=head,
        )
        return Reply(data)
