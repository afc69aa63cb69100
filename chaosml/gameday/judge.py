"""Verdicts: each expectation of a scenario against the alert episodes its journal holds.

Time to detect = when the alert fired (Prometheus: ``activeAt`` + the rule's ``for:``;
Alertmanager: ``startsAt``; webhook: delivery; probe: its own evaluation) minus injection start.
Time to resolve = when it was first seen gone minus rollback. The verdict uses the source that saw the
alert fire first; every source's figure is kept (``by_source``).
"""

from __future__ import annotations

from typing import Any

from chaosml.gameday.scenario import Expectation, Scenario


def judge_expectations(scenario: Scenario, record: dict[str, Any]) -> list[dict[str, Any]]:
    return [_judge(scenario, e, record) for e in scenario.expect]


def _judge(scenario: Scenario, expectation: Expectation, record: dict[str, Any]) -> dict[str, Any]:
    injected, rolled_back = record["injected_at"], record.get("rolled_back_at")
    end = record.get("ended_at") or rolled_back or injected
    tracks = [t for t in record.get("alerts", []) if expectation.matches(t["name"], t["labels"])]
    result: dict[str, Any] = {
        "alert": expectation.alert,
        "labels": expectation.labels,
        "fires": expectation.fires,
        "within_s": scenario.within(expectation) if expectation.fires else None,
        "resolves_within_s": scenario.resolves_within(expectation) if expectation.fires else None,
        "verdict": "passed",
        "reason": None,
        "detected_after_s": None,
        "resolved_after_s": None,
        "source": None,
        "by_source": {},
    }
    fired = [t for t in tracks if t["firing_at"] is not None]
    if not expectation.fires:
        during = [
            t
            for t in fired
            if t["firing_at"] <= end and (t["resolved_at"] is None or t["resolved_at"] >= injected)
        ]
        if during:
            first = min(during, key=lambda t: t["firing_at"])
            result.update(
                verdict="failed",
                source=first["source"],
                detected_after_s=round(first["firing_at"] - injected, 3),
                reason=f"fired {first['firing_at'] - injected:.1f} s after injection "
                f"(at {first['source']}); expected it to stay quiet",
            )
        return result
    before = [
        t
        for t in fired
        if t["firing_at"] < injected and (t["resolved_at"] is None or t["resolved_at"] > injected)
    ]
    if before:
        result.update(
            verdict="failed",
            source=before[0]["source"],
            reason="already firing before the fault (in the steady state): it cannot tell "
            "this failure from whatever set it off",
        )
        return result
    after = sorted((t for t in fired if injected <= t["firing_at"] <= end), key=_firing)
    for track in after:
        result["by_source"].setdefault(
            track["source"],
            {
                "detected_after_s": round(track["firing_at"] - injected, 3),
                "resolved_after_s": _resolved(track, rolled_back),
            },
        )
    if not after:
        within = scenario.within(expectation)
        result.update(verdict="failed", reason=f"did not fire within {within:g} s of injection")
        return result
    first = after[0]
    detected = first["firing_at"] - injected
    resolved = _resolved(first, rolled_back)
    result.update(
        source=first["source"], detected_after_s=round(detected, 3), resolved_after_s=resolved
    )
    within, resolves_within = scenario.within(expectation), scenario.resolves_within(expectation)
    if detected > within:
        result.update(
            verdict="failed",
            reason=f"fired {detected:.1f} s after injection; deadline {within:g} s",
        )
    elif resolved is None:
        result.update(
            verdict="failed",
            reason=f"still firing {resolves_within:g} s after rollback (did not resolve)",
        )
    elif resolved > resolves_within:
        result.update(
            verdict="failed",
            reason=f"resolved {resolved:.1f} s after rollback; deadline {resolves_within:g} s",
        )
    return result


def _firing(track: dict[str, Any]) -> float:
    return float(track["firing_at"])


def _resolved(track: dict[str, Any], rolled_back: float | None) -> float | None:
    if track["resolved_at"] is None or rolled_back is None:
        return None
    return round(max(float(track["resolved_at"]) - rolled_back, 0.0), 3)


def scenario_verdict(record: dict[str, Any]) -> str:
    if record.get("stopped_by") or record.get("reason") or "injected_at" not in record:
        return "aborted"
    if any(e["verdict"] != "passed" for e in record.get("expectations", [])):
        return "failed"
    return "passed"
