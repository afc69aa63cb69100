"""The reference stack on its own fires nothing: the demo service (its fault point on, no toxic),
the fault proxy, Prometheus and Alertmanager on loopback with every `for:` and range shortened
20 times, through a time-scaled 30 minutes of idle (from the very start), healthy traffic at the
bundled scenarios' load (30 requests/s of 10 rows, with feedback labels), idle again (the windows
keep their last rows), traffic, idle. Each idle spell outlasts the longest shortened `for:`.

Slow end-to-end tier: 90 s of wall time after the stack is up. Skips without the binaries,
except under CI=true."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
import requests

from chaosml.alerts.webhook import WebhookReceiver
from chaosml.codecs import plain
from chaosml.demo.data import LABEL
from chaosml.demo.harness import ALERTMANAGER, PROMETHEUS, ReferenceStack, reference_stack
from chaosml.demo.rules import RULES
from chaosml.demo.train import DemoArtifacts
from tests.live_servers import require_binaries

SCALE = 0.05
SPELL_S = 6 * 60 * SCALE  # five spells of 6 scaled minutes: 30 minutes
RATE, BATCH, USERS = 30, 10, 4  # the bundled scenarios' load
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(demo: DemoArtifacts) -> Iterator[ReferenceStack]:
    require_binaries(PROMETHEUS, ALERTMANAGER)
    with reference_stack(demo.folder, time_scale=SCALE) as running:
        yield running


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def query(stack: ReferenceStack, expr: str) -> list[dict[str, Any]]:
    assert stack.monitoring is not None
    url = f"http://{stack.monitoring.prometheus}/api/v1/query?query={urllib.parse.quote(expr)}"
    return list(get(url)["data"]["result"])


class Watch(threading.Thread):
    """Every alert Prometheus (rules) and Alertmanager (received) show, polled every 0.5 s."""

    def __init__(self, stack: ReferenceStack) -> None:
        super().__init__(daemon=True)
        assert stack.monitoring is not None
        self.monitoring, self.stop = stack.monitoring, threading.Event()
        self.firing: list[dict[str, Any]] = []
        self.pending: set[str] = set()
        self.alertmanager: list[dict[str, Any]] = []
        self.polls = 0

    def run(self) -> None:
        prometheus, alertmanager = self.monitoring.prometheus, self.monitoring.alertmanager
        while not self.stop.wait(0.5):
            for alert in get(f"http://{prometheus}/api/v1/alerts")["data"]["alerts"]:
                if alert["state"] == "firing":
                    self.firing.append(alert)
                else:
                    self.pending.add(alert["labels"]["alertname"])
            self.alertmanager += get(f"http://{alertmanager}/api/v2/alerts")
            self.polls += 1


def send_traffic(
    stack: ReferenceStack, rows: list[dict[str, Any]], labels: list[int], seconds: float
) -> int:
    """``USERS`` threads sending ``RATE`` requests/s of ``BATCH`` consecutive rows through the
    proxy, each answered row's true label sent back as feedback; returns the rows answered."""
    answered, lock = [0], threading.Lock()
    cursor = iter(range(10**9))
    end = time.monotonic() + seconds

    def user() -> None:
        with requests.Session() as http:
            due = time.monotonic()
            while due < end:
                start = next(cursor) * BATCH % len(rows)
                index = [(start + i) % len(rows) for i in range(BATCH)]
                answer = http.post(
                    f"http://{stack.proxy_listen}/predict",
                    json={"instances": [rows[i] for i in index]},
                    timeout=10,
                )
                assert answer.status_code == 200, answer.text
                ids = answer.json()["ids"]
                http.post(
                    f"http://{stack.service}/feedback",
                    json={
                        "labels": [
                            {"id": i, "label": labels[r]} for i, r in zip(ids, index, strict=True)
                        ]
                    },
                    timeout=10,
                )
                with lock:
                    answered[0] += len(ids)
                due += USERS / RATE
                time.sleep(max(0.0, due - time.monotonic()))

    threads = [threading.Thread(target=user, daemon=True) for _ in range(USERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answered[0]


def test_idle_and_healthy_traffic_fire_nothing(stack: ReferenceStack) -> None:
    assert stack.monitoring is not None
    host, port = stack.webhook.split(":")
    webhook = WebhookReceiver(host=host, port=int(port)).start()
    frame = pd.read_parquet(stack.data)
    labels = frame.pop(LABEL).astype(int).tolist()
    rows = [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
    watch = Watch(stack)
    watch.start()
    try:
        time.sleep(SPELL_S)  # idle from the start: nothing scored yet
        answered = send_traffic(stack, rows, labels, SPELL_S)
        time.sleep(SPELL_S)  # idle: the windows keep the last rows
        answered += send_traffic(stack, rows, labels, SPELL_S)
        time.sleep(SPELL_S)
    finally:
        watch.stop.set()
        watch.join()
        webhook.stop()
    fired = sorted({a["labels"]["alertname"] for a in watch.firing})
    assert fired == [], f"fired: {fired}; pending at some point: {sorted(watch.pending)}"
    assert watch.alertmanager == [] and webhook.alerts == []
    # ... and not because nothing was watched: every rule evaluated, on full windows
    groups = get(f"http://{stack.monitoring.prometheus}/api/v1/rules")["data"]["groups"]
    evaluated = {r["name"]: r["health"] for g in groups for r in g["rules"]}
    assert evaluated == {rule.alert: "ok" for rule in RULES}
    assert watch.polls > 0.8 * 5 * SPELL_S / 0.5
    assert answered > 0.8 * 2 * SPELL_S * RATE * BATCH
    answers = query(stack, 'sum(chaosml_model_answers_total{version="v2"})')
    assert float(answers[0]["value"][1]) == answered
    for metric in ("chaosml_model_positive_rate", "chaosml_model_online_accuracy"):
        (sample,) = query(stack, metric)
        assert 0 < float(sample["value"][1]) < 1, metric  # a number, not NaN
    (gap,) = query(stack, "chaosml_model_fairness_gap")
    assert 0 <= float(gap["value"][1]) < 0.1
