"""The real Prometheus and Alertmanager, started from chaosml's rules, watch the monitored demo
service: a healthy steady state fires nothing; null features fire FeatureMissingRateHigh, which
reaches a webhook through Alertmanager. Skips without the binaries, except in CI."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests

from chaosml.alerts.webhook import WebhookReceiver
from chaosml.codecs import plain
from chaosml.demo.harness import ALERTMANAGER, PROMETHEUS, Stack, monitoring_stack
from chaosml.demo.service import serving
from chaosml.demo.train import DemoArtifacts
from tests.live_servers import require_binaries, wait_for

RULES_TEST = (
    Path(__file__).parents[2] / "docker" / "prometheus" / "rules" / "chaosml.rules.test.yml"
)


def test_promtool_rule_unit_tests() -> None:
    require_binaries(("promtool",))
    done = subprocess.run(
        ["promtool", "test", "rules", str(RULES_TEST)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def service(demo: DemoArtifacts) -> Iterator[str]:
    with serving(demo.v2, version="v2", window=1000) as address:
        yield address


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def stack(service: str, webhook: WebhookReceiver) -> Iterator[Stack]:
    require_binaries(PROMETHEUS, ALERTMANAGER)
    with monitoring_stack(targets=[service], webhook=webhook.url) as running:
        yield running


def send(service: str, rows: list[dict], requests_: int, http: requests.Session) -> None:
    for start in range(requests_):
        batch = rows[(start * 40) % len(rows) :][:40]
        assert (
            http.post(
                f"http://{service}/predict", json={"instances": batch}, timeout=10
            ).status_code
            == 200
        )


def test_healthy_then_null_features_fire_the_missing_rate_alert(
    stack: Stack, service: str, webhook: WebhookReceiver, demo: DemoArtifacts
) -> None:
    frame = pd.read_parquet(demo.data).drop(columns=["approved"]).head(2000)
    rows = [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
    with requests.Session() as http:
        send(service, rows, 30, http)  # fill the 1000-row windows with healthy traffic
        for _ in range(8):  # several evaluations past every (shortened) `for:`
            send(service, rows, 3, http)
            time.sleep(1)
        assert stack.firing() == []
        assert webhook.alerts == []

        broken = [{**row, "income": None} for row in rows]
        started = time.time()
        send(service, broken, 15, http)
        fired = wait_for(
            lambda: any(
                a["labels"]["alertname"] == "FeatureMissingRateHigh"
                and a["labels"].get("feature") == "income"
                for a in stack.firing()
            ),
            30,
        )
        assert fired, stack.firing()
        assert wait_for(lambda: webhook.received("FeatureMissingRateHigh"), 30)
        alert = webhook.received("FeatureMissingRateHigh")[0]
        assert alert.labels["feature"] == "income"
        assert alert.received_at - started < 30
