"""``chaosml validate``: scenario files checked on their own and against a target, running nothing.

Against a target: every fault names a fault point the target has, and one that can act it out (a
real Toxiproxy knows only its own network toxics); every data file exists; every alert a scenario
expects is a rule of the target, when one of its alert sources can list rules (Prometheus's
``/api/v1/rules``, a probe's rules).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from chaosml.alerts import make_source
from chaosml.errors import SpecError
from chaosml.gameday.scenario import ScenarioFile, load_scenarios
from chaosml.gameday.target import TargetFile, load_target


@dataclass
class Validation:
    scenarios: list[ScenarioFile]
    target: TargetFile | None
    rules: list[str] | None = None  # the target's rules, when a source could list them
    notes: list[str] = field(default_factory=list)


def validate(
    paths: list[Path], target_path: Path | None = None, *, strict_rules: bool = True
) -> Validation:
    """Every problem in every file in one ``SpecError``; ``UnreachableError`` if a rule source
    cannot be reached. With ``strict_rules=False`` (a run) an expected alert that is not among
    the target's rules is a note, not a problem: the run shows it as a failed expectation."""
    scenarios = load_scenarios(paths)
    if target_path is None:
        return Validation(scenarios, None)
    target = load_target(target_path)
    rules = _rules(target)
    problems: list[str] = []
    notes: list[str] = []
    for file in scenarios:
        problems.extend(_against(file, target))
        (problems if strict_rules else notes).extend(_unknown_alerts(file, rules))
    if problems:
        raise SpecError(problems)
    if rules is None:
        notes.append("no alert source of the target lists rules: alert names were not checked")
    return Validation(scenarios, target, rules, notes)


def _rules(target: TargetFile) -> list[str] | None:
    names: list[str] | None = None
    for spec in target.target.alerts:
        if spec.type not in ("prometheus", "probe"):
            continue
        rules = make_source(spec).rules()
        if rules is not None:
            names = [*(names or []), *(r.name for r in rules)]
    return names


def _against(file: ScenarioFile, target: TargetFile) -> list[str]:
    problems = []
    points = target.target.fault_points
    for index, fault in enumerate(file.scenario.faults):
        point = points.get(fault.point)
        key = "at" if fault.at is not None else "type"
        if point is None:
            why = "" if fault.at is not None else f" (the default for {fault.type})"
            problems.append(
                file.problem(
                    ("faults", index, key),
                    f"no fault point {fault.point!r}{why} in {target.path} "
                    f"(expected one of {', '.join(points) or 'none: add fault_points'})",
                )
            )
        elif point.kind == "toxiproxy" and (refused := fault.fault.runs_where("toxiproxy")):
            problems.append(
                file.problem(("faults", index, "type"), f"{refused}; {fault.point!r} is a Toxiproxy")
            )
    data = file.data or target.data
    if data is None:
        problems.append(
            file.problem(("load",), f"no data to replay: set load.data or data: in {target.path}")
        )
    elif not data.is_file():
        problems.append(file.problem(("load", "data"), f"{data}: file not found"))
    return problems


def _unknown_alerts(file: ScenarioFile, rules: list[str] | None) -> list[str]:
    if rules is None:
        return []
    return [
        file.problem(
            ("expect", index, "alert"),
            f"no rule {expectation.alert!r} in the target's rules "
            f"(expected one of {', '.join(sorted(set(rules)))})",
        )
        for index, expectation in enumerate(file.scenario.expect)
        if expectation.alert not in rules
    ]
