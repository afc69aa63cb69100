"""Driving fault points from a game day: add a scenario's toxics, keep their leases alive, take them
away again — exactly the ones this run added, nothing else.

A chaosml fault point (the proxy, the in-service point) drops a toxic whose lease is not renewed,
so a runner killed with SIGKILL leaves no fault behind once the lease runs out. A real Toxiproxy
has no leases: there a SIGKILLed runner leaves its toxics in place until someone removes them
(``toxiproxy-cli toxic delete`` or ``POST /reset``); they carry the name ``chaosml-<run>-...``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from chaosml.errors import InputError, UnreachableError
from chaosml.gameday.target import FaultPointSpec
from chaosml.proxy.client import ControlClient, ControlFailed, ControlRefused, path
from chaosml.scenario import FaultSpec

T = TypeVar("T")


class FaultPointError(UnreachableError):
    """A fault point could not be reached, or failed a request (exit 3)."""


class FaultPointRefused(InputError):
    """A fault point refused a request as invalid (HTTP 4xx): the scenario or target is wrong
    (exit 2)."""


@dataclass
class AddedToxic:
    point: str
    proxy: str
    name: str
    body: dict[str, Any]


@dataclass
class FaultPointClient:
    """One fault point of a target, over its Toxiproxy-style control API (the one control-API
    client, ``chaosml.proxy.client.ControlClient``, with the game day's errors)."""

    name: str
    spec: FaultPointSpec
    timeout: float = 5.0

    @property
    def base(self) -> str:
        return f"http://{self.spec.api}"

    @property
    def client(self) -> ControlClient:
        token = os.environ.get(self.spec.token_env) if self.spec.token_env else None
        return ControlClient(address=self.spec.api, token=token or None, timeout=self.timeout)

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(lambda client: client.request(method, path, body), method, path)

    def _call(self, call: Callable[[ControlClient], T], method: str, path: str) -> T:
        """``call`` on the client; a refusal (4xx but 404, 408, 429) is ``FaultPointRefused``,
        any other failure ``FaultPointError``."""
        try:
            return call(self.client)
        except (ControlRefused, ControlFailed) as exc:
            if not exc.status:
                raise FaultPointError(f"fault point {self.name!r} ({self.spec.api}) {exc}") from exc
            message = (
                f"fault point {self.name!r} ({self.spec.api}): {method} {path}: "
                f"HTTP {exc.status}: {exc.detail}"
            )
            if 400 <= exc.status < 500 and exc.status not in (404, 408, 429):
                raise FaultPointRefused(message) from exc
            raise FaultPointError(message) from exc

    def _path(self, *parts: str) -> str:
        return path(*parts)

    def check(self) -> None:
        """The API answers and has the proxy; ``UnreachableError``/``InputError`` otherwise."""
        proxies = self._request("GET", "/proxies")
        if not isinstance(proxies, dict) or self.spec.proxy not in proxies:
            known = ", ".join(proxies) if isinstance(proxies, dict) else "none"
            raise InputError(
                f"fault point {self.name!r} ({self.spec.api}) has no proxy "
                f"{self.spec.proxy!r} (it has: {known or 'none'})"
            )

    def toxic_body(self, fault: FaultSpec, name: str, seed: int | None) -> dict[str, Any]:
        attributes = dict(fault.attributes)
        if self.spec.leases:
            attributes["lease"] = self.spec.lease
            if seed is not None:
                attributes["seed"] = seed
        return {
            "name": name,
            "type": fault.type,
            "stream": fault.toxic_stream,
            "toxicity": fault.toxicity,
            "attributes": attributes,
        }

    def toxic(self, fault: FaultSpec, name: str, seed: int | None) -> AddedToxic:
        """The toxic ``add`` would create for ``fault`` (not sent yet)."""
        return AddedToxic(self.name, self.spec.proxy, name, self.toxic_body(fault, name, seed))

    def add(self, toxic: AddedToxic) -> None:
        where = path("proxies", toxic.proxy, "toxics")
        self._call(lambda client: client.add_toxic(toxic.proxy, toxic.body), "POST", where)

    def renew(self, toxic: AddedToxic) -> None:
        where = path("proxies", toxic.proxy, "toxics", toxic.name)
        lease = self.spec.lease
        self._call(lambda client: client.renew(toxic.proxy, toxic.name, lease), "POST", where)

    def remove(self, toxic: AddedToxic) -> bool:
        """Remove the toxic: True if it was there, False if it was gone already (its lease ran
        out, or its add never reached the fault point)."""
        where = path("proxies", toxic.proxy, "toxics", toxic.name)
        try:
            self._call(lambda client: client.remove_toxic(toxic.proxy, toxic.name), "DELETE", where)
        except FaultPointError as exc:
            if "HTTP 404" not in str(exc):
                raise
            return False
        return True

    def evidence(self, toxic: AddedToxic) -> dict[str, Any] | None:
        """What the fault point says the toxic did (chaosml points; None if it has no record)."""
        where = path("proxies", toxic.proxy, "toxics", toxic.name, "evidence")
        return self._call(lambda client: client.evidence(toxic.proxy, toxic.name), "GET", where)

    def toxics(self) -> list[dict[str, Any]]:
        where = path("proxies", self.spec.proxy, "toxics")
        return self._call(lambda client: client.toxics(self.spec.proxy), "GET", where)


@dataclass
class Leases:
    """Renews every added toxic's lease from a background thread until ``stop``."""

    clients: dict[str, FaultPointClient]
    interval: float
    errors: list[str] = field(default_factory=list)
    _toxics: list[AddedToxic] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def add(self, toxic: AddedToxic) -> None:
        with self._lock:
            self._toxics.append(toxic)

    def discard(self, toxic: AddedToxic) -> None:
        with self._lock:
            if toxic in self._toxics:
                self._toxics.remove(toxic)

    def start(self) -> Leases:
        self._thread = threading.Thread(target=self._run, daemon=True, name="chaosml-leases")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                toxics = list(self._toxics)
            for toxic in toxics:
                client = self.clients[toxic.point]
                if not client.spec.leases:
                    continue
                try:
                    client.renew(toxic)
                except FaultPointError as exc:
                    self.errors.append(str(exc))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
