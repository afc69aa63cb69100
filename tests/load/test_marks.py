"""Per-phase load figures hold exactly the requests the service received, locally and with Locust
workers (whose reports reach the master late), and a service too slow for the plan shows as a
delivered rate under the planned one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chaosml.demo.service import serving_app
from chaosml.demo.train import DemoArtifacts
from chaosml.load import SHORTFALL_LIMIT, LoadPlan, LoadProcess, shortfall
from tests.live_servers import within_plan


@dataclass
class Counting:
    """A service that counts the requests it received and those it answered."""

    address: str
    received: int = 0
    answered: int = 0
    delay: float = 0.0

    async def predict(self, request: Request) -> JSONResponse:
        self.received += 1
        await request.body()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.answered += 1
        return JSONResponse({"predictions": [1]})


@pytest.fixture
def counting() -> Iterator[Counting]:
    service = Counting(address="")
    app = Starlette(routes=[Route("/predict", service.predict, methods=["POST"])])
    with serving_app(app) as address:
        service.address = address
        yield service


@pytest.mark.parametrize("workers", [0, 2], ids=["local", "two-workers"])
def test_the_phases_hold_every_request_the_service_received(
    counting: Counting, demo: DemoArtifacts, workers: int
) -> None:
    plan = LoadPlan(
        url=f"http://{counting.address}/predict",
        data=str(demo.data),
        users=4,
        rate=40,
        workers=workers,
    )
    load = LoadProcess(plan).start()
    try:
        load.go()
        for name in ("steady", "fault"):
            time.sleep(3)
            assert load.mark(name) is not None
        time.sleep(3)
        # the last mark stops the users: the requests in flight complete in this phase
        assert load.mark("recovery", last=True) is not None
    finally:
        load.stop()
    phases = [load.phases[name] for name in ("steady", "fault", "recovery")]
    assert counting.received == counting.answered  # nothing was cut off in flight
    assert sum(p["requests"] for p in phases) == counting.received > 0
    assert all(p["exact"] and p["failures"] == 0 for p in phases), phases
    # every phase of a constant-rate plan, even with workers that report once a second
    assert within_plan(phases[1]["rps"], 40), phases
    assert {p["planned_rps"] for p in phases} == {40}


def test_requests_after_the_last_mark_are_in_the_end_phase(
    counting: Counting, demo: DemoArtifacts
) -> None:
    plan = LoadPlan(
        url=f"http://{counting.address}/predict", data=str(demo.data), users=2, rate=20, workers=2
    )
    load = LoadProcess(plan).start()
    try:
        load.go()
        time.sleep(2)
        figures = load.mark("run")
        time.sleep(1)
    finally:
        load.stop()
    assert figures is not None and "end" in load.phases
    assert load.phases["end"]["requests"] > 0
    assert figures["requests"] + load.phases["end"]["requests"] == counting.received


def test_a_service_too_slow_for_the_plan_delivers_less_than_planned(
    counting: Counting, demo: DemoArtifacts
) -> None:
    counting.delay = 0.5  # two users can send at most 4 requests/s
    plan = LoadPlan(url=f"http://{counting.address}/predict", data=str(demo.data), users=2, rate=10)
    with LoadProcess(plan) as load:
        time.sleep(3)
        figures = load.mark("slow")
    assert figures is not None and figures["planned_rps"] == 10
    assert figures["requests"] > 0 and figures["rps"] < 5, figures
    under = shortfall(figures)
    assert under is not None and under > SHORTFALL_LIMIT


def test_a_plan_without_a_rate_has_no_planned_rate(counting: Counting, demo: DemoArtifacts) -> None:
    plan = LoadPlan(
        url=f"http://{counting.address}/predict", data=str(demo.data), users=1, think=0.1
    )
    with LoadProcess(plan) as load:
        time.sleep(1)
        figures = load.mark("thinking")
    assert figures is not None and figures["requests"] > 0
    assert figures["planned_rps"] is None and shortfall(figures) is None
