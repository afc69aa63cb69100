"""Scenario files: a load profile, faults and where they apply, phases, expectations, stop conditions.

```yaml
name: income-nulls
description: the upstream ETL sends null income for half of the rows
failure_mode: feature_nulls            # joins the rules that cover it (their failure_mode label)
load: {users: 4, rate: 30, batch: 10}  # data and label default to the target's
faults:
  - {type: missing_values, columns: [income], rate: 0.5, at: proxy}
phases: {steady: 20s, fault: 2m, recovery: 1m}
expect:
  - {alert: FeatureMissingRateHigh, labels: {feature: income}, within: 90s}
  - {alert: ModelLatencyHigh, fires: false}
stop_if: ["error_rate > 0.5", "p95_ms > 2000"]
```

A fault's keys besides ``type``, ``at``, ``toxicity``, ``stream`` and ``name`` are its attributes,
validated against the fault catalogue. ``at`` names a fault point of the target; by default request
and transport faults apply at ``proxy`` and response faults (what the model answers) at ``service``,
the in-service point, where the service's own monitors can see them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chaosml.durations import Duration, format_duration
from chaosml.errors import PredicateError, SpecError
from chaosml.faults import FAULTS, Fault
from chaosml.load.plan import FIGURES
from chaosml.predicate import Predicate, parse_predicate
from chaosml.spec import (
    FieldError,
    Loc,
    by_line,
    dotted,
    error_line,
    line_of,
    one_of,
    read_yaml,
    validate_spec,
)

NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
OWN_KEYS = ("type", "at", "toxicity", "stream", "name")
DEFAULT_POINT = {"request": "proxy", "response": "service", "transport": "proxy"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Feedback(_Model):
    """True labels sent to the target's feedback URL after each answer."""

    delay: Duration = 0.0
    label: str | None = None  # the label column (default: the target's)


class Load(_Model):
    data: Path | None = None  # rows to replay (default: the target's data)
    users: int = Field(default=4, ge=1, le=10_000)
    spawn_rate: float | None = Field(default=None, gt=0)
    rate: float | None = Field(default=None, gt=0, le=100_000)  # requests/s over all users
    think: Duration = 0.0  # wait between a user's requests when no rate is set
    batch: int = Field(default=1, ge=1, le=10_000)  # rows per request
    feedback: Feedback | None = None
    workers: int = Field(default=0, ge=0, le=64)


class FaultSpec(BaseModel):
    """A fault of the catalogue and where it applies; its other keys are its attributes."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str
    at: str | None = None
    toxicity: float = Field(default=1.0, ge=0, le=1)
    stream: Literal["upstream", "downstream"] | None = None
    name: str | None = Field(default=None, min_length=1)

    @field_validator("type")
    @classmethod
    def _known(cls, value: str) -> str:
        return one_of("fault type", value, FAULTS)

    @property
    def attributes(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def fault(self) -> Fault:
        return FAULTS[self.type].model_validate(self.attributes)

    @property
    def point(self) -> str:
        return self.at or DEFAULT_POINT[FAULTS[self.type].side]

    @property
    def toxic_stream(self) -> str:
        """Payload faults have their natural stream; transport faults default to downstream."""
        natural = {"request": "upstream", "response": "downstream"}.get(FAULTS[self.type].side)
        return natural or self.stream or "downstream"

    @property
    def toxic_name(self) -> str:
        return self.name or f"{self.type}_{self.toxic_stream}"


class Phases(_Model):
    steady: Duration = 30.0  # load only: the steady state must be quiet
    fault: Duration = 60.0  # faults active
    recovery: Duration = 60.0  # after rollback, until alerts resolve (ends early once they have)


class Expectation(_Model):
    """An alert that must fire within a deadline of injection (and resolve within a deadline of
    rollback), or must stay quiet (``fires: false``)."""

    alert: str = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    fires: bool = True
    within: Duration | None = None  # default: the fault phase
    resolves_within: Duration | None = None  # default: the recovery phase

    @model_validator(mode="after")
    def _quiet_has_no_deadline(self) -> Expectation:
        if not self.fires and self.within is not None:
            raise FieldError(("within",), "a deadline applies only to alerts that must fire")
        if not self.fires and self.resolves_within is not None:
            raise FieldError(
                ("resolves_within",), "a deadline applies only to alerts that must fire"
            )
        return self

    def matches(self, name: str, labels: dict[str, str]) -> bool:
        return name == self.alert and all(labels.get(k) == v for k, v in self.labels.items())

    def describe(self) -> str:
        labels = ",".join(f'{k}="{v}"' for k, v in self.labels.items())
        return self.alert + (f"{{{labels}}}" if labels else "") + ("" if self.fires else " quiet")


class Scenario(_Model):
    name: str
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    failure_mode: str | None = None
    seed: int | None = Field(default=None, ge=0)
    load: Load = Field(default_factory=Load)
    faults: list[FaultSpec] = Field(default_factory=list)
    phases: Phases = Field(default_factory=Phases)
    expect: list[Expectation] = Field(default_factory=list)
    stop_if: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.fullmatch(value):
            raise ValueError(
                f"expected lower-case letters, digits, '-', '_' or '.' (e.g. income-nulls), "
                f"got {value!r}"
            )
        return value

    @field_validator("stop_if")
    @classmethod
    def _conditions(cls, values: list[str]) -> list[str]:
        for index, text in enumerate(values):
            try:
                predicate = parse_predicate(text)
            except PredicateError as exc:
                raise FieldError((index,), str(exc)) from exc
            unknown = sorted(predicate.columns - set(FIGURES))
            if unknown:
                raise FieldError(
                    (index,),
                    f"unknown figure {unknown[0]!r} (expected {', '.join(FIGURES)})",
                )
        return values

    @model_validator(mode="after")
    def _deadlines_fit_the_phases(self) -> Scenario:
        for index, expectation in enumerate(self.expect):
            for key, limit, phase in (
                ("within", self.phases.fault, "fault"),
                ("resolves_within", self.phases.recovery, "recovery"),
            ):
                value = getattr(expectation, key)
                if value is not None and value > limit:
                    raise FieldError(
                        ("expect", index, key),
                        f"{format_duration(value)} is longer than the {phase} phase "
                        f"({format_duration(limit)}): expected at most that",
                    )
        return self

    @property
    def stop_conditions(self) -> list[Predicate]:
        return [parse_predicate(text) for text in self.stop_if]

    def within(self, expectation: Expectation) -> float:
        return expectation.within if expectation.within is not None else self.phases.fault

    def resolves_within(self, expectation: Expectation) -> float:
        if expectation.resolves_within is not None:
            return expectation.resolves_within
        return self.phases.recovery

    def scaled(self, factor: float) -> Scenario:
        """Every duration and deadline multiplied by ``factor`` (``--time-scale``)."""
        if factor == 1:
            return self
        p, load = self.phases, self.load
        phases = p.model_copy(
            update={k: getattr(p, k) * factor for k in ("steady", "fault", "recovery")}
        )
        feedback = load.feedback
        if feedback is not None:
            feedback = feedback.model_copy(update={"delay": feedback.delay * factor})
        expect = [
            e.model_copy(
                update={
                    k: getattr(e, k) * factor
                    for k in ("within", "resolves_within")
                    if getattr(e, k) is not None
                }
            )
            for e in self.expect
        ]
        return self.model_copy(
            update={
                "phases": phases,
                "expect": expect,
                "load": load.model_copy(
                    update={"think": load.think * factor, "feedback": feedback}
                ),
            }
        )


class ScenarioFile:
    """A validated scenario with where it came from (for messages that point at lines)."""

    def __init__(self, scenario: Scenario, path: Path, lines: dict[Loc, int]) -> None:
        self.scenario, self.path, self.lines = scenario, path, lines

    def problem(self, loc: Loc, message: str) -> str:
        return f"{self.path}:{line_of(self.lines, loc)}: {dotted(loc)}: {message}"

    @property
    def data(self) -> Path | None:
        data = self.scenario.load.data
        return None if data is None else (self.path.parent / data)


def load_scenario(path: str | Path) -> ScenarioFile:
    """Read and validate a scenario file; ``SpecError`` lists every problem, one line each."""
    path = Path(path)
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError([f"{path}:1: (top level): expected a mapping of scenario keys"])
    problems: list[str] = []
    scenario = None
    try:
        scenario = validate_spec(data, Scenario, path=path, lines=lines)
    except SpecError as exc:
        problems.extend(exc.problems)
    problems.extend(_attribute_problems(data, path, lines))
    if problems or scenario is None:
        raise SpecError(sorted(set(problems), key=by_line))
    return ScenarioFile(scenario, path, lines)


def _attribute_problems(data: dict[str, Any], path: Path, lines: dict[Loc, int]) -> list[str]:
    """Each fault's attributes, validated by its catalogue class (all problems, not the first)."""
    from pydantic import ValidationError

    problems = []
    faults = data.get("faults")
    for index, item in enumerate(faults if isinstance(faults, list) else []):
        if not isinstance(item, dict) or item.get("type") not in FAULTS:
            continue
        attributes = {k: v for k, v in item.items() if k not in OWN_KEYS}
        try:
            FAULTS[item["type"]].model_validate(attributes)
        except ValidationError as exc:
            for details in exc.errors():
                error: dict[str, Any] = dict(details)
                if error["type"] == "extra_forbidden":
                    error["type"], error["msg"] = "value_error", f"unknown key for {item['type']}"
                error["loc"] = ("faults", index, *error["loc"])
                problems.append(error_line(path, lines, error))
    return problems


def scenario_paths(paths: list[Path]) -> list[Path]:
    """The scenario files ``paths`` name: files as given, folders' ``*.yaml`` and ``*.yml`` in
    name order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
        else:
            files.append(path)
    return files


def load_scenarios(paths: list[Path]) -> list[ScenarioFile]:
    """Scenario files from files and folders (``*.yaml``, ``*.yml``, in name order); every
    problem of every file in one ``SpecError``."""
    files = scenario_paths(paths)
    if not files:
        raise SpecError([f"{', '.join(map(str, paths))}: no scenario files (*.yaml)"])
    loaded, problems = [], []
    for file in files:
        try:
            loaded.append(load_scenario(file))
        except SpecError as exc:
            problems.extend(exc.problems)
    names: dict[str, Path] = {}
    for item in loaded:
        other = names.setdefault(item.scenario.name, item.path)
        if other != item.path:
            problems.append(item.problem(("name",), f"{item.scenario.name!r} is also in {other}"))
    if problems:
        raise SpecError(problems)
    return loaded
