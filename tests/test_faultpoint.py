"""The in-service fault point inside the reference service: inert unless enabled, driven by
toxiproxy-python, and its faults land before the service's own monitors record the answer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import NotFound

from chaosml.demo.service import create_app, load_reference, serving_app
from chaosml.demo.train import DemoArtifacts
from chaosml.faultpoint import ENV_ADDRESS, FaultPoint
from tests.live_servers import wait_for


@pytest.fixture(scope="module")
def service(demo: DemoArtifacts) -> Iterator[tuple[str, FaultPoint]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_ADDRESS, "127.0.0.1:0")
        app = create_app(demo.v2, version="v2", reference=load_reference(demo.folder), window=50)
    point: FaultPoint = app.state.fault_point
    with serving_app(app) as address:
        yield address, point
    point.close()


@pytest.fixture
def point(service: tuple[str, FaultPoint]) -> Iterator[Any]:
    api = service[1].api
    assert api is not None
    host, port = api.split(":")
    APIConsumer.host, APIConsumer.port = host, int(port)
    proxy = Toxiproxy().get_proxy("service")
    yield proxy
    for name in list(proxy.toxics()):
        proxy.destroy_toxic(name)


def predict(address: str, rows: list[dict[str, Any]]) -> requests.Response:
    return requests.post(f"http://{address}/predict", json={"instances": rows}, timeout=10)


def metric(address: str, line: str) -> float:
    text = requests.get(f"http://{address}/metrics", timeout=5).text
    found = [row for row in text.splitlines() if row.startswith(line + " ")]
    return float(found[0].split()[-1]) if found else 0.0


def test_inert_unless_enabled(demo: DemoArtifacts, rows: list[dict[str, Any]]) -> None:
    app = create_app(demo.v2, version="v2", reference=load_reference(demo.folder))
    assert not app.state.fault_point.enabled and app.state.fault_point.api is None
    assert not FaultPoint.from_env(env={}).enabled


def test_prediction_faults_reach_the_services_own_monitors(
    service: tuple[str, FaultPoint], point: Any, rows: list[dict[str, Any]]
) -> None:
    address = service[0]
    for _ in range(3):
        assert predict(address, rows).status_code == 200
    assert metric(address, "chaosml_model_positive_rate") > 0.2
    point.add_toxic(type="constant_prediction", attributes={"value": 0, "score": 0.01})
    answers = [predict(address, rows).json() for _ in range(3)]
    assert {p for a in answers for p in a["predictions"]} == {0}
    assert metric(address, "chaosml_model_positive_rate") == 0.0  # the monitor saw the fault


def test_stale_model_answers_from_the_other_loaded_version(
    service: tuple[str, FaultPoint], point: Any, rows: list[dict[str, Any]], model_v1: str
) -> None:
    address = service[0]
    before = metric(address, 'chaosml_model_answers_total{version="v1"}')
    point.add_toxic(type="stale_model", attributes={"version": "v1"})
    stale = predict(address, rows).json()
    assert stale["scores"] == pytest.approx(predict(model_v1, rows).json()["scores"])
    after = metric(address, 'chaosml_model_answers_total{version="v1"}')
    assert after - before == len(rows)


def test_latency_and_errors_are_seen_by_the_latency_and_outcome_monitors(
    service: tuple[str, FaultPoint], point: Any, rows: list[dict[str, Any]]
) -> None:
    address = service[0]
    slow_before = metric(address, 'chaosml_model_request_latency_seconds_bucket{le="0.25"}')
    total_before = metric(address, "chaosml_model_request_latency_seconds_count")
    point.add_toxic(type="latency", attributes={"latency": 300})
    start = time.perf_counter()
    assert predict(address, rows[:1]).status_code == 200
    assert time.perf_counter() - start >= 0.3
    assert metric(address, "chaosml_model_request_latency_seconds_count") == total_before + 1
    assert metric(address, 'chaosml_model_request_latency_seconds_bucket{le="0.25"}') == slow_before
    point.destroy_toxic("latency_downstream")
    errors = metric(address, 'chaosml_model_requests_total{status="error"}')
    point.add_toxic(type="http_error", attributes={"status": 503})
    assert predict(address, rows[:1]).status_code == 503
    assert metric(address, 'chaosml_model_requests_total{status="error"}') == errors + 1


def test_refuses_what_it_cannot_act_out_and_keeps_its_one_proxy(
    service: tuple[str, FaultPoint], point: Any
) -> None:
    api = f"http://{service[1].api}"
    answer = requests.post(
        f"{api}/proxies/service/toxics", json={"type": "reset_peer", "attributes": {}}, timeout=5
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == (
        "reset_peer cannot run at the in-service fault point (it runs at: chaosml's proxy "
        "(HTTP), chaosml's proxy relaying raw TCP, a real Toxiproxy)"
    )
    answer = requests.post(
        f"{api}/proxies/service/toxics",
        json={"type": "stale_model", "stream": "downstream", "attributes": {"version": "v7"}},
        timeout=5,
    )
    assert answer.status_code == 400 and "(v1)" in answer.json()["error"]
    assert requests.delete(f"{api}/proxies/service", timeout=5).status_code == 405
    created = requests.post(f"{api}/proxies", json={"name": "x", "upstream": "a:1"}, timeout=5)
    assert created.status_code == 405


def test_a_lease_that_is_not_renewed_ends_the_fault(
    service: tuple[str, FaultPoint], point: Any, rows: list[dict[str, Any]]
) -> None:
    point.add_toxic(type="constant_prediction", attributes={"value": 0, "lease": 2})
    assert set(predict(service[0], rows).json()["predictions"]) == {0}
    # not renewed: the point ends it by itself, and nothing else could have
    assert wait_for(lambda: set(predict(service[0], rows).json()["predictions"]) == {0, 1}, 15)
    with pytest.raises(NotFound):
        point.destroy_toxic("constant_prediction_downstream")
