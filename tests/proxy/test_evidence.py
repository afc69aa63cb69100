"""Fault evidence: what the proxy says each toxic did, held against what happened on the wire."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from scipy.stats import binomtest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer

from chaosml.demo.service import serving_app
from tests.live_servers import wait_for
from tests.proxy.test_faults_online import post


def evidence(toxiproxy: Toxiproxy, proxy: str, toxic: str) -> dict[str, Any]:
    answer = requests.get(
        f"http://{APIConsumer.host}:{APIConsumer.port}/proxies/{proxy}/toxics/{toxic}/evidence",
        timeout=5,
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_counts_rows_and_cells_the_fault_changed(
    toxiproxy: Toxiproxy, echo_service: str, rows: list, http: requests.Session
) -> None:
    proxy = toxiproxy.create(upstream=echo_service, name="echo")
    proxy.add_toxic(
        name="nulls",
        type="missing_values",
        stream="upstream",
        attributes={"columns": ["age"], "rate": 0.5, "seed": 1},
    )
    seen = [
        r
        for _ in range(10)
        for r in post(http, proxy.listen, {"instances": rows})["echo"]["instances"]
    ]
    nulls = sum(r["age"] is None for r in seen) - 10 * sum(r["age"] is None for r in rows)
    found = evidence(toxiproxy, "echo", "nulls")
    assert (found["rolls"], found["hits"], found["acted"]) == (10, 10, 10)
    assert found["rows"] == len(seen)
    assert found["changed"] == {"age": nulls} and found["changed_rows"] == nulls
    assert found["absent"] == {} and found["skipped"] == {} and found["errors"] == 0
    proxy.destroy_toxic("nulls")
    after = evidence(toxiproxy, "echo", "nulls")  # still readable once removed
    assert after["active"] is False and after["changed"] == found["changed"]


def test_a_column_that_is_not_in_the_requests_changes_nothing_and_is_named(
    toxiproxy: Toxiproxy, echo_service: str, rows: list, http: requests.Session
) -> None:
    proxy = toxiproxy.create(upstream=echo_service, name="echo")
    proxy.add_toxic(
        name="typo", type="missing_values", stream="upstream", attributes={"columns": ["agee"]}
    )
    for _ in range(3):
        assert post(http, proxy.listen, {"instances": rows})["echo"]["instances"] == rows
    found = evidence(toxiproxy, "echo", "typo")
    assert found["acted"] == 3 and found["changed_rows"] == 0 and found["changed"] == {}
    assert found["absent"] == {"agee": 3}


async def gzip_echo(request: Request) -> Response:
    """What it received (gunzipped as its Content-Encoding says), answered gzip-compressed with
    a prediction of 1 per row, as a service behind gzip middleware would."""
    body = await request.body()
    if request.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    instances = json.loads(body)["instances"]
    answer = {"predictions": [1] * len(instances), "echo": instances}
    return Response(
        gzip.compress(json.dumps(answer).encode()),
        media_type="application/json",
        headers={"Content-Encoding": "gzip"},
    )


@pytest.fixture(scope="module")
def gzip_service() -> Iterator[str]:
    with serving_app(Starlette(routes=[Route("/predict", gzip_echo, methods=["POST"])])) as at:
        yield at


def test_gzip_bodies_are_faulted_both_ways_and_other_codings_are_skips(
    toxiproxy: Toxiproxy, gzip_service: str, rows: list
) -> None:
    """A payload fault acts through gzip (requests ask for it by default, and gzip middleware is
    common); a coding the proxy does not decode, or a body that is not what it says, is a skip
    with its reason."""
    proxy = toxiproxy.create(upstream=gzip_service, name="gz")
    proxy.add_toxic(
        name="nulls", type="missing_values", stream="upstream", attributes={"columns": ["age"]}
    )
    proxy.add_toxic(name="zeros", type="constant_prediction", attributes={"value": 0})
    url = f"http://{proxy.listen}/predict"
    plain = json.dumps({"instances": rows}).encode()
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    answer = requests.post(url, data=gzip.compress(plain), headers=headers, timeout=5)
    assert answer.headers["Content-Encoding"] == "gzip"  # re-encoded as it came
    assert answer.json()["predictions"] == [0] * len(rows)
    assert all(row["age"] is None for row in answer.json()["echo"])
    for coding, body in (("compress", plain), ("gzip", b"not gzip")):
        headers = {"Content-Encoding": coding, "Content-Type": "application/json"}
        requests.post(url, data=body, headers=headers, timeout=5)
    nulls, zeros = (evidence(toxiproxy, "gz", name) for name in ("nulls", "zeros"))
    assert nulls["hits"] == 3 and nulls["acted"] == 1
    assert nulls["changed"] == {"age": sum(row["age"] is not None for row in rows)}
    assert nulls["skipped"] == {
        "request body compress-encoded": 1,
        "unreadable request body (ValueError)": 1,
    }
    # the answers: two gzip ones faulted (the compress request's too); the broken request's 500 not
    assert zeros["acted"] == 2 and zeros["changed"]["prediction"] == 2 * len(rows)
    assert zeros["skipped"] == {"unreadable response body (HTTP 500 answer)": 1}


def test_unreadable_bodies_are_skips_with_their_reason(
    toxiproxy: Toxiproxy, echo_service: str, rows: list
) -> None:
    proxy = toxiproxy.create(upstream=echo_service, name="echo")
    proxy.add_toxic(
        name="nulls", type="missing_values", stream="upstream", attributes={"columns": ["age"]}
    )
    url = f"http://{proxy.listen}/predict"
    requests.post(url, data=b"not json", headers={"Content-Type": "application/json"}, timeout=5)
    found = evidence(toxiproxy, "echo", "nulls")
    assert found["hits"] == 1 and found["acted"] == 0
    assert found["skipped"] == {"unreadable request body (JSONDecodeError)": 1}


def test_renewing_a_lease_does_not_reseed_the_fault(
    toxiproxy: Toxiproxy, echo_service: str, rows: list, http: requests.Session
) -> None:
    """A runner renews each lease every few seconds by re-POSTing the toxic; the toxicity rolls
    must go on from where they were, or a fault at 0.3 can hit 0% of requests."""
    proxy = toxiproxy.create(upstream=echo_service, name="echo")
    attributes = {"status": 503, "seed": 7, "lease": 30}
    proxy.add_toxic(
        name="errors", type="http_error", stream="downstream", toxicity=0.3, attributes=attributes
    )
    renew = f"http://{APIConsumer.host}:{APIConsumer.port}/proxies/echo/toxics/errors"
    statuses = []
    for index in range(400):
        if index % 20 == 0:
            # what the runner's renewal sends
            assert requests.post(renew, json={"attributes": {"lease": 30}}, timeout=5).ok
        statuses.append(
            http.post(
                f"http://{proxy.listen}/predict", json={"instances": rows[:1]}, timeout=5
            ).status_code
        )
    errors = statuses.count(503)
    assert binomtest(errors, len(statuses), 0.3).pvalue > 0.001
    found = evidence(toxiproxy, "echo", "errors")
    assert (found["rolls"], found["hits"], found["acted"]) == (400, errors, errors)


def test_a_toxic_whose_lease_ran_out_says_so(
    toxiproxy: Toxiproxy, echo_service: str, rows: list, http: requests.Session
) -> None:
    proxy = toxiproxy.create(upstream=echo_service, name="echo")
    proxy.add_toxic(
        name="brief", type="latency", stream="downstream", attributes={"latency": 1, "lease": 0.2}
    )
    post(http, proxy.listen, {"instances": rows[:1]})
    assert wait_for(lambda: proxy.toxics() == {}, 5)
    found = evidence(toxiproxy, "echo", "brief")
    assert found["expired"] is True and found["active"] is False and found["acted"] == 1
    proxy.add_toxic(name="kept", type="latency", stream="downstream", attributes={"latency": 1})
    proxy.destroy_toxic("kept")
    assert evidence(toxiproxy, "echo", "kept")["expired"] is False


def test_br_bodies_are_faulted_both_ways(toxiproxy: Toxiproxy, rows: list) -> None:
    """Where brotli is installed the proxy decodes br as it does gzip (without it, br is a skip
    with its coding, as ``compress`` is above)."""
    brotli = pytest.importorskip("brotli")

    async def br_echo(request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "br":
            body = brotli.decompress(body)
        instances = json.loads(body)["instances"]
        answer = {"predictions": [1] * len(instances), "echo": instances}
        return Response(
            brotli.compress(json.dumps(answer).encode()),
            media_type="application/json",
            headers={"Content-Encoding": "br"},
        )

    with serving_app(Starlette(routes=[Route("/predict", br_echo, methods=["POST"])])) as at:
        proxy = toxiproxy.create(upstream=at, name="br")
        proxy.add_toxic(
            name="nulls", type="missing_values", stream="upstream", attributes={"columns": ["age"]}
        )
        proxy.add_toxic(name="zeros", type="constant_prediction", attributes={"value": 0})
        headers = {"Content-Encoding": "br", "Content-Type": "application/json"}
        body = brotli.compress(json.dumps({"instances": rows}).encode())
        with requests.post(
            f"http://{proxy.listen}/predict", data=body, headers=headers, timeout=5, stream=True
        ) as answer:
            assert answer.headers["Content-Encoding"] == "br"  # encoded again as it came
            raw = answer.raw.read(decode_content=False)
        decoded = json.loads(brotli.decompress(raw))
        assert decoded["predictions"] == [0] * len(rows)
        assert all(row["age"] is None for row in decoded["echo"])
        nulls, zeros = (evidence(toxiproxy, "br", name) for name in ("nulls", "zeros"))
        assert (nulls["acted"], zeros["acted"]) == (1, 1)
        assert nulls["skipped"] == zeros["skipped"] == {}
