"""The toxiproxy-python adapter: per-target host and port, timeouts, /reset as the fallback."""

from __future__ import annotations

import time

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


def test_the_game_days_client_drives_a_token_protected_point(
    echo_service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chaosml.gameday.faultpoints import FaultPointClient, FaultPointError, FaultPointRefused
    from chaosml.gameday.target import FaultPointSpec
    from chaosml.scenario import FaultSpec

    monkeypatch.setenv("CHAOSML_TEST_TOKEN", "s3cret")
    with running(ProxyServer(api="127.0.0.1:0", token="s3cret", reap_interval=0.05)) as server:
        spec = FaultPointSpec(
            api=server.api, proxy="model", token_env="CHAOSML_TEST_TOKEN", lease=1.0
        )
        point = FaultPointClient("edge", spec, timeout=2)
        point._request("POST", "/proxies", {"name": "model", "upstream": echo_service})
        point.check()
        added = point.toxic(FaultSpec.model_validate({"type": "latency"}), "lat", seed=1)
        point.add(added)
        assert [t["name"] for t in point.toxics()] == ["lat"]
        for _ in range(6):  # renewed every 0.25 s, it outlives its 1 s lease
            time.sleep(0.25)
            point.renew(added)
        assert [t["name"] for t in point.toxics()] == ["lat"]
        assert point.evidence(added) is not None
        assert point.remove(added)
        assert not point.remove(added)  # already gone: fine, and said
        assert point.toxics() == []
        assert point.evidence(added) is not None  # a removed toxic's record stays readable
        with pytest.raises(FaultPointRefused, match=r"'edge' .*HTTP 400: invalid toxic type"):
            point._request("POST", "/proxies/model/toxics", {"type": "teleport"})
        monkeypatch.setenv("CHAOSML_TEST_TOKEN", "wrong")
        with pytest.raises(FaultPointRefused, match="HTTP 401: missing or wrong token"):
            point.check()
    with pytest.raises(FaultPointError, match=r"'edge' \(127\.0\.0\.1:\d+\) unreachable: "):
        point.check()


def test_targets_on_ipv6_loopback(echo_service: str) -> None:
    try:
        server = ProxyServer(api="[::1]:0")
        with running(server):
            host, port = server.api[1:].split("]:")
            client = ToxiproxyTarget(host, int(port), timeout=2)
            assert "version" in client.version()
            assert client.ensure_proxy("model", echo_service)["upstream"] == echo_service
    except InputError as exc:  # no IPv6 loopback on this machine
        pytest.skip(str(exc))
