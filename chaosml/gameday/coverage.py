"""Alert coverage, from a journal: which alert each scenario set off, which failure modes have no
alert at all, which rules no scenario exercised, and which fired where nobody expected them.

Rules and scenarios are joined by alert name and by failure mode: a rule's ``failure_mode`` label
names what it covers, a scenario's ``failure_mode`` what it breaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chaosml.gameday.journal import Journal

SCHEMA = "chaosml.gameday/1"


@dataclass
class ScenarioCoverage:
    name: str
    failure_mode: str | None
    verdict: str
    fired: list[str]  # alert names that fired after injection
    expected: list[str]  # alerts it expected to fire
    covering_rules: list[str]  # rules whose failure_mode is the scenario's
    noisy: list[str]  # fired, not expected
    faults: int = 0

    @property
    def blind_spot(self) -> bool:
        """It broke something and no alert fired."""
        return self.faults > 0 and not self.fired


@dataclass
class Coverage:
    scenarios: list[ScenarioCoverage]
    rules: list[str]
    rule_modes: dict[str, str | None] = field(default_factory=dict)

    @property
    def blind_spots(self) -> list[str]:
        return [s.name for s in self.scenarios if s.blind_spot and s.verdict != "aborted"]

    @property
    def unexercised_rules(self) -> list[str]:
        fired = {name for s in self.scenarios for name in s.fired}
        return [rule for rule in self.rules if rule not in fired]

    @property
    def noisy_rules(self) -> list[str]:
        return sorted({name for s in self.scenarios for name in s.noisy})

    @property
    def uncovered_failure_modes(self) -> list[str]:
        """Failure modes a scenario broke that no rule claims to cover."""
        covered = {mode for mode in self.rule_modes.values() if mode}
        return sorted(
            {s.failure_mode for s in self.scenarios if s.failure_mode} - covered,
        )

    def cell(self, scenario: ScenarioCoverage, rule: str) -> str:
        """``expected+fired``, ``missed`` (expected, did not fire), ``noise`` or ``""``."""
        fired, expected = rule in scenario.fired, rule in scenario.expected
        if expected:
            return "fired" if fired else "missed"
        return "noise" if fired else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "blind_spots": self.blind_spots,
            "unexercised_rules": self.unexercised_rules,
            "noisy_rules": self.noisy_rules,
            "uncovered_failure_modes": self.uncovered_failure_modes,
            "matrix": {
                s.name: {rule: self.cell(s, rule) for rule in self.rules if self.cell(s, rule)}
                for s in self.scenarios
            },
        }


def coverage(journal: Journal) -> Coverage:
    rules: dict[str, str | None] = {}
    for rule in journal.data.get("rules", []):
        rules.setdefault(rule["name"], (rule.get("labels") or {}).get("failure_mode"))
    scenarios = []
    for record in journal.scenarios:
        injected = record.get("injected_at")
        fired: list[str] = []
        if injected is not None:
            for track in record.get("alerts", []):
                firing = track.get("firing_at")
                if firing is not None and firing >= injected and track["name"] not in fired:
                    fired.append(track["name"])
        expected = [e["alert"] for e in record.get("expectations", []) if e["fires"]]
        quiet = {e["alert"] for e in record.get("expectations", []) if not e["fires"]}
        mode = record.get("failure_mode")
        scenarios.append(
            ScenarioCoverage(
                name=record["name"],
                failure_mode=mode,
                verdict=record.get("verdict", "aborted"),
                fired=sorted(fired),
                expected=expected,
                covering_rules=sorted(r for r, m in rules.items() if mode and m == mode),
                noisy=sorted(n for n in fired if n not in expected and n not in quiet),
                faults=len(record.get("faults", [])),
            )
        )
    names = list(rules)
    for s in scenarios:  # alerts that fired but no source listed as a rule still get a column
        names.extend(n for n in [*s.fired, *s.expected] if n not in names)
    return Coverage(scenarios, names, rules)


@dataclass
class GamedayReport:
    """What ``chaosml gameday --json`` prints (schema ``chaosml.gameday/1``)."""

    journal: Journal
    interrupted: str | None = None  # Ctrl-C or SIGTERM stopped the run (after rolling back)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if any(s.get("unreachable") for s in self.scenarios):
            return 3
        return 0 if self.passed else 1

    @property
    def coverage(self) -> Coverage:
        return coverage(self.journal)

    @property
    def scenarios(self) -> list[dict[str, Any]]:
        return self.journal.scenarios

    @property
    def passed(self) -> bool:
        return bool(self.scenarios) and all(s["verdict"] == "passed" for s in self.scenarios)

    def to_dict(self) -> dict[str, Any]:
        data = self.journal.data
        return {
            "schema": SCHEMA,
            "run_id": data["run_id"],
            "journal": str(self.journal.path),
            "time_scale": data.get("time_scale"),
            "passed": self.passed,
            "interrupted": self.interrupted,
            "scenarios": [
                {
                    "name": s["name"],
                    "failure_mode": s.get("failure_mode"),
                    "verdict": s["verdict"],
                    "reason": s.get("reason"),
                    "stopped_by": s.get("stopped_by"),
                    "faults": [
                        {k: f.get(k) for k in ("type", "point", "toxicity", "attributes")}
                        for f in s.get("faults", [])
                    ],
                    "expectations": [
                        {
                            k: e[k]
                            for k in (
                                "alert",
                                "labels",
                                "fires",
                                "verdict",
                                "reason",
                                "detected_after_s",
                                "resolved_after_s",
                                "source",
                                "by_source",
                            )
                        }
                        for e in s.get("expectations", [])
                    ],
                    "load": {
                        p["name"]: p.get("load") for p in s.get("phases", []) if p.get("load")
                    },
                }
                for s in self.scenarios
            ],
            "coverage": self.coverage.to_dict(),
        }
