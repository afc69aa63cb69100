"""The proxy's control API, compatible with Toxiproxy 2.x: same endpoints, JSON shapes, default toxic
names, status codes and error bodies, so ``toxiproxy-python`` (or any Toxiproxy client) drives it.

Endpoints: ``GET/POST /proxies``, ``GET/POST/PATCH/DELETE /proxies/{name}``,
``GET/POST /proxies/{name}/toxics``, ``GET/POST/PATCH/DELETE /proxies/{name}/toxics/{toxic}``,
``POST /populate``, ``POST /reset``, ``GET /version``, and ``GET /metrics`` (Prometheus).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chaosml.errors import InputError
from chaosml.proxy.http import Connections, Message, MessageReader, json_response
from chaosml.proxy.metrics import ProxyMetrics
from chaosml.proxy.server import Proxy, split_address
from chaosml.proxy.toxics import ApiError, build_toxic

VERSION = "2.12.0-chaosml"  # the Toxiproxy API version it speaks
FIXED = "this fault point's proxies are fixed: only their toxics can change"
TOKEN_REQUIRED = "refusing to bind the control API to {address} without a token (use --token)"
Handler = Callable[..., Awaitable[tuple[int, Any]]]


def is_loopback(address: str) -> bool:
    host, _ = split_address(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ProxyServer:
    """All proxies and the control API. ``serve()`` runs until cancelled."""

    api: str = "127.0.0.1:8474"
    token: str | None = None
    reap_interval: float = 0.1
    seed: int | None = None  # of every proxy's and toxic's random generator (None: fresh entropy)
    fixed: bool = False  # proxies come from code (the in-service point), not from the API
    metrics: ProxyMetrics = field(default_factory=ProxyMetrics)
    proxies: dict[str, Proxy] = field(default_factory=dict)
    _server: asyncio.base_events.Server | None = None
    _routes: list[tuple[str, re.Pattern[str], Handler]] = field(default_factory=list)
    _connections: Connections = field(default_factory=Connections)

    def __post_init__(self) -> None:
        if self.token is None and not is_loopback(self.api):
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

    # --- HTTP ------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        messages = MessageReader(reader)
        try:
            while (request := await messages.read()) is not None:
                writer.write(await self.respond(request))
                await writer.drain()
                if not request.keep_alive:
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            writer.write(
                json_response(400, b'{"error": "bad request", "status": 400}', keep_alive=False)
            )
        finally:
            self._connections.discard(writer)

    async def respond(self, request: Message) -> bytes:
        keep = request.keep_alive
        path = request.url.split(b"?")[0].decode()
        metrics = path == "/metrics" and request.method == b"GET"  # read-only, for Prometheus
        if (
            self.token is not None
            and not metrics
            and request.header(b"authorization") != f"Bearer {self.token}".encode()
        ):
            return _error(ApiError("missing or wrong token", 401), keep)
        if metrics:
            return json_response(
                200,
                self.metrics.render(),
                keep_alive=keep,
                content_type=b"text/plain; version=0.0.4",
            )
        method = request.method.decode()
        matched = [(m, found, h) for m, p, h in self._routes if (found := p.match(path))]
        handler = next(((found, h) for m, found, h in matched if method in m.split("|")), None)
        if handler is None:
            status = 405 if matched else 404
            return _error(ApiError("method not allowed" if matched else "not found", status), keep)
        found, function = handler
        try:
            body = None
            if method in ("POST", "PATCH") and request.body.strip():
                try:
                    body = json.loads(request.body)
                except ValueError as exc:
                    raise ApiError(f"bad request body: {exc}", 400) from exc
            status, data = await function(body, **found.groupdict())
        except ApiError as exc:
            return _error(exc, keep)
        if status == 204:
            return json_response(204, b"", keep_alive=keep)
        return json_response(status, json.dumps(data).encode(), keep_alive=keep)

    # --- handlers --------------------------------------------------------------------------------

    def _proxy(self, name: str) -> Proxy:
        try:
            return self.proxies[name]
        except KeyError:
            raise ApiError("proxy not found", 404) from None

    async def list_proxies(self, body: Any) -> tuple[int, Any]:
        return 200, {name: proxy.to_json() for name, proxy in self.proxies.items()}

    async def create_proxy(self, body: Any) -> tuple[int, Any]:
        self._fixed()
        proxy = await self._add(body)
        return 201, proxy.to_json()

    async def _add(self, body: Any) -> Proxy:
        if not isinstance(body, dict):
            raise ApiError("bad request body: expected a JSON object", 400)
        for key in ("name", "upstream"):
            if not body.get(key):
                raise ApiError(f"missing required field: {key}", 400)
        if body["name"] in self.proxies:
            raise ApiError("proxy already exists", 409)
        codec = body.get("codec", "auto")
        _check_codec(codec)
        split_address(body["upstream"])
        proxy = Proxy(
            str(body["name"]),
            body.get("listen") or "127.0.0.1:0",
            body["upstream"],
            self.metrics,
            enabled=bool(body.get("enabled", True)),
            codec=codec,
        )
        if proxy.enabled:
            await proxy.start()
        return self.add(proxy)

    async def populate(self, body: Any) -> tuple[int, Any]:
        self._fixed()
        if not isinstance(body, list):
            raise ApiError("bad request body: expected a list of proxies", 400)
        created = []
        for entry in body:
            existing = self.proxies.get(str(entry.get("name"))) if isinstance(entry, dict) else None
            if existing is not None:
                await existing.stop()
                del self.proxies[existing.name]
            created.append((await self._add(entry)).to_json())
        return 201, {"proxies": created}

    async def reset(self, body: Any) -> tuple[int, Any]:
        for proxy in self.proxies.values():
            proxy.toxics.clear()
            proxy.enabled = True
            await proxy.start()
        return 204, None

    async def version(self, body: Any) -> tuple[int, Any]:
        return 200, {"version": VERSION}

    async def show_proxy(self, body: Any, proxy: str) -> tuple[int, Any]:
        return 200, self._proxy(proxy).to_json()

    async def update_proxy(self, body: Any, proxy: str) -> tuple[int, Any]:
        self._fixed()
        target = self._proxy(proxy)
        if not isinstance(body, dict):
            raise ApiError("bad request body: expected a JSON object", 400)
        restart = any(k in body and body[k] != getattr(target, k) for k in ("listen", "upstream"))
        if "codec" in body:
            _check_codec(body["codec"])
            target.codec = body["codec"]
        if restart or body.get("enabled") is False:
            await target.stop()
        target.listen = body.get("listen", target.listen)
        target.upstream = body.get("upstream", target.upstream)
        target.enabled = bool(body.get("enabled", target.enabled))
        if target.enabled:
            await target.start()
        return 200, target.to_json()

    async def delete_proxy(self, body: Any, proxy: str) -> tuple[int, Any]:
        self._fixed()
        await self._proxy(proxy).stop()
        del self.proxies[proxy]
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
        updated = build_toxic({**(body or {}), "name": toxic}, existing)
        target.check(updated)
        target.toxics[toxic] = updated  # renews the lease
        return 200, updated.to_json()

    async def delete_toxic(self, body: Any, proxy: str, toxic: str) -> tuple[int, Any]:
        target, _ = self._toxic(proxy, toxic)
        del target.toxics[toxic]
        return 204, None


def _check_codec(codec: Any) -> None:
    from chaosml.codecs import CODECS

    if codec != "auto" and codec not in CODECS:
        raise ApiError(
            f"invalid attribute 'codec': expected auto or one of {', '.join(CODECS)}", 400
        )


def _error(error: ApiError, keep_alive: bool) -> bytes:
    body = json.dumps({"error": error.message, "status": error.status}).encode()
    return json_response(error.status, body, keep_alive=keep_alive)


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
