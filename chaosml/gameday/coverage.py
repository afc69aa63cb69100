"""Alert coverage, from a journal: which alert each scenario set off, which failure modes have no
alert at all, which rules no scenario exercised, which fired where nobody expected them, and which
were already firing before a fault began.

Rules and scenarios are joined by alert name and by failure mode: a rule's ``failure_mode`` label
names what it covers, a scenario's ``failure_mode`` what it breaks. Only what was observed counts:
a scenario whose verdict is ``unknown`` (cut short, a source down, a fault that did not act) is
never a blind spot, and its silence proves nothing about any rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chaosml.gameday.journal import Journal, ScenarioRecord
from chaosml.gameday.judge import ineffective

SCHEMA = "chaosml.gameday/2"


@dataclass(kw_only=True)
class ScenarioCoverage:
    name: str
    failure_mode: str | None
    verdict: str
    fired: list[str]  # alerts firing at some moment of the fault window (or after, in recovery)
    expected: list[str]  # alerts it expected to fire
    covering_rules: list[str]  # rules whose failure_mode is the scenario's
    noisy: list[str]  # fired, not expected either way
    steady_state: list[str]  # already firing when the fault began
    verdicts: dict[str, list[str]] = field(default_factory=dict)  # per alert, its expectations'
    faults: int = 0
    observed: bool = True  # ran its course with its faults in effect and its sources up

    @property
    def blind_spot(self) -> bool:
        """Its faults observably acted on the traffic and no alert fired (besides any already
        firing when the fault began). Whether what they changed mattered to the model is the
        team's to judge: chaosml sees the requests and answers, not what the model uses."""
        started = [name for name in self.fired if name not in self.steady_state]
        return self.faults > 0 and self.observed and not started


@dataclass
class Coverage:
    scenarios: list[ScenarioCoverage]
    rules: list[str]  # columns of the matrix: the target's rules, then other alerts seen
    rule_modes: dict[str, str | None] = field(default_factory=dict)
    known_rules: bool = True  # a source listed the target's rules

    @property
    def blind_spots(self) -> list[str]:
        return [s.name for s in self.scenarios if s.blind_spot]

    @property
    def unexercised_rules(self) -> list[str]:
        """Rules of the target that no scenario made fire."""
        fired = {name for s in self.scenarios for name in s.fired}
        return [rule for rule in self.rule_modes if rule not in fired]

    @property
    def missing_rules(self) -> list[str]:
        """Alerts a scenario expects that are not among the target's rules."""
        if not self.known_rules:
            return []
        expected = {name for s in self.scenarios for name in s.expected}
        return sorted(expected - set(self.rule_modes))

    @property
    def noisy_rules(self) -> list[str]:
        return sorted({name for s in self.scenarios for name in s.noisy})

    @property
    def steady_state(self) -> dict[str, list[str]]:
        """Per scenario, the alerts already firing when its fault began."""
        return {s.name: s.steady_state for s in self.scenarios if s.steady_state}

    @property
    def uncovered_failure_modes(self) -> list[str]:
        """Failure modes a scenario broke that no rule claims to cover."""
        covered = {mode for mode in self.rule_modes.values() if mode}
        return sorted({s.failure_mode for s in self.scenarios if s.failure_mode} - covered)

    def cell(self, scenario: ScenarioCoverage, rule: str) -> str:
        """``fired`` (its expectations passed and it fired), ``missed`` (an expectation on it
        failed), ``unknown`` (one was not observed), ``steady`` (already firing at injection),
        ``noise`` (fired, expected by none) or ``""``."""
        fired, verdicts = rule in scenario.fired, scenario.verdicts.get(rule, [])
        if rule in scenario.steady_state:
            return "steady"
        if "failed" in verdicts:
            return "missed"
        if "unknown" in verdicts or (verdicts and not scenario.observed):
            return "unknown"
        if rule in scenario.expected:
            return "fired" if fired else "missed"
        return "noise" if fired and rule not in verdicts and rule in scenario.noisy else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "blind_spots": self.blind_spots,
            "missing_rules": self.missing_rules,
            "unexercised_rules": self.unexercised_rules,
            "noisy_rules": self.noisy_rules,
            "steady_state": self.steady_state,
            "uncovered_failure_modes": self.uncovered_failure_modes,
            "matrix": {
                s.name: {rule: self.cell(s, rule) for rule in self.rules if self.cell(s, rule)}
                for s in self.scenarios
            },
        }


def _fired(record: ScenarioRecord) -> list[str]:
    """Alerts firing at some moment between injection and the scenario's end."""
    injected = record.injected_at
    if injected is None:
        return []
    end = record.ended_at or injected
    names: list[str] = []
    for track in record.alerts:
        firing = track.firing_at
        if firing is None or firing > end:
            continue
        if (track.resolved_at is None or track.resolved_at >= injected) and track.name not in names:
            names.append(track.name)
    return sorted(names)


def coverage(journal: Journal) -> Coverage:
    run = journal.run
    rules: dict[str, str | None] = {}
    for rule in run.rules or []:
        rules.setdefault(rule.name, rule.labels.get("failure_mode"))
    scenarios = []
    for record in run.scenarios:
        fired = _fired(record)
        expected = [e.alert for e in record.expectations if e.fires]
        quiet = {e.alert for e in record.expectations if not e.fires}
        mode = record.failure_mode
        verdicts: dict[str, list[str]] = {}
        for e in record.expectations:
            verdicts.setdefault(e.alert, []).append(e.verdict)
        observed = (
            record.verdict in ("passed", "failed")  # not unknown, nor cut off while running
            and record.injected_at is not None
            and not record.cut_short
            and ineffective(record) is None
        )
        scenarios.append(
            ScenarioCoverage(
                name=record.name,
                failure_mode=mode,
                verdict=record.verdict,
                fired=fired,
                expected=expected,
                covering_rules=sorted(r for r, m in rules.items() if mode and m == mode),
                noisy=sorted(n for n in fired if n not in expected and n not in quiet),
                steady_state=list(record.steady_state),
                verdicts=verdicts,
                faults=len(record.faults),
                observed=observed,
            )
        )
    names = list(rules)
    for s in scenarios:  # alerts that fired but no source listed as a rule still get a column
        names.extend(n for n in [*s.fired, *s.expected] if n not in names)
    return Coverage(scenarios, names, rules, known_rules=run.rules is not None)


@dataclass
class GamedayReport:
    """What ``chaosml gameday --json`` prints (schema ``chaosml.gameday/2``).

    Exit codes: 130 interrupted (after rolling back); 3 a verdict is unknown because a component
    was unreachable; 1 an expectation failed, a scenario was stopped, or a verdict is unknown for
    another reason (it could not be shown to hold); 0 every expectation passed."""

    journal: Journal
    interrupted: str | None = None  # Ctrl-C or SIGTERM stopped the run (after rolling back)

    @property
    def exit_code(self) -> int:
        if self.interrupted or self.journal.run.interrupted:
            return 130
        if any(_unreachable(s) for s in self.scenarios):
            return 3
        return 0 if self.passed else 1

    @property
    def coverage(self) -> Coverage:
        return coverage(self.journal)

    @property
    def scenarios(self) -> list[ScenarioRecord]:
        return self.journal.scenarios

    @property
    def passed(self) -> bool:
        return bool(self.scenarios) and all(s.verdict == "passed" for s in self.scenarios)

    def counts(self) -> dict[str, int]:
        """Scenarios per verdict."""
        found: dict[str, int] = {}
        for s in self.scenarios:
            found[s.verdict] = found.get(s.verdict, 0) + 1
        return found

    def to_dict(self) -> dict[str, Any]:
        run = self.journal.run
        return {
            "schema": SCHEMA,
            "run_id": run.run_id,
            "journal": str(self.journal.path),
            "target": run.target_file,
            "started_at": run.started_at,
            "time_scale": run.time_scale,
            "seed": run.seed,
            "passed": self.passed,
            "interrupted": self.interrupted or run.interrupted,
            "outages": [o.model_dump() for o in run.outages],
            "scenarios": [_scenario(s) for s in self.scenarios],
            "coverage": self.coverage.to_dict(),
        }


def _unreachable(record: ScenarioRecord) -> bool:
    return record.unreachable or any(
        e.unreachable and e.verdict == "unknown" for e in record.expectations
    )


def _scenario(s: ScenarioRecord) -> dict[str, Any]:
    return {
        "name": s.name,
        "failure_mode": s.failure_mode,
        "verdict": s.verdict,
        "reason": s.reason,
        "stopped_by": s.stopped_by,
        "interrupted": s.interrupted,
        "load_shortfall": s.load_shortfall,
        "steady_state": s.steady_state,
        "faults": [
            f.model_dump(include={"type", "point", "toxicity", "attributes", "evidence", "effect"})
            | {"effect_reason": f.effect_reason}
            for f in s.faults
        ],
        "expectations": [
            e.model_dump(
                include={
                    "alert",
                    "labels",
                    "fires",
                    "verdict",
                    "reason",
                    "detected_after_s",
                    "resolved_after_s",
                    "source",
                    "by_source",
                }
            )
            for e in s.expectations
        ],
        "load": {p.name: p.load.model_dump() for p in s.phases if p.load is not None},
    }
