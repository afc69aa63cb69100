"""The game-day runner: for each scenario, steady state → inject → observe → rollback → recovery.

Rollback always happens: at the end of the fault phase, on a stop condition, on Ctrl-C or SIGTERM,
and on any exception. Toxics at chaosml fault points carry leases the runner renews, so even a
SIGKILLed runner leaves no fault active once the lease runs out. The journal is saved after every
phase. The next scenario's load driver is started (armed, no users yet) during the current
scenario's recovery, so a game day spends its time in the scenarios' own phases.
"""

from __future__ import annotations

import hashlib
import math
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import pandas as pd

from chaosml._signals import holding, raising
from chaosml.alerts import AlertSource, Poller, make_source
from chaosml.alerts.poller import Track
from chaosml.errors import ChaosmlError, InputError, UnreachableError
from chaosml.gameday.faultpoints import AddedToxic, FaultPointClient, FaultPointError, Leases
from chaosml.gameday.journal import (
    Episode,
    FaultEvidence,
    FaultRecord,
    Journal,
    LoadFigures,
    Outage,
    PhaseRecord,
    RuleRecord,
    ScenarioRecord,
)
from chaosml.gameday.judge import (
    NOT_JUDGED,
    NOT_RUN,
    UNREAD,
    Window,
    judge_expectations,
    judge_fault,
    load_shortfall,
    scenario_verdict,
    unjudged,
)
from chaosml.gameday.target import TargetFile
from chaosml.load import LoadPlan, LoadProcess
from chaosml.load.process import LoadStopped
from chaosml.scenario import Expectation, Scenario, ScenarioFile

POLL_INTERVAL = 0.25
CHECK_SECONDS = 0.1  # how often a phase checks stop conditions between polls
PhaseName = Literal["steady", "fault", "recovery"]


# seconds before the rollback looks again for an add it never saw answered
LATE_ADD = 0.5


class Interrupted(ChaosmlError):
    """The game day was stopped (Ctrl-C or SIGTERM); everything was rolled back."""

    exit_code = 130


class Observer(Protocol):
    """What a live display hears from the runner."""

    def scenario(self, name: str, index: int, total: int) -> None: ...
    def phase(self, name: str, seconds: float) -> None: ...
    def tick(self, figures: dict[str, Any]) -> None: ...
    def alert(self, event: dict[str, Any]) -> None: ...
    def finished(self, record: ScenarioRecord) -> None: ...


class Quiet:
    def scenario(self, name: str, index: int, total: int) -> None:
        return None

    def phase(self, name: str, seconds: float) -> None:
        return None

    def tick(self, figures: dict[str, Any]) -> None:
        return None

    def alert(self, event: dict[str, Any]) -> None:
        return None

    def finished(self, record: ScenarioRecord) -> None:
        return None


@dataclass(kw_only=True)
class RunOptions:
    time_scale: float = 1.0
    seed: int = 0
    workers: int | None = None  # overrides every scenario's load.workers
    runs: Path = Path(".chaosml/runs")
    # end a fault once every alert its scenario expects has fired at every alert source (a
    # scenario that expects quiet, or nothing, runs its whole fault phase)
    until_detected: bool = False


def _signals() -> AbstractContextManager[None]:
    """SIGTERM and SIGINT raise ``Interrupted`` in the main thread, so ``finally`` rolls back."""

    def interrupted(signum: int) -> Interrupted:
        return Interrupted(f"stopped by {signal.Signals(signum).name}; no fault is left active")

    return raising((signal.SIGINT, signal.SIGTERM), interrupted)


def derive_seed(seed: int, *parts: object) -> int:
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass(kw_only=True)
class GameDay:
    """One run of scenarios against one target."""

    scenarios: list[ScenarioFile]
    target: TargetFile
    options: RunOptions = field(default_factory=RunOptions)
    observer: Observer = field(default_factory=Quiet)
    clock: Callable[[], float] = time.time
    notes: list[str] = field(default_factory=list)  # what validation noticed, for the journal

    def __post_init__(self) -> None:
        spec = self.target.target
        self.points = {name: FaultPointClient(name, p) for name, p in spec.fault_points.items()}
        self.sources: list[AlertSource] = [
            make_source(s, self.options.time_scale) for s in spec.alerts
        ]
        self.poller = Poller(sources=self.sources, clock=self.clock, on_event=self._event)
        self._dirty = False  # an alert changed state since the journal was last written
        lease = min((p.lease for p in spec.fault_points.values()), default=10.0)
        self.leases = Leases(self.points, interval=max(lease / 3, 0.2))
        self.journal: Journal | None = None
        self._next_load: LoadProcess | None = None
        self._stopping: list[LoadProcess] = []

    # --- the run ---------------------------------------------------------------------------------

    def run(self) -> Journal:
        """Run every scenario; the journal holds what happened (saved even when interrupted)."""
        with _signals():
            self._start_sources()
            try:
                self._prestart(0)  # its driver loads the data while the run gets ready
                for point in self.points.values():
                    point.check()
                self.journal = Journal.create(
                    self.options.runs,
                    started_at=self.clock(),
                    target=self.target.target.model_dump(mode="json", by_alias=True),
                    target_file=str(self.target.path) if self.target.path else None,
                    time_scale=self.options.time_scale,
                    seed=self.options.seed,
                    sources=[s.name for s in self.sources],
                    rules=self._rules(),
                    notes=self.notes,
                )
                self.leases.start()
                index = 0
                try:
                    for index, file in enumerate(self.scenarios):
                        self._scenario(index, file)
                except Interrupted as exc:
                    self.journal.run.interrupted = str(exc)
                    self._not_run(self.scenarios[index + 1 :])
                    raise
                finally:
                    self.leases.stop()
                    self.journal.run.ended_at = self.clock()
                    self._save()
            finally:
                if self._next_load is not None:
                    self._next_load.stop()
                for load in self._stopping:
                    load.stop()  # waits for each driver to exit (by PID, if it must)
                for source in self.sources:
                    source.stop()
        return self.journal

    def _start_sources(self) -> None:
        started = []
        try:
            for source in self.sources:
                source.start()
                started.append(source)
        except BaseException:
            for source in started:
                source.stop()
            raise

    def _rules(self) -> list[RuleRecord] | None:
        """The rules the sources list; None when none of them can list rules."""
        rules: list[RuleRecord] | None = None
        for source in self.sources:
            listed = source.rules()
            if listed is None:
                continue
            rules = (rules or []) + [
                RuleRecord(source=source.name, name=rule.name, labels=rule.labels)
                for rule in listed
            ]
        return rules

    def _not_run(self, files: list[ScenarioFile]) -> None:
        """Scenarios an interrupted game day never reached: listed, ``unknown``, not run."""
        assert self.journal is not None
        for file in files:
            scenario = file.scenario.scaled(self.options.time_scale)
            record = self._record(file, scenario, NOT_RUN)
            record.ended_at, record.verdict = record.started_at, "unknown"
            record.reason = "not run: the game day was interrupted before it"
            self.journal.run.scenarios.append(record)

    def _record(self, file: ScenarioFile, scenario: Scenario, reason: str) -> ScenarioRecord:
        """A scenario's record as it starts, its expectations ``unknown`` with ``reason`` until
        judged (so a run killed meanwhile still says what it was to check)."""
        return ScenarioRecord(
            name=scenario.name,
            file=str(file.path),
            description=scenario.description,
            tags=list(scenario.tags),
            failure_mode=scenario.failure_mode,
            started_at=self.clock(),
            expectations=unjudged(scenario, reason),
        )

    def _event(self, event: dict[str, Any]) -> None:
        self._dirty = True
        self.observer.alert(event)

    def _save(self) -> None:
        """Write the journal, with every source's outages so far."""
        assert self.journal is not None
        self.journal.run.outages = [Outage(**o.to_dict()) for o in self.poller.outages]
        self._dirty = False
        self.journal.save()

    def _plan(self, file: ScenarioFile, scenario: Scenario) -> LoadPlan:
        target = self.target.target
        data = file.data or self.target.data
        if data is None:
            raise InputError(
                f"{file.path}: load.data: no data to replay: set load.data here or data: in "
                f"{self.target.path}"
            )
        if not data.is_file():
            raise InputError(f"{file.path}: load.data: {data}: file not found")
        feedback = scenario.load.feedback
        label = (feedback.label if feedback else None) or target.label
        workers = (
            self.options.workers if self.options.workers is not None else scenario.load.workers
        )
        return LoadPlan(
            url=target.url,
            data=str(data),
            codec=target.codec,
            label=label,
            batch=scenario.load.batch,
            users=scenario.load.users,
            spawn_rate=scenario.load.spawn_rate,
            rate=scenario.load.rate,
            think=scenario.load.think,
            feedback_url=target.feedback if feedback else None,
            feedback_delay=feedback.delay if feedback else 0.0,
            seed=derive_seed(self.options.seed, scenario.name, "load"),
            workers=workers,
            window=4.0 if workers else 2.0,
        )

    def _load(self, index: int) -> LoadProcess:
        """The load driver of scenario ``index``: the one started ahead, or a new one."""
        load, self._next_load = self._next_load, None
        if load is None:
            file = self.scenarios[index]
            scenario = file.scenario.scaled(self.options.time_scale)
            load = LoadProcess(self._plan(file, scenario), on_tick=self.observer.tick)
        return load.spawn()

    def _prestart(self, index: int) -> None:
        """Start the next scenario's load driver now, so it is armed when that scenario begins."""
        if index < len(self.scenarios):
            try:
                self._next_load = self._load(index)
            except ChaosmlError:
                self._next_load = None  # reported when that scenario starts

    # --- one scenario ----------------------------------------------------------------------------

    def _scenario(self, index: int, file: ScenarioFile) -> None:
        assert self.journal is not None
        scenario = file.scenario.scaled(self.options.time_scale)
        self.observer.scenario(scenario.name, index, len(self.scenarios))
        record = self._record(file, scenario, NOT_JUDGED)
        self.journal.run.scenarios.append(record)
        self._save()
        first_event, first_error = len(self.poller.events), len(self.poller.errors)
        load: LoadProcess | None = None
        try:
            load = self._load(index)
            self._phases(index, scenario, load, record)
        except Interrupted:
            record.interrupted = True
            raise
        except ChaosmlError as exc:
            record.reason = str(exc)
            record.unreachable = isinstance(exc, UnreachableError)
            if isinstance(exc, InputError):
                raise
        finally:
            if load is not None:
                load.stop(wait=False)
                self._stopping.append(load)
                record.load = [LoadFigures.model_validate(t) for t in load.ticks]
                if load.error:
                    record.errors.append({"load": load.error})
            self._close(record, scenario, first_event, first_error)

    def _phases(
        self, index: int, scenario: Scenario, load: LoadProcess, record: ScenarioRecord
    ) -> None:
        load.go()
        self._phase(record, load, "steady", scenario.phases.steady, scenario)
        if record.stopped_by:
            return
        self._prestart(index + 1)  # the next scenario's driver loads its data meanwhile
        added: list[AddedToxic] = []
        try:
            record.injected_at = self.clock()
            record.steady_state = sorted({t.name for t in self.poller.active() if t.fired})
            for position in range(len(scenario.faults)):
                self._inject(position, scenario, record, added)
            self._phase(record, load, "fault", scenario.phases.fault, scenario)
        finally:
            with holding():  # a Ctrl-C now is raised once every fault is removed
                record.rolled_back_at = self._rollback(added, record)
                self._save()
        self._phase(record, load, "recovery", scenario.phases.recovery, scenario, settle=True)

    def _inject(
        self, position: int, scenario: Scenario, record: ScenarioRecord, added: list[AddedToxic]
    ) -> None:
        """Add the scenario's fault at ``position``. It joins ``added`` before it is sent: a stop
        while the fault point answers (the toxic exists there, its 201 not read yet) still
        rolls it back."""
        fault = scenario.faults[position]
        client = self.points.get(fault.point)
        if client is None:
            raise InputError(f"fault {fault.type}: no fault point {fault.point!r} in the target")
        seed = derive_seed(self.options.seed, scenario.name, position)
        assert self.journal is not None
        name = f"chaosml-{self.journal.run.run_id}-{position}-{fault.type}"
        entry = FaultRecord(
            type=fault.type,
            point=fault.point,
            proxy=client.spec.proxy,
            toxic=name,
            stream=fault.toxic_stream,
            toxicity=fault.toxicity,
            attributes=fault.attributes,
            seed=seed if client.spec.leases else None,
        )
        record.faults.append(entry)
        self._save()  # before the toxic exists: a SIGKILL after this leaves its record
        toxic = client.toxic(fault, name, seed)
        added.append(toxic)
        client.add(toxic)
        self.leases.add(toxic)
        entry.added_at = self.clock()
        self._save()

    def _rollback(self, added: list[AddedToxic], record: ScenarioRecord) -> float:
        """Remove every toxic this scenario added (retrying), then read what each did; failures
        go in the journal."""
        for toxic, entry in zip(added, record.faults, strict=False):
            self.leases.discard(toxic)
            client = self.points[toxic.point]
            for attempt in range(3):
                try:
                    # gone already counts as removed once it was added (its lease ran out)
                    if client.remove(toxic) or entry.added_at is not None:
                        entry.removed_at = self.clock()
                    break
                except FaultPointError as exc:
                    if attempt == 2:
                        entry.error = f"not removed: {exc}"
                    else:
                        time.sleep(0.2)
        self._late_adds(added, record)
        rolled_back = self.clock()
        for toxic, entry in zip(added, record.faults, strict=False):
            if entry.added_at is None:  # stopped while it was being added: nothing to read
                continue
            if self._evidence(self.points[toxic.point], toxic, entry):
                record.unreachable = True
        return rolled_back

    def _late_adds(self, added: list[AddedToxic], record: ScenarioRecord) -> None:
        """An add the runner never saw answered may still be applied after its removal (a
        fault point slow under load): look again once, a moment later, and remove it then."""
        unconfirmed = [
            (toxic, entry)
            for toxic, entry in zip(added, record.faults, strict=False)
            if entry.added_at is None and entry.removed_at is None
        ]
        if not unconfirmed:
            return
        time.sleep(LATE_ADD)
        for toxic, entry in unconfirmed:
            client = self.points[toxic.point]
            try:
                if client.remove(toxic):  # it was there after all
                    entry.removed_at = self.clock()
            except FaultPointError as exc:
                entry.error = f"not known to be removed: {exc}"

    def _evidence(self, client: FaultPointClient, toxic: AddedToxic, entry: FaultRecord) -> bool:
        """Read what the toxic did and judge it; True if a component was unreachable meanwhile
        (the point after the fault, or the lease renewals that let the toxic lapse)."""
        unreachable = False
        if client.spec.leases:
            try:
                found = client.evidence(toxic)
            except FaultPointError as exc:
                entry.error, unreachable = f"{UNREAD}: {exc}", True
            else:
                entry.evidence = None if found is None else FaultEvidence.model_validate(found)
                if entry.evidence is not None and entry.evidence.expired and self.leases.errors:
                    entry.error = f"renewing its lease failed: {self.leases.errors[-1]}"
                    unreachable = True
        else:
            entry.error = entry.error or "a real Toxiproxy does not report what its toxics did"
        effect, entry.effect_reason = judge_fault(entry)
        entry.effect = effect  # type: ignore[assignment]
        return unreachable

    def _phase(
        self,
        record: ScenarioRecord,
        load: LoadProcess,
        name: PhaseName,
        seconds: float,
        scenario: Scenario,
        *,
        settle: bool = False,
    ) -> None:
        """Poll alerts and check stop conditions for ``seconds`` (the recovery phase ends early
        once every alert seen since injection has resolved)."""
        self.observer.phase(name, seconds)
        phase = PhaseRecord(name=name, start=self.clock(), planned_s=seconds)
        record.phases.append(phase)
        conditions = list(zip(scenario.stop_if, scenario.stop_conditions, strict=True))
        end = phase.start + seconds
        next_poll = 0.0
        try:
            while (now := self.clock()) < end:
                if now >= next_poll:
                    self.poller.poll()
                    next_poll = now + POLL_INTERVAL
                    if self._dirty:
                        self._save()
                    if settle and self._settled(record):
                        break
                    if name == "fault" and self._detected(record, scenario):
                        record.detected_early = True
                        break
                if not load.alive():
                    raise LoadStopped(f"the load driver stopped: {load.error}")
                stopped = _stopped(conditions, load.latest()) if name != "recovery" else None
                if stopped is not None:
                    record.stopped_by = stopped
                    break
                time.sleep(min(CHECK_SECONDS, max(end - now, 0)))
        finally:
            phase.end = self.clock()
            # load stops after the recovery (or a steady state a stop condition ended): that
            # mark lets requests in flight finish and counts them, so the phases sum to what the
            # service received. An error or Ctrl-C marks at once: rollback must not wait.
            ending = name == "recovery" or (name == "steady" and record.stopped_by is not None)
            failing = sys.exc_info()[0] is not None
            figures = load.mark(name, last=ending and not failing)
            phase.load = None if figures is None else LoadFigures.model_validate(figures)
            self._save()

    def _detected(self, record: ScenarioRecord, scenario: Scenario) -> bool:
        if not self.options.until_detected or record.injected_at is None:
            return False
        sources = {source.name for source in self.poller.sources}
        return all_detected(scenario.expect, self.poller.tracks, sources, record.injected_at)

    def _settled(self, record: ScenarioRecord) -> bool:
        if record.injected_at is None:
            return False
        return not any(t.fired for t in self.poller.active())

    def _close(
        self, record: ScenarioRecord, scenario: Scenario, first_event: int, first_error: int
    ) -> None:
        record.ended_at = self.clock()
        tracks = self.poller.between(record.started_at, record.ended_at)
        record.alerts = [Episode.model_validate(t.to_dict()) for t in tracks]
        record.events = self.poller.events[first_event:]
        record.errors.extend(self.poller.errors[first_error:])
        record.leases = list(self.leases.errors)
        self.leases.errors.clear()
        record.load_shortfall = load_shortfall(record)
        outages = [Outage(**o.to_dict()) for o in self.poller.outages]
        rules = self.journal.run.rules if self.journal is not None else None
        known = None if rules is None else frozenset(r.name for r in rules)
        record.expectations = judge_expectations(scenario, record, Window(outages, known))
        record.verdict = scenario_verdict(record)  # type: ignore[assignment]
        self._save()
        self.observer.finished(record)


def all_detected(
    expect: Sequence[Expectation], tracks: Sequence[Track], sources: set[str], injected: float
) -> bool:
    """Whether every expectation is an alert that fired after ``injected`` at every one of
    ``sources``: the verdicts are then settled. Quiet and blind-spot findings need the whole
    window, so a scenario expecting quiet, or nothing, never is."""
    if not expect or not all(e.fires for e in expect):
        return False
    return all(
        {
            t.source
            for t in tracks
            if e.matches(t.name, t.labels) and t.firing_at is not None and t.firing_at >= injected
        }
        >= sources
        for e in expect
    )


def _stopped(conditions: list[tuple[str, Any]], figures: dict[str, Any] | None) -> str | None:
    if not conditions or not figures:
        return None
    row = pd.DataFrame(
        [{k: (math.nan if v is None else v) for k, v in figures.items() if k != "t"}]
    )
    for text, predicate in conditions:
        if bool(predicate.evaluate(row)[0]):
            return text
    return None


def run_gameday(
    scenarios: list[ScenarioFile],
    target: TargetFile,
    options: RunOptions | None = None,
    observer: Observer | None = None,
) -> Journal:
    """Run ``scenarios`` in order against ``target``; the journal holds every verdict."""
    return GameDay(
        scenarios=scenarios,
        target=target,
        options=options or RunOptions(),
        observer=observer or Quiet(),
    ).run()
