"""The control API speaks Toxiproxy 2.x: shapes, default names, status codes and error bodies."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import requests
from toxiproxy import Toxiproxy
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from chaosml.errors import InputError
from chaosml.proxy.api import ProxyServer, running


def api(
    server: ProxyServer, method: str, path: str, body: Any = None, data: bytes | None = None
) -> requests.Response:
    return requests.request(method, f"http://{server.api}{path}", json=body, data=data, timeout=5)


def test_proxy_lifecycle_with_toxiproxy_python(toxiproxy: Toxiproxy, echo_service: str) -> None:
    proxy = toxiproxy.create(upstream=echo_service, name="echo")
    host, port = proxy.listen.split(":")
    assert host == "127.0.0.1" and int(port) > 0  # the listener is open
    socket.create_connection((host, int(port)), timeout=2).close()
    assert set(toxiproxy.proxies()) == {"echo"}
    assert b"version" in toxiproxy.version()

    proxy.add_toxic(type="latency", attributes={"latency": 10})
    proxy.add_toxic(
        type="missing_values", stream="upstream", toxicity=0.5, attributes={"columns": ["age"]}
    )
    toxics = proxy.toxics()
    assert set(toxics) == {"latency_downstream", "missing_values_upstream"}
    assert toxics["missing_values_upstream"].toxicity == 0.5
    assert toxics["latency_downstream"].attributes == {"latency": 10, "jitter": 0}

    with pytest.raises(ProxyExists):
        toxiproxy.create(upstream=echo_service, name="echo")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="not_a_toxic")
    proxy.destroy_toxic("latency_downstream")
    with pytest.raises(NotFound):
        proxy.destroy_toxic("latency_downstream")

    with proxy.down(), pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=2)
    socket.create_connection((host, int(port)), timeout=2).close()

    assert toxiproxy.reset()
    assert proxy.toxics() == {}
    proxy.destroy()
    assert toxiproxy.proxies() == {}


def test_status_codes_and_error_bodies(
    proxy_server: ProxyServer, toxiproxy: Toxiproxy, echo_service: str
) -> None:
    created = api(proxy_server, "POST", "/proxies", {"name": "a", "upstream": echo_service})
    assert created.status_code == 201
    assert set(created.json()) >= {"name", "listen", "upstream", "enabled", "toxics"}
    cases = [
        ("POST", "/proxies", {"name": "a", "upstream": echo_service}, 409, "proxy already exists"),
        ("POST", "/proxies", {"name": "b"}, 400, "missing required field: upstream"),
        ("GET", "/proxies/nope", None, 404, "proxy not found"),
        ("GET", "/proxies/a/toxics/nope", None, 404, "toxic not found"),
        ("POST", "/proxies/a/toxics", {"type": "nope"}, 400, "invalid toxic type"),
        (
            "POST",
            "/proxies/a/toxics",
            {"type": "latency", "stream": "sideways"},
            400,
            "stream was invalid, can be either upstream or downstream",
        ),
        (
            "POST",
            "/proxies/a/toxics",
            {"type": "latency", "attributes": {"latency": "slow"}},
            400,
            "invalid attribute 'latency': Input should be a valid integer",
        ),
        (
            "POST",
            "/proxies/a/toxics",
            {"type": "bias", "attributes": {"where": "sex.x == 1"}},
            400,
            "invalid attribute 'where': attribute access is not allowed in a predicate (allowed: comparisons, and/or/not, in, isna(col))",
        ),
        (
            "POST",
            "/proxies/a/toxics",
            {"type": "latency", "toxicity": 2},
            400,
            "invalid attribute 'toxicity': expected a number in [0, 1]",
        ),
        (
            "POST",
            "/proxies",
            {"name": "c", "upstream": echo_service, "codec": "xml"},
            400,
            "invalid attribute 'codec': expected auto, tcp or one of records, mlflow, kserve, tfserving",
        ),
    ]
    for method, path, body, status, message in cases:
        response = api(proxy_server, method, path, body)
        assert (response.status_code, response.json()) == (
            status,
            {"error": message, "status": status},
        ), path
    response = api(proxy_server, "POST", "/proxies", data=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"].startswith("bad request body: ")
    listen = created.json()["listen"]
    response = api(
        proxy_server, "POST", "/proxies", {"name": "d", "upstream": echo_service, "listen": listen}
    )
    assert response.status_code == 500 and listen in response.json()["error"]
    assert api(proxy_server, "POST", "/proxies/a/toxics", {"type": "latency"}).status_code == 200
    assert api(proxy_server, "POST", "/proxies/a/toxics", {"type": "latency"}).status_code == 409


def test_update_populate_and_reset(
    proxy_server: ProxyServer, toxiproxy: Toxiproxy, echo_service: str
) -> None:
    populated = api(
        proxy_server,
        "POST",
        "/populate",
        [{"name": "p1", "upstream": echo_service}, {"name": "p2", "upstream": echo_service}],
    )
    assert populated.status_code == 201
    assert [p["name"] for p in populated.json()["proxies"]] == ["p1", "p2"]
    toxic = api(
        proxy_server,
        "POST",
        "/proxies/p1/toxics",
        {"type": "latency", "attributes": {"latency": 5}},
    ).json()
    assert toxic == {
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency": 5, "jitter": 0},
    }
    updated = api(
        proxy_server,
        "PATCH",
        "/proxies/p1/toxics/latency_downstream",
        {"attributes": {"jitter": 2}},
    ).json()
    assert updated["attributes"] == {"latency": 5, "jitter": 2}
    disabled = api(proxy_server, "POST", "/proxies/p2", {"enabled": False}).json()
    assert disabled["enabled"] is False
    assert api(proxy_server, "POST", "/reset").status_code == 204
    state = api(proxy_server, "GET", "/proxies").json()
    assert all(p["enabled"] and p["toxics"] == [] for p in state.values())
    assert api(proxy_server, "DELETE", "/proxies/p1").status_code == 204


def test_control_api_binds_loopback_unless_a_token_is_set() -> None:
    with pytest.raises(InputError, match="without a token"):
        ProxyServer(api="0.0.0.0:0")
    with running(ProxyServer(api="127.0.0.1:0", token="s3cret")) as server:
        assert api(server, "GET", "/proxies").status_code == 401
        response = requests.get(
            f"http://{server.api}/proxies", headers={"Authorization": "Bearer s3cret"}, timeout=5
        )
        assert response.status_code == 200
