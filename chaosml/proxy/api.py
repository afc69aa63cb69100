"""The proxy's control API, compatible with Toxiproxy 2.x: same endpoints, JSON shapes, default toxic
names, status codes and error bodies, so ``toxiproxy-python`` (or any Toxiproxy client) drives it.

Endpoints: ``GET/POST /proxies``, ``GET/POST/PATCH/DELETE /proxies/{name}``,
``GET/POST /proxies/{name}/toxics``, ``GET/POST/PATCH/DELETE /proxies/{name}/toxics/{toxic}``,
``POST /populate``, ``POST /reset``, ``GET /version``, and ``GET /metrics`` (Prometheus); and
chaosml's own ``GET /proxies/{name}/toxics/{toxic}/evidence`` (what a toxic did, also once removed).

``ProxyServer`` puts three parts together: the HTTP front and who may call it
(``chaosml.proxy.api_http``), the operations on the proxies (``chaosml.proxy.control``), and
running it (``chaosml.proxy.serve``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from chaosml._net import split_address as _split
from chaosml.errors import InputError
from chaosml.proxy.api_http import (
    BROWSER,
    MAX_BODY,
    MAX_HEADERS,
    MAX_INT,
    TOKEN_REQUIRED,
    Front,
    Handler,
    is_loopback,
    is_loopback_host,
    parse_json,
)
from chaosml.proxy.control import (
    FIXED,
    OFF_LOOPBACK,
    VERSION,
    Control,
    PopulateError,
    Spec,
)
from chaosml.proxy.metrics import ProxyMetrics
from chaosml.proxy.serve import running, serve_forever
from chaosml.proxy.server import Proxy, Timeouts
from chaosml.proxy.toxics import ApiError

__all__ = [
    "BROWSER",
    "FIXED",
    "MAX_BODY",
    "MAX_HEADERS",
    "MAX_INT",
    "OFF_LOOPBACK",
    "TOKEN_REQUIRED",
    "VERSION",
    "Handler",
    "PopulateError",
    "ProxyServer",
    "Spec",
    "is_loopback",
    "is_loopback_host",
    "parse_json",
    "running",
    "serve_forever",
]


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
    control: Control = field(init=False)
    front: Front = field(init=False)

    def __post_init__(self) -> None:
        try:
            loopback = is_loopback(self.api)
        except ApiError as exc:
            raise InputError(f"--api: {exc.message}") from None
        if self.token is None and not loopback:
            raise InputError(TOKEN_REQUIRED.format(address=self.api))
        self.control = Control(
            metrics=self.metrics,
            timeouts=self.timeouts,
            proxies=self.proxies,
            seed=self.seed,
            fixed=self.fixed,
            listen_anywhere=self.token is not None or self.listen_any,
        )
        self.front = Front(
            token=self.token,
            routes=self.control.routes(),
            metrics=self.metrics.render,
            newline_after=self.control.version,
        )

    def add(self, proxy: Proxy) -> Proxy:
        """Register a proxy built in code (its generator derived from the server's seed)."""
        return self.control.add(proxy)

    async def populate(self, body: Any) -> tuple[int, Any]:
        """``POST /populate`` (see ``Control.populate``)."""
        async with self.control.lock:
            return await self.control.populate(body)

    async def start(self) -> None:
        host, port = _split(self.api)
        try:
            self.api = await self.front.start(
                host, port, idle=self.timeouts.idle, request=self.timeouts.request
            )
        except OSError as exc:
            raise InputError(f"cannot listen on {self.api}: {exc.strerror or exc}") from exc

    async def serve(self) -> None:
        if not self.front.listening:
            await self.start()
        try:
            while True:
                await asyncio.sleep(self.reap_interval)
                self.control.expire()  # toxics, splits and shadows whose lease ran out
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Close the API (no change starts after this), then every proxy, once the changes
        under way are done."""
        await self.front.stop()
        await self.control.stop_all()
        # connections accepted just before: their handlers start, see closed, close them
        await asyncio.sleep(0.05)
