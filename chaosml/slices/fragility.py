"""Slices under failure scenarios: each scenario's faults applied offline to the evaluation rows, every
slice evaluated under every scenario, and (for two versions) which one is more fragile where.

The scenarios' faults act on the rows offline (``chaosml.slices.offline``); transport faults have
no offline meaning, so a scenario of those alone is listed as not applicable. Slices are always the *clean* rows' subpopulations: a row is in ``income_missing`` because
its real income is missing, whatever the fault did to what the model saw.

Per scenario, one pass over the data predicts each version on the clean and on the faulted rows
(clean predictions come from the prediction cache when there is one). Rows are faulted the same way
for every version (one seeded generator per block of rows, the same whatever engine or chunking
read them), so the comparison is paired on the same rows:

- per version and (slice, scenario): the metric clean, under the fault, and its change;
- for two versions, the *fragility* delta (v2's change) - (v1's change) with a paired test under
  "the versions are exchangeable" and a bootstrap interval (``chaosml.slices.stats.did``);
  p-values adjusted over every (slice, scenario) cell; the clean comparison's verdicts, with
  ``max_drop_under_fault`` as the tolerance.

Only scenarios that change the model's inputs get a fragility verdict. A fault on the answers
(``label_flip``, ``bias``, ``stale_model``) acts on every model's answers the same way: how much
each version loses to it follows from how their answers differ on clean data, which the clean
comparison already tests. Those cells show each version's change, with no verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from chaosml.config import ProjectConfig
from chaosml.data import DEFAULT_CHUNK_ROWS
from chaosml.errors import InputError, ScenarioFailed
from chaosml.slices.collect import Evaluation, evaluate
from chaosml.slices.compare import Comparison, SliceComparison, compare_versions
from chaosml.slices.engines import Engine, Progress, engine_for
from chaosml.slices.metrics import METRICS, Metric, as_number
from chaosml.slices.offline import OfflineScenario, UnderFault
from chaosml.slices.stats import Verdict, did_tests, judge, min_discordant
from chaosml.slices.suite import SliceSuite
from chaosml.slices.sums import IntArray
from chaosml.versions import Version

SCHEMA = "chaosml.slices.fragility/1"


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One (slice, scenario): each version's metric clean and under the scenario's faults, and
    for two versions the fragility delta (v2's change - v1's change) with its test and verdict."""

    slice: str
    scenario: str
    n: int
    clean: dict[str, float | None]
    faulted: dict[str, float | None]
    discordant: int | None = None
    delta: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    verdict: Verdict | None = None
    error: str | None = None  # why the scenario could not run (verdict "error")

    def change(self, version: str) -> float | None:
        clean, faulted = self.clean.get(version), self.faulted.get(version)
        return None if clean is None or faulted is None else faulted - clean

    def to_dict(self) -> dict[str, Any]:
        return {
            "slice": self.slice,
            "scenario": self.scenario,
            "n": self.n,
            "versions": {
                v: {"clean": self.clean[v], "faulted": self.faulted[v], "change": self.change(v)}
                for v in self.clean
            },
            "discordant": self.discordant,
            "delta": self.delta,
            "ci": list(self.ci) if self.ci else None,
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "verdict": self.verdict,
            "error": self.error,
        }


@dataclass(frozen=True, kw_only=True)
class Fragility:
    """Every slice under every applicable scenario, for one or two versions."""

    suite: str
    data: str
    metric: str
    versions: list[str]
    scenarios: list[OfflineScenario]
    cells: list[Cell]
    alpha: float
    max_drop: float
    correction: str
    seed: int
    n_boot: int
    errors: dict[str, str] = field(default_factory=dict)  # scenario: why it could not run
    confidence: float = 0.95
    min_discordant: int = 6  # fewer discordant rows: inconclusive, no interval
    family: int = 0  # cells in the correction's family
    joint: bool = False  # the family also holds the clean comparison's slices

    @property
    def fragile(self) -> list[Cell]:
        """Cells where v2 lost significantly more than v1, largest difference first."""
        flagged = [c for c in self.cells if c.verdict == "regressed"]
        direction = METRICS[self.metric].direction
        return sorted(flagged, key=lambda c: direction * (c.delta or 0.0))

    @property
    def passed(self) -> bool:
        return not self.fragile

    @property
    def exit_code(self) -> int:
        """3 if a scenario could not run (its verdicts are unknown), else 1 if a cell regressed."""
        return 3 if self.errors else 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "suite": self.suite,
            "data": self.data,
            "metric": self.metric,
            "versions": self.versions,
            "alpha": self.alpha,
            "max_drop_under_fault": self.max_drop,
            "correction": self.correction,
            "seed": self.seed,
            "n_boot": self.n_boot,
            "confidence": self.confidence,
            "min_discordant": self.min_discordant,
            "family": self.family,
            "family_includes_clean_slices": self.joint,
            "scenarios": [
                {
                    "name": s.name,
                    "path": str(s.path),
                    "applicable": s.applicable,
                    "faults": [fault.type for fault, _ in s.faults],
                    "not_applicable_offline": list(s.transport),
                    "error": self.errors.get(s.name),
                }
                for s in self.scenarios
            ],
            "errors": dict(self.errors),
            "passed": self.passed,
            "fragile": [{"slice": c.slice, "scenario": c.scenario} for c in self.fragile],
            "cells": [c.to_dict() for c in self.cells],
        }


@dataclass(frozen=True, kw_only=True)
class Pass:
    """One scenario's pass: per slice, the 32 cells label|v1|v2|v1 under|v2 under, the slice's
    ``min_size``, and whether the scenario is judged (it changes the model's inputs)."""

    cells: IntArray
    min_sizes: IntArray
    compared: bool


@dataclass(frozen=True, kw_only=True)
class UnderFaults:
    """A clean comparison of two versions and their fragility under the scenarios."""

    clean: Comparison
    fragility: Fragility

    @property
    def passed(self) -> bool:
        return self.clean.passed and self.fragility.passed

    @property
    def exit_code(self) -> int:
        """3 if a scenario could not run (its verdicts are unknown), else 1 if a slice or a cell
        regressed, else 0."""
        return 3 if self.fragility.errors else 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.fragility.to_dict(),
            "passed": self.passed,
            "exit_code": self.exit_code,
            "clean": self.clean.to_dict(),
        }


def fragility(
    suite: SliceSuite,
    versions: Sequence[Version],
    data: object,
    scenarios: Sequence[OfflineScenario],
    *,
    others: Mapping[str, Version] | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    correction: Literal["holm", "bh"] | None = None,
    config: ProjectConfig | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Callable[[str], Progress | None] | None = None,
    engine: Engine | str | None = None,
) -> Fragility:
    """Evaluate every slice of ``suite`` under every scenario, for one or two versions (``data``
    and ``engine`` as for ``evaluate``: one pass per scenario on that engine)."""
    with engine_for(engine, data) as runner:
        return _fragility(
            suite,
            versions,
            data,
            scenarios,
            others=others,
            seed=seed,
            n_boot=n_boot,
            correction=correction,
            config=config,
            chunk_rows=chunk_rows,
            progress=progress,
            engine=runner,
        )


def compare_under_faults(
    suite: SliceSuite,
    v1: Version,
    v2: Version,
    data: object,
    scenarios: Sequence[OfflineScenario],
    *,
    others: Mapping[str, Version] | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    correction: Literal["holm", "bh"] | None = None,
    config: ProjectConfig | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Progress | None = None,
    engine: Engine | str | None = None,
) -> UnderFaults:
    """``slices compare --scenarios``: the clean comparison and the fragility cells, judged as
    one family. Every slice and every (slice, scenario) cell that can fail the gate, overall rows
    included, is in one multiple-testing correction, so the command's false-alarm rate is at most
    ``alpha`` however many scenarios it runs."""
    with engine_for(engine, data) as runner:
        clean = compare_versions(
            suite,
            v1,
            v2,
            data,
            n_boot=n_boot,
            seed=seed,
            correction=correction,
            config=config,
            chunk_rows=chunk_rows,
            progress=progress,
            engine=runner,
        )
        cells = _fragility(
            suite,
            [v1, v2],
            data,
            scenarios,
            others=others,
            seed=seed,
            n_boot=n_boot,
            correction=correction,
            config=config,
            chunk_rows=chunk_rows,
            progress=None if progress is None else lambda scenario: progress,
            engine=runner,
        )
    return one_family(clean, cells, METRICS[suite.compare.metric])


def one_family(clean: Comparison, cells: Fragility, metric: Metric) -> UnderFaults:
    """The clean comparison's rows and the fragility's judged cells re-judged as one family."""
    rows = [clean.overall, *clean.slices]
    judged = [i for i, c in enumerate(cells.cells) if c.verdict is not None]
    items: list[SliceComparison | Cell] = [*rows, *(cells.cells[i] for i in judged)]
    p_adjusted, verdicts, _ = judge(
        np.array([math.nan if r.delta is None else r.delta for r in items]),
        np.array([math.nan if r.p_value is None else r.p_value for r in items]),
        discordant=np.array([r.discordant or 0 for r in items]),
        big_enough=np.array([r.verdict != "too_small" for r in items]),
        correction=clean.correction,
        direction=metric.direction,
        alpha=clean.alpha,
        max_drop=np.array([clean.max_drop] * len(rows) + [cells.max_drop] * len(judged)),
        failed=np.array([r.verdict == "error" for r in items]),
    )
    family = int(np.isfinite(p_adjusted).sum())
    n = len(rows)
    fixed = [
        replace(r, p_adjusted=as_number(p), verdict=v)
        for r, p, v in zip(rows, p_adjusted[:n], verdicts[:n], strict=True)
    ]
    new_cells = list(cells.cells)
    for k, i in enumerate(judged):
        p, v = p_adjusted[n + k], verdicts[n + k]
        new_cells[i] = replace(new_cells[i], p_adjusted=as_number(p), verdict=v)
    comparison = replace(clean, overall=fixed[0], slices=fixed[1:], family=family, joint=True)
    return UnderFaults(
        clean=comparison, fragility=replace(cells, cells=new_cells, family=family, joint=True)
    )


def _fragility(
    suite: SliceSuite,
    versions: Sequence[Version],
    data: object,
    scenarios: Sequence[OfflineScenario],
    *,
    others: Mapping[str, Version] | None,
    seed: int,
    n_boot: int,
    correction: Literal["holm", "bh"] | None,
    config: ProjectConfig | None,
    chunk_rows: int,
    progress: Callable[[str], Progress | None] | None,
    engine: Engine,
) -> Fragility:
    if not 1 <= len(versions) <= 2:
        raise InputError("fragility takes one version, or two to compare")
    policy = suite.compare
    metric = METRICS[policy.metric]
    known = {v.name: v for v in versions} | dict(others or {})
    names = [v.name for v in versions]
    per_scenario: list[list[Cell]] = []
    family: list[Pass] = []
    errors: dict[str, str] = {}
    clean: Evaluation | None = None
    for index, scenario in enumerate(scenarios):
        if not scenario.applicable:
            continue
        faulted = [
            UnderFault(base=v, scenario=scenario, seed=seed, index=index, others=known)
            for v in versions
        ]
        try:
            evaluation = evaluate(
                suite,
                data,
                [*versions, *faulted],
                config=config,
                chunk_rows=chunk_rows,
                progress=progress(scenario.name) if progress else None,
                engine=engine,
            )
        except ScenarioFailed as exc:
            errors[scenario.name] = str(exc)
            if clean is None:  # the slices and their clean metrics, to show beside the error
                clean = evaluate(
                    suite, data, versions, config=config, chunk_rows=chunk_rows, engine=engine
                )
            per_scenario.append(_failed_cells(clean, metric, names, scenario.name, str(exc)))
            continue
        per_scenario.append(_cells(evaluation, metric, names, scenario.name))
        if len(versions) == 2:
            stats = evaluation.stats
            sizes = np.array([info.min_size for info in stats.slices])
            family.append(
                Pass(cells=stats.cells, min_sizes=sizes, compared=scenario.changes_features)
            )
    ran = [cells for cells in per_scenario if cells and cells[0].error is None]
    judged: list[Cell] = [c for cells in ran for c in cells]
    if len(versions) == 2 and family:
        judged = _compare(
            judged, family, metric, suite, correction=correction, seed=seed, n_boot=n_boot
        )
    done = iter(judged)
    cells = [
        c if c.error is not None else next(done)
        for scenario_cells in per_scenario
        for c in scenario_cells
    ]
    return Fragility(
        suite=str(suite.path or "<suite>"),
        data=str(data) if isinstance(data, str | Path) else "<DataFrame>",
        metric=metric.name,
        versions=names,
        scenarios=list(scenarios),
        cells=cells,
        alpha=policy.alpha,
        max_drop=policy.drop_under_fault,
        correction=correction or policy.correction,
        seed=seed,
        n_boot=n_boot,
        errors=errors,
        confidence=policy.confidence,
        min_discordant=min_discordant(policy.alpha),
        family=sum(c.p_adjusted is not None for c in cells),
    )


def _failed_cells(
    clean: Evaluation, metric: Metric, names: list[str], scenario: str, error: str
) -> list[Cell]:
    """A scenario that could not run: each slice's clean metrics, no faulted ones, the error."""
    values = {name: clean.metric(metric.name, i) for i, name in enumerate(names)}
    return [
        Cell(
            slice=info.name,
            scenario=scenario,
            n=int(clean.stats.n[row]),
            clean={name: as_number(values[name][row]) for name in names},
            faulted=dict.fromkeys(names),
            verdict="error",
            error=error,
        )
        for row, info in enumerate(clean.stats.slices)
    ]


def _cells(evaluation: Evaluation, metric: Metric, names: list[str], scenario: str) -> list[Cell]:
    k = len(names)
    clean = {name: evaluation.metric(metric.name, i) for i, name in enumerate(names)}
    under = {name: evaluation.metric(metric.name, k + i) for i, name in enumerate(names)}
    return [
        Cell(
            slice=info.name,
            scenario=scenario,
            n=int(evaluation.stats.n[row]),
            clean={name: as_number(clean[name][row]) for name in names},
            faulted={name: as_number(under[name][row]) for name in names},
        )
        for row, info in enumerate(evaluation.stats.slices)
    ]


def _compare(
    cells: list[Cell],
    family: list[Pass],
    metric: Metric,
    suite: SliceSuite,
    *,
    correction: Literal["holm", "bh"] | None,
    seed: int,
    n_boot: int,
) -> list[Cell]:
    policy = suite.compare
    counts = np.concatenate([p.cells for p in family])
    min_sizes = np.concatenate([p.min_sizes for p in family])
    compared = np.concatenate([np.full(len(p.cells), p.compared) for p in family])
    delta = np.array([_delta(c) for c in cells], dtype=np.float64)
    tested = did_tests(
        metric,
        counts,
        delta,
        confidence=policy.confidence,
        alpha=policy.alpha,
        n_boot=n_boot,
        seed=seed,
    )
    discordant, low, high = tested.discordant, tested.low, tested.high
    p_values = np.where(compared, tested.p_values, np.nan)
    p_adjusted, verdicts, _ = judge(
        delta,
        p_values,
        discordant=discordant,
        big_enough=np.array([c.n for c in cells]) >= min_sizes,
        correction=correction or policy.correction,
        direction=metric.direction,
        alpha=policy.alpha,
        max_drop=policy.drop_under_fault,
    )
    return [
        replace(
            c,
            discordant=int(discordant[i]),
            delta=as_number(delta[i]),
            ci=None if math.isnan(low[i]) else (float(low[i]), float(high[i])),
            p_value=as_number(p_values[i]),
            p_adjusted=as_number(p_adjusted[i]),
            verdict=verdicts[i] if compared[i] else None,
        )
        for i, c in enumerate(cells)
    ]


def _delta(cell: Cell) -> float:
    v1, v2 = list(cell.clean)
    first, second = cell.change(v1), cell.change(v2)
    return math.nan if first is None or second is None else second - first
