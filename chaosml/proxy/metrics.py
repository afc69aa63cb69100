"""The proxy's own Prometheus metrics, served on the control API's ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "chaosml_proxy_requests",
            "Requests received, per proxy",
            ["proxy"],
            registry=self.registry,
        )
        self.toxics = Counter(
            "chaosml_proxy_toxics_applied",
            "Toxics applied to requests, by type",
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
