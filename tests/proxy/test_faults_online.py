"""Every fault kind, driven through toxiproxy-python against live upstreams on loopback."""

from __future__ import annotations

import math
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from toxiproxy import Toxiproxy

from chaosml.demo.train import DemoArtifacts
from tests.live_servers import wait_for


def binomial_ok(hits: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    return abs(hits - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


def post(http: requests.Session, address: str, payload: Any, path: str = "/predict") -> Any:
    response = http.post(f"http://{address}{path}", json=payload, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_missing_values_rate_is_binomial(
    toxiproxy: Toxiproxy, echo_service: str, rows: list, http: requests.Session
) -> None:
    proxy = toxiproxy.create(upstream=echo_service, name="echo")
    proxy.add_toxic(
        type="missing_values",
        stream="upstream",
        attributes={"columns": ["income", "age"], "rate": 0.3},
    )
    seen = [
        row
        for _ in range(25)
        for row in post(http, proxy.listen, {"instances": rows})["echo"]["instances"]
    ]
    n = len(seen)
    assert binomial_ok(sum(r["age"] is None for r in seen), n, 0.3)
    originally_missing = sum(r["income"] is None for r in rows) / len(rows)
    expected = originally_missing + (1 - originally_missing) * 0.3
    assert binomial_ok(sum(r["income"] is None for r in seen), n, expected)
    assert all(r["region"] is not None for r in seen)


def test_payload_faults_only_touch_matching_rows(
    toxiproxy: Toxiproxy, echo_service: str, rows: list, http: requests.Session
) -> None:
    proxy = toxiproxy.create(upstream=echo_service, name="echo")
    proxy.add_toxic(
        type="missing_values",
        stream="upstream",
        attributes={"columns": ["age"], "where": "sex == 'F'"},
    )
    seen = post(http, proxy.listen, {"instances": rows})["echo"]["instances"]
    for before, after in zip(rows, seen, strict=True):
        assert (after["age"] is None) == (before["sex"] == "F")


@pytest.mark.parametrize(
    ("kind", "attributes", "check"),
    [
        (
            "scale",
            {"columns": ["income"], "factor": 1000},
            lambda b, a: a["income"] == pytest.approx(b["income"] * 1000) if b["income"] else True,
        ),
        ("shift", {"columns": ["age"], "by": 10}, lambda b, a: a["age"] == b["age"] + 10),
        (
            "constant",
            {"columns": ["debt_ratio"], "value": 0.5},
            lambda b, a: a["debt_ratio"] == 0.5,
        ),
        ("wrong_type", {"columns": ["age"]}, lambda b, a: a["age"] == "N/A"),
        (
            "unseen_category",
            {"columns": ["region"], "value": "MARS"},
            lambda b, a: a["region"] == "MARS",
        ),
        (
            "swap_columns",
            {"columns": ["age", "n_accounts"]},
            lambda b, a: (a["age"], a["n_accounts"]) == (b["n_accounts"], b["age"]),
        ),
        ("drop_field", {"columns": ["income"]}, lambda b, a: "income" not in a),
        ("noise", {"columns": ["age"], "std": 5.0}, lambda b, a: abs(a["age"] - b["age"]) < 40),
    ],
)
def test_request_faults(
    kind: str,
    attributes: dict,
    check: Any,
    toxiproxy: Toxiproxy,
    echo_service: str,
    rows: list,
    http: requests.Session,
) -> None:
    proxy = toxiproxy.create(upstream=echo_service, name="echo")
    proxy.add_toxic(type=kind, stream="upstream", attributes=attributes)
    seen = post(http, proxy.listen, {"instances": rows})["echo"]["instances"]
    assert all(check(b, a) for b, a in zip(rows, seen, strict=True))
    if kind == "noise":
        assert any(a["age"] != b["age"] for b, a in zip(rows, seen, strict=True))


def test_response_faults_on_the_model(
    toxiproxy: Toxiproxy, model_v2: str, rows: list, http: requests.Session
) -> None:
    direct = post(http, model_v2, {"instances": rows})
    proxy = toxiproxy.create(upstream=model_v2, name="model")
    untouched = post(http, proxy.listen, {"instances": rows})  # no toxic: only new request ids
    assert {**untouched, "ids": None} == {**direct, "ids": None}

    proxy.add_toxic(type="bias", attributes={"where": "sex == 'F'"})
    biased = post(http, proxy.listen, {"instances": rows})["predictions"]
    for row, before, after in zip(rows, direct["predictions"], biased, strict=True):
        assert after == (0 if row["sex"] == "F" else before)
    proxy.destroy_toxic("bias_downstream")

    proxy.add_toxic(type="label_flip")
    flipped = post(http, proxy.listen, {"instances": rows})
    assert flipped["predictions"] == [1 - p for p in direct["predictions"]]
    assert flipped["model_version"] == "v2"
    proxy.destroy_toxic("label_flip_downstream")

    proxy.add_toxic(type="constant_prediction", attributes={"value": 1, "score": 0.99})
    constant = post(http, proxy.listen, {"instances": rows})
    assert set(constant["predictions"]) == {1} and set(constant["scores"]) == {0.99}
    proxy.destroy_toxic("constant_prediction_downstream")

    proxy.add_toxic(type="nan_prediction", attributes={"rate": 1.0})
    nan = post(http, proxy.listen, {"instances": rows})
    assert set(nan["predictions"]) == {None} and set(nan["scores"]) == {None}
    proxy.destroy_toxic("nan_prediction_downstream")

    proxy.add_toxic(type="score_noise", attributes={"std": 0.3})
    noisy = post(http, proxy.listen, {"instances": rows})
    assert noisy["scores"] != direct["scores"] and all(0 <= s <= 1 for s in noisy["scores"])
    assert noisy["predictions"] == [int(s >= 0.5) for s in noisy["scores"]]


def test_stale_model_answers_from_the_other_upstream(
    toxiproxy: Toxiproxy, model_v2: str, model_v1: str, rows: list, http: requests.Session
) -> None:
    proxy = toxiproxy.create(upstream=model_v2, name="model")
    proxy.add_toxic(type="stale_model", attributes={"upstream": model_v1})
    answer = post(http, proxy.listen, {"instances": rows})
    old = post(http, model_v1, {"instances": rows})
    assert (answer["predictions"], answer["scores"]) == (old["predictions"], old["scores"])
    assert answer["model_version"] == "v1"


def test_kserve_payloads(
    toxiproxy: Toxiproxy, model_v2: str, rows: list, http: requests.Session
) -> None:
    columns = list(rows[0])
    payload = {
        "inputs": [
            {"name": c, "shape": [len(rows)], "datatype": "BYTES", "data": [r[c] for r in rows]}
            for c in columns
        ]
    }
    direct = post(http, model_v2, payload)
    proxy = toxiproxy.create(upstream=model_v2, name="model")
    proxy.add_toxic(type="bias", attributes={"where": "sex == 'F'"})
    answer = post(http, proxy.listen, payload)
    predicted = answer["outputs"][0]["data"]
    for row, before, after in zip(rows, direct["outputs"][0]["data"], predicted, strict=True):
        assert after == (0 if row["sex"] == "F" else before)


def test_latency_is_added_within_tolerance(
    toxiproxy: Toxiproxy, model_v2: str, rows: list, http: requests.Session
) -> None:
    proxy = toxiproxy.create(upstream=model_v2, name="model")
    post(http, proxy.listen, {"instances": rows[:1]})

    def elapsed() -> float:
        start = time.perf_counter()
        post(http, proxy.listen, {"instances": rows[:1]})
        return time.perf_counter() - start

    base = min(elapsed() for _ in range(5))
    proxy.add_toxic(type="latency", attributes={"latency": 150, "jitter": 0})
    delayed = min(elapsed() for _ in range(5))
    assert delayed >= 0.15  # no request got through faster than the latency
    assert delayed - base <= 0.35


def test_http_error_at_toxicity(
    toxiproxy: Toxiproxy, model_v2: str, rows: list, http: requests.Session
) -> None:
    proxy = toxiproxy.create(upstream=model_v2, name="model")
    proxy.add_toxic(type="http_error", toxicity=0.4, attributes={"status": 503})
    codes = [
        http.post(f"http://{proxy.listen}/predict", json={"instances": rows[:1]}).status_code
        for _ in range(300)
    ]
    assert set(codes) == {200, 503}
    assert binomial_ok(codes.count(503), 300, 0.4)


def test_connection_faults(toxiproxy: Toxiproxy, echo_service: str, http: requests.Session) -> None:
    proxy = toxiproxy.create(upstream=echo_service, name="echo")
    url = f"http://{proxy.listen}/predict"
    proxy.add_toxic(type="timeout", attributes={"timeout": 200})
    start = time.perf_counter()
    with pytest.raises(requests.ConnectionError):
        requests.post(url, json={}, timeout=5)
    assert time.perf_counter() - start >= 0.19
    proxy.destroy_toxic("timeout_downstream")

    proxy.add_toxic(type="reset_peer", attributes={"timeout": 0})
    with pytest.raises(requests.ConnectionError):
        requests.post(url, json={}, timeout=5)
    proxy.destroy_toxic("reset_peer_downstream")

    proxy.add_toxic(type="limit_data", attributes={"bytes": 100})
    host, port = proxy.listen.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while chunk := raw.recv(65536):
            received += chunk
    assert len(received) == 100 and received.startswith(b"HTTP/1.1 200")
    proxy.destroy_toxic("limit_data_downstream")

    def fetch_big() -> float:
        start = time.perf_counter()
        assert len(requests.get(f"http://{proxy.listen}/big", timeout=5).json()["blob"]) == 20_000
        return time.perf_counter() - start

    base = min(fetch_big() for _ in range(3))
    proxy.add_toxic(type="bandwidth", attributes={"rate": 50})  # 50 KB/s, 20 KB body: ~0.4 s
    took = fetch_big()
    assert took >= 0.35 and took - base < 1.6, (base, took)  # throttled, but not stalled
    proxy.destroy_toxic("bandwidth_downstream")

    proxy.add_toxic(type="slow_close", attributes={"delay": 100})
    assert http.post(url, json={"instances": []}).status_code == 200


def test_leases_expire_unless_renewed(
    toxiproxy: Toxiproxy, proxy_server: Any, echo_service: str, http: requests.Session
) -> None:
    proxy = toxiproxy.create(upstream=echo_service, name="echo")
    proxy.add_toxic(type="latency", attributes={"latency": 1, "lease": 1.0})
    added = time.monotonic()
    api = f"http://{proxy_server.api}/proxies/echo/toxics/latency_downstream"
    renewals = 0
    while time.monotonic() - added < 2.5:  # past its first lease twice: renewals kept it
        time.sleep(0.2)  # renewed every 0.2 s, five times within each lease
        assert http.post(api, json={"attributes": {"lease": 1.0}}).status_code == 200
        renewals += 1
    assert list(proxy.toxics()) == ["latency_downstream"] and renewals >= 3
    # no longer renewed: the proxy drops it by itself (the lease is the only thing that can)
    assert wait_for(lambda: proxy.toxics() == {}, 10)


def test_malformed_and_unknown_payloads_pass_through(
    toxiproxy: Toxiproxy, proxy_server: Any, echo_service: str, http: requests.Session
) -> None:
    unparsed = 'chaosml_proxy_unparsed_payloads_total{direction="request",proxy="echo"}'
    applied = 'chaosml_proxy_toxics_applied_total{proxy="echo",type="missing_values"}'

    def counters() -> tuple[float, float]:
        samples = dict(
            line.rsplit(" ", 1)
            for line in http.get(f"http://{proxy_server.api}/metrics").text.splitlines()
            if line and not line.startswith("#")
        )
        return float(samples.get(unparsed, 0)), float(samples.get(applied, 0))

    before = counters()
    proxy = toxiproxy.create(upstream=echo_service, name="echo")
    proxy.add_toxic(type="missing_values", stream="upstream", attributes={"columns": ["age"]})
    url = f"http://{proxy.listen}/predict"
    assert http.post(url, data=b"not json at all").json()["echo"] == "not json at all"
    assert http.post(url, json={"something": "else"}).json()["echo"] == {"something": "else"}
    after = counters()
    assert (after[0] - before[0], after[1] - before[1]) == (2, 2)


def test_upstream_down_gives_502(toxiproxy: Toxiproxy, http: requests.Session) -> None:
    proxy = toxiproxy.create(upstream="127.0.0.1:1", name="down")
    response = http.post(f"http://{proxy.listen}/predict", json={"instances": []})
    assert response.status_code == 502
    assert "unreachable" in response.json()["error"]


def test_demo_service_handles_faulted_input(
    toxiproxy: Toxiproxy, model_v2: str, rows: list, demo: DemoArtifacts, http: requests.Session
) -> None:
    """A wrong_type fault reaches the model and the service answers with its own error."""
    proxy = toxiproxy.create(upstream=model_v2, name="model")
    proxy.add_toxic(type="wrong_type", stream="upstream", attributes={"columns": ["age"]})
    response = http.post(f"http://{proxy.listen}/predict", json={"instances": rows[:3]})
    assert response.status_code == 422


def test_upstream_closing_idle_connections_is_survived(
    toxiproxy: Toxiproxy, http: requests.Session
) -> None:
    """An upstream that closes each keep-alive connection after one answer (as servers do when
    their idle timeout runs out): the proxy notices the stale connection and opens a new one."""
    import socketserver
    import threading

    class OneShot(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(65536)
            body = b'{"predictions": [1]}'
            self.request.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), OneShot) as upstream:
        threading.Thread(target=upstream.serve_forever, daemon=True).start()
        proxy = toxiproxy.create(upstream=f"127.0.0.1:{upstream.server_address[1]}", name="oneshot")
        for _ in range(3):
            response = http.post(f"http://{proxy.listen}/predict", json={}, timeout=5)
            assert response.json() == {"predictions": [1]}
            time.sleep(0.05)
        for _ in range(2):  # several stale pooled connections at once: each retried fresh
            with ThreadPoolExecutor(8) as pool:
                codes = list(
                    pool.map(
                        lambda _: (
                            requests.post(
                                f"http://{proxy.listen}/predict", json={}, timeout=5
                            ).status_code
                        ),
                        range(16),
                    )
                )
            assert codes == [200] * 16
            time.sleep(0.05)
        upstream.shutdown()
