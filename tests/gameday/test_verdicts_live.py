"""Verdicts a team can bet on, against the real reference stack: each case is one where a report
used to claim more than was observed (a fault that changed nothing, a label typo, a run cut
short, a renewal that re-seeded a fault, monitoring that went away, an alert always on)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from scipy.stats import binomtest

from chaosml.demo.harness import ReferenceStack, monitoring_stack
from chaosml.demo.rules import RULES, Rule, rules_file
from chaosml.gameday import GameDay, RunOptions, load_scenarios, load_target, run_files
from chaosml.gameday.coverage import GamedayReport
from chaosml.load import SHORTFALL_LIMIT, shortfall
from tests.gameday.conftest import SCALE, SCENARIOS, scenario, toxics
from tests.live_servers import wait_for


def forced(paths: list[Path], target: Path, runs: Path) -> GamedayReport:
    """Run past ``validate`` (as a scenario file written against other data would be)."""
    game = GameDay(
        scenarios=load_scenarios(paths),
        target=load_target(target),
        options=RunOptions(time_scale=SCALE, runs=runs),
    )
    return GamedayReport(game.run())


def bundled(name: str, folder: Path, **changes: Any) -> Path:
    data = yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text(encoding="utf-8"))
    data.update(changes)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_fault_on_a_mistyped_column_is_unknown_not_a_blind_spot(
    target: Path, tmp_path: Path
) -> None:
    path = bundled(
        "income-nulls",
        tmp_path,
        faults=[{"type": "missing_values", "columns": ["incom"], "rate": 0.6, "at": "proxy"}],
    )
    report = forced([path], target, tmp_path / "runs")
    (record,) = report.scenarios
    (fault,) = record.faults
    assert fault.effect == "no_effect" and fault.evidence is not None
    assert fault.evidence.acted > 0 and fault.evidence.changed_rows == 0
    assert fault.effect_reason == (
        f"the fault changed nothing: column 'incom' was in none of the {fault.evidence.acted} "
        "requests"
    )
    assert [e.verdict for e in record.expectations] == ["unknown", "unknown"]
    assert record.verdict == "unknown"
    assert report.coverage.blind_spots == []
    assert report.exit_code == 1


def test_a_label_typo_names_the_labels_that_fired(target: Path, tmp_path: Path) -> None:
    expect = [{"alert": "FeatureMissingRateHigh", "labels": {"featur": "income"}, "within": "4m"}]
    path = bundled("income-nulls", tmp_path, expect=expect)
    report = forced([path], target, tmp_path / "runs")
    (expectation,) = report.scenarios[0].expectations
    assert expectation.verdict == "failed"
    # (on a loaded machine the reason goes on to say the load ran under its plan, as it should)
    assert expectation.reason.startswith(
        "did not fire within 12 s of injection; FeatureMissingRateHigh fired with "
        "{feature=income}, not {featur=income}"
    )


def test_ctrl_c_during_the_fault_gives_no_failed_expectation(
    stack: ReferenceStack, target: Path, tmp_path: Path
) -> None:
    path = scenario(
        tmp_path,
        name="cut",
        phases={"steady": "1s", "fault": "60s", "recovery": "30s"},
        faults=[{"type": "missing_values", "columns": ["income"], "rate": 0.6, "at": "proxy"}],
        expect=[{"alert": "FeatureMissingRateHigh", "labels": {"feature": "income"}}],
    )
    junit = tmp_path / "cut.xml"
    never = scenario(tmp_path, name="never", expect=[{"alert": "ModelLatencyHigh"}])
    argv = [sys.executable, "-m", "chaosml", "gameday", str(path), str(never)]
    argv += ["--target", str(target)]
    runner = subprocess.Popen(
        [*argv, "--runs", str(tmp_path), "--junit", str(junit), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_for(lambda: len(toxics(stack)) == 1, 30)
        os.kill(runner.pid, signal.SIGINT)
        out, err = runner.communicate(timeout=20)
    finally:
        runner.kill()
        runner.communicate()
    assert runner.returncode == 130, err
    record, unreached = yaml.safe_load(out)["scenarios"]
    assert unreached["name"] == "never" and unreached["verdict"] == "unknown"
    assert unreached["reason"] == "not run: the game day was interrupted before it"
    (expectation,) = record["expectations"]
    assert expectation["verdict"] == "unknown"
    assert expectation["reason"].startswith("not fired in the ")
    assert expectation["reason"].endswith("of its 60 s deadline (the run was interrupted)")
    suite, other = ET.parse(junit).getroot().findall("testsuite")
    assert suite.get("failures") == "0" and other.get("failures") == "0"
    assert suite.get("skipped") == "2"  # the expectation, and the scenario cut short
    assert other.get("skipped") == "2"  # the expectation it never got to, and the scenario
    assert toxics(stack) == []


def answers(stack: ReferenceStack) -> dict[str, float]:
    text = requests.get(f"http://{stack.service}/metrics", timeout=5).text
    return {
        sample.labels["version"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "chaosml_model_answers_total"
    }


def test_renewed_leases_keep_the_hit_rate_the_file_asked_for(
    stack: ReferenceStack, tmp_path: Path
) -> None:
    """Leases of 2 s renewed every 0.67 s: http_error at 0.3 and stale_model at 0.5 hit their
    share of requests, by the fault point's count and by the client's and the service's own."""
    described = stack.target()
    for point in described["fault_points"].values():
        point["lease"] = "2s"
    target = tmp_path / "target.yaml"
    target.write_text(yaml.safe_dump(described), encoding="utf-8")
    path = scenario(
        tmp_path,
        name="rates",
        phases={"steady": "1s", "fault": "10s", "recovery": "1s"},
        faults=[
            {"type": "http_error", "status": 503, "toxicity": 0.3, "at": "service"},
            {"type": "stale_model", "version": "v1", "toxicity": 0.5, "at": "service"},
        ],
    )
    before = answers(stack)
    report = run_files([path], target, RunOptions(runs=tmp_path / "runs"))
    after = answers(stack)
    (record,) = report.scenarios
    errors, stale = record.faults
    for fault, rate in ((errors, 0.3), (stale, 0.5)):
        assert fault.evidence is not None and fault.evidence.rolls > 200
        assert fault.effect == "took_effect", fault.effect_reason
        assert binomtest(fault.evidence.hits, fault.evidence.rolls, rate).pvalue > 0.001
    load = record.phase("fault").load  # type: ignore[union-attr]
    assert load is not None and load.requests and load.failures is not None
    assert binomtest(load.failures, load.requests, 0.3).pvalue > 0.001  # what clients saw
    v1 = round((after.get("v1", 0) - before.get("v1", 0)) / 10)  # rows of 10 per request
    v2 = round((after.get("v2", 0) - before.get("v2", 0)) / 10)
    for name in ("steady", "recovery"):  # v2 alone answered the phases around the fault
        figures = record.phase(name).load  # type: ignore[union-attr]
        assert figures is not None and figures.requests is not None
        v2 -= figures.requests - (figures.failures or 0)
    assert v1 > 50 and binomtest(v1, v1 + v2, 0.5).pvalue > 0.001  # what the service saw
    assert toxics(stack) == []


def prometheus_pid(address: str) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"--web.listen-address={address}".encode() in argv:
            return int(entry.name)
    raise AssertionError(f"no Prometheus listening on {address}")


def own_monitoring(stack: ReferenceStack, folder: Path, extra: tuple[Rule, ...] = ()) -> Any:
    rules = folder / "rules.yml"
    rules.write_text(yaml.safe_dump(rules_file(rules=(*RULES, *extra))), encoding="utf-8")
    return monitoring_stack(
        targets=[stack.service], webhook="http://127.0.0.1:9/", time_scale=SCALE, rules=rules
    )


def target_for(stack: ReferenceStack, prometheus: str, folder: Path) -> Path:
    described = {
        **stack.target(),
        "alerts": [{"type": "prometheus", "url": f"http://{prometheus}"}],
    }
    path = folder / "target.yaml"
    path.write_text(yaml.safe_dump(described), encoding="utf-8")
    return path


def test_prometheus_going_away_mid_fault_is_unknown_and_exit_3(
    stack: ReferenceStack, tmp_path: Path
) -> None:
    with own_monitoring(stack, tmp_path) as other:
        target = target_for(stack, other.prometheus, tmp_path)
        pid = prometheus_pid(other.prometheus)

        def kill_after_injection() -> None:
            if wait_for(lambda: len(toxics(stack)) == 1, 30):
                os.kill(pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_after_injection)
        killer.start()
        report = run_files(
            [SCENARIOS / "income-nulls.yaml"],
            target,
            RunOptions(time_scale=SCALE, runs=tmp_path / "runs"),
        )
        killer.join()
    (record,) = report.scenarios
    fires, quiet = record.expectations
    assert (fires.verdict, quiet.verdict) == ("unknown", "unknown")
    assert fires.unreachable and (fires.reason or "").startswith("prometheus unreachable for ")
    assert "cannot tell whether it fired" in (fires.reason or "")
    assert report.journal.run.outages and report.journal.run.outages[0].source == "prometheus"
    assert report.coverage.blind_spots == []
    assert report.exit_code == 3


def test_an_alert_always_on_is_noisy_and_a_steady_state_finding(
    stack: ReferenceStack, tmp_path: Path
) -> None:
    always = Rule(
        alert="AlwaysOn",
        expr="vector(1) > 0",
        for_seconds=0,
        summary="always firing",
        failure_mode="none",
    )
    with own_monitoring(stack, tmp_path, (always,)) as other:
        target = target_for(stack, other.prometheus, tmp_path)
        assert wait_for(
            lambda: any(a["labels"]["alertname"] == "AlwaysOn" for a in other.firing()), 30
        )
        report = run_files(
            [SCENARIOS / "income-nulls.yaml"],
            target,
            RunOptions(time_scale=SCALE, runs=tmp_path / "runs"),
        )
    (record,) = report.scenarios
    assert record.steady_state == ["AlwaysOn"]
    assert record.verdict == "passed"  # what it expected still held
    coverage = report.coverage
    assert "AlwaysOn" in coverage.noisy_rules and "AlwaysOn" not in coverage.unexercised_rules
    assert coverage.steady_state == {"income-nulls": ["AlwaysOn"]}
    assert coverage.cell(coverage.scenarios[0], "AlwaysOn") == "steady"


def served(stack: ReferenceStack) -> float:
    text = requests.get(f"http://{stack.service}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "chaosml_model_requests_total"
    )


def test_distributed_load_counts_every_request_the_service_served(
    stack: ReferenceStack, target: Path, tmp_path: Path
) -> None:
    path = scenario(
        tmp_path, name="workers", phases={"steady": "3s", "fault": "5s", "recovery": "2s"}
    )
    before = served(stack)
    report = run_files([path], target, RunOptions(workers=2, runs=tmp_path / "runs"))
    after = served(stack)
    (record,) = report.scenarios
    counted = [p.load.requests for p in record.phases if p.load is not None]
    assert len(counted) == 3 and all(p.load and p.load.exact for p in record.phases)
    assert sum(c or 0 for c in counted) == after - before
    # The two workers share the plan's rate, and do not each run it (twice the plan): 1.5 times
    # lies between, as a phase's requests are counted to its mark's round trip. A slow machine
    # may deliver less, and the record then names each phase that ran short.
    for phase in record.phases[:2]:  # the recovery ends at once: no alert to resolve
        assert phase.load and phase.load.rps and phase.load.planned_rps
        assert phase.load.rps <= 1.5 * phase.load.planned_rps, phase.name
        short = shortfall(phase.load.model_dump())
        named = f"{phase.name} {phase.load.rps:.1f} of" in (record.load_shortfall or "")
        assert named == (short is not None and short > SHORTFALL_LIMIT), record.load_shortfall
