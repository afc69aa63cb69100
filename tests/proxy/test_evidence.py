"""Fault evidence: what the proxy says each toxic did, held against what happened on the wire."""

from __future__ import annotations

import gzip
import json
from typing import Any

import requests
from scipy.stats import binomtest
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer

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


def test_encoded_and_unreadable_bodies_are_skips_with_their_reason(
    toxiproxy: Toxiproxy, echo_service: str, rows: list
) -> None:
    proxy = toxiproxy.create(upstream=echo_service, name="echo")
    proxy.add_toxic(
        name="nulls", type="missing_values", stream="upstream", attributes={"columns": ["age"]}
    )
    url = f"http://{proxy.listen}/predict"
    body = gzip.compress(json.dumps({"instances": rows}).encode())
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    requests.post(url, data=body, headers=headers, timeout=5)
    requests.post(url, data=b"not json", headers={"Content-Type": "application/json"}, timeout=5)
    found = evidence(toxiproxy, "echo", "nulls")
    assert found["hits"] == 2 and found["acted"] == 0
    assert found["skipped"] == {
        "request body gzip-encoded": 1,
        "unreadable request body (JSONDecodeError)": 1,
    }


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
