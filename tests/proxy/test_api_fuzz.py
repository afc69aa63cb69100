"""Any request body on any control-API route gives a 2xx, or a 4xx with ``{"error", "status"}``;
never a 5xx (other than a listener that cannot bind), a traceback, or JSON a strict parser
refuses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaosml.faults import FAULTS
from chaosml.proxy.api import ProxyServer, running

NAMES = st.sampled_from(["m", "other", "my model", "a/b", "", "latency_downstream"]) | st.text(
    max_size=8
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
ADDRESSES = (
    st.sampled_from(
        ["127.0.0.1:0", "localhost:0", "garbage", "127.0.0.1:99999", "0.0.0.0:0", ":1", "[::1]:0"]
    )
    | JSON
)
ATTRIBUTES = (
    st.dictionaries(
        st.sampled_from(
            [
                "latency",
                "jitter",
                "rate",
                "timeout",
                "bytes",
                "columns",
                "factor",
                "lease",
                "seed",
                "where",
                "average_size",
            ]
        )
        | st.text(max_size=6),
        JSON,
        max_size=3,
    )
    | JSON
)
PROXY = st.fixed_dictionaries(
    {},
    optional={
        "name": NAMES | JSON,
        "upstream": st.sampled_from(["127.0.0.1:1", "nowhere"]) | JSON,
        "listen": ADDRESSES,
        "enabled": st.booleans() | JSON,
        "codec": st.sampled_from(["auto", "tcp", "records", "nope"]) | JSON,
        "toxics": JSON,
    },
)
TOXIC = st.fixed_dictionaries(
    {},
    optional={
        "name": NAMES | JSON,
        "type": st.sampled_from(sorted(FAULTS)) | JSON,
        "stream": st.sampled_from(["upstream", "downstream", ""]) | JSON,
        "toxicity": st.floats(-1, 2) | JSON,
        "attributes": ATTRIBUTES,
    },
)
RAW = st.sampled_from(
    [b"1e400", b'{"a": 1e999}', b"NaN", b"[" * 5000, b"\xff", b'{"name": "x"', b""]
)


def quote(name: str) -> str:
    from urllib.parse import quote as q

    return q(name, safe="")


REQUESTS = st.one_of(
    st.tuples(st.just("POST"), st.just("/proxies"), PROXY | JSON),
    st.tuples(st.just("POST"), st.just("/populate"), st.lists(PROXY, max_size=3) | JSON),
    st.tuples(
        st.sampled_from(["POST", "PATCH"]),
        NAMES.map(lambda n: f"/proxies/{quote(n)}"),
        PROXY | JSON,
    ),
    st.tuples(st.just("POST"), NAMES.map(lambda n: f"/proxies/{quote(n)}/toxics"), TOXIC | JSON),
    st.tuples(
        st.sampled_from(["POST", "PATCH", "DELETE", "GET"]),
        st.tuples(NAMES, NAMES).map(lambda p: f"/proxies/{quote(p[0])}/toxics/{quote(p[1])}"),
        TOXIC | JSON,
    ),
    st.tuples(
        st.sampled_from(["GET", "DELETE", "PUT"]),
        NAMES.map(lambda n: f"/proxies/{quote(n)}"),
        st.none(),
    ),
    st.tuples(
        st.sampled_from(["POST", "PATCH"]),
        st.sampled_from(["/proxies", "/populate", "/proxies/m/toxics"]),
        RAW,
    ),
    st.tuples(
        st.sampled_from(["POST", "GET"]),
        st.sampled_from(["/reset", "/version", "/nope", "/proxies/%zz"]),
        JSON,
    ),
)


@pytest.fixture(scope="module")
def server() -> Iterator[ProxyServer]:
    with running(ProxyServer(api="127.0.0.1:0")) as server:
        yield server


def strict(raw: bytes) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"not JSON: {name}")

    return json.loads(raw, parse_constant=refuse)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(REQUESTS, min_size=1, max_size=4))
def test_any_body_gets_a_clean_answer(
    server: ProxyServer, calls: list[tuple[str, str, Any]]
) -> None:
    base = f"http://{server.api}"
    requests.post(f"{base}/proxies", json={"name": "m", "upstream": "127.0.0.1:1"}, timeout=5)
    requests.post(f"{base}/proxies/m/toxics", json={"type": "latency"}, timeout=5)
    try:
        for method, path, body in calls:
            data = (
                body
                if isinstance(body, bytes)
                else None
                if body is None
                else json.dumps(body).encode()
            )
            response = requests.request(method, base + path, data=data, timeout=5)
            status = response.status_code
            answer = strict(response.content) if response.content else None
            assert status < 500 or (status == 500 and "bind" in answer["error"]), (
                method,
                path,
                body,
                answer,
            )
            if status >= 400:
                assert set(answer) == {"error", "status"} and answer["status"] == status
            listed = requests.get(f"{base}/proxies", timeout=5)
            assert listed.status_code == 200
            strict(listed.content)
    finally:
        for name in list(server.proxies):
            requests.delete(f"{base}/proxies/{quote(name)}", timeout=5)
