"""``chaosml validate``: scenario files checked on their own and against a target, running nothing.

Every problem of every file in one run, one line each (``file:line: field: what was expected``). A
file with schema errors still gets the checks against the target for the parts that did validate.

Against a target:

- every fault names a fault point the target has; each point used answers on its control API
  (``GET /proxies``, with its token) and has the named proxy — an unreachable point is reported once
  and makes the exit code 3;
- each fault can run where it is placed (``Fault.runs_where``): the point's kind is read from its
  proxy (``"listen": "in-service"``: the in-service point; ``"codec": "tcp"``: a raw TCP relay;
  else chaosml's HTTP proxy; ``kind: toxiproxy``: a real Toxiproxy);
- every data file exists, and every column a payload fault reads or changes (its ``columns``, its
  ``where``) is a feature of it (the label column is not sent);
- every expected alert is a rule of the target, when an alert source can list rules; its label
  keys are ones the rule can produce (when they can be told); its deadline is no shorter than the
  rule's ``for:`` plus a scrape and an evaluation interval, and its recovery no shorter than the
  range its query looks back over — both on durations scaled by ``time_scale``.

Before a run (``strict_rules=False``) the findings about rules are notes: the run reports on them.
A fault point that cannot act, or a column that is not there, stops the run: a run never starts with
a fault that cannot take effect.
"""

from __future__ import annotations

import difflib
import urllib.error
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from chaosml.alerts import RuleInfo, make_source
from chaosml.durations import format_duration
from chaosml.errors import ChaosmlError, DataError, PredicateError, SpecError, UnreachableError
from chaosml.faults.base import FAULTS, PayloadFault, Place
from chaosml.gameday.target import TargetFile, load_target
from chaosml.predicate import parse_predicate
from chaosml.scenario import (
    Expectation,
    FaultSpec,
    Phases,
    ScenarioFile,
    load_scenarios,
    scenario_paths,
)
from chaosml.spec import Loc, by_line, dotted, line_of, read_yaml

# How a problem names the kind of fault point a fault was placed at.
PLACED = {
    "proxy": "chaosml's proxy (HTTP)",
    "tcp": "a raw TCP relay",
    "service": "the in-service fault point",
    "toxiproxy": "a Toxiproxy",
}


@dataclass(kw_only=True)
class Validation:
    scenarios: list[ScenarioFile]
    target: TargetFile | None
    rules: list[str] | None = None  # the target's rules, when a source could list them
    notes: list[str] = field(default_factory=list)
    places: dict[str, Place] = field(default_factory=dict)  # kind of each fault point used


@dataclass(kw_only=True)
class _Parts:
    """What of a scenario file validated: all of it, or (a file with schema errors) the faults,
    expectations, data and phases that did, each with its index in the file."""

    path: Path
    lines: dict[Loc, int]
    faults: list[tuple[int, FaultSpec]]
    expect: list[tuple[int, Expectation]]
    data: Path | None = None  # load.data, relative to the file
    data_known: bool = True  # False: load.data is there but unreadable as a path
    label: str | None = None  # load.feedback.label
    phases: Phases | None = None

    def problem(self, loc: Loc, message: str) -> str:
        return f"{self.path}:{line_of(self.lines, loc)}: {dotted(loc)}: {message}"

    @classmethod
    def of(cls, file: ScenarioFile) -> _Parts:
        s = file.scenario
        feedback = s.load.feedback
        return cls(
            path=file.path,
            lines=file.lines,
            faults=list(enumerate(s.faults)),
            expect=list(enumerate(s.expect)),
            data=file.data,
            label=feedback.label if feedback else None,
            phases=s.phases,
        )


def validate(
    paths: list[Path],
    target_path: Path | None = None,
    *,
    strict_rules: bool = True,
    time_scale: float = 1.0,
) -> Validation:
    """Every problem in every file in one ``SpecError`` (exit code 3 if a fault point or a rule
    source could not be reached). With ``strict_rules=False`` (a run) what concerns rules (an
    unknown alert, a label key, a deadline that cannot be met) is a note, not a problem.
    ``time_scale``: the run's, which scales the scenarios' durations but not the rules'."""
    scenarios, parts, problems = _load(paths)
    if target_path is None:
        if problems:
            raise SpecError(problems)
        return Validation(scenarios=scenarios, target=None)
    try:
        target = load_target(target_path)
    except SpecError as exc:
        raise SpecError([*problems, *exc.problems]) from exc
    check = _Check(target, time_scale)
    check.fault_points({spec.point for file in parts for _, spec in file.faults})
    check.load_rules()
    per_file, notes = list(check.problems), []
    for file in parts:
        found = [p for p in problems if p.startswith(f"{file.path}:")] + check.faults(file)
        rules = check.expectations(file)
        found.extend(rules) if strict_rules else notes.extend(rules)
        per_file.extend(sorted(dict.fromkeys(found), key=lambda p: by_line(p)[0]))
    per_file.extend(p for p in problems if not any(p.startswith(f"{f.path}:") for f in parts))
    if per_file:  # a target's own problem is said once, not once per scenario
        raise SpecError(list(dict.fromkeys(per_file)), exit_code=3 if check.unreachable else 2)
    if check.rules is None:
        notes.append("no alert source of the target lists rules: alert names were not checked")
    names = None if check.rules is None else [rule.name for rule in check.rules]
    return Validation(
        scenarios=scenarios, target=target, rules=names, notes=notes, places=check.places
    )


def _load(paths: list[Path]) -> tuple[list[ScenarioFile], list[_Parts], list[str]]:
    """The scenario files, the parts of each that validated, and the schema problems."""
    try:
        scenarios = load_scenarios(paths)
    except SpecError as exc:
        return [], [p for path in scenario_paths(paths) if (p := _partial(path))], exc.problems
    return scenarios, [_Parts.of(file) for file in scenarios], []


def _valid(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


def _partial(path: Path) -> _Parts | None:
    """The parts of a scenario file with schema errors that validate on their own."""
    try:
        data, lines = read_yaml(path)
    except SpecError:
        return None
    if not isinstance(data, dict):
        return None
    faults, expect = data.get("faults"), data.get("expect")
    load = data.get("load")
    load = load if isinstance(load, dict) else {}
    where, feedback = load.get("data"), load.get("feedback")
    label = feedback.get("label") if isinstance(feedback, dict) else None
    return _Parts(
        path=path,
        lines=lines,
        faults=[(i, f) for i, item in enumerate(_list(faults)) if (f := _valid(FaultSpec, item))],
        expect=[(i, e) for i, item in enumerate(_list(expect)) if (e := _valid(Expectation, item))],
        data=path.parent / where if isinstance(where, str) else None,
        data_known=where is None or isinstance(where, str),
        label=label if isinstance(label, str) else None,
        phases=_valid(Phases, data.get("phases") or {}),
    )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _did_you_mean(value: str, known: Iterable[str]) -> str:
    names = sorted(set(known))
    close = difflib.get_close_matches(value, names, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    return f"expected one of {shown or 'none'}"


class _Check:
    """The target's side of the checks: fault points probed once, rules listed once, data files'
    columns read once."""

    def __init__(self, target: TargetFile, time_scale: float) -> None:
        self.target, self.time_scale = target, time_scale
        self.problems: list[str] = []  # about the target itself, reported once
        self.unreachable = False
        self.places: dict[str, Place] = {}
        self.rules: list[RuleInfo] | None = None
        self._columns: dict[Path, tuple[str, ...] | str] = {}
        self._text: dict[tuple[Path, str], bool] = {}

    def target_problem(self, loc: Loc, message: str) -> str:
        return f"{self.target.path}:{line_of(self.target.lines, loc)}: {dotted(loc)}: {message}"

    def fault_points(self, used: set[str]) -> None:
        """Each fault point used: reachable, with its proxy, and of which kind."""
        from chaosml.gameday.faultpoints import FaultPointClient

        for name, spec in self.target.target.fault_points.items():
            if name not in used:
                continue
            if spec.kind == "toxiproxy":
                self.places[name] = "toxiproxy"
            try:
                proxies = FaultPointClient(name, spec)._request("GET", "/proxies")
            except ChaosmlError as exc:  # unreachable, or an HTTP error (4xx: refused)
                cause = exc.__cause__
                refused = isinstance(cause, urllib.error.HTTPError) and 400 <= cause.code < 500
                self.unreachable |= isinstance(exc, UnreachableError) and not refused
                self.problems.append(self.target_problem(("fault_points", name, "api"), str(exc)))
                continue
            entry = proxies.get(spec.proxy) if isinstance(proxies, dict) else None
            if not isinstance(entry, dict):
                known = proxies if isinstance(proxies, dict) else ()
                self.problems.append(
                    self.target_problem(
                        ("fault_points", name, "proxy"),
                        f"fault point {name!r} ({spec.api}) has no proxy {spec.proxy!r} "
                        f"({_did_you_mean(spec.proxy, known)})",
                    )
                )
            elif spec.kind == "chaosml":
                in_service, tcp = entry.get("listen") == "in-service", entry.get("codec") == "tcp"
                self.places[name] = "service" if in_service else "tcp" if tcp else "proxy"

    def load_rules(self) -> None:
        """The rules of every source that lists them (probes with the run's time scale)."""
        for index, spec in enumerate(self.target.target.alerts):
            if not spec.lists_rules:
                continue
            try:
                rules = make_source(spec, self.time_scale).rules()
            except UnreachableError as exc:
                self.unreachable = True
                self.problems.append(self.target_problem(("alerts", index, "url"), str(exc)))
                continue
            if rules is not None:
                self.rules = [*(self.rules or []), *rules]

    def faults(self, file: _Parts) -> list[str]:
        """Each fault: a point the target has, one it can run at, columns the data has."""
        problems = []
        points = self.target.target.fault_points
        for index, spec in file.faults:
            key = "at" if spec.at is not None else "type"
            if spec.point not in points:
                why = "" if spec.at is not None else f" (the default for {spec.type})"
                problems.append(
                    file.problem(
                        ("faults", index, key),
                        f"no fault point {spec.point!r}{why} in {self.target.path} "
                        f"(expected one of {', '.join(points) or 'none: add fault_points'})",
                    )
                )
                continue
            try:
                fault = spec.fault
            except ValidationError:
                continue  # its attributes are reported by the schema check
            place = self.places.get(spec.point)
            if place is not None and (refused := fault.runs_where(place)):
                problems.append(
                    file.problem(
                        ("faults", index, "type"),
                        f"{refused}; {spec.point!r} is {PLACED[place]}",
                    )
                )
        return problems + self.data(file)

    def data(self, file: _Parts) -> list[str]:
        """The data to replay exists, and has every column the payload faults read."""
        if not file.data_known:
            return []
        data = file.data or self.target.data
        if data is None:
            where = f"data: in {self.target.path}"
            return [file.problem(("load",), f"no data to replay: set load.data or {where}")]
        loc: Loc = ("load", "data") if file.data is not None else ("load",)
        if not data.is_file() and file.data is None:  # the target's data, not the scenario's
            return [
                self.target_problem(
                    ("data",),
                    f"{data.resolve()}: file not found (a relative data: is read from the "
                    "target file's folder)",
                )
            ]
        if not data.is_file():
            return [file.problem(loc, f"{data}: file not found")]
        columns = self.columns(data)
        if isinstance(columns, str):
            return [file.problem(loc, columns)]
        label = file.label or self.target.target.label
        problems = []
        for index, spec in file.faults:
            for named_at, column in _columns_of(spec):
                at: Loc = ("faults", index, *named_at)
                if column == label:
                    message = f"{column!r} is the label column: it is not sent to the service"
                    problems.append(file.problem(at, message))
                elif column not in columns:
                    features = [c for c in columns if c != label]
                    message = (
                        f"unknown column {column!r} in {data} ({_did_you_mean(column, features)})"
                    )
                    problems.append(file.problem(at, message))
                elif named_at[0] == "columns" and _numeric(spec) and self.text(data, column):
                    message = (
                        f"{spec.type} works on numbers, and {column!r} holds text in {data}: "
                        "its values would all become null (for text, use wrong_type, "
                        "unseen_category or missing_values)"
                    )
                    problems.append(file.problem(at, message))
        return problems

    def text(self, data: Path, column: str) -> bool:
        """Whether ``column`` of ``data`` holds text (Parquet: its type; CSV: its first rows)."""
        key = (data, column)
        if key not in self._text:
            self._text[key] = _holds_text(data, column)
        return self._text[key]

    def columns(self, data: Path) -> tuple[str, ...] | str:
        """The columns of ``data`` (its schema or header only), or why they cannot be read."""
        if data not in self._columns:
            from chaosml.data import open_table

            try:
                self._columns[data] = open_table(data).columns
            except DataError as exc:
                self._columns[data] = str(exc)
        return self._columns[data]

    def expectations(self, file: _Parts) -> list[str]:
        """Each expected alert: a rule of the target, with labels it can carry, in time."""
        if self.rules is None:
            return []
        problems = []
        for index, expectation in file.expect:
            rules = [rule for rule in self.rules if rule.name == expectation.alert]
            if not rules:
                known = ", ".join(sorted({rule.name for rule in self.rules}))
                problems.append(
                    file.problem(
                        ("expect", index, "alert"),
                        f"no rule {expectation.alert!r} in the target's rules "
                        f"(expected one of {known})",
                    )
                )
                continue
            problems.extend(_labels(file, index, expectation, rules))
            if expectation.fires:
                problems.extend(self.feasible(file, index, expectation, rules))
        return problems

    def feasible(
        self, file: _Parts, index: int, expectation: Expectation, rules: list[RuleInfo]
    ) -> list[str]:
        """The deadline leaves the rule time to fire; the recovery, time for its range to pass
        (the least any rule of that name needs, so a finding is never a false alarm)."""
        problems = []
        rule = min(rules, key=lambda r: r.fires_after)
        took = f"for: {format_duration(rule.for_seconds)}"
        if rule.scrape_seconds or rule.evaluation_seconds:
            took += (
                f" + a scrape ({format_duration(rule.scrape_seconds)}) + an evaluation interval "
                f"({format_duration(rule.evaluation_seconds)}) = "
                f"{format_duration(rule.fires_after)}"
            )
        fault = file.phases.fault if file.phases else None
        short = self.shorter(index, expectation.within, "within", fault, rule.fires_after)
        if short is not None:
            loc, what = short
            problems.append(
                file.problem(
                    loc, f"{what} is shorter than {expectation.alert} needs to fire ({took})"
                )
            )
        window = min(r.window_seconds or 0.0 for r in rules)
        recovery = file.phases.recovery if file.phases else None
        short = self.shorter(
            index, expectation.resolves_within, "resolves_within", recovery, window
        )
        if short is not None:
            loc, what = short
            problems.append(
                file.problem(
                    loc,
                    f"{what} is shorter than the range {expectation.alert}'s query looks back "
                    f"over ({format_duration(window)}): it cannot resolve sooner",
                )
            )
        return problems

    def shorter(
        self, index: int, given: float | None, key: str, phase: float | None, needed: float
    ) -> tuple[Loc, str] | None:
        """Where and what, if the deadline ``given`` (else the phase's) is under ``needed``."""
        seconds = given if given is not None else phase
        if seconds is None or not needed or seconds * self.time_scale >= needed - 1e-9:
            return None
        scaled = f" at time scale {self.time_scale:g}" if self.time_scale != 1 else ""
        shown = f"{format_duration(seconds * self.time_scale)}{scaled}"
        if given is not None:
            return ("expect", index, key), shown
        name = "fault" if key == "within" else "recovery"
        return ("expect", index), f"the {name} phase ({shown}), its deadline,"


def _numeric(spec: FaultSpec) -> bool:
    return bool(getattr(FAULTS.get(spec.type), "numeric", False))


def _holds_text(data: Path, column: str) -> bool:
    try:
        if data.suffix == ".csv":
            import pandas as pd

            sample = pd.read_csv(data, usecols=[column], nrows=1000)[column]
            numeric = pd.api.types.is_numeric_dtype(sample)
            return bool(not numeric and sample.notna().any())
        import pyarrow as pa
        import pyarrow.parquet as pq

        kind = pq.read_schema(data).field(column).type
        return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))
    except (OSError, ValueError, KeyError):
        return False  # unreadable here: the run says what the fault did


def _columns_of(spec: FaultSpec) -> list[tuple[Loc, str]]:
    """The columns a payload fault reads or changes, each with where the file names it (also
    when another of its attributes is invalid: every problem is said in one run)."""
    kind = FAULTS.get(spec.type)
    if kind is None or not issubclass(kind, PayloadFault):
        return []
    attributes = spec.attributes
    found: list[tuple[Loc, str]] = []
    named = attributes.get("columns")
    if kind.side == "request" and isinstance(named, list):
        found.extend((("columns", i), c) for i, c in enumerate(named) if isinstance(c, str))
    where = attributes.get("where")
    if isinstance(where, str):
        try:
            columns = parse_predicate(where).columns
        except PredicateError:
            columns = frozenset()  # reported by the schema check
        found.extend((("where",), column) for column in sorted(columns))
    return found


def _labels(file: _Parts, index: int, expectation: Expectation, rules: list[RuleInfo]) -> list[str]:
    """Label keys no rule of that name can produce (said only when every such rule can tell),
    and values that every such rule fixes otherwise (a rule's own labels are set on its alert)."""
    problems = []
    for key, value in expectation.labels.items():
        fixed = {rule.labels.get(key) for rule in rules}
        if None not in fixed and value not in fixed:
            shown = " or ".join(repr(v) for v in sorted(v for v in fixed if v is not None))
            problems.append(
                file.problem(
                    ("expect", index, "labels", key),
                    f"{expectation.alert} always has {key}={shown} (its rule sets it), not "
                    f"{value!r}: it can never match",
                )
            )
    if any(rule.label_keys is None for rule in rules):
        return problems
    keys = frozenset().union(*(rule.label_keys or () for rule in rules))
    return problems + [
        file.problem(
            ("expect", index, "labels", key),
            f"unknown label {key!r} for {expectation.alert} ({_did_you_mean(key, keys)})",
        )
        for key in expectation.labels
        if key not in keys
    ]
