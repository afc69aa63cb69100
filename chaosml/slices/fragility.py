"""Slices under failure scenarios: each scenario's faults applied offline to the evaluation rows, every
slice evaluated under every scenario, and (for two versions) which one is more fragile where.

A scenario file (``scenarios/*.yaml``) names the faults a game day injects; offline, its payload
faults act on the evaluation data with the same fault code the proxy and the in-service fault point
run (``chaosml.apply_offline``): request faults change the rows before the model predicts, response
faults change its answers, ``stale_model`` answers with the named version. Transport faults
(latency, resets) act on connections and have no offline meaning: such a scenario is listed as not
applicable. Slices are always the *clean* rows' subpopulations: a row is in ``income_missing`` because
its real income is missing, whatever the fault did to what the model saw.

Per scenario, one pass over the data predicts each version on the clean and on the faulted rows
(clean predictions come from the prediction cache when there is one). Rows are faulted the same way
for every version (one seeded generator per block of rows, the same whatever engine or chunking
read them), so the comparison is paired on the same rows:

- per version and (slice, scenario): the metric clean, under the fault, and its change;
- for two versions, the *fragility* delta (v2's change) - (v1's change) with a paired test under
  "the versions are exchangeable": swapping v1 and v2 on a row (clean and faulted together) is as
  likely as not. For a proportion metric each row has a score d = (v2 faulted - v2 clean) -
  (v1 faulted - v1 clean) of the metric's event, a swap turns d into -d, and the null
  distribution is an exact grid over the rows with |d| = 1 and |d| = 2 (McNemar's test is its
  one-version case). For a ratio metric (precision, F1, balanced accuracy) it is the clean
  comparison's studentized permutation test over the 12 pairs of cells a swap exchanges (exact
  where the grid is small, its normal limit beyond). A bootstrap interval from the cell counts;
  p-values adjusted over every (slice, scenario) cell; the clean comparison's verdicts, with
  ``max_drop_under_fault`` as the tolerance.

Only scenarios that change the model's inputs get a fragility verdict. A fault on the answers
(``label_flip``, ``bias``, ``stale_model``) acts on every model's answers the same way: how much
each version loses to it follows from how their answers differ on clean data, which the clean
comparison already tests. Those cells show each version's change, with no verdict.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
from scipy import special

from chaosml.config import ProjectConfig
from chaosml.data import DEFAULT_CHUNK_ROWS, DataSource
from chaosml.errors import InputError, VersionError
from chaosml.faults import PayloadFault, RequestFault, ResponseFault, apply_offline
from chaosml.scenario import load_scenarios
from chaosml.slices.collect import Evaluation, evaluate
from chaosml.slices.compare import (
    Comparison,
    SliceComparison,
    Verdict,
    compare_versions,
    events,
    judge,
    studentized,
)
from chaosml.slices.engines import FAULT_BLOCK, Engine, Progress, engine_for
from chaosml.slices.metrics import METRICS, Metric, as_number
from chaosml.slices.stats import (
    FloatArray,
    bootstrap_cells,
    floored,
    log_binom_cdf,
    log_binom_pmf,
    min_discordant,
    percentile_interval,
    permutation_p_values,
    swappable,
)
from chaosml.slices.suite import SliceSuite
from chaosml.slices.sums import IntArray, confusion
from chaosml.versions import (
    ArtifactVersion,
    PartPredictor,
    Predictions,
    Predictor,
    Scalar,
    Version,
)

SCHEMA = "chaosml.slices.fragility/1"
# versions in a scenario pass: v1, v2 clean, then v1, v2 under the faults (bits label|3|2|1|0)
DID = ((3, 1.0), (1, -1.0), (2, -1.0), (0, 1.0))  # (v2 under - v2) - (v1 under - v1)


def _swapped(cell: int) -> int:
    """The cell a row moves to when v1 and v2 trade places (clean and under the fault)."""
    label, a, b, c, d = cell >> 4, (cell >> 3) & 1, (cell >> 2) & 1, (cell >> 1) & 1, cell & 1
    return label << 4 | b << 3 | a << 2 | d << 1 | c


SWAPS = tuple((i, _swapped(i)) for i in range(32) if i < _swapped(i))


SCENARIO_FAILED = "scenario {scenario!r}: {version} failed to predict on the faulted rows: {reason}"


class ScenarioFailed(VersionError):
    """A version could not predict on the rows a scenario's faults changed (a model that cannot
    take a null, say). A result, not bad input: that scenario's cells are ``error``, the other
    scenarios run, and the command exits 3 (verdicts unknown)."""

    exit_code = 3

    def __init__(self, scenario: str, version: str, reason: str) -> None:
        super().__init__(scenario, version, reason)  # args: so it pickles back from a worker
        self.scenario, self.version, self.reason = scenario, version, reason

    def __str__(self) -> str:
        return SCENARIO_FAILED.format(
            scenario=self.scenario, version=self.version, reason=self.reason
        )


@dataclass(frozen=True)
class OfflineScenario:
    """A scenario's payload faults, each with its toxicity (the share of rows it hits)."""

    name: str
    path: Path
    faults: tuple[tuple[PayloadFault, float], ...]
    transport: tuple[str, ...] = ()  # fault types that act on connections: no offline effect

    @property
    def applicable(self) -> bool:
        return bool(self.faults)

    @property
    def changes_features(self) -> bool:
        return any(isinstance(fault, RequestFault) for fault, _ in self.faults)

    @property
    def stale_versions(self) -> list[str]:
        routes = [f.route() for f, _ in self.faults if isinstance(f, ResponseFault)]
        return [r.version for r in routes if r is not None and r.version]


def offline_scenarios(paths: Sequence[str | Path]) -> list[OfflineScenario]:
    """Scenario files (and folders of them), validated as for a game day, as offline faults."""
    out = []
    for file in load_scenarios([Path(p) for p in paths]):
        faults, transport = [], []
        for spec in file.scenario.faults:
            fault = spec.fault
            if "offline" in fault.places():  # the catalogue says where each fault can run
                faults.append((cast(PayloadFault, fault), spec.toxicity))
            else:
                transport.append(spec.type)
        out.append(OfflineScenario(file.scenario.name, file.path, tuple(faults), tuple(transport)))
    return out


@dataclass
class UnderFault:
    """``base``'s answers on the rows with ``scenario``'s faults applied: a ``Version``.

    Request faults need the model itself (an artifact version); response faults also apply to
    precomputed predictions. A null answer (``nan_prediction``) counts as wrong."""

    base: Version
    scenario: OfflineScenario
    seed: int
    index: int = 0  # which scenario: each has its own stream of random choices
    others: Mapping[str, Version] = field(default_factory=dict)  # stale_model's versions

    def __post_init__(self) -> None:
        self.name = f"{self.base.name} under {self.scenario.name}"
        if self.scenario.changes_features and not isinstance(self.base, ArtifactVersion):
            raise InputError(
                f"scenario {self.scenario.name!r} changes the model's inputs, and version "
                f"{self.base.name!r} is precomputed predictions: give a model artifact"
            )
        for name in self.scenario.stale_versions:
            if name not in self.others:
                known = ", ".join(self.others) or "none"
                raise InputError(
                    f"{self.scenario.path}: stale_model version {name!r} is not a version here "
                    f"(known: {known})"
                )

    def feature_columns(
        self, table: DataSource, label: str, positive: Scalar, *, cached: bool = True
    ) -> list[str]:
        columns: list[str] = []
        if self.scenario.changes_features:
            assert isinstance(self.base, ArtifactVersion)
            columns += self.base.model_columns(table, label)
        else:
            columns += self.base.feature_columns(table, label, positive, cached=cached)
        for fault, _ in self.scenario.faults:
            columns += [c for c in fault.reads() or () if c in table.columns]
        for name in self.scenario.stale_versions:
            columns += self.others[name].feature_columns(table, label, positive, cached=cached)
        return list(dict.fromkeys(columns))

    @contextmanager
    def predictor(self, table: DataSource, label: str, positive: Scalar) -> Iterator[Predictor]:
        with ExitStack() as stack:
            if self.scenario.changes_features:
                assert isinstance(self.base, ArtifactVersion)
                answer = self.base.fresh_predictor(table, label, positive)
            else:
                answer = stack.enter_context(self.base.predictor(table, label, positive))
            stale = {
                name: stack.enter_context(self.others[name].predictor(table, label, positive))
                for name in self.scenario.stale_versions
            }
            faulting = self._faulting(label, positive)
            offset = 0

            def predict(chunk: pd.DataFrame) -> Predictions:
                nonlocal offset
                offset += len(chunk)
                return faulting.answer(chunk, offset - len(chunk), answer, stale)

            yield predict

    def part_predictor(self, table: DataSource, label: str, positive: Scalar) -> PartPredictor:
        return _FaultedRows(
            self._faulting(label, positive),
            self.base.part_predictor(table, label, positive),
            {
                name: self.others[name].part_predictor(table, label, positive)
                for name in self.scenario.stale_versions
            },
        )

    def _faulting(self, label: str, positive: Scalar) -> Faulting:
        return Faulting(
            self.scenario.faults,
            self.seed,
            self.index,
            label,
            positive,
            self.scenario.name,
            self.base.name,
        )


def fault_blocks(start: int, rows: int) -> list[tuple[int, int]]:
    """The pieces of rows ``start`` to ``start + rows`` cut at multiples of ``FAULT_BLOCK``."""
    cuts = range((start // FAULT_BLOCK + 1) * FAULT_BLOCK, start + rows, FAULT_BLOCK)
    edges = [start, *cuts, start + rows]
    return [(lo, hi) for lo, hi in itertools.pairwise(edges) if hi > lo]


@dataclass(frozen=True)
class Faulting:
    """A scenario's faults on a range of rows. Random choices come from one generator per block of
    ``FAULT_BLOCK`` rows, seeded by (seed, scenario, the block's first row): the rows a fault hits
    depend on where the rows are in the table, not on how a pass or an engine cut it into chunks."""

    faults: tuple[tuple[PayloadFault, float], ...]
    seed: int
    index: int
    label: str
    positive: Scalar
    scenario: str = ""
    version: str = ""

    def answer(
        self,
        chunk: pd.DataFrame,
        start: int,
        answer: Predictor,
        stale: Mapping[str, Predictor],
    ) -> Predictions:
        blocks = fault_blocks(start, len(chunk))
        rngs = [np.random.default_rng([self.seed, self.index, lo]) for lo, _ in blocks]
        rows = chunk
        if any(isinstance(fault, RequestFault) for fault, _ in self.faults):
            pieces = []
            for (lo, hi), rng in zip(blocks, rngs, strict=True):
                piece = chunk.iloc[lo - start : hi - start]
                for fault, toxicity in self.faults:
                    if isinstance(fault, RequestFault):
                        piece, _, _ = apply_offline(fault, piece, toxicity=toxicity, rng=rng)
                pieces.append(piece)
            rows = pd.concat(pieces) if len(pieces) > 1 else pieces[0]
        try:
            before = answer(rows)  # the chunk itself when no fault changed it
            old = {name: stale[name](rows) for name in stale}
        except VersionError as exc:
            if rows is chunk:  # the clean rows: not the scenario's doing
                raise
            cause = exc.__cause__ or exc
            reason = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
            raise ScenarioFailed(self.scenario, self.version, reason) from exc
        labels: np.ndarray = before.positive.astype(np.int64)
        scores = before.score
        if any(not isinstance(fault, RequestFault) for fault, _ in self.faults):
            label_parts: list[np.ndarray] = []
            score_parts: list[np.ndarray] = []
            for (lo, hi), rng in zip(blocks, rngs, strict=True):
                span = slice(lo - start, hi - start)
                part = self._answers(rows.iloc[span], labels[span], scores, span, old, rng)
                label_parts.append(part[0])
                if part[1] is not None:
                    score_parts.append(part[1])
            labels = np.concatenate(label_parts) if label_parts else labels
            if scores is not None:
                scores = np.concatenate(score_parts) if score_parts else scores
        truth = np.asarray(chunk[self.label] == self.positive)
        answered = ~pd.isna(labels)
        said = np.where(answered, labels, 0)
        is_positive = np.where(answered, said == 1, ~truth)  # no answer: a wrong one
        if scores is not None:  # no score: the wrong end of the scale
            score = np.asarray(scores, dtype=np.float64)
            scores = np.where(np.isfinite(score), score, np.where(truth, 0.0, 1.0))
        return Predictions(is_positive.astype(bool), scores)

    def _answers(
        self,
        rows: pd.DataFrame,
        labels: np.ndarray,
        all_scores: np.ndarray | None,
        span: slice,
        old: Mapping[str, Predictions],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        scores = None if all_scores is None else all_scores[span]
        for fault, toxicity in self.faults:
            route = fault.route() if isinstance(fault, ResponseFault) else None
            if route is not None and route.version is not None:
                stale = old[route.version]
                hit = (rng.random(len(rows)) < toxicity) & fault.rows(rows, len(rows), rng)
                labels = np.where(hit, stale.positive[span].astype(np.int64), labels)
                if scores is not None and stale.score is not None:
                    scores = np.where(hit, stale.score[span], scores)
            elif isinstance(fault, ResponseFault):
                _, new, scores = apply_offline(
                    fault, rows, labels, scores, toxicity=toxicity, rng=rng
                )
                labels = labels if new is None else new
        return labels, scores


@dataclass(frozen=True)
class _FaultedRows:
    faulting: Faulting
    base: PartPredictor
    stale: Mapping[str, PartPredictor]

    def __call__(self, rows: pd.DataFrame, start: int) -> Predictions:
        return self.faulting.answer(
            rows,
            start,
            lambda frame: self.base(frame, start),
            {name: functools.partial(part, start=start) for name, part in self.stale.items()},
        )


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Pass:
    """One scenario's pass: per slice, the 32 cells label|v1|v2|v1 under|v2 under, the slice's
    ``min_size``, and whether the scenario is judged (it changes the model's inputs)."""

    cells: IntArray
    min_sizes: IntArray
    compared: bool


@dataclass(frozen=True)
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
            others,
            seed,
            n_boot,
            correction,
            config,
            chunk_rows,
            progress,
            runner,
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
            others,
            seed,
            n_boot,
            correction,
            config,
            chunk_rows,
            None if progress is None else lambda scenario: progress,
            runner,
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
    return UnderFaults(comparison, replace(cells, cells=new_cells, family=family, joint=True))


def _fragility(
    suite: SliceSuite,
    versions: Sequence[Version],
    data: object,
    scenarios: Sequence[OfflineScenario],
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
        faulted = [UnderFault(v, scenario, seed, index, known) for v in versions]
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
            family.append(Pass(stats.cells, sizes, scenario.changes_features))
    ran = [cells for cells in per_scenario if cells and cells[0].error is None]
    judged: list[Cell] = [c for cells in ran for c in cells]
    if len(versions) == 2 and family:
        judged = _compare(judged, family, metric, suite, correction, seed, n_boot)
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


def did_p_values(ones: IntArray, twos: IntArray, observed: IntArray) -> FloatArray:
    """Exact sign-flip p-values of sum(d) = ``observed`` with ``ones`` rows of |d| = 1 and
    ``twos`` rows of |d| = 2, each as likely +d as -d, at any number of rows.

    With K1 ~ Binomial(ones, 1/2) of the |d| = 1 rows and K2 ~ Binomial(twos, 1/2) of the
    |d| = 2 rows positive, sum(d) = (2 K1 - ones) + 2 (2 K2 - twos): for each K2 the tail of K1 is
    a binomial CDF, so the p-value is one sum over K2, taken in log space (no normal limit, no
    underflow down to ``P_FLOOR``)."""
    out = np.ones(len(ones))
    for i, (a, b, t) in enumerate(zip(ones, twos, observed, strict=True)):
        if a + b == 0 or t == 0:
            continue
        a, b, target = int(a), int(b), abs(int(t))
        kb = np.arange(b + 1, dtype=np.float64)
        log_w = log_binom_pmf(kb, b)
        kb, log_w = kb[log_w > log_w.max() - 745], log_w[log_w > log_w.max() - 745]
        shift = 2 * (2 * kb - b)
        up = np.ceil((target + a - shift) / 2)  # K1 >= up, i.e. by symmetry K1 <= a - up
        down = np.floor((a - shift - target) / 2)  # K1 <= down
        log_tail = np.logaddexp(log_binom_cdf(a - up, a), log_binom_cdf(down, a))
        out[i] = floored(special.logsumexp(log_w + log_tail))[()]
    return out


def _compare(
    cells: list[Cell],
    family: list[Pass],
    metric: Metric,
    suite: SliceSuite,
    correction: Literal["holm", "bh"] | None,
    seed: int,
    n_boot: int,
) -> list[Cell]:
    policy = suite.compare
    counts = np.concatenate([p.cells for p in family])
    min_sizes = np.concatenate([p.min_sizes for p in family])
    compared = np.concatenate([np.full(len(p.cells), p.compared) for p in family])
    delta = np.array([_delta(c) for c in cells], dtype=np.float64)
    if metric.proportion:  # a per-row score: the exact two-dimensional sign-flip grid
        e = [events(metric, 4, v) for v in range(4)]
        d = (e[3] - e[1]) - (e[2] - e[0])  # per cell pattern: v2's change - v1's change
        d = np.where(np.isnan(d), 0, d)
        ones = counts @ (np.abs(d) == 1).astype(np.int64)
        twos = counts @ (np.abs(d) == 2).astype(np.int64)
        p_values = did_p_values(ones, twos, (counts @ d).astype(np.int64))
        discordant = ones + twos
    else:  # a ratio: the studentized permutation test over the cells a swap exchanges
        p_values = permutation_p_values(
            lambda x: studentized(metric, x, DID, n_versions=4), counts, SWAPS
        )
        discordant = swappable(counts, SWAPS)
    low = high = np.full(len(cells), np.nan)
    if n_boot > 0:
        boot = bootstrap_cells(counts, n_boot, np.random.default_rng(seed))
        value = [metric.value(*confusion(boot, 4, v)) for v in range(4)]
        replicates = (value[3] - value[1]) - (value[2] - value[0])
        low, high = percentile_interval(replicates, policy.confidence)
    defined = np.isfinite(delta)
    # with fewer discordant rows than any test needs, every replicate moves the same few rows:
    # the percentile interval is too narrow to be trusted, so none is given (inconclusive)
    trusted = defined & (discordant >= min_discordant(policy.alpha))
    low, high = np.where(trusted, low, np.nan), np.where(trusted, high, np.nan)
    p_values = np.where(defined & compared, p_values, np.nan)
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
