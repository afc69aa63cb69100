"""The proxy's control API, compatible with Toxiproxy 2.x: same endpoints, JSON shapes, default toxic
names, status codes and error bodies, so ``toxiproxy-python`` (or any Toxiproxy client) drives it.

Endpoints: ``GET/POST /proxies``, ``GET/POST/PATCH/DELETE /proxies/{name}``,
``GET/POST /proxies/{name}/toxics``, ``GET/POST/PATCH/DELETE /proxies/{name}/toxics/{toxic}``,
``POST /populate``, ``POST /reset``, ``GET /version``, and ``GET /metrics`` (Prometheus); and
chaosml's own ``GET /proxies/{name}/toxics/{toxic}/evidence`` (what a toxic did, also once removed).
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
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import numpy as np

from chaosml.errors import InputError
from chaosml.proxy.http import Connections, Message, MessageReader, json_response
from chaosml.proxy.metrics import ProxyMetrics
from chaosml.proxy.server import Proxy, Timeouts, split_address
from chaosml.proxy.toxics import ApiError, build_toxic, typed

VERSION = "2.12.0-chaosml"  # the Toxiproxy API version it speaks
FIXED = "this fault point's proxies are fixed: only their toxics can change"
TOKEN_REQUIRED = "refusing to bind the control API to {address} without a token (use --token)"
BROWSER = "refusing a request from a web browser: the control API is for test tools"
OFF_LOOPBACK = (
    "refusing to listen on {address}: off loopback, a proxy relays the network to its upstream; "
    "run the control API with a token (or chaosml proxy --listen-any) to allow it"
)
Handler = Callable[..., Awaitable[tuple[int, Any]]]
MAX_INT = 2**64  # seeds are 64-bit; anything larger is a mistake, not a value


def is_loopback(address: str) -> bool:
    host, _ = split_address(address)
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


def _text(body: dict[str, Any], key: str) -> str | None:
    return typed(body, key, str, "a string") or None


def _flag(body: dict[str, Any], key: str) -> bool | None:
    flag: bool | None = typed(body, key, bool, "true or false")
    return flag


@dataclass
class Spec:
    """A validated proxy definition, from a create, populate or update body."""

    name: str
    listen: str
    upstream: str
    enabled: bool
    codec: str


@dataclass(kw_only=True)
class ProxyServer:
    """All proxies and the control API. ``serve()`` runs until cancelled."""

    api: str = "127.0.0.1:8474"
    token: str | None = None
    reap_interval: float = 0.1
    seed: int | None = None  # of every proxy's and toxic's random generator (None: fresh entropy)
    fixed: bool = False  # proxies come from code (the in-service point), not from the API
    listen_any: bool = False  # let proxies listen off loopback without a token
    timeouts: Timeouts = field(default_factory=Timeouts)
    metrics: ProxyMetrics = field(default_factory=ProxyMetrics)
    proxies: dict[str, Proxy] = field(default_factory=dict)
    _server: asyncio.base_events.Server | None = field(default=None, init=False)
    _routes: list[tuple[str, re.Pattern[str], Handler]] = field(default_factory=list, init=False)
    _connections: Connections = field(default_factory=Connections, init=False)

    def __post_init__(self) -> None:
        try:
            loopback = is_loopback(self.api)
        except ApiError as exc:
            raise InputError(f"--api: {exc.message}") from None
        if self.token is None and not loopback:
            raise InputError(TOKEN_REQUIRED.format(address=self.api))
        route = r"/proxies/(?P<proxy>[^/]+)"
        table: list[tuple[str, str, Handler]] = [
            ("GET", r"/proxies", self.list_proxies),
            ("POST", r"/proxies", self.create_proxy),
            ("POST", r"/populate", self.populate),
            ("POST", r"/reset", self.reset),
            ("GET", r"/version", self.version),
            ("GET", route, self.show_proxy),
            ("POST|PATCH", route, self.update_proxy),
            ("DELETE", route, self.delete_proxy),
            ("GET", route + "/toxics", self.list_toxics),
            ("POST", route + "/toxics", self.create_toxic),
            ("GET", route + r"/toxics/(?P<toxic>[^/]+)", self.show_toxic),
            ("POST|PATCH", route + r"/toxics/(?P<toxic>[^/]+)", self.update_toxic),
            ("DELETE", route + r"/toxics/(?P<toxic>[^/]+)", self.delete_toxic),
            ("GET", route + r"/toxics/(?P<toxic>[^/]+)/evidence", self.show_evidence),
        ]
        self._routes = [(m, re.compile(p + "$"), h) for m, p, h in table]
        self._seeds = np.random.SeedSequence(self.seed)

    def add(self, proxy: Proxy) -> Proxy:
        """Register a proxy built in code (its generator derived from the server's seed)."""
        proxy.rng = np.random.default_rng(self._seeds.spawn(1)[0])
        self.proxies[proxy.name] = proxy
        return proxy

    def _fixed(self) -> None:
        if self.fixed:
            raise ApiError(FIXED, 405)

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        host, port = split_address(self.api)
        try:
            self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        except OSError as exc:
            raise InputError(f"cannot listen on {self.api}: {exc.strerror or exc}") from exc
        bound = self._server.sockets[0].getsockname()
        self.api = f"{bound[0]}:{bound[1]}"
        self._connections.sweep(self.timeouts.idle, self.timeouts.request)

    async def serve(self) -> None:
        if self._server is None:
            await self.start()
        try:
            while True:
                await asyncio.sleep(self.reap_interval)
                for proxy in self.proxies.values():
                    proxy.active()  # drops toxics whose lease ran out
        finally:
            await self.stop()

    async def stop(self) -> None:
        for proxy in self.proxies.values():
            await proxy.stop()
        if self._server is not None:
            self._server.close()
            await self._connections.close_all()
            await self._server.wait_closed()
            self._server = None
        # connections accepted just before: their handlers start, see closed, close them
        await asyncio.sleep(0.05)

    # --- HTTP ------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clock = self._connections.add(writer)
        if clock is None:
            return
        messages = MessageReader(reader, writer=writer, clock=clock)
        try:
            while True:
                try:
                    request = await messages.read()  # the sweeper closes idle and half-sent
                except ValueError:  # not HTTP, or a malformed request
                    writer.write(_error(ApiError("bad request", 400), False, b""))
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
            return _error(refused, keep, request_id)
        path = request.url.split(b"?")[0].decode("latin-1")
        if path == "/metrics" and request.method == b"GET":
            return json_response(
                200,
                self.metrics.render(),
                keep_alive=keep,
                content_type=b"text/plain; version=0.0.4",
                request_id=request_id,
            )
        method = request.method.decode("latin-1")
        matched = [(m, found, h) for m, p, h in self._routes if (found := p.match(path))]
        handler = next(((found, h) for m, found, h in matched if method in m.split("|")), None)
        if handler is None:
            status = 405 if matched else 404
            error = ApiError("method not allowed" if matched else "not found", status)
            return _error(error, keep, request_id)
        found, function = handler
        try:
            try:
                names = {k: unquote(v, errors="strict") for k, v in found.groupdict().items()}
            except UnicodeDecodeError:
                raise ApiError("bad request: a name in the path is not UTF-8", 400) from None
            body = None
            if method in ("POST", "PATCH") and request.body.strip():
                body = parse_json(request.body)
            status, data = await function(body, **names)
        except ApiError as exc:
            return _error(exc, keep, request_id)
        if status == 204:
            return json_response(204, b"", keep_alive=keep, request_id=request_id)
        text = json.dumps(data, allow_nan=False).encode() + (
            b"\n" if function == self.version else b""
        )
        return json_response(status, text, keep_alive=keep, request_id=request_id)

    # --- handlers --------------------------------------------------------------------------------

    def _proxy(self, name: str) -> Proxy:
        try:
            return self.proxies[name]
        except KeyError:
            raise ApiError("proxy not found", 404) from None

    def _listen(self, address: str) -> str:
        host, _ = split_address(address)
        if self.token is None and not self.listen_any and not is_loopback_host(host):
            raise ApiError(OFF_LOOPBACK.format(address=address), 403)
        return address

    def spec(self, body: Any) -> Spec:
        """A proxy definition from a create or populate entry; ``ApiError`` if it is not one."""
        if not isinstance(body, dict):
            raise ApiError("bad request body: expected a JSON object", 400)
        name, upstream = _text(body, "name"), _text(body, "upstream")
        for key, value in (("name", name), ("upstream", upstream)):
            if not value:
                raise ApiError(f"missing required field: {key}", 400)
        assert name is not None and upstream is not None
        split_address(upstream)
        listen = self._listen(_text(body, "listen") or "127.0.0.1:0")
        enabled = _flag(body, "enabled")
        codec = _text(body, "codec") or "auto"
        _check_codec(codec)
        toxics = body.get("toxics")
        if toxics is not None and not isinstance(toxics, list):
            raise ApiError("invalid attribute 'toxics': expected a list", 400)
        return Spec(name, listen, upstream, True if enabled is None else enabled, codec)

    def _build(self, spec: Spec) -> Proxy:
        return Proxy(
            name=spec.name,
            listen=spec.listen,
            upstream=spec.upstream,
            metrics=self.metrics,
            enabled=spec.enabled,
            codec=spec.codec,
            timeouts=self.timeouts,
        )

    async def list_proxies(self, body: Any) -> tuple[int, Any]:
        return 200, {name: proxy.to_json() for name, proxy in self.proxies.items()}

    async def create_proxy(self, body: Any) -> tuple[int, Any]:
        self._fixed()
        spec = self.spec(body)
        if spec.name in self.proxies:
            raise ApiError("proxy already exists", 409)
        proxy = self._build(spec)
        if proxy.enabled:
            await proxy.start()
        return 201, self.add(proxy).to_json()

    async def populate(self, body: Any) -> tuple[int, Any]:
        """Create or replace many proxies, all or none: every entry is checked before any is
        touched, a proxy whose address and upstream are unchanged is kept with its toxics, and a
        listener that cannot bind undoes the whole call."""
        self._fixed()
        if not isinstance(body, list):
            raise ApiError("bad request body: expected a list of proxies", 400)
        specs: list[Spec] = []
        for index, entry in enumerate(body, 1):
            try:
                specs.append(self.spec(entry))
            except ApiError as exc:
                raise ApiError(f"{exc.message} at proxy {index}", exc.status) from None
        created: list[Proxy] = []
        replaced: list[Proxy] = []
        kept: dict[str, Proxy] = {}
        for index, spec in enumerate(specs, 1):
            existing = self.proxies.get(spec.name)
            if existing is not None and existing.same_route(spec.listen, spec.upstream):
                kept[spec.name] = existing
                continue
            try:
                if existing is not None:
                    await existing.stop()
                    del self.proxies[spec.name]
                    replaced.append(existing)
                proxy = self._build(spec)
                if proxy.enabled:
                    await proxy.start()
            except ApiError as exc:
                for done in created:
                    await done.stop()
                    self.proxies.pop(done.name, None)
                for old in replaced:
                    self.proxies[old.name] = old
                    if old.enabled:
                        with contextlib.suppress(ApiError):
                            await old.start()
                raise ApiError(f"{exc.message} at proxy {index}", exc.status) from None
            created.append(self.add(proxy))
        final = {p.name: p for p in created} | kept
        return 201, {"proxies": [final[spec.name].to_json() for spec in specs]}

    async def reset(self, body: Any) -> tuple[int, Any]:
        """Every toxic off and every proxy enabled; a listener that cannot bind is reported after
        all the others are done (a reset never stops half-way with faults left on)."""
        for proxy in self.proxies.values():
            for name in list(proxy.toxics):
                proxy.remove(name)
        failed = []
        for proxy in self.proxies.values():
            proxy.enabled = True
            try:
                await proxy.start()
            except ApiError as exc:
                failed.append(f"{proxy.name}: {exc.message}")
        if failed:
            raise ApiError("; ".join(failed), 500)
        return 204, None

    async def version(self, body: Any) -> tuple[int, Any]:
        return 200, {"version": VERSION}

    async def show_proxy(self, body: Any, proxy: str) -> tuple[int, Any]:
        return 200, self._proxy(proxy).to_json()

    async def update_proxy(self, body: Any, proxy: str) -> tuple[int, Any]:
        """Change a proxy's listen address, upstream, codec or enabled state: all checked first,
        then applied; a listener that cannot bind puts the proxy back as it was."""
        self._fixed()
        target = self._proxy(proxy)
        if not isinstance(body, dict):
            raise ApiError("bad request body: expected a JSON object", 400)
        listen, upstream = _text(body, "listen"), _text(body, "upstream")
        enabled, codec = _flag(body, "enabled"), _text(body, "codec")
        if listen is not None:
            self._listen(listen)
        if upstream is not None:
            split_address(upstream)
        if codec is not None:
            _check_codec(codec)
        before = (target.listen, target.upstream, target.codec, target.enabled)
        after = (
            listen or target.listen,
            upstream or target.upstream,
            codec or target.codec,
            target.enabled if enabled is None else enabled,
        )
        moved = not target.same_route(after[0], after[1])
        if moved or not after[3]:
            await target.stop()
        target.listen, target.upstream, target.codec, target.enabled = after
        if target.enabled:
            try:
                await target.start()
            except ApiError:
                target.listen, target.upstream, target.codec, target.enabled = before
                if target.enabled:
                    with contextlib.suppress(ApiError):
                        await target.start()
                raise
        return 200, target.to_json()

    async def delete_proxy(self, body: Any, proxy: str) -> tuple[int, Any]:
        self._fixed()
        await self._proxy(proxy).stop()
        del self.proxies[proxy]
        self.metrics.forget(proxy)
        return 204, None

    async def list_toxics(self, body: Any, proxy: str) -> tuple[int, Any]:
        return 200, [t.to_json() for t in self._proxy(proxy).active()]

    async def create_toxic(self, body: Any, proxy: str) -> tuple[int, Any]:
        target = self._proxy(proxy)
        toxic = build_toxic(body, rng=target.rng)
        target.check(toxic)
        if toxic.name in {t.name for t in target.active()}:
            raise ApiError("toxic already exists", 409)
        target.toxics[toxic.name] = toxic
        return 200, toxic.to_json()

    def _toxic(self, proxy: str, name: str) -> Any:
        target = self._proxy(proxy)
        target.active()
        if name not in target.toxics:
            raise ApiError("toxic not found", 404)
        return target, target.toxics[name]

    async def show_toxic(self, body: Any, proxy: str, toxic: str) -> tuple[int, Any]:
        return 200, self._toxic(proxy, toxic)[1].to_json()

    async def update_toxic(self, body: Any, proxy: str, toxic: str) -> tuple[int, Any]:
        target, existing = self._toxic(proxy, toxic)
        if body is not None and not isinstance(body, dict):
            raise ApiError("bad request body: expected a JSON object", 400)
        updated = build_toxic({**(body or {}), "name": toxic}, existing)
        target.check(updated)
        target.toxics[toxic] = updated  # renews the lease
        return 200, updated.to_json()

    async def delete_toxic(self, body: Any, proxy: str, toxic: str) -> tuple[int, Any]:
        target, _ = self._toxic(proxy, toxic)
        target.remove(toxic)
        return 204, None

    async def show_evidence(self, body: Any, proxy: str, toxic: str) -> tuple[int, Any]:
        """chaosml's own: what the toxic did (requests met and hit, rows and cells changed,
        skips by reason, errors), while active and after its removal."""
        target = self._proxy(proxy)
        target.active()
        found = target.evidence(toxic)
        if found is None:
            raise ApiError("toxic not found", 404)
        return 200, found


def _check_codec(codec: str) -> None:
    from chaosml.codecs import CODECS

    if codec not in ("auto", "tcp") and codec not in CODECS:
        raise ApiError(
            f"invalid attribute 'codec': expected auto, tcp or one of {', '.join(CODECS)}", 400
        )


def _error(error: ApiError, keep_alive: bool, request_id: bytes) -> bytes:
    body = json.dumps({"error": error.message, "status": error.status}).encode()
    return json_response(error.status, body, keep_alive=keep_alive, request_id=request_id)


def serve_forever(
    server: ProxyServer,
    on_start: Callable[[ProxyServer], None],
    populate: list[Any] | None = None,
) -> None:
    """Run ``server`` in the foreground until SIGINT or SIGTERM (on uvloop when installed, which
    makes the data plane markedly cheaper); ``populate`` creates proxies first, as ``POST
    /populate`` would (Toxiproxy's ``-config``); ``on_start`` is called once it listens."""
    import signal

    async def run() -> None:
        await server.start()
        if populate is not None:
            try:
                await server.populate(populate)
            except ApiError as exc:
                await server.stop()
                raise InputError(f"--populate: {exc.message}") from exc
        serving = asyncio.ensure_future(server.serve())
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, serving.cancel)
        on_start(server)
        with contextlib.suppress(asyncio.CancelledError):
            await serving

    try:
        import uvloop
    except ImportError:
        asyncio.run(run())
    else:
        uvloop.run(run())


@contextmanager
def running(server: ProxyServer) -> Iterator[ProxyServer]:
    """Run ``server`` on an event loop in a background thread (tests, library use)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    task: list[asyncio.Task[None]] = []
    failure: list[BaseException] = []

    async def main() -> None:
        try:
            await server.start()
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        task.append(asyncio.current_task())  # type: ignore[arg-type]
        ready.set()
        with contextlib.suppress(asyncio.CancelledError):
            await server.serve()
        await asyncio.sleep(0.05)  # closed transports release their sockets before the loop ends

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait()
    if failure:
        thread.join()
        loop.close()
        raise failure[0]
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(task[0].cancel)
        thread.join(timeout=10)
        loop.close()
