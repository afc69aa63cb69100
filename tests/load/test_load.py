"""The load driver against real services on loopback: Locust holds a constant rate, sends
feedback labels, runs distributed with two workers, and the runner can stop it at any time."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from chaosml.demo.train import DemoArtifacts
from chaosml.load import FIGURES, LoadPlan, LoadProcess, LoadStopped
from tests.live_servers import within_plan


def test_constant_rate_within_plan(echo_service: str, demo: DemoArtifacts) -> None:
    plan = LoadPlan(url=f"http://{echo_service}/predict", data=str(demo.data), users=4, rate=40)
    with LoadProcess(plan) as load:
        time.sleep(1.0)  # users have started
        load.mark("warmup")
        time.sleep(6.0)
        figures = load.mark("measured")
    assert figures is not None and figures["failures"] == 0
    assert within_plan(figures["rps"], 40), figures
    assert figures["p95_ms"] is not None and figures["planned_rps"] == 40
    # each tick carries the figures stop conditions read, over the requests of its window
    assert load.ticks and all(set(FIGURES) <= set(tick) for tick in load.ticks)
    assert load.ticks[-1]["requests"] > 0 and load.ticks[-1]["users"] == 4


def test_feedback_reaches_the_service(model_v2: str, demo: DemoArtifacts) -> None:
    def feedback() -> float:
        text = requests.get(f"http://{model_v2}/metrics", timeout=5).text
        line = next(r for r in text.splitlines() if r.startswith("chaosml_model_feedback_total"))
        return float(line.split()[-1])

    before = feedback()
    plan = LoadPlan(
        url=f"http://{model_v2}/predict",
        data=str(demo.data),
        label="approved",
        batch=5,
        users=2,
        rate=10,
        feedback_url=f"http://{model_v2}/feedback",
        feedback_delay=0.2,
    )
    with LoadProcess(plan) as load:
        time.sleep(3)
        figures = load.mark("run")
        time.sleep(0.5)  # the last answers' feedback is due
    assert figures is not None
    rows = figures["requests"] * plan.batch
    assert rows > 0 and feedback() - before >= rows


def test_distributed_with_two_workers(echo_service: str, demo: DemoArtifacts) -> None:
    plan = LoadPlan(
        url=f"http://{echo_service}/predict", data=str(demo.data), users=4, rate=40, workers=2
    )
    with LoadProcess(plan) as load:
        time.sleep(3)
        load.mark("warmup")
        time.sleep(6)
        figures = load.mark("measured")
    assert figures is not None and figures["failures"] == 0 and figures["exact"]
    # each mark collects the workers' requests not yet reported, so the phase's edges are exact
    assert within_plan(figures["rps"], 40), figures


def test_a_driver_whose_runner_died_stops_by_itself(echo_service: str, demo: DemoArtifacts) -> None:
    plan = LoadPlan(url=f"http://{echo_service}/predict", data=str(demo.data), users=1, rate=5)
    load = LoadProcess(plan).start()
    load.go()
    process: Any = load._process
    process.stdin.close()  # what the runner's death looks like from the driver
    assert process.wait(timeout=15) == 0
    load.stop()


def test_an_unreadable_plan_is_reported(echo_service: str, tmp_path: Any) -> None:
    plan = LoadPlan(url=f"http://{echo_service}/predict", data=str(tmp_path / "none.parquet"))
    with pytest.raises(LoadStopped, match="load driver did not start"):
        LoadProcess(plan).start()
