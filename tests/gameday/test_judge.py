"""Verdicts and coverage from a journal's records (pure logic, known times)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chaosml.gameday import GamedayReport, Journal, Scenario, coverage
from chaosml.gameday.judge import judge_expectations, scenario_verdict

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


def track(name: str, source: str, firing: float | None, resolved: float | None, **labels: str):
    return {
        "source": source,
        "name": name,
        "labels": labels,
        "pending_at": firing,
        "firing_at": firing,
        "firing_seen": firing,
        "resolved_at": resolved,
    }


def record(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "nulls",
        "failure_mode": "feature_nulls",
        "injected_at": 100.0,
        "rolled_back_at": 120.0,
        "ended_at": 130.0,
        "alerts": list(alerts),
        "stopped_by": None,
        "reason": None,
    }


def test_detection_and_resolution_use_the_first_source_and_keep_every_source() -> None:
    rec = record(
        track("Missing", "prometheus", 104.0, 123.0, feature="income"),
        track("Missing", "webhook", 105.5, 126.0, feature="income"),
    )
    missing, latency = judge_expectations(SCENARIO, rec)
    assert missing["verdict"] == "passed" and missing["source"] == "prometheus"
    assert (missing["detected_after_s"], missing["resolved_after_s"]) == (4.0, 3.0)
    assert missing["by_source"]["webhook"] == {"detected_after_s": 5.5, "resolved_after_s": 6.0}
    assert latency["verdict"] == "passed"
    rec["expectations"] = [missing, latency]
    assert scenario_verdict(rec) == "passed"


def test_late_unresolved_wrong_labels_and_noisy_quiet_alerts_fail() -> None:
    late = judge_expectations(
        SCENARIO, record(track("Missing", "p", 112.0, 121.0, feature="income"))
    )
    assert late[0]["verdict"] == "failed" and "deadline 10 s" in late[0]["reason"]
    stuck = judge_expectations(
        SCENARIO, record(track("Missing", "p", 101.0, None, feature="income"))
    )
    assert "did not resolve" in stuck[0]["reason"]
    other = judge_expectations(SCENARIO, record(track("Missing", "p", 101.0, 121.0, feature="age")))
    assert "did not fire within 10 s" in other[0]["reason"]
    noisy = judge_expectations(
        SCENARIO,
        record(track("Missing", "p", 101, 121, feature="income"), track("Latency", "p", 110, 125)),
    )
    assert noisy[1]["verdict"] == "failed" and "stay quiet" in noisy[1]["reason"]


def test_already_firing_in_the_steady_state_is_a_finding() -> None:
    verdicts = judge_expectations(
        SCENARIO, record(track("Missing", "p", 97.0, 125.0, feature="income"))
    )
    assert verdicts[0]["verdict"] == "failed"
    assert "already firing before the fault" in verdicts[0]["reason"]


def test_coverage_blind_spots_unexercised_and_noisy_rules(tmp_path: Path) -> None:
    ok = record(track("Missing", "p", 104, 121, feature="income"), track("Shift", "p", 106, 122))
    ok["expectations"] = judge_expectations(SCENARIO, ok)
    ok["verdict"] = scenario_verdict(ok)
    blind = {**record(), "name": "answers", "failure_mode": "null_predictions", "expectations": []}
    blind["faults"] = [{"type": "nan_prediction", "point": "proxy"}]
    blind["verdict"] = scenario_verdict(blind)
    rules = [
        {"source": "p", "name": n, "labels": {"failure_mode": m}}
        for n, m in (
            ("Missing", "feature_nulls"),
            ("Shift", "prediction_shift"),
            ("Slow", "latency"),
        )
    ]
    journal = Journal(tmp_path, {"run_id": "r", "rules": rules, "scenarios": [ok, blind]})
    cov = coverage(journal)
    assert cov.blind_spots == ["answers"]
    assert cov.unexercised_rules == ["Slow"]
    assert cov.noisy_rules == ["Shift"]
    assert cov.uncovered_failure_modes == ["null_predictions"]
    assert cov.to_dict()["matrix"]["nulls"] == {"Missing": "fired", "Shift": "noise"}
    report = GamedayReport(journal).to_dict()
    assert report["schema"] == "chaosml.gameday/1"
    assert [s["verdict"] for s in report["scenarios"]] == ["passed", "passed"]
    assert report["coverage"]["blind_spots"] == ["answers"]
