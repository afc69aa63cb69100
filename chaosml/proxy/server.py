"""The fault proxy's data plane: one listener per proxy, relaying each connection to its upstream
and acting out the toxics on the way.

A connection is told apart by who speaks first, with no wait: the proxy connects to the upstream
as it accepts the client (as Toxiproxy does), and whichever side sends first decides. Client
bytes that are an HTTP/1 request are served as HTTP (``chaosml.proxy.exchange``: streamed, with
payload faults on the bodies they must read); an upstream that speaks first (a database's or a
mail server's greeting), a client speaking another protocol, HTTP/2 (its preface) and an HTTP/1
request that upgrades its connection (WebSocket, h2c) are relayed as a raw byte stream with the
transport toxics acted out on it (``chaosml.proxy.stream``); payload toxics met there are counted
as skips with that reason. With codec ``tcp`` every connection is relayed raw.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chaosml._net import split_address as _split
from chaosml.faults.evidence import skip_reason
from chaosml.proxy.canary import Split
from chaosml.proxy.exchange import Exchange, Plan
from chaosml.proxy.http import (
    MAX_BODY,
    MAX_HEAD,
    READ_SIZE,
    STREAM_READ,
    Connections,
    StreamParser,
    close_listener,
)
from chaosml.proxy.metrics import ProxyMetrics
from chaosml.proxy.pipeline import (
    Pipeline,
    apply_request_faults,
    apply_response_faults,
    record,
)
from chaosml.proxy.shadow import Mirror
from chaosml.proxy.stream import Link
from chaosml.proxy.toxics import ApiError, OwnsToxics, Toxic, ToxicStore
from chaosml.proxy.upstream import Pool, Upstream

__all__ = [
    "Limits",
    "Proxy",
    "Timeouts",
    "apply_request_faults",
    "apply_response_faults",
    "looks_like_http",
    "record",
    "split_address",
]

REQUEST_LINE = re.compile(rb"[A-Z][A-Z_-]{0,23} \S+ HTTP/\d\.\d\r?")
METHOD = re.compile(rb"[A-Z][A-Z_-]{0,23}")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # an HTTP/2 client's first bytes (prior knowledge)


def split_address(address: str) -> tuple[str, int]:
    try:
        return _split(address)
    except ValueError as exc:
        raise ApiError(str(exc), 400) from exc


@dataclass(frozen=True)
class Timeouts:
    """How long a proxy (or the control API) waits on a client, in seconds."""

    idle: float = 60.0  # for the next request on a keep-alive connection (or a first byte)
    request: float = 10.0  # for a request's headers to arrive whole, then for each piece (408)
    # Kept for callers; no longer waited: who speaks first tells HTTP from other protocols.
    sniff: float = 1.0


@dataclass(frozen=True)
class Limits:
    """How much of a connection's data a proxy holds, in bytes."""

    head: int = MAX_HEAD  # a request's headers (then 431), an answer's (then 502)
    body: int = MAX_BODY  # a body held for a payload fault to read; past it relayed unread


def looks_like_http(data: bytes) -> bool | None:
    """Whether a connection's first bytes are an HTTP/1 request line (None: too few to tell)."""
    line, newline, _ = data.partition(b"\n")
    token = line.partition(b" ")[0]
    if not METHOD.fullmatch(token):
        return None if not token else False
    if newline:
        return REQUEST_LINE.fullmatch(line) is not None
    return None if len(data) < 8192 else True


class Relay(Link):
    """A connection relayed raw, on an upstream connection already open (else opened here), the
    upstream's first bytes (``said``) delivered first; payload toxics it meets are skips for
    ``reason``."""

    def __init__(
        self,
        proxy: Proxy,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        first: bytes = b"",
        *,
        upstream: Upstream | None = None,
        said: bytes = b"",
        reason: str = skip_reason("raw"),
    ) -> None:
        super().__init__(proxy, reader, writer, first)
        self.upstream, self.said = upstream, said
        self.reason = reason  # the skip's wording for payload toxics it meets

    async def run(self) -> None:
        if self.upstream is None:
            try:
                self.upstream = await Pool(self.proxy.upstream).open()
            except (OSError, ValueError):
                metrics = self.proxy.metrics
                metrics.series(metrics.upstream_errors, self.proxy.name).inc()
                return
        upstream = self.upstream
        try:
            await self.relay(upstream.reader, upstream.writer, self.said)
        finally:
            upstream.close()


@dataclass(kw_only=True)
class Proxy(OwnsToxics):
    """One listener relaying to ``upstream``, with the toxic store it owns and the payload
    pipeline every fault point shares."""

    name: str
    listen: str
    upstream: str
    metrics: ProxyMetrics
    enabled: bool = True
    codec: str = "auto"
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    store: ToxicStore = field(default_factory=ToxicStore)
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    mirror: Mirror | None = None  # a shadow: each answered request copied to a candidate
    split: Split | None = None  # a canary: a sticky share of requests sent to a candidate
    large_answers: bool = False  # an answer worth splicing came: answers' bodies may be spliced
    _server: asyncio.base_events.Server | None = field(default=None, init=False)
    _pools: dict[str, Pool] = field(default_factory=dict, init=False)
    _connections: Connections = field(default_factory=Connections, init=False)
    _counters: dict[str, Any] = field(default_factory=dict, init=False)
    _plans: dict[tuple[int, ...], Plan] = field(default_factory=dict, init=False)
    _pipeline: Pipeline | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._requests = self.metrics.series(self.metrics.requests, self.name)  # the hot path's

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
            self._server = await asyncio.start_server(
                self._serve, host, port, reuse_address=True, limit=STREAM_READ
            )
        except OSError as exc:  # worded as Toxiproxy words it, which clients' tests compare
            reason = (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
            shown = "127.0.0.1" if host == "localhost" else host
            raise ApiError(f"listen tcp {shown}:{port}: bind: {reason}", 500) from exc
        bound = self._server.sockets[0].getsockname()
        self.listen = f"{bound[0]}:{bound[1]}"
        self._connections.sweep(self.timeouts.idle, self.timeouts.request)

    async def stop(self) -> None:
        if self._server is not None:
            await close_listener(self._server)
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

    def pipeline(self) -> Pipeline:
        """The payload pipeline, with the proxy's codec (which an update may change)."""
        if self._pipeline is None or self._pipeline.codec != self.codec:
            self._pipeline = Pipeline(metrics=self.metrics, point=self.name, codec=self.codec)
        return self._pipeline

    def count_request(self) -> None:
        self._requests.inc()

    def pool(self, address: str) -> Pool:
        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = Pool(address)
        return pool

    def plan(self, toxics: list[Toxic]) -> Plan:
        """What the toxics rolled for a request do, sorted once per set of toxics (the hot
        path): the same set comes back on every request while a game day's faults stay on."""
        key = tuple(map(id, toxics))  # the plan holds the toxics, so their ids stay theirs
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= 64:  # many toxics with partial toxicity: many subsets
                self._plans.clear()
            plan = self._plans[key] = Plan.of(toxics, [self._applied(t.type) for t in toxics])
        return plan

    def _applied(self, kind: str) -> Any:
        """The toxics-applied counter of ``kind`` on this proxy (cached: the hot path)."""
        counter = self._counters.get(kind)
        if counter is None:
            counter = self._counters[kind] = self.metrics.series(
                self.metrics.toxics, self.name, kind
            )
        return counter

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clock = self._connections.add(writer)
        if clock is None:
            return
        upstream: Upstream | None = None
        try:
            if self.codec == "tcp":
                self._requests.inc()
                await Relay(self, reader, writer).run()
                return
            clock.idle_since = asyncio.get_running_loop().time()  # swept if nobody speaks
            first, upstream, said = await self._opening(reader)
            clock.idle_since = None
            if first is None:
                return
            relay = None
            if said:
                relay = Relay(self, reader, writer, first, upstream=upstream, said=said)
            elif first.startswith(PREFACE[:14]):  # PRI * HTTP/2.0
                relay = Relay(self, reader, writer, first, upstream=upstream)
                relay.reason = skip_reason("http2")
            elif looks_like_http(first) is not True:
                relay = Relay(self, reader, writer, first, upstream=upstream)
            if relay is not None:
                upstream = None  # the relay's to close
                self._requests.inc()
                await relay.run()
                return
            if upstream is not None:
                self.pool(self.upstream).give(upstream, True)
                upstream = None
            await self._http(reader, writer, first, clock)
        except (OSError, asyncio.CancelledError):  # the client went away (reset, closed)
            pass
        except RuntimeError:  # uvloop: a write to a transport the client reset meanwhile
            if not writer.is_closing():
                raise
        finally:
            if upstream is not None:
                upstream.close()
            self._connections.discard(writer)
            writer.close()  # this side is done with it (a client that only half-closed, too)
            with contextlib.suppress(Exception):  # a reset's error, retrieved: nothing logged
                await writer.wait_closed()

    async def _opening(
        self, reader: asyncio.StreamReader
    ) -> tuple[bytes | None, Upstream | None, bytes]:
        """Who speaks first: the client's first bytes (enough to tell HTTP/1 from others; None
        if it closed at once), the upstream connection opened meanwhile (None if it could not
        be), and what the upstream said first if it spoke before the client (b"" if not)."""
        client = asyncio.ensure_future(reader.read(READ_SIZE))
        connect = asyncio.ensure_future(Pool(self.upstream).open())
        greeting: asyncio.Future[bytes] | None = None
        upstream: Upstream | None = None
        waiting: set[asyncio.Future[Any]] = {client, connect}
        try:
            while not client.done():
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if client.done():
                    break  # the client first, even if the upstream spoke as well
                if connect in done:
                    waiting.discard(connect)
                    if connect.exception() is None:
                        upstream = connect.result()
                        greeting = asyncio.ensure_future(upstream.reader.read(READ_SIZE))
                        waiting.add(greeting)
                if greeting is not None and greeting in done and upstream is not None:
                    waiting.discard(greeting)
                    said = b"" if greeting.exception() is not None else greeting.result()
                    if said:
                        return b"", upstream, said
                    upstream.close()  # it closed at once: the client's bytes will decide
                    upstream = greeting = None
            if connect in waiting and connect.done() and connect.exception() is None:
                upstream = connect.result()  # connected as the client spoke
            data = client.result()
            if not data:
                if upstream is not None:
                    upstream.close()
                return None, None, b""
            while looks_like_http(data) is None:
                more = await reader.read(READ_SIZE)
                if not more:
                    break
                data += more
        except BaseException:
            if upstream is not None:
                upstream.close()
            raise
        finally:
            left = [t for t in (client, connect, greeting) if t is not None and not t.done()]
            for pending in left:
                pending.cancel()
            await asyncio.gather(*left, return_exceptions=True)  # their reads ended, so
            # the connection's next reader is the only one
            for read in (client, greeting):  # an error nobody asked for: retrieved, not logged
                if read is not None and not read.cancelled():
                    read.exception()
            if not connect.cancelled() and connect.exception() is None:
                opened = connect.result()
                if opened is not upstream:  # connected as this connection was given up
                    opened.close()
        return data, upstream, b""

    async def _http(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes, clock: Any
    ) -> None:
        client = StreamParser(
            reader, writer=writer, initial=first, clock=clock, max_head=self.limits.head
        )
        upgrade = await Exchange(self, reader, writer, client).run()
        if upgrade is None:
            return
        protocol = (upgrade.header(b"upgrade") or upgrade.method or b"?").decode("latin-1")
        head = upgrade_head(upgrade)
        clock.started = clock.idle_since = None
        self._requests.inc()
        relay = Relay(self, reader, writer, head + (client.upgraded or b""))
        relay.reason = skip_reason("upgrade", protocol)
        await relay.run()


def upgrade_head(head: Any) -> bytes:
    """A request that upgrades its connection, as it came (every header kept)."""
    lines = [head.method + b" " + head.url + b" HTTP/" + head.version.encode()]
    lines += [k + b": " + v for k, v in head.headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"
