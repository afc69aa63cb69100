"""Verdicts and coverage from a journal's records (pure logic, known times).

Each case is one a team could meet in staging; the verdict must say only what was observed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chaosml.gameday import GamedayReport, Journal, Scenario, coverage
from chaosml.gameday.journal import (
    Episode,
    FaultEvidence,
    FaultRecord,
    Outage,
    PhaseRecord,
    RuleRecord,
    RunRecord,
    ScenarioRecord,
)
from chaosml.gameday.judge import Window, judge_expectations, judge_fault, scenario_verdict

SCENARIO = Scenario.model_validate(
    {
        "name": "nulls",
        "failure_mode": "feature_nulls",
        "faults": [{"type": "missing_values", "columns": ["income"]}],
        "phases": {"steady": "5s", "fault": "20s", "recovery": "10s"},
        "expect": [
            {"alert": "Missing", "labels": {"feature": "income"}, "within": "10s"},
            {"alert": "Latency", "fires": False},
        ],
    }
)
TOOK_EFFECT = FaultEvidence(rolls=100, hits=100, acted=100, rows=100, changed_rows=60)


def track(
    name: str, source: str, firing: float | None, resolved: float | None, **labels: str
) -> Episode:
    return Episode(
        source=source,
        name=name,
        labels=labels,
        pending_at=firing,
        firing_at=firing,
        firing_seen=firing,
        resolved_at=resolved,
    )


def fault(evidence: FaultEvidence | None = TOOK_EFFECT, **fields: Any) -> FaultRecord:
    entry = FaultRecord(
        type=fields.pop("type", "missing_values"),
        point="proxy",
        proxy="model",
        toxic="t",
        stream="upstream",
        toxicity=fields.pop("toxicity", 1.0),
        attributes=fields.pop("attributes", {"columns": ["income"]}),
        evidence=evidence,
    )
    effect, entry.effect_reason = judge_fault(entry)
    entry.effect = effect  # type: ignore[assignment]
    return entry


def record(*alerts: Episode, **fields: Any) -> ScenarioRecord:
    defaults: dict[str, Any] = {
        "name": "nulls",
        "failure_mode": "feature_nulls",
        "started_at": 95.0,
        "injected_at": 100.0,
        "rolled_back_at": 120.0,
        "ended_at": 130.0,
        "alerts": list(alerts),
        "faults": [fault()],
        "phases": [
            PhaseRecord(name="steady", start=95, end=100, planned_s=5),
            PhaseRecord(name="fault", start=100, end=120, planned_s=20),
            PhaseRecord(name="recovery", start=120, end=130, planned_s=10),
        ],
    }
    return ScenarioRecord(**{**defaults, **fields})


def judge(rec: ScenarioRecord, *outages: Outage) -> list[Any]:
    rec.expectations = judge_expectations(SCENARIO, rec, Window(outages))
    rec.verdict = scenario_verdict(rec)  # type: ignore[assignment]
    return rec.expectations


def test_detection_and_resolution_use_the_first_source_and_keep_every_source() -> None:
    rec = record(
        track("Missing", "prometheus", 104.0, 123.0, feature="income"),
        track("Missing", "webhook", 105.5, 126.0, feature="income"),
    )
    missing, latency = judge(rec)
    assert missing.verdict == "passed" and missing.source == "prometheus"
    assert (missing.detected_after_s, missing.resolved_after_s) == (4.0, 3.0)
    assert missing.by_source["webhook"].model_dump() == {
        "detected_after_s": 5.5,
        "resolved_after_s": 6.0,
    }
    assert latency.verdict == "passed"
    assert rec.verdict == "passed"


def test_late_unresolved_and_noisy_quiet_alerts_fail() -> None:
    late = judge(record(track("Missing", "p", 112.0, 121.0, feature="income")))
    assert late[0].verdict == "failed" and "deadline 10 s" in (late[0].reason or "")
    stuck = judge(record(track("Missing", "p", 101.0, None, feature="income")))
    assert stuck[0].verdict == "failed" and "did not resolve" in (stuck[0].reason or "")
    noisy = judge(
        record(track("Missing", "p", 101, 121, feature="income"), track("Latency", "p", 110, 125))
    )
    assert noisy[1].verdict == "failed" and "expected quiet" in (noisy[1].reason or "")


def test_an_alert_that_fired_with_other_labels_is_named() -> None:
    (missing, _) = judge(record(track("Missing", "p", 101.0, 121.0, feature="income", job="m")))
    assert missing.verdict == "passed"
    other = ScenarioRecord.model_validate(
        record(track("Missing", "p", 101.0, 121.0, feature="income", job="m")).model_dump()
    )
    scenario = SCENARIO.model_copy(
        update={"expect": [SCENARIO.expect[0].model_copy(update={"labels": {"featur": "income"}})]}
    )
    (typo,) = judge_expectations(scenario, other, Window())
    assert typo.verdict == "failed"
    assert typo.reason == (
        "did not fire within 10 s of injection; Missing fired with {feature=income}, "
        "not {featur=income}"
    )


def test_already_firing_at_injection_is_unknown_and_a_steady_state_finding() -> None:
    rec = record(track("Missing", "p", 97.0, 125.0, feature="income"), steady_state=["Missing"])
    verdicts = judge(rec)
    assert verdicts[0].verdict == "unknown"
    assert "already firing at injection" in (verdicts[0].reason or "")
    assert rec.verdict == "unknown"


def test_a_run_cut_short_invents_no_failure() -> None:
    """Ctrl-C 2 s into the fault phase: no alert yet, none resolved; a stop condition alike."""
    interrupted = record(rolled_back_at=102.0, ended_at=102.01, interrupted=True)
    missing, latency = judge(interrupted)
    assert missing.verdict == "unknown"
    assert missing.reason == (
        "not fired in the 2.0 s the fault ran of its 10 s deadline (the run was interrupted)"
    )
    assert latency.verdict == "unknown" and "quiet for the 2.0 s observed" in (latency.reason or "")
    fired = record(
        track("Missing", "p", 101.0, None, feature="income"),
        rolled_back_at=105.0,
        ended_at=105.005,
        interrupted=True,
    )
    (missing, _) = judge(fired)
    assert missing.verdict == "unknown" and missing.detected_after_s == 1.0
    assert "when the run ended before the 10 s deadline" in (missing.reason or "")
    stopped = record(rolled_back_at=100.86, ended_at=110.0, stopped_by="error_rate > 0.5")
    (missing, _) = judge(stopped)
    assert missing.verdict == "unknown" and "stopped by 'error_rate > 0.5'" in (
        missing.reason or ""
    )
    assert {interrupted.verdict, fired.verdict, stopped.verdict} == {"unknown"}


def test_a_source_that_went_away_gives_unknown_not_a_miss() -> None:
    down = Outage(source="prometheus", start=101.0, end=None, polls=70, error="refused")
    missing, latency = judge(record(), down)
    assert missing.verdict == "unknown" and missing.unreachable
    assert missing.reason == (
        "prometheus unreachable for 9.0 s of the 10.0 s window (refused): cannot tell whether "
        "it fired"
    )
    assert latency.verdict == "unknown" and latency.unreachable
    after = judge(record(track("Missing", "p", 104.0, None, feature="income")), down)
    assert after[0].verdict == "unknown" and "whether it resolved" in (after[0].reason or "")
    brief = Outage(source="prometheus", start=90.0, end=91.0, error="refused")
    assert judge(record(), brief)[0].verdict == "failed"  # down before injection only


def test_a_fault_that_changed_nothing_is_unknown_never_a_miss() -> None:
    typo = FaultEvidence(rolls=300, hits=300, acted=300, rows=3000, absent={"tenur": 300})
    rec = record(faults=[fault(typo, attributes={"columns": ["tenur"]})])
    assert rec.faults[0].effect == "no_effect"
    assert rec.faults[0].effect_reason == (
        "the fault changed nothing: column 'tenur' was in none of the 300 requests"
    )
    missing, latency = judge(rec)
    assert missing.verdict == "unknown" and "did not act as asked" in (missing.reason or "")
    assert latency.verdict == "unknown"
    fired_anyway = record(track("Missing", "p", 104.0, 121.0, feature="income"), faults=rec.faults)
    assert judge(fired_anyway)[0].verdict == "unknown"


def test_fault_evidence_checks_skips_errors_and_the_hit_rate() -> None:
    skipped = FaultEvidence(rolls=50, hits=50, skipped={"request body br-encoded": 50})
    assert judge_fault(fault(skipped)) == (
        "no_effect",
        "the fault never acted on a request: 50 request body br-encoded",
    )
    reseeded = FaultEvidence(rolls=400, hits=0, acted=0)
    effect, why = judge_fault(fault(reseeded, type="http_error", toxicity=0.3, attributes={}))
    assert effect == "off_rate" and why is not None
    assert why.startswith("picked 0 of 400 requests (0.0%); the file asked toxicity 0.3")
    encoded = FaultEvidence(rolls=307, hits=307, acted=36, skipped={"request body br-encoded": 271})
    effect, why = judge_fault(fault(encoded))
    assert effect == "off_rate"
    assert why == "acted on 36 of the 307 requests it picked (request body br-encoded: 271)"
    in_flight = FaultEvidence(rolls=361, hits=361, acted=359, rows=3590, changed_rows=900)
    assert judge_fault(fault(in_flight))[0] == "took_effect"  # 2 still in flight when read
    for attributes, kind in (({}, "noop"), ({"latency": 0}, "latency")):
        effect, why = judge_fault(fault(TOOK_EFFECT, type=kind, attributes=attributes))
        assert effect == "no_effect" and "changes nothing with these attributes" in (why or "")
    assert judge_fault(fault(TOOK_EFFECT, toxicity=0.0)) == (
        "no_effect",
        "toxicity 0 picks no request",
    )
    fine = FaultEvidence(rolls=400, hits=118, acted=118)
    assert judge_fault(fault(fine, type="http_error", toxicity=0.3, attributes={}))[0] == (
        "took_effect"
    )
    assert judge_fault(fault(None))[0] == "not_measured"
    nothing = FaultEvidence(rolls=0)
    assert judge_fault(fault(nothing)) == (
        "no_effect",
        "no request reached 'proxy' while the fault was on",
    )


def test_the_load_under_its_plan_is_named_in_a_failure() -> None:
    from chaosml.gameday.journal import LoadFigures
    from chaosml.gameday.judge import load_shortfall

    rec = record()
    rec.phases[1].load = LoadFigures(rps=4.0, planned_rps=10.0)
    rec.load_shortfall = load_shortfall(rec)
    assert rec.load_shortfall == "the load ran under its plan: fault 4.0 of 10 req/s (40%)"
    assert "(the load ran under its plan" in (judge(rec)[0].reason or "")


def journal(tmp_path: Path, *scenarios: ScenarioRecord, rules: list[Any] | None) -> Journal:
    run = RunRecord(run_id="r", started_at=90.0, rules=rules, scenarios=list(scenarios))
    return Journal(tmp_path, run)


RULES = [
    RuleRecord(source="p", name=n, labels={"failure_mode": m})
    for n, m in (("Missing", "feature_nulls"), ("Shift", "prediction_shift"), ("Slow", "latency"))
]


def test_coverage_blind_spots_unexercised_and_noisy_rules(tmp_path: Path) -> None:
    ok = record(track("Missing", "p", 104, 121, feature="income"), track("Shift", "p", 106, 122))
    judge(ok)
    blind = record(name="answers", failure_mode="null_predictions")
    blind.verdict = scenario_verdict(blind)  # type: ignore[assignment]
    cov = coverage(journal(tmp_path, ok, blind, rules=RULES))
    assert cov.blind_spots == ["answers"]
    assert cov.unexercised_rules == ["Slow"]
    assert cov.noisy_rules == ["Shift"]
    assert cov.missing_rules == []
    assert cov.uncovered_failure_modes == ["null_predictions"]
    assert cov.to_dict()["matrix"]["nulls"] == {"Missing": "fired", "Shift": "noise"}
    report = GamedayReport(journal(tmp_path, ok, blind, rules=RULES)).to_dict()
    assert report["schema"] == "chaosml.gameday/2"
    assert [s["verdict"] for s in report["scenarios"]] == ["passed", "passed"]
    assert report["coverage"]["blind_spots"] == ["answers"]


def test_coverage_counts_only_what_was_observed(tmp_path: Path) -> None:
    """An unknown scenario is no blind spot; a missing rule is not 'unexercised'; an alert on
    before the fault is a steady-state finding and noise."""
    cut = record(name="answers", failure_mode="null_predictions", interrupted=True)
    judge(cut)
    unknown_rule = SCENARIO.model_copy(
        update={"expect": [SCENARIO.expect[0].model_copy(update={"alert": "Nope"})]}
    )
    missing = record(track("Always", "p", 50.0, None), steady_state=["Always"])
    missing.expectations = judge_expectations(unknown_rule, missing, Window())
    missing.verdict = scenario_verdict(missing)  # type: ignore[assignment]
    rules = [*RULES, RuleRecord(source="p", name="Always")]
    cov = coverage(journal(tmp_path, cut, missing, rules=rules))
    assert cov.blind_spots == ["nulls"]  # only an alert already on before the fault fired
    assert cov.missing_rules == ["Nope"]
    assert "Nope" not in cov.unexercised_rules
    assert cov.noisy_rules == ["Always"]
    assert cov.steady_state == {"nulls": ["Always"]}
    assert cov.cell(cov.scenarios[1], "Always") == "steady"
    assert cov.cell(cov.scenarios[1], "Nope") == "missed"
    exit_code = GamedayReport(journal(tmp_path, cut, missing, rules=rules)).exit_code
    assert exit_code == 1
    down = record(faults=[fault()])
    judge(down, Outage(source="prometheus", start=101.0, error="refused"))
    assert GamedayReport(journal(tmp_path, down, rules=rules)).exit_code == 3


def test_a_damaged_or_foreign_journal_is_one_line_and_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from chaosml.cli import app

    runs = tmp_path / "r"
    runs.mkdir()
    run = RunRecord(run_id="r", started_at=90.0, scenarios=[record()])
    (runs / "journal.json").write_text(run.model_dump_json(by_alias=True), encoding="utf-8")
    # a scenario a SIGKILL cut off is still "running": shown, and not a pass
    assert CliRunner().invoke(app, ["coverage", str(runs)]).exit_code == 1
    data = run.model_dump(mode="json", by_alias=True)
    data["scenarios"][0]["faults"][0]["toxicity"] = "lots"
    (runs / "journal.json").write_text(json.dumps(data), encoding="utf-8")
    result = CliRunner().invoke(app, ["coverage", str(runs)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        f"chaosml: error: {runs / 'journal.json'}: damaged journal: scenarios.0.faults.0.toxicity: "
        "Input should be a valid number, unable to parse string as a number"
    )
    data["schema"] = "chaosml.journal/1"
    (runs / "journal.json").write_text(json.dumps(data), encoding="utf-8")
    result = CliRunner().invoke(app, ["coverage", str(runs)])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"chaosml: error: {runs / 'journal.json'}: not a chaosml journal (expected schema "
        "chaosml.journal/2, found chaosml.journal/1: written by another chaosml version)"
    )


def test_a_fault_whose_lease_lapsed_or_whose_point_went_away_did_not_act_as_asked() -> None:
    lapsed = fault(TOOK_EFFECT.model_copy(update={"expired": True}))
    assert lapsed.effect == "no_effect"
    assert (lapsed.effect_reason or "").startswith("its lease ran out before rollback")
    gone = FaultRecord(
        type="missing_values",
        point="proxy",
        proxy="model",
        toxic="t",
        stream="upstream",
        toxicity=1.0,
        error="evidence not read: fault point 'proxy' unreachable: refused",
    )
    assert judge_fault(gone)[0] == "no_effect"
    toxiproxy = gone.model_copy(
        update={"error": "a real Toxiproxy does not report what its toxics did"}
    )
    assert judge_fault(toxiproxy)[0] == "not_measured"
    assert judge(record(faults=[lapsed]))[0].verdict == "unknown"


def test_a_scenario_a_killed_run_left_open_claims_nothing(tmp_path: Path) -> None:
    from chaosml.gameday.judge import NOT_JUDGED, unjudged
    from chaosml.report.gameday import notes

    open_one = record(verdict="running", rolled_back_at=None, ended_at=None)
    open_one.faults[0].added_at = 100.0
    open_one.expectations = unjudged(SCENARIO)
    assert {e.verdict for e in open_one.expectations} == {"unknown"}
    assert open_one.expectations[0].reason == NOT_JUDGED
    cov = coverage(journal(tmp_path, open_one, rules=RULES))
    assert cov.blind_spots == [] and cov.cell(cov.scenarios[0], "Missing") == "unknown"
    assert notes(open_one)[0] == (
        "did not finish: the run stopped before this scenario ended; faults it left active "
        "(until their lease ran out): missing_values@proxy(columns=[income])"
    )
    assert GamedayReport(journal(tmp_path, open_one, rules=RULES)).exit_code == 1


def test_the_matrix_shows_each_rule_as_its_expectations_ended(tmp_path: Path) -> None:
    late = record(track("Missing", "p", 112.0, 121.0, feature="income"))
    judge(late)
    cov = coverage(journal(tmp_path, late, rules=RULES))
    assert cov.cell(cov.scenarios[0], "Missing") == "missed"  # it fired, but after its deadline
    rules = frozenset(r.name for r in RULES)
    nope = SCENARIO.model_copy(
        update={"expect": [SCENARIO.expect[0].model_copy(update={"alert": "Nope"})]}
    )
    (missing,) = judge_expectations(nope, record(), Window((), rules))
    assert missing.reason == "did not fire within 10 s of injection: the target has no rule 'Nope'"


def test_until_detected_ends_a_fault_only_once_every_source_saw_every_expected_alert() -> None:
    from chaosml.alerts.poller import Track
    from chaosml.gameday.runner import all_detected
    from chaosml.scenario import Expectation

    fairness = Expectation(alert="FairnessGapHigh", labels={"attribute": "sex"})
    both = {"prometheus", "alertmanager"}

    def track(source: str, labels: dict[str, str], at: float | None) -> Track:
        return Track(source=source, name="FairnessGapHigh", labels=labels, firing_at=at)

    fired = [track("prometheus", {"attribute": "sex"}, 12.0)]
    assert not all_detected([fairness], fired, both, 10.0)  # Alertmanager has not seen it yet
    fired.append(track("alertmanager", {"attribute": "sex", "x": "y"}, 13.0))
    assert all_detected([fairness], fired, both, 10.0)
    assert not all_detected([fairness], fired, both, 12.5)  # fired before this injection
    pending = [track(s, {"attribute": "sex"}, None) for s in both]
    assert not all_detected([fairness], pending, both, 10.0)
    typo = [track(s, {"attribute": "gender"}, 12.0) for s in both]
    assert not all_detected([fairness], typo, both, 10.0)
    # a quiet expectation, or none at all, needs the whole window
    quiet = Expectation(alert="ModelLatencyHigh", fires=False)
    assert not all_detected([fairness, quiet], fired, both, 10.0)
    assert not all_detected([], fired, both, 10.0)
