"""Game days against the real reference stack on loopback: the demo service (with its in-service
fault point), the fault proxy, Prometheus and Alertmanager, with rules shortened 20 times.

A healthy run fires nothing; detection times agree with what Prometheus itself says; a rule set
missing a rule turns its scenario into a failed expectation and a blind spot; Ctrl-C, SIGTERM and
stop conditions roll back at once, and SIGKILL leaves no fault once the lease runs out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from chaosml.alerts.base import parse_time
from chaosml.demo.harness import (
    ReferenceStack,
    monitoring_stack,
)
from chaosml.demo.rules import RULES, rules_file
from chaosml.gameday import GamedayReport, RunOptions, run_files
from tests.gameday.conftest import SCALE, SCENARIOS, scenario, toxics
from tests.live_servers import wait_for


def test_a_healthy_run_fires_nothing(target: Path, tmp_path: Path) -> None:
    path = scenario(
        tmp_path, name="healthy", phases={"steady": "2s", "fault": "8s", "recovery": "1s"}
    )
    report = run_files([path], target, RunOptions(runs=tmp_path / "runs"))
    (record,) = report.scenarios
    assert record.verdict == "passed"
    assert [t for t in record.alerts if t.firing_at is not None] == []
    assert report.coverage.blind_spots == []  # no fault, so nothing to be blind to
    assert [p.name for p in record.phases] == ["steady", "fault", "recovery"]
    fault = record.phases[1].load
    assert fault is not None and (fault.requests or 0) > 100


class PrometheusWatch:
    """Polls Prometheus's own API on the side, every 0.1 s, independent of the runner."""

    def __init__(self, url: str) -> None:
        self.url, self.firing_seen, self.active_at = url, None, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            alerts = requests.get(f"{self.url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
            for alert in alerts:
                if alert["labels"]["alertname"] == "FeatureMissingRateHigh":
                    self.active_at = parse_time(alert["activeAt"])
                    if alert["state"] == "firing" and self.firing_seen is None:
                        self.firing_seen = time.time()

    def __enter__(self) -> PrometheusWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_time_to_detect_agrees_with_prometheus_and_the_webhook(
    stack: ReferenceStack, target: Path, tmp_path: Path
) -> None:
    assert stack.monitoring is not None
    with PrometheusWatch(f"http://{stack.monitoring.prometheus}") as watch:
        report = run_files(
            [SCENARIOS / "income-nulls.yaml"],
            target,
            RunOptions(time_scale=SCALE, runs=tmp_path / "runs"),
        )
    (record,) = report.scenarios
    assert record.verdict == "passed", record.expectations
    expectation = record.expectations[0]
    injected = record.injected_at
    assert injected is not None
    by_source = {k: v.model_dump() for k, v in expectation.by_source.items()}
    assert set(by_source) == {"prometheus", "alertmanager", "webhook"}
    for_seconds = next(r.for_seconds for r in RULES if r.alert == "FeatureMissingRateHigh") * SCALE
    assert watch.active_at is not None and watch.firing_seen is not None
    # Prometheus: activeAt + for, against the moment its own API first said "firing"
    prometheus = by_source["prometheus"]["detected_after_s"]
    assert abs(prometheus - (watch.active_at + for_seconds - injected)) < 1e-3
    assert abs(prometheus - (watch.firing_seen - injected)) <= 1.0
    # delivery comes after firing, by Alertmanager's group_wait (1 s) and the HTTP hop
    assert 0 <= by_source["webhook"]["detected_after_s"] - prometheus <= 3.0
    assert expectation.detected_after_s == min(v["detected_after_s"] for v in by_source.values())
    assert expectation.resolved_after_s is not None
    (fault,) = record.faults
    assert fault.effect == "took_effect" and fault.evidence is not None
    assert fault.evidence.changed.keys() == {"income"}
    assert toxics(stack) == []


def test_a_removed_rule_is_a_failed_expectation_and_a_blind_spot(
    stack: ReferenceStack, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yml"
    kept = tuple(r for r in RULES if r.alert != "FeatureMissingRateHigh")
    rules.write_text(yaml.safe_dump(rules_file(rules=kept)), encoding="utf-8")
    with monitoring_stack(
        targets=[stack.service], webhook="http://127.0.0.1:9/", time_scale=SCALE, rules=rules
    ) as other:
        described = {
            **stack.target(),
            "alerts": [{"type": "prometheus", "url": f"http://{other.prometheus}"}],
        }
        path = tmp_path / "target.yaml"
        path.write_text(yaml.safe_dump(described), encoding="utf-8")
        report = run_files(
            [SCENARIOS / "income-nulls.yaml"], path, RunOptions(time_scale=SCALE, runs=tmp_path)
        )
    (record,) = report.scenarios
    assert record.verdict == "failed"
    assert (record.expectations[0].reason or "").startswith("did not fire within")
    assert report.coverage.blind_spots == ["income-nulls"]
    assert report.coverage.missing_rules == ["FeatureMissingRateHigh"]
    assert "FeatureMissingRateHigh" not in report.coverage.unexercised_rules
    assert report.exit_code == 1


def start_run(target: Path, scenario_path: Path, runs: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chaosml",
            "run",
            str(scenario_path),
            "--target",
            str(target),
            *("--runs", str(runs)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


LONG_FAULT = {
    "phases": {"steady": "1s", "fault": "60s", "recovery": "1s"},
    "faults": [
        {"type": "missing_values", "columns": ["income"], "at": "proxy"},
        {"type": "label_flip", "rate": 0.2, "at": "service"},
    ],
}


def test_sigkill_leaves_no_fault_once_the_lease_runs_out(
    stack: ReferenceStack, tmp_path: Path
) -> None:
    described = stack.target()
    for point in described["fault_points"].values():
        point["lease"] = "2s"
    path = tmp_path / "target.yaml"
    path.write_text(yaml.safe_dump(described), encoding="utf-8")
    runner = start_run(path, scenario(tmp_path, name="killed", **LONG_FAULT), tmp_path)
    try:
        assert wait_for(lambda: len(toxics(stack)) == 2, 30), runner.stderr
        load = children(runner.pid)
        time.sleep(2.5)  # longer than the lease: the runner keeps renewing it
        assert len(toxics(stack)) == 2
        runner.kill()
        runner.wait()
        assert len(toxics(stack)) == 2  # nothing removed them: only the lease can now
        (journal,) = tmp_path.glob("*/journal.json")  # it says what was left active
        (record,) = json.loads(journal.read_text())["scenarios"]
        left = [(f["type"], f["removed_at"]) for f in record["faults"] if f["added_at"]]
        assert left == [("missing_values", None), ("label_flip", None)]
        # gone by themselves, long before the 60 s fault would have ended: nobody is left to end it
        assert wait_for(lambda: toxics(stack) == [], 20)
        assert load and wait_for(lambda: not any(alive(p) for p in load), 15)
    finally:
        runner.kill()
        runner.communicate()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_roll_back_and_keep_the_journal(
    stack: ReferenceStack, target: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    runner = start_run(target, scenario(tmp_path, name="stopped", **LONG_FAULT), tmp_path)
    try:
        assert wait_for(lambda: len(toxics(stack)) == 2, 30)
        os.kill(runner.pid, sig)
        _, err = runner.communicate(timeout=20)
        assert runner.returncode == 130, err
        assert toxics(stack) == []
        assert b"Traceback" not in err and f"stopped by {sig.name}".encode() in err
    finally:
        runner.kill()
        runner.communicate()
    (journal,) = tmp_path.glob("*/journal.json")
    record = json.loads(journal.read_text())["scenarios"][0]
    assert record["verdict"] == "unknown" and record["interrupted"]
    # the runner removed them itself (a lease running out leaves removed_at empty, as under SIGKILL)
    assert all(f["removed_at"] is not None for f in record["faults"])
    assert [e["verdict"] for e in record["expectations"]] == []


def test_a_stop_condition_halts_within_a_second(
    stack: ReferenceStack, target: Path, tmp_path: Path
) -> None:
    path = scenario(
        tmp_path,
        name="errors",
        phases={"steady": "2s", "fault": "30s", "recovery": "1s"},
        faults=[{"type": "http_error", "status": 500, "at": "proxy"}],
        stop_if=["error_rate > 0.5"],
    )
    report: GamedayReport = run_files([path], target, RunOptions(runs=tmp_path))
    (record,) = report.scenarios
    assert record.verdict == "unknown" and record.stopped_by == "error_rate > 0.5"
    held = min(t.t or 0 for t in record.load if (t.error_rate or 0) > 0.5)
    assert record.injected_at is not None and record.rolled_back_at is not None
    fault = next(p for p in record.phases if p.name == "fault")
    assert fault.end is not None and fault.planned_s == 30
    assert record.injected_at <= held <= fault.end <= record.rolled_back_at
    # the fault phase ended on the load's first tick that showed the condition (or the next, had
    # the check raced it), not after its planned 30 s: counted in the load's own ticks, which a
    # busy machine slows as much as the runner
    late = [tick.t for tick in record.load if held < (tick.t or 0) < fault.end]
    assert len(late) <= 2, (held, fault.end, late)
    assert fault.end - fault.start < fault.planned_s / 2
    assert report.exit_code == 1
    assert toxics(stack) == []
