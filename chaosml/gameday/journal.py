"""The journal: the machine-readable record of a game day, written as it happens.

``.chaosml/runs/<run-id>/journal.json`` (schema ``chaosml.journal/2``) is rewritten atomically at
the run's start, at each injection, on every alert state change, at each rollback and at every
phase's end, so a run that is interrupted (or killed) still leaves what it saw, and a SIGKILL
leaves the faults that were active. Every part is a typed model, validated when a journal is
loaded: a damaged journal is one line naming the file and the field.

A run holds its target, time scale, seed, the rules its sources listed, each source's outages,
and its scenarios; a scenario its phases (with load figures), its faults (where, seed, added and
removed, and the fault point's evidence of what each did), every alert episode per source, its
expectations with verdicts (``passed``, ``failed``, ``unknown``, each with a reason), and its own
verdict.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chaosml.errors import InputError

SCHEMA = "chaosml.journal/2"
Verdict = Literal["passed", "failed", "unknown"]
Effect = Literal["took_effect", "no_effect", "off_rate", "not_measured"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FaultEvidence(_Record):
    """What a chaosml fault point says a toxic did (``chaosml.faults.evidence``)."""

    active: bool = False
    rolls: int = 0
    hits: int = 0
    acted: int = 0
    rows: int = 0
    changed_rows: int = 0
    changed: dict[str, int] = Field(default_factory=dict)
    absent: dict[str, int] = Field(default_factory=dict)
    skipped: dict[str, int] = Field(default_factory=dict)
    errors: int = 0
    expired: bool = False  # its lease ran out before the runner removed it


class FaultRecord(_Record):
    type: str
    point: str
    proxy: str
    toxic: str
    stream: str
    toxicity: float
    attributes: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    added_at: float | None = None
    removed_at: float | None = None
    error: str | None = None  # not removed (or its evidence not read): what went wrong
    evidence: FaultEvidence | None = None
    effect: Effect | None = None  # judged from the evidence at rollback
    effect_reason: str | None = None

    def describe(self) -> str:
        """``type@point`` with its attributes, as a reader checks them against the file."""
        shown = {k: v for k, v in self.attributes.items() if k not in ("lease", "seed")}
        text = ", ".join(f"{k}={_short(v)}" for k, v in shown.items())
        toxicity = "" if self.toxicity == 1 else f" toxicity={self.toxicity:g}"
        return f"{self.type}@{self.point}" + (f"({text})" if text else "") + toxicity


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


class LoadFigures(_Record):
    """The load driver's figures over a phase or a tick's window (other figures it reports are
    kept as they are)."""

    model_config = ConfigDict(extra="allow")
    t: float | None = None
    seconds: float | None = None
    requests: int | None = None
    failures: int | None = None
    rps: float | None = None
    planned_rps: float | None = None
    exact: bool | None = None  # False: a load worker did not report in time for this phase
    error_rate: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    users: int | None = None


class PhaseRecord(_Record):
    name: Literal["steady", "fault", "recovery"]
    start: float
    end: float | None = None
    planned_s: float | None = None  # how long it was to last
    load: LoadFigures | None = None


class Episode(_Record):
    """One alert (name + labels) at one source, from pending through firing to resolved."""

    source: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    pending_at: float | None = None
    firing_at: float | None = None
    firing_seen: float | None = None
    resolved_at: float | None = None


class Outage(_Record):
    """A span during which an alert source could not be read."""

    source: str
    start: float  # the first poll that failed
    end: float | None = None  # the next poll that worked (None: never again in the run)
    polls: int = 1
    error: str

    def overlaps(self, start: float, end: float) -> bool:
        return self.start <= end and (self.end is None or self.end >= start)


class SourceFigures(_Record):
    detected_after_s: float | None = None
    resolved_after_s: float | None = None


class ExpectationRecord(_Record):
    alert: str
    labels: dict[str, str] = Field(default_factory=dict)
    fires: bool = True
    within_s: float | None = None
    resolves_within_s: float | None = None
    verdict: Verdict = "unknown"
    reason: str | None = None
    detected_after_s: float | None = None
    resolved_after_s: float | None = None
    source: str | None = None
    by_source: dict[str, SourceFigures] = Field(default_factory=dict)
    unreachable: bool = False  # unknown because an alert source or fault point was unreachable

    def describe(self) -> str:
        labels = ",".join(f"{k}={v}" for k, v in self.labels.items())
        return (
            self.alert
            + (f"{{{labels}}}" if labels else "")
            + ("" if self.fires else " stays quiet")
        )


class ScenarioRecord(_Record):
    name: str
    file: str | None = None
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    failure_mode: str | None = None
    phases: list[PhaseRecord] = Field(default_factory=list)
    faults: list[FaultRecord] = Field(default_factory=list)
    expectations: list[ExpectationRecord] = Field(default_factory=list)
    verdict: Verdict | Literal["running"] = "running"
    reason: str | None = None  # why it did not run to its end (an error), else None
    stopped_by: str | None = None  # the stop condition that held
    detected_early: bool = False  # ended once every expected alert fired (--until-detected)
    interrupted: bool = False  # Ctrl-C or SIGTERM during it
    unreachable: bool = False  # a component it needed could not be reached
    started_at: float
    injected_at: float | None = None
    rolled_back_at: float | None = None
    ended_at: float | None = None
    alerts: list[Episode] = Field(default_factory=list)
    events: list[dict[str, Any]] = Field(default_factory=list)
    errors: list[dict[str, Any]] = Field(default_factory=list)
    leases: list[str] = Field(default_factory=list)
    load: list[LoadFigures] = Field(default_factory=list)
    load_shortfall: str | None = (
        None  # the load ran well under its plan: in what phase, by how much
    )
    steady_state: list[str] = Field(default_factory=list)  # alerts already firing at injection

    def phase(self, name: str) -> PhaseRecord | None:
        return next((p for p in self.phases if p.name == name), None)

    @property
    def cut_short(self) -> str | None:
        """Why the fault or recovery did not run its planned time, if it did not."""
        if self.interrupted:
            return "the run was interrupted"
        if self.stopped_by:
            return f"stopped by {self.stopped_by!r}"
        if self.reason:
            return f"the run failed: {self.reason}"
        return None


class RuleRecord(_Record):
    source: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)


class RunRecord(_Record):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    schema_: Literal["chaosml.journal/2"] = Field(default="chaosml.journal/2", alias="schema")
    run_id: str
    started_at: float
    ended_at: float | None = None
    target: dict[str, Any] = Field(default_factory=dict)
    target_file: str | None = None
    time_scale: float = 1.0
    seed: int = 0
    sources: list[str] = Field(default_factory=list)
    rules: list[RuleRecord] | None = None  # None: no source could list rules
    notes: list[str] = Field(default_factory=list)
    outages: list[Outage] = Field(default_factory=list)
    interrupted: str | None = None
    scenarios: list[ScenarioRecord] = Field(default_factory=list)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


class Journal:
    """A run's record and the folder it is written to."""

    def __init__(self, folder: Path, run: RunRecord) -> None:
        self.folder, self.run = folder, run

    @classmethod
    def create(cls, runs: Path, **fields: Any) -> Journal:
        run_id = new_run_id()
        folder = runs / run_id
        try:
            folder.mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            raise InputError(f"{folder}: cannot create the run folder: {exc.strerror}") from exc
        journal = cls(folder, RunRecord(run_id=run_id, **fields))
        journal.save()
        return journal

    @property
    def path(self) -> Path:
        return self.folder / "journal.json"

    @property
    def scenarios(self) -> list[ScenarioRecord]:
        return list(self.run.scenarios)

    def save(self) -> None:
        """Write atomically: a reader (or a crash) never sees half a journal."""
        temporary = self.path.with_suffix(".tmp")
        text = self.run.model_dump_json(indent=1, by_alias=True)
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, self.path)


def load_journal(path: str | Path) -> Journal:
    """A run folder (or its journal.json); ``InputError`` naming the file otherwise."""
    path = Path(path)
    file = path / "journal.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{file}: no journal here (expected .chaosml/runs/<run-id>/)") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"{file}: not a chaosml journal: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else None
        raise InputError(
            f"{file}: not a chaosml journal (expected schema {SCHEMA}"
            + (f", found {found}: written by another chaosml version)" if found else ")")
        )
    try:
        run = RunRecord.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise InputError(f"{file}: damaged journal: {where}: {error['msg']}") from exc
    return Journal(file.parent, run)
