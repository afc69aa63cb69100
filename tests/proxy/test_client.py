"""The toxiproxy-python adapter: per-target host and port, timeouts, /reset as the fallback."""

from __future__ import annotations

import pytest

from chaosml.errors import InputError, UnreachableError
from chaosml.proxy.api import ProxyServer, running
from chaosml.proxy.client import ToxiproxyTarget


def target(server: ProxyServer) -> ToxiproxyTarget:
    host, port = server.api.split(":")
    return ToxiproxyTarget(host, int(port), timeout=2)


def test_two_targets_in_one_process(echo_service: str) -> None:
    with running(ProxyServer(api="127.0.0.1:0")) as a, running(ProxyServer(api="127.0.0.1:0")) as b:
        first, second = target(a), target(b)
        first.ensure_proxy("model", echo_service)
        second.ensure_proxy("model", echo_service)
        assert first.ensure_proxy("model", echo_service)["upstream"] == echo_service  # idempotent
        first.add_toxic("model", "latency", attributes={"latency": 5})
        assert [t["name"] for t in first.toxics("model")] == ["latency_downstream"]
        assert second.toxics("model") == []
        first.remove_toxic("model", "latency_downstream")
        first.remove_toxic("model", "latency_downstream")  # already gone: fine
        assert first.toxics("model") == []


def test_removal_falls_back_to_reset(echo_service: str) -> None:
    with running(ProxyServer(api="127.0.0.1:0")) as server:
        client = target(server)
        client.ensure_proxy("model", echo_service)
        client.add_toxic("model", "bias", attributes={"where": "sex == 'F'"})
        client.remove_toxic("no-such-proxy", "bias_downstream")  # fails: reset clears all
        assert client.toxics("model") == []


def test_errors_map_to_exit_codes() -> None:
    with pytest.raises(UnreachableError, match=r"127\.0\.0\.1:1"):
        ToxiproxyTarget("127.0.0.1", 1, timeout=1).proxies()
    with running(ProxyServer(api="127.0.0.1:0")) as server:
        client = target(server)
        client.ensure_proxy("model", "127.0.0.1:9")
        with pytest.raises(InputError, match="invalid toxic type"):
            client.add_toxic("model", "teleport")
