"""What other Toxiproxy clients send and expect, and what a client must never be able to do: each
finding from driving the proxy with the Go, Ruby, Node and chaostoolkit clients, as a test."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from chaosml._net import free_port
from chaosml.proxy.api import ProxyServer, running


@pytest.fixture
def server() -> Iterator[ProxyServer]:
    with running(ProxyServer(api="127.0.0.1:0")) as server:
        yield server


def call(
    server: ProxyServer, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, Any]:
    data = (
        None if body is None else json.dumps(body).encode() if not isinstance(body, bytes) else body
    )
    response = requests.request(
        method, f"http://{server.api}{path}", data=data, headers=headers, timeout=5
    )
    return response.status_code, strict_json(response.content) if response.content else None


def strict_json(raw: bytes) -> Any:
    """Parse as Go and JavaScript do: no NaN or Infinity anywhere."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"not JSON: {name}")

    return json.loads(raw, parse_constant=refuse)


def no_nulls(value: Any) -> bool:
    if isinstance(value, dict):
        return all(v is not None and no_nulls(v) for v in value.values())
    if isinstance(value, list):
        return all(no_nulls(v) for v in value)
    return True


def make(server: ProxyServer, name: str = "m", **fields: Any) -> dict[str, Any]:
    status, body = call(
        server, "POST", "/proxies", {"name": name, "upstream": "127.0.0.1:1", **fields}
    )
    assert status == 201, body
    return body  # type: ignore[no-any-return]


def listening(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def test_null_attributes_and_enabled_take_their_defaults(server: ProxyServer) -> None:
    proxy = make(server, enabled=None, listen=None, toxics=None)  # toxiproxy-ruby, Go's Save()
    assert proxy["enabled"] is True and listening(proxy["listen"])
    status, toxic = call(
        server, "POST", "/proxies/m/toxics", {"name": "", "type": "latency", "attributes": None}
    )  # Go's AddToxic(..., nil), chaostoolkit's default
    assert status == 200 and toxic["name"] == "latency_downstream"
    assert toxic["attributes"] == {"latency": 0, "jitter": 0}
    status, toxic = call(
        server,
        "PATCH",
        "/proxies/m/toxics/latency_downstream",
        {"attributes": None, "toxicity": 0.5},
    )
    assert status == 200 and toxic["toxicity"] == 0.5


def test_attributes_are_echoed_with_their_defaults(server: ProxyServer) -> None:
    make(server)
    cases = {
        "latency": ({"latency": 100}, {"latency": 100, "jitter": 0}),
        "bandwidth": ({}, {"rate": 0}),
        "slow_close": ({}, {"delay": 0}),
        "timeout": ({"timeout": 5}, {"timeout": 5}),
        "reset_peer": ({}, {"timeout": 0}),
        "limit_data": ({}, {"bytes": 0}),
        "slicer": ({"average_size": 10}, {"average_size": 10, "size_variation": 0, "delay": 0}),
        "noop": ({}, {}),
    }
    for kind, (given, echoed) in cases.items():
        status, toxic = call(
            server, "POST", "/proxies/m/toxics", {"type": kind, "attributes": given}
        )
        assert status == 200 and toxic["attributes"] == echoed, (kind, toxic)
    status, toxic = call(
        server,
        "POST",
        "/proxies/m/toxics",
        {"type": "missing_values", "stream": "upstream", "attributes": {"columns": ["age"]}},
    )
    assert (
        status == 200
        and toxic["attributes"]["columns"] == ["age"]
        and "rate" in toxic["attributes"]
    )
    status, listed = call(server, "GET", "/proxies")
    assert status == 200 and no_nulls(listed), listed
    assert call(
        server, "PATCH", "/proxies/m/toxics/latency_downstream", {"attributes": {"jitter": 5}}
    )[1]["attributes"] == {"latency": 100, "jitter": 5}


def test_populate_refuses_bad_fields_whole_and_keeps_unchanged_proxies(server: ProxyServer) -> None:
    port = free_port()
    one = make(server, "one", listen=f"localhost:{port}")
    assert one["listen"] == f"127.0.0.1:{port}"
    call(server, "POST", "/proxies/one/toxics", {"type": "latency"})
    good = {"name": "two", "upstream": "127.0.0.1:2"}
    for bad, message in (
        ({"name": "", "upstream": "127.0.0.1:2"}, "missing required field: name at proxy 2"),
        ({"name": "x", "upstream": "nowhere"}, "at proxy 2"),
        (
            {"name": 5, "upstream": "127.0.0.1:2"},
            "invalid attribute 'name': expected a string at proxy 2",
        ),
    ):
        status, body = call(server, "POST", "/populate", [good, bad])
        assert status == 400 and message in body["error"], body
        assert set(call(server, "GET", "/proxies")[1]) == {"one"}  # fields are checked first
    status, body = call(
        server,
        "POST",
        "/populate",
        [{"name": "one", "listen": f"localhost:{port}", "upstream": "127.0.0.1:1"}, good],
    )
    assert status == 201 and [p["name"] for p in body["proxies"]] == ["one", "two"]
    assert [t["type"] for t in call(server, "GET", "/proxies/one/toxics")[1]] == ["latency"]


def test_populate_keeps_the_entries_before_one_that_cannot_listen(server: ProxyServer) -> None:
    # Go client's TestPopulateProxyWithBadDataShouldReturnError: "one" stays, "three" never comes
    status, body = call(
        server,
        "POST",
        "/populate",
        [
            {"name": "one", "upstream": "127.0.0.1:1"},
            {"name": "two", "upstream": "127.0.0.1:2", "listen": "local373"},
            {"name": "three", "upstream": "127.0.0.1:3"},
        ],
    )
    assert status == 400 and "at proxy 2" in body["error"] and body["status"] == 400, body
    proxies = call(server, "GET", "/proxies")[1]
    assert set(proxies) == {"one"} and listening(proxies["one"]["listen"])
    assert body["proxies"] == [proxies["one"]]  # what was applied, as Toxiproxy lists it

    taken = socket.create_server(("127.0.0.1", 0))  # a bind failure: the replaced one stays
    try:
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        status, body = call(
            server,
            "POST",
            "/populate",
            [
                {"name": "three", "upstream": "127.0.0.1:3"},
                {"name": "one", "upstream": "127.0.0.1:9", "listen": busy},
                {"name": "four", "upstream": "127.0.0.1:4"},
            ],
        )
        assert status == 500 and "at proxy 2" in body["error"], body
        assert [p["name"] for p in body["proxies"]] == ["three"]
        after = call(server, "GET", "/proxies")[1]
        assert set(after) == {"one", "three"} and after["one"] == proxies["one"]
        assert listening(after["one"]["listen"]) and listening(after["three"]["listen"])
    finally:
        taken.close()


def test_rejected_updates_change_nothing(server: ProxyServer) -> None:
    proxy = make(server)
    other = make(server, "other")
    call(server, "POST", "/proxies/other/toxics", {"type": "latency"})
    for body in (
        {"listen": "garbage"},
        {"listen": "127.0.0.1:99999"},
        {"enabled": "false"},
        {"upstream": 7},
    ):
        status, _ = call(server, "POST", "/proxies/m", body)
        assert status == 400
        assert call(server, "GET", "/proxies/m")[1] == proxy and listening(proxy["listen"])
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        status, body = call(
            server, "POST", "/proxies/m", {"listen": f"127.0.0.1:{taken.getsockname()[1]}"}
        )
        assert status == 500 and "address already in use" in body["error"]
    finally:
        taken.close()
    assert call(server, "GET", "/proxies/m")[1] == proxy and listening(proxy["listen"])
    assert call(server, "POST", "/reset")[0] == 204
    assert call(server, "GET", "/proxies/other/toxics")[1] == []
    assert call(server, "GET", "/proxies/other")[1]["listen"] == other["listen"]


def test_request_id_version_and_percent_decoded_names(server: ProxyServer) -> None:
    response = requests.get(f"http://{server.api}/version", timeout=5)
    assert response.headers["X-Toxiproxy-Request-Id"]
    assert response.content == b'{"version": "2.12.0-chaosml"}\n'
    for name, path in (("my model", "my%20model"), ("a/b", "a%2Fb")):
        proxy = make(server, name)
        assert call(server, "GET", f"/proxies/{path}")[1]["name"] == name
        assert call(server, "POST", f"/proxies/{path}/toxics", {"type": "noop"})[0] == 200
        assert call(server, "DELETE", f"/proxies/{path}/toxics/noop_downstream")[0] == 204
        assert call(server, "DELETE", f"/proxies/{path}")[0] == 204
        assert not listening(proxy["listen"])  # its port is free again
    assert call(server, "GET", "/proxies/%ff")[0] == 400


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/proxies", {"name": 123, "upstream": "127.0.0.1:1"}),
        ("/proxies", {"name": "x", "upstream": "127.0.0.1:1", "enabled": "false"}),
        ("/proxies", {"name": "x", "upstream": "127.0.0.1:1", "listen": "127.0.0.1:99999"}),
        ("/proxies", {"name": "x", "upstream": "127.0.0.1:1", "listen": "127.0.0.1:٣"}),
        ("/proxies", {"name": "x", "upstream": "127.0.0.1:1", "toxics": "none"}),
        ("/proxies/m/toxics", {"type": "latency", "attributes": {"latency": "100"}}),
        ("/proxies/m/toxics", {"type": "latency", "attributes": {"latency": 100.5}}),
        ("/proxies/m/toxics", {"type": "latency", "toxicity": "1"}),
        ("/proxies/m/toxics", {"type": "latency", "toxicity": True}),
        ("/proxies/m/toxics", {"type": "latency", "name": 7}),
        ("/proxies/m/toxics", {"type": "latency", "stream": 1}),
        ("/proxies/m/toxics", b'{"type": "latency", "attributes": {"latency": 1e400}}'),
        ("/proxies/m/toxics", b'{"type": "bias", "attributes": {"factor": 1e999}}'),
        ("/proxies/m/toxics", b'{"type": "latency", "toxicity": NaN}'),
        ("/proxies/m/toxics", b'{"type": "latency", "toxicity": -Infinity}'),
        ("/proxies/m/toxics", {"type": "latency", "attributes": {"latency": 10**30}}),
        ("/proxies/m/toxics", b"[" * 100_000),
        ("/proxies/m/toxics", b"\xff\xfe"),
        ("/proxies/m/toxics/latency_downstream", {"type": "bandwidth"}),
        ("/proxies/m/toxics/latency_downstream", {"stream": "upstream"}),
    ],
)
def test_loose_types_are_refused(server: ProxyServer, path: str, body: Any) -> None:
    make(server)
    call(server, "POST", "/proxies/m/toxics", {"type": "latency"})
    status, answer = call(server, "POST", path, body)
    assert status == 400 and set(answer) == {"error", "status"}, answer
    status, listed = call(server, "GET", "/proxies")  # still strict JSON for every client
    assert status == 200 and set(listed) == {"m"}
    assert listed["m"]["toxics"][0]["attributes"] == {"latency": 0, "jitter": 0}


def test_browsers_and_foreign_hosts_are_refused(server: ProxyServer) -> None:
    port = server.api.rsplit(":", 1)[1]
    for headers in (
        {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"},
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Mode": "no-cors"},
        {"Host": f"evil.example:{port}"},  # DNS rebinding: the page's name, our address
        {"Host": "10.0.0.5"},
    ):
        status, body = call(
            server, "POST", "/proxies", {"name": "x", "upstream": "127.0.0.1:1"}, **headers
        )
        assert status == 403 and body["status"] == 403, headers
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert call(server, "GET", "/proxies", Host=host)[0] == 200
    assert call(server, "GET", "/proxies")[1] == {}  # nothing was created
    status, body = call(
        server, "POST", "/proxies", {"name": "x", "upstream": "127.0.0.1:1", "listen": "0.0.0.0:0"}
    )
    assert status == 403 and "--listen-any" in body["error"]


def test_off_loopback_listeners_need_a_token_or_listen_any() -> None:
    with running(ProxyServer(api="127.0.0.1:0", token="s3cret")) as server:
        auth = {
            "Authorization": "Bearer s3cret",
            "Host": "model-proxy:8474",
        }  # any name, with a token
        status, body = call(
            server,
            "POST",
            "/proxies",
            {"name": "x", "upstream": "127.0.0.1:1", "listen": "0.0.0.0:0"},
            **auth,
        )
        assert status == 201 and body["listen"].startswith("0.0.0.0:")
        assert call(server, "GET", "/proxies", Host="model-proxy:8474")[0] == 401
    with running(ProxyServer(api="127.0.0.1:0", listen_any=True)) as server:
        status, body = call(
            server,
            "POST",
            "/proxies",
            {"name": "x", "upstream": "127.0.0.1:1", "listen": "0.0.0.0:0"},
        )
        assert status == 201
