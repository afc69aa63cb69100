"""Rollback at the edges of an add: a stop that lands while a fault point is answering the add
(the toxic exists there, the runner has not read its 201 yet) still removes it, and a second
Ctrl-C does not interrupt the rollback. Against a real proxy on loopback; the stop is placed by
wrapping the control client's add, the one place a signal can land at that moment."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaosml.gameday.journal import FaultRecord, Journal, ScenarioRecord
from chaosml.gameday.runner import GameDay, Interrupted, RunOptions
from chaosml.gameday.target import load_target
from chaosml.proxy.api import ProxyServer, running
from chaosml.proxy.client import ControlClient
from chaosml.scenario import Scenario, load_scenarios


def scenario_file(tmp_path: Path) -> Path:
    path = tmp_path / "faults.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "two-faults",
                "phases": {"steady": "1s", "fault": "5s", "recovery": "1s"},
                "faults": [
                    {"type": "latency", "latency": 100, "at": "proxy"},
                    {"type": "http_error", "status": 503, "at": "proxy"},
                ],
            }
        ),
        encoding="utf-8",
    )
    return path


@dataclass
class Rig:
    """A game day of one two-fault scenario against a real proxy, its scenario record begun."""

    control: ControlClient
    gameday: GameDay
    scenario: Scenario
    record: ScenarioRecord = field(
        default_factory=lambda: ScenarioRecord(name="two-faults", started_at=time.time())
    )


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with running(ProxyServer(api="127.0.0.1:0")) as server:
        control = ControlClient(address=server.api)
        control.create_proxy("model", "127.0.0.1:9", "127.0.0.1:0")
        target_path = tmp_path / "target.yaml"
        target = {
            "name": "loopback",
            "url": "http://127.0.0.1:9/predict",
            "fault_points": {"proxy": {"api": server.api, "proxy": "model"}},
            "alerts": [{"type": "webhook", "listen": "127.0.0.1:0"}],
        }
        target_path.write_text(yaml.safe_dump(target), encoding="utf-8")
        (file,) = load_scenarios([scenario_file(tmp_path)])
        gameday = GameDay(
            scenarios=[file],
            target=load_target(target_path),
            options=RunOptions(runs=tmp_path / "runs"),
        )
        gameday.journal = Journal.create(tmp_path / "runs", started_at=time.time())
        yield Rig(control, gameday, file.scenario)


@pytest.mark.parametrize("stopped_at", [0, 1], ids=["first-add", "second-add"])
def test_a_stop_while_a_fault_is_being_added_still_rolls_it_back(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, stopped_at: int
) -> None:
    adds: list[str] = []
    original = ControlClient.add_toxic

    def add_then_stop(self: ControlClient, proxy: str, body: dict[str, Any]) -> Any:
        answer = original(self, proxy, body)  # the fault point has the toxic now
        adds.append(body["name"])
        if len(adds) == stopped_at + 1:
            raise Interrupted("stopped by SIGINT; no fault is left active")
        return answer

    monkeypatch.setattr(ControlClient, "add_toxic", add_then_stop)
    added: list[Any] = []

    def inject_both() -> None:
        for position in range(2):
            rig.gameday._inject(position, rig.scenario, rig.record, added)

    with pytest.raises(Interrupted):
        inject_both()
    assert len(rig.control.toxics("model")) == stopped_at + 1  # the stopped add took effect
    rig.gameday._rollback(added, rig.record)
    assert rig.control.toxics("model") == []
    assert [f.removed_at is not None for f in rig.record.faults] == [True] * (stopped_at + 1)
    # the stopped add was never confirmed: the journal does not claim when it was added
    assert rig.record.faults[stopped_at].added_at is None


def test_an_add_that_never_reached_the_point_is_not_claimed_removed(rig: Rig) -> None:
    added: list[Any] = []
    rig.gameday._inject(0, rig.scenario, rig.record, added)
    point = rig.gameday.points["proxy"]
    added.append(point.toxic(rig.scenario.faults[1], "chaosml-never-sent", None))
    record = rig.record
    record.faults.append(
        record.faults[0].model_copy(update={"toxic": "chaosml-never-sent", "added_at": None})
    )
    rig.gameday._rollback(added, record)
    assert rig.control.toxics("model") == []
    assert record.faults[0].removed_at is not None
    assert record.faults[1].removed_at is None  # nothing was there to remove


SIGNALS = """
import os, signal, time
from chaosml._signals import holding, raising

class Stop(Exception):
    pass

done = []
"""


def run_script(body: str) -> subprocess.CompletedProcess[str]:
    """``body`` after ``SIGNALS``, in a process of its own (signals go to its main thread)."""
    script = SIGNALS + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )


def test_a_second_ctrl_c_does_not_interrupt_the_rollback() -> None:
    run = run_script(
        """
        try:
            with raising((signal.SIGINT,), lambda signum: Stop()):
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(5)
                finally:  # the rollback, with the user's second Ctrl-C in the middle of it
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(0.05)
                    done.append("rolled back")
        except Stop:
            print(done[0] if done else "rollback interrupted")
        """
    )
    assert run.stdout.strip() == "rolled back", run.stderr
    assert "cleaning up first" in run.stderr


def test_a_first_ctrl_c_during_a_cleanup_is_raised_once_it_is_done() -> None:
    run = run_script(
        """
        try:
            with raising((signal.SIGINT,), lambda signum: Stop()):
                try:
                    done.append("fault phase ended by itself")
                finally:  # the rollback after a phase that ended normally, Ctrl-C in the middle
                    with holding():
                        os.kill(os.getpid(), signal.SIGINT)
                        time.sleep(0.05)
                        done.append("rolled back")
                done.append("went on after the rollback")
        except Stop:
            print(", ".join(done))
        """
    )
    assert run.stdout.strip() == "fault phase ended by itself, rolled back", run.stderr


def test_an_unanswered_add_applied_after_its_removal_is_removed_on_a_second_look(
    rig: Rig,
) -> None:
    point = rig.gameday.points["proxy"]
    late = point.toxic(rig.scenario.faults[0], "chaosml-late", None)
    rig.record.faults.append(
        FaultRecord(
            type="latency",
            point="proxy",
            proxy="model",
            toxic=late.name,
            stream="downstream",
            toxicity=1.0,
        )
    )
    # the point applies the add a moment after the rollback's first removal found nothing
    applied = threading.Timer(0.1, lambda: rig.control.add_toxic("model", late.body))
    applied.start()
    try:
        rig.gameday._rollback([late], rig.record)
    finally:
        applied.join()
    assert rig.control.toxics("model") == []
    assert rig.record.faults[0].removed_at is not None
