"""A thin adapter over toxiproxy-python that drives a real Toxiproxy or chaosml's proxy.

toxiproxy-python keeps the server's host and port as class attributes of ``APIConsumer``; this adapter
binds them per call under a lock, so several targets (a staging Toxiproxy and a local chaosml proxy)
can be driven from one process. Every call has a timeout; removing a toxic falls back to ``/reset``
if the delete fails, so a fault is never left behind.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from chaosml.errors import InputError, UnreachableError

_BIND = threading.Lock()


@dataclass(frozen=True)
class ToxiproxyTarget:
    """A Toxiproxy-compatible control API at ``host:port``."""

    host: str = "127.0.0.1"
    port: int = 8474
    timeout: float = 5.0

    @contextmanager
    def _api(self) -> Iterator[type[APIConsumer]]:
        with _BIND:
            saved = APIConsumer.host, APIConsumer.port
            APIConsumer.host, APIConsumer.port = self.host, self.port
            try:
                yield APIConsumer
            except requests.RequestException as exc:
                raise UnreachableError(f"Toxiproxy API {self.host}:{self.port}: {exc}") from exc
            except InvalidToxic as exc:
                raise InputError(f"Toxiproxy API {self.host}:{self.port}: {_error(exc)}") from exc
            finally:
                APIConsumer.host, APIConsumer.port = saved

    def version(self) -> str:
        with self._api() as api:
            return str(api.get("/version", timeout=self.timeout).text)

    def proxies(self) -> dict[str, Any]:
        with self._api() as api:
            return dict(api.get("/proxies", timeout=self.timeout).json())

    def ensure_proxy(self, name: str, upstream: str, listen: str = "127.0.0.1:0") -> dict[str, Any]:
        """The proxy ``name`` in front of ``upstream``, created if missing."""
        body = {"name": name, "upstream": upstream, "listen": listen}
        with self._api() as api:
            try:
                return dict(api.post("/proxies", json=body, timeout=self.timeout).json())
            except ProxyExists:
                return dict(api.get(f"/proxies/{name}", timeout=self.timeout).json())

    def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        stream: str = "downstream",
        toxicity: float = 1.0,
        attributes: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> str:
        """Add a toxic; returns its name (Toxiproxy's default ``<type>_<stream>``)."""
        body = {
            "name": name or f"{type}_{stream}",
            "type": type,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes or {},
        }
        with self._api() as api:
            return str(
                api.post(f"/proxies/{proxy}/toxics", json=body, timeout=self.timeout).json()["name"]
            )

    def renew(self, proxy: str, toxic: str, lease: float) -> None:
        """Extend a toxic's lease (chaosml's proxy drops it when the lease runs out)."""
        with self._api() as api:
            api.post(
                f"/proxies/{proxy}/toxics/{toxic}",
                json={"attributes": {"lease": lease}},
                timeout=self.timeout,
            )

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        with self._api() as api:
            return list(api.get(f"/proxies/{proxy}/toxics", timeout=self.timeout).json())

    def remove_toxic(self, proxy: str, toxic: str) -> None:
        """Remove a toxic; if that fails for any reason but "already gone", reset everything."""
        try:
            with self._api() as api:
                api.delete(f"/proxies/{proxy}/toxics/{toxic}", timeout=self.timeout)
        except NotFound as exc:
            if b"toxic not found" not in _body(exc):
                self.reset()
        except Exception:
            self.reset()
            raise

    def reset(self) -> None:
        """Remove every toxic and re-enable every proxy."""
        with self._api() as api:
            api.post("/reset", timeout=self.timeout)


def _body(exc: Exception) -> bytes:
    return exc.args[0] if exc.args and isinstance(exc.args[0], bytes) else str(exc).encode()


def _error(exc: Exception) -> str:
    return _body(exc).decode(errors="replace")
