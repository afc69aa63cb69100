"""The control API's operations on the proxy collection, as Toxiproxy's ``ProxyCollection`` does
them: one lock serializes every request on the proxies (``Control.routes`` runs each handler under
it, and ``stop_all`` takes it), so of concurrent creates of one name the first binds its listener
and the others find the name taken; every bound listener is a listed, deletable proxy, and no read
sees a populate or an update half-done.

Metric series follow the proxies: a proxy that failed to start (its port taken, say) leaves none,
and a deleted proxy's are dropped, so the label cap is spent only on proxies that exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chaosml._net import split_address as _split
from chaosml.proxy.api_http import Handler, is_loopback_host
from chaosml.proxy.canary import (
    EXPIRED,
    Split,
    SplitCollector,
    change_from,
    lease_from,
    split_from,
    unknown_fields,
)
from chaosml.proxy.metrics import ProxyMetrics
from chaosml.proxy.server import Proxy, Timeouts, split_address
from chaosml.proxy.toxics import ApiError, build_toxic, typed

VERSION = "2.12.0-chaosml"  # the Toxiproxy API version it speaks
FIXED = "this fault point's proxies are fixed: only their toxics can change"
OFF_LOOPBACK = (
    "refusing to listen on {address}: off loopback, a proxy relays the network to its upstream; "
    "run the control API with a token (or chaosml proxy --listen-any) to allow it"
)


class PopulateError(ApiError):
    """A ``/populate`` entry that could not be applied: the entries before it were, and stay (as
    in Toxiproxy); ``proxies`` is what the answer lists, next to the error."""

    def __init__(self, message: str, status: int, proxies: list[dict[str, Any]]) -> None:
        super().__init__(message, status)
        self.proxies = proxies


def bracketed(address: str) -> str:
    """``host:port`` with an IPv6 host in brackets (``::1:80`` -> ``[::1]:80``), as Go's
    ``net.JoinHostPort`` writes it and every client's parser reads it."""
    host, port = _split(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _text(body: dict[str, Any], key: str) -> str | None:
    return typed(body, key, str, "a string") or None


def _flag(body: dict[str, Any], key: str) -> bool | None:
    flag: bool | None = typed(body, key, bool, "true or false")
    return flag


def _check_codec(codec: str) -> None:
    from chaosml.codecs import CODECS

    if codec not in ("auto", "tcp") and codec not in CODECS:
        raise ApiError(
            f"invalid attribute 'codec': expected auto, tcp or one of {', '.join(CODECS)}", 400
        )


@dataclass
class Spec:
    """A validated proxy definition, from a create, populate or update body."""

    name: str
    listen: str
    upstream: str
    enabled: bool
    codec: str


@dataclass(kw_only=True)
class Control:
    """The proxies and every operation the control API offers on them."""

    metrics: ProxyMetrics
    timeouts: Timeouts
    proxies: dict[str, Proxy]
    seed: int | None = None
    fixed: bool = False  # proxies come from code (the in-service point), not from the API
    listen_anywhere: bool = False  # a token or --listen-any: proxies may listen off loopback
    _lock: asyncio.Lock | None = field(default=None, init=False)
    _split_series: bool = field(default=False, init=False)  # the splits' collector registered
    _seeds: np.random.SeedSequence = field(init=False)
    # lapsed shadows being closed (their files closed whole): held so the tasks are not lost
    _closing: set[asyncio.Future[Any]] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self._seeds = np.random.SeedSequence(self.seed)

    @property
    def lock(self) -> asyncio.Lock:
        """The collection's lock, made on the loop that first changes the collection."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def add(self, proxy: Proxy) -> Proxy:
        """Register a proxy built in code (its generator derived from the server's seed)."""
        proxy.rng = np.random.default_rng(self._seeds.spawn(1)[0])
        self.proxies[proxy.name] = proxy
        return proxy

    def expire(self) -> None:
        """Drop every toxic whose lease ran out, send all of a split's traffic to the primary
        once its lease ran out, and remove a shadow whose lease ran out (its files closed
        whole in the background)."""
        now = time.monotonic()
        for proxy in list(self.proxies.values()):
            proxy.active()
            split = getattr(proxy, "split", None)
            if split is not None:
                split.live(now)
            mirror = getattr(proxy, "mirror", None)
            if mirror is not None and mirror.lapsed(now):  # nobody renews it: stop copying
                proxy.mirror = None
                self._closing.add(task := asyncio.ensure_future(mirror.close()))
                task.add_done_callback(self._closing.discard)

    async def stop_all(self) -> None:
        async with self.lock:
            for proxy in list(self.proxies.values()):
                await proxy.stop()
                await self._unshadow(proxy)
            # lapsed shadows still closing: their files are closed whole before the loop ends
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _unshadow(self, proxy: Proxy) -> None:
        """The proxy's shadow and split removed (their recordings closed whole)."""
        mirror = getattr(proxy, "mirror", None)  # the in-service point has no traffic to copy
        if mirror is not None:
            proxy.mirror = None
            await mirror.close()
        split = getattr(proxy, "split", None)  # nor to split
        if split is not None:
            proxy.split = None
            await asyncio.to_thread(split.close)

    def _fixed(self) -> None:
        if self.fixed:
            raise ApiError(FIXED, 405)

    def _proxy(self, name: str) -> Proxy:
        try:
            return self.proxies[name]
        except KeyError:
            raise ApiError("proxy not found", 404) from None

    def _listen(self, address: str) -> str:
        host, _ = split_address(address)
        if not self.listen_anywhere and not is_loopback_host(host):
            raise ApiError(OFF_LOOPBACK.format(address=address), 403)
        return address

    def spec(self, body: Any, *, listen: bool = True) -> Spec:
        """A proxy definition from a create or populate entry; ``ApiError`` if it is not one.
        With ``listen=False`` its listen address is taken as given, checked when it is opened."""
        if not isinstance(body, dict):
            raise ApiError("bad request body: expected a JSON object", 400)
        name, upstream = _text(body, "name"), _text(body, "upstream")
        for key, value in (("name", name), ("upstream", upstream)):
            if not value:
                raise ApiError(f"missing required field: {key}", 400)
        assert name is not None and upstream is not None
        split_address(upstream)
        address = _text(body, "listen") or "127.0.0.1:0"
        if listen:
            self._listen(address)
        enabled = _flag(body, "enabled")
        codec = _text(body, "codec") or "auto"
        _check_codec(codec)
        toxics = body.get("toxics")
        if toxics is not None and not isinstance(toxics, list):
            raise ApiError("invalid attribute 'toxics': expected a list", 400)
        return Spec(name, address, upstream, True if enabled is None else enabled, codec)

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

    async def _start(self, proxy: Proxy) -> None:
        """Open ``proxy``'s listener; its address is then reported as clients parse it."""
        await proxy.start()
        proxy.listen = bracketed(proxy.listen)

    async def _open(self, spec: Spec, *, replacing: bool = False) -> Proxy:
        """A new proxy for ``spec``, listening if enabled; if it cannot listen, nothing of it is
        left (no listener, and no metric series unless it was ``replacing`` a proxy of that
        name, which keeps them) and the error is raised."""
        proxy = self._build(spec)
        try:
            if proxy.enabled:
                await self._start(proxy)
        except BaseException:
            await proxy.stop()
            if not replacing:
                self.metrics.forget(spec.name)
            raise
        return self.add(proxy)

    # --- the collection ---------------------------------------------------------------------------

    async def list_proxies(self, body: Any) -> tuple[int, Any]:
        return 200, {name: proxy.to_json() for name, proxy in self.proxies.items()}

    async def create_proxy(self, body: Any) -> tuple[int, Any]:
        self._fixed()
        spec = self.spec(body)
        if spec.name in self.proxies:
            raise ApiError("proxy already exists", 409)
        return 201, (await self._open(spec)).to_json()

    async def populate(self, body: Any) -> tuple[int, Any]:
        """Create or replace many proxies, in order, as Toxiproxy does. Every entry's fields are
        checked before any is touched (a bad one refuses the call, nothing changed); a proxy
        whose address and upstream are unchanged is kept with its toxics. An entry whose listener
        cannot be opened stops the call: the entries before it stay, it and those after are not
        applied (a proxy it was to replace is kept as it was), and the answer is its error with
        the proxies applied so far (``PopulateError``)."""
        self._fixed()
        if not isinstance(body, list):
            raise ApiError("bad request body: expected a list of proxies", 400)
        specs: list[Spec] = []
        for index, entry in enumerate(body, 1):
            try:
                specs.append(self.spec(entry, listen=False))
            except ApiError as exc:
                raise ApiError(f"{exc.message} at proxy {index}", exc.status) from None
        applied: list[Proxy] = []
        for index, spec in enumerate(specs, 1):
            try:
                applied.append(await self._apply(spec))
            except ApiError as exc:
                shown = [proxy.to_json() for proxy in applied]
                raise PopulateError(f"{exc.message} at proxy {index}", exc.status, shown) from None
        return 201, {"proxies": [proxy.to_json() for proxy in applied]}

    async def _apply(self, spec: Spec) -> Proxy:
        """One populate entry: the existing proxy if it already is what ``spec`` says, else a new
        one in its place (put back as it was if the new one cannot listen)."""
        self._listen(spec.listen)
        existing = self.proxies.get(spec.name)
        if existing is not None and existing.same_route(spec.listen, spec.upstream):
            return existing
        if existing is not None:
            await existing.stop()
            del self.proxies[spec.name]
        try:
            return await self._open(spec, replacing=existing is not None)
        except ApiError:
            if existing is not None:
                self.proxies[spec.name] = existing
                if existing.enabled:
                    with contextlib.suppress(ApiError):
                        await self._start(existing)
            raise

    async def reset(self, body: Any) -> tuple[int, Any]:
        """Every toxic off and every proxy enabled; a listener that cannot bind is reported after
        all the others are done (a reset never stops half-way with faults left on)."""
        for proxy in self.proxies.values():
            for name in list(proxy.toxics):
                proxy.remove(name)
        failed = []
        for proxy in list(self.proxies.values()):
            proxy.enabled = True
            try:
                await self._start(proxy)
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
        await self._change(target, listen, upstream, codec, enabled)
        return 200, target.to_json()

    async def _change(
        self,
        target: Proxy,
        listen: str | None,
        upstream: str | None,
        codec: str | None,
        enabled: bool | None,
    ) -> None:
        before = (target.listen, target.upstream, target.codec, target.enabled)
        after = (
            listen or target.listen,
            upstream or target.upstream,
            codec or target.codec,
            target.enabled if enabled is None else enabled,
        )
        moved = not target.same_route(after[0], after[1])
        if not moved:  # the same listener (``:0`` names it too): its address stays as bound
            after = (target.listen, *after[1:])
        if moved or not after[3]:
            await target.stop()
        target.listen, target.upstream, target.codec, target.enabled = after
        if target.enabled:
            try:
                await self._start(target)
            except ApiError:
                target.listen, target.upstream, target.codec, target.enabled = before
                if target.enabled:
                    with contextlib.suppress(ApiError):
                        await self._start(target)
                raise

    async def delete_proxy(self, body: Any, proxy: str) -> tuple[int, Any]:
        self._fixed()
        await self._proxy(proxy).stop()
        await self._unshadow(self.proxies[proxy])
        del self.proxies[proxy]
        self.metrics.forget(proxy)
        return 204, None

    # --- toxics -----------------------------------------------------------------------------------

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

    # --- shadow (chaosml's own) -------------------------------------------------------------------

    async def set_shadow(self, body: Any, proxy: str) -> tuple[int, Any]:
        """Copy each request the proxy answers to ``candidate`` (``host:port``), recording both
        answers with the rows under ``folder`` as ``codec`` reads them (``chaosml.proxy.shadow``)."""
        from pathlib import Path

        from chaosml.codecs import CODECS
        from chaosml.proxy.feedback import feedback_path
        from chaosml.proxy.recording import QUEUE
        from chaosml.proxy.shadow import CONCURRENCY, TIMEOUT, Mirror

        target = self._proxy(proxy)
        if not isinstance(body, dict):
            raise ApiError("bad request body: expected a JSON object", 400)
        candidate, folder = _text(body, "candidate"), _text(body, "folder")
        codec = _text(body, "codec") or "records"
        for key, value in (("candidate", candidate), ("folder", folder)):
            if not value:
                raise ApiError(f"missing required field: {key}", 400)
        assert candidate is not None and folder is not None
        split_address(candidate)
        if codec not in CODECS:
            raise ApiError(f"invalid attribute 'codec': expected one of {', '.join(CODECS)}", 400)
        if target.codec == "tcp":
            raise ApiError("a tcp proxy relays bytes: it has no requests to copy", 400)
        if not isinstance(target, Proxy):
            raise ApiError("the in-service point has no traffic of its own to copy", 400)
        where = _text(body, "path")
        if where is not None and not where.startswith("/"):
            raise ApiError("invalid attribute 'path': expected a path starting with /", 400)
        timeout = typed(body, "timeout", (int, float), "a number")
        size = typed(body, "queue", int, "an integer")
        if (timeout is not None and not timeout > 0) or (size is not None and size < 1):
            raise ApiError("invalid attribute: 'timeout' and 'queue' must be positive", 400)
        feedback = feedback_path(body)
        live = typed(body, "live", bool, "a boolean")
        lease = lease_from(body)
        if target.mirror is not None:
            raise ApiError("shadow already set", 409)
        target.mirror = Mirror(
            candidate,
            codec,
            Path(folder),
            timeout=TIMEOUT if timeout is None else float(timeout),
            size=QUEUE if size is None else size,
            concurrency=CONCURRENCY,
            path=where,
            feedback=feedback,
            live=bool(live),
            lease=lease,
        )
        target.mirror.start()
        return 201, target.mirror.counts()

    async def show_shadow(self, body: Any, proxy: str) -> tuple[int, Any]:
        mirror = self._proxy(proxy).mirror
        if mirror is None:
            raise ApiError("shadow not found", 404)
        return 200, mirror.counts()

    async def change_shadow(self, body: Any, proxy: str) -> tuple[int, Any]:
        """Renew the shadow's lease (``{}``), or give it a new one (``{"lease": seconds}``)."""
        mirror = self._proxy(proxy).mirror
        if mirror is None:
            raise ApiError("shadow not found", 404)
        if body is not None and not isinstance(body, dict):
            raise ApiError("bad request body: expected a JSON object", 400)
        unknown_fields(body or {}, ("lease",))
        mirror.renew(lease_from(body or {}))
        return 200, mirror.counts()

    async def delete_shadow(self, body: Any, proxy: str) -> tuple[int, Any]:
        """Stop copying; the final counts, once the recorded files are closed."""
        target = self._proxy(proxy)
        mirror = target.mirror
        if mirror is None:
            raise ApiError("shadow not found", 404)
        target.mirror = None
        return 200, await mirror.close()

    # --- split (chaosml's own) --------------------------------------------------------------------

    def _splittable(self, proxy: str) -> Proxy:
        target = self._proxy(proxy)
        if not isinstance(target, Proxy):
            raise ApiError("the in-service point has no traffic of its own to split", 400)
        if target.codec == "tcp":
            raise ApiError("a tcp proxy relays bytes: it has no requests to split", 400)
        return target

    def _split(self, proxy: str) -> tuple[Proxy, Split]:
        target = self._splittable(proxy)
        if target.split is None:
            raise ApiError("split not found", 404)
        return target, target.split

    async def set_split(self, body: Any, proxy: str) -> tuple[int, Any]:
        """Send a sticky share (``weight``) of the proxy's requests to ``candidate`` instead of
        its upstream, by ``key``, under a ``lease`` (``chaosml.proxy.canary``)."""
        target = self._splittable(proxy)
        if target.split is not None:
            raise ApiError("split already set", 409)
        split = split_from(body, proxy_codec=target.codec, check_address=split_address)
        if not self._split_series:
            self.metrics.registry.register(SplitCollector(self.proxies))
            self._split_series = True
        target.split = split
        return 201, split.to_json(target.upstream)

    async def change_split(self, body: Any, proxy: str) -> tuple[int, Any]:
        """A new weight and/or lease; the lease renewed either way (``{}`` only renews). A split
        whose lease ran out is not revived (409): all its traffic stays on the primary."""
        target, split = self._split(proxy)
        weight, lease = change_from(body)
        if not split.live(time.monotonic()):
            raise ApiError(EXPIRED, 409)
        split.change(weight, lease)
        return 200, split.to_json(target.upstream)

    async def show_split(self, body: Any, proxy: str) -> tuple[int, Any]:
        target, split = self._split(proxy)
        return 200, split.to_json(target.upstream)

    async def delete_split(self, body: Any, proxy: str) -> tuple[int, Any]:
        """All traffic back to the primary at once; the final state, once the recording is
        written whole."""
        target, split = self._split(proxy)
        target.split = None
        await asyncio.to_thread(split.close)
        return 200, split.to_json(target.upstream)

    async def promote_split(self, body: Any, proxy: str) -> tuple[int, Any]:
        """All traffic to the candidate at once, which becomes the proxy's upstream; the split
        ends (its final state, with ``upstream`` now the candidate). The listener and its
        connections stay: each request from now on goes to the candidate, and one already on
        its way ends where it went, so no client sees the switch (an update of ``upstream``
        restarts the listener, as Toxiproxy's does). A split whose lease ran out is not promoted
        (409)."""
        self._fixed()  # (it changes the upstream, as an update does)
        target, split = self._split(proxy)
        if not split.live(time.monotonic()):
            raise ApiError(EXPIRED, 409)
        primary, target.upstream, target.split = target.upstream, split.candidate, None
        target.pool(primary).close()  # its idle connections (one busy now idles until the end)
        await asyncio.to_thread(split.close)
        return 200, {**split.to_json(primary), "upstream": target.upstream}

    def locked(self, handler: Handler) -> Handler:
        """``handler`` run under the collection's lock, as each Toxiproxy handler holds its
        collection's (read or write) lock: a read never sees a change half-done."""

        async def run(body: Any, **names: str) -> tuple[int, Any]:
            async with self.lock:
                return await handler(body, **names)

        return run

    def routes(self) -> list[tuple[str, str, Handler]]:
        """Method(s), path pattern and handler (under the lock) of every endpoint (``/metrics``
        is the front's); ``version`` is the one whose answer ends with a newline."""
        route = r"/proxies/(?P<proxy>[^/]+)"
        toxic = route + r"/toxics/(?P<toxic>[^/]+)"
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
            ("GET", toxic, self.show_toxic),
            ("POST|PATCH", toxic, self.update_toxic),
            ("DELETE", toxic, self.delete_toxic),
            ("GET", toxic + "/evidence", self.show_evidence),
            ("POST", route + "/shadow", self.set_shadow),
            ("GET", route + "/shadow", self.show_shadow),
            ("PATCH", route + "/shadow", self.change_shadow),
            ("DELETE", route + "/shadow", self.delete_shadow),
            ("POST", route + "/split", self.set_split),
            ("PATCH", route + "/split", self.change_split),
            ("GET", route + "/split", self.show_split),
            ("DELETE", route + "/split", self.delete_split),
            ("POST", route + "/split/promote", self.promote_split),
        ]
        return [(m, p, h if h == self.version else self.locked(h)) for m, p, h in table]
