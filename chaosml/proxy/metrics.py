"""The proxy's own Prometheus metrics, served on the control API's ``/metrics``.

Proxy names come from API clients, so their label values are capped: past ``MAX_PROXIES`` live
names, further proxies are counted under ``_other``. Series exist only for proxies that exist: the
control API drops (``forget``) a deleted proxy's series and those of a proxy that failed to start,
so failed creates never use up the cap.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest

MAX_PROXIES = 256
OTHER = "_other"


class ProxyMetrics:
    def __init__(self, max_proxies: int = MAX_PROXIES) -> None:
        self.registry = CollectorRegistry()
        self.max_proxies = max_proxies
        self._series: dict[str, set[tuple[Counter, tuple[str, ...]]]] = {}
        self.requests = Counter(
            "chaosml_proxy_requests",
            "Requests (raw TCP: connections) received, per proxy",
            ["proxy"],
            registry=self.registry,
        )
        self.toxics = Counter(
            "chaosml_proxy_toxics_applied",
            "Toxics applied to requests, by type",
            ["proxy", "type"],
            registry=self.registry,
        )
        self.skipped = Counter(
            "chaosml_proxy_toxics_skipped",
            "Toxics that could not apply to a connection (payload toxics on a raw TCP stream)",
            ["proxy", "type"],
            registry=self.registry,
        )
        self.unparsed = Counter(
            "chaosml_proxy_unparsed_payloads",
            "Payloads passed through unparsed (the codec could not read them)",
            ["proxy", "direction"],
            registry=self.registry,
        )
        self.fault_errors = Counter(
            "chaosml_proxy_fault_errors",
            "Requests on which a fault failed (and the payload passed through unchanged)",
            ["proxy", "type"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "chaosml_proxy_upstream_errors",
            "Requests whose upstream could not be reached",
            ["proxy"],
            registry=self.registry,
        )

    def series(self, counter: Counter, proxy: str, *labels: str) -> Any:
        """``counter``'s child for ``proxy`` (or ``_other`` past the cap) and ``labels``."""
        named = len(self._series) - (OTHER in self._series)
        if proxy not in self._series and named >= self.max_proxies:
            proxy = OTHER
        key = (proxy, *labels)
        self._series.setdefault(proxy, set()).add((counter, key))
        return counter.labels(*key)

    def forget(self, proxy: str) -> None:
        """Drop a deleted proxy's series (and free its place under the cap)."""
        for counter, key in self._series.pop(proxy, set()):
            counter.remove(*key)

    def render(self) -> bytes:
        return generate_latest(self.registry)
