"""The load driver against real services on loopback: Locust holds a constant rate, sends
feedback labels, runs distributed with two workers, and the runner can stop it at any time."""

from __future__ import annotations

import json
import subprocess
import sys
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


DROPS_ITS_FIRST_PLAN = """
import sys
import locust.runners

register = locust.runners.WorkerRunner.register_message

def late(self, name, listener, concurrent=False):
    if name == "chaosml-plan":  # the first plan is lost, as when it comes with the master's ack
        inner, seen = listener, []

        def listener(*args, **kwargs):
            seen.append(1)
            return None if len(seen) == 1 else inner(*args, **kwargs)

    return register(self, name, listener, concurrent)

locust.runners.WorkerRunner.register_message = late
from chaosml.load.driver import worker
worker(sys.argv[-1])
"""

MASTER = """
import json, sys, time
import chaosml.load.driver as driver
from locust.env import Environment
from chaosml.load.plan import LoadPlan

driver.WORKER = (sys.executable, "-c", sys.argv[2])
plan = LoadPlan(url="http://127.0.0.1:9/predict", data=sys.argv[1], users=1, rate=1, workers=1)
runner, workers = driver._runners(Environment(user_classes=[]), plan)
print(json.dumps({"workers": len(workers)}))
runner.quit()
for process in workers:
    process.kill()
    process.wait()
"""


def test_a_worker_that_lost_the_plan_gets_it_again(demo: DemoArtifacts) -> None:
    done = subprocess.run(
        [sys.executable, "-c", MASTER, str(demo.data), DROPS_ITS_FIRST_PLAN],
        capture_output=True,
        text=True,
        timeout=120,  # a bound on a wait: without the plan sent again it fails after 60 s
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"workers": 1}
