"""``slices compare v1 v2``: per-slice paired comparison of two versions on the same rows.

Per slice: the delta v2 - v1 of the suite's compared metric, a paired test and a per-slice interval
(``chaosml.slices.stats.metric``: McNemar's exact test and Newcombe's score interval for proportion metrics;
an exact paired permutation test and a score interval for ratio metrics: Newcombe's intervals of
balanced accuracy's two halves combined, a MOVER interval of effective-size Wilson intervals for
precision and F1), p-values adjusted across every row that can fail the gate, the overall row
included (Holm or Benjamini-Hochberg), and a verdict:

- *too_small*: fewer than ``min_size`` rows;
- *undefined*: the metric is undefined for a version (no positives for recall, no positive
  predictions for precision): there is nothing to compare, and no p-value;
- *inconclusive*: the versions differ on fewer than ``min_discordant(alpha)`` of the rows the test
  uses (none included), too few for any test to reach ``alpha`` even before correction; the delta
  is shown, undecided, with Newcombe's interval for a proportion metric and no interval for a ratio
  metric (none is honest with so few rows: its delta-method correlation is near 1);
- *error*: a scenario's faults made a version fail to predict (fragility cells only);
- *regressed*: adjusted p below ``alpha`` **and** the metric worse by more than ``max_drop``;
  *improved* likewise the other way; *unchanged* otherwise.

Slices that cannot reach ``alpha`` (too small, undefined, inconclusive, or no discordant row) are left
out of the correction's family, as Tarone (1990) showed one may for discrete tests: they could never be
rejected, and counting them would only make the others harder to flag.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from chaosml.config import ProjectConfig
from chaosml.data import DEFAULT_CHUNK_ROWS
from chaosml.endpoint import EndpointVersion
from chaosml.errors import InputError
from chaosml.slices.collect import AUC_BOUND, Evaluation, evaluate
from chaosml.slices.engines import Engine, Progress
from chaosml.slices.metrics import METRICS, PairedTest, as_number
from chaosml.slices.stats import Verdict, judge, paired_tests
from chaosml.slices.suite import SliceSuite
from chaosml.versions import Version


@dataclass(frozen=True, kw_only=True)
class SliceComparison:
    """One slice's comparison. ``v1``/``v2``/``delta``/``ci`` are of the compared metric."""

    name: str
    where: str
    n: int
    # rows the paired test uses on which the versions' answers differ: for a proportion metric the
    # rows it counts (positives for recall) where its event differs; for a ratio, every such row
    discordant: int
    v1: float | None
    v2: float | None
    delta: float | None
    ci: tuple[float, float] | None
    p_value: float | None
    p_adjusted: float | None
    verdict: Verdict
    metrics: dict[str, dict[str, float | None]]  # {"v1": {metric: value}, "v2": {...}}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ci"] = list(self.ci) if self.ci is not None else None
        return data


@dataclass(frozen=True, kw_only=True)
class SliceEquivalence:
    """One slice of an equivalence check: how many rows got the same label from both versions,
    and the largest score difference (None when a version gives no scores)."""

    name: str
    n: int
    same_labels: int
    max_score_diff: float | None
    equivalent: bool

    @property
    def share(self) -> float:
        return self.same_labels / self.n if self.n else 1.0


@dataclass(frozen=True, kw_only=True)
class Equivalence:
    """Whether two versions answer the same (a served endpoint and its artifact): every row the
    same label, and scores within ``tolerance``, in every slice."""

    tolerance: float
    slices: list[SliceEquivalence]  # overall first
    scores: bool  # both versions gave scores, so they were compared

    @property
    def equivalent(self) -> bool:
        return all(s.equivalent for s in self.slices)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tolerance": self.tolerance,
            "equivalent": self.equivalent,
            "scores_compared": self.scores,
            "slices": [asdict(s) | {"share_same_labels": s.share} for s in self.slices],
        }


def equivalence(evaluation: Evaluation, tolerance: float) -> Equivalence:
    """Label agreement per slice from the joint cells (rows where v1 and v2 predict alike) and
    the largest score gap the pass kept."""
    stats = evaluation.stats
    bits = np.arange(stats.cells.shape[1])
    alike = ((bits >> 1) & 1) == (bits & 1)  # cell = label << 2 | v1 << 1 | v2
    same = stats.cells[:, alike].sum(axis=1)
    gaps = stats.maxdiff
    rows = []
    for i, info in enumerate(stats.slices):
        gap = None if gaps is None else float(gaps[i])
        rows.append(
            SliceEquivalence(
                name=info.name,
                n=int(stats.n[i]),
                same_labels=int(same[i]),
                max_score_diff=gap,
                equivalent=bool(same[i] == stats.n[i]) and (gap is None or gap <= tolerance),
            )
        )
    return Equivalence(tolerance=tolerance, slices=rows, scores=gaps is not None)


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """The comparison of two versions over a suite's slices."""

    suite: str
    data: str
    label: str
    v1_name: str
    v2_name: str
    metric: str
    test: PairedTest
    alpha: float
    max_drop: float
    correction: Literal["holm", "bh"]
    confidence: float
    n_boot: int
    seed: int
    min_discordant: int
    overall: SliceComparison
    slices: list[SliceComparison]
    family: int = 0  # rows (and fragility cells, with --scenarios) in the correction's family
    joint: bool = False  # the family also holds the (slice, scenario) cells of a fragility run
    equivalence: Equivalence | None = None  # with a served endpoint, or a tolerance given

    @property
    def regressed(self) -> list[SliceComparison]:
        return [s for s in [self.overall, *self.slices] if s.verdict == "regressed"]

    @property
    def improved(self) -> list[SliceComparison]:
        return [s for s in [self.overall, *self.slices] if s.verdict == "improved"]

    @property
    def passed(self) -> bool:
        """No slice regressed (and, when equivalence was checked, the versions are equivalent)."""
        equivalent = self.equivalence is None or self.equivalence.equivalent
        return not self.regressed and equivalent

    @property
    def by_slice(self) -> pd.DataFrame:
        """One row per slice (overall first): n, v1, v2, delta, CI, p-values, verdict."""
        rows = [self.overall, *self.slices]
        frame = pd.DataFrame(
            {
                "n": [r.n for r in rows],
                "discordant": [r.discordant for r in rows],
                "v1": [r.v1 for r in rows],
                "v2": [r.v2 for r in rows],
                "delta": [r.delta for r in rows],
                "ci_low": [r.ci[0] if r.ci else None for r in rows],
                "ci_high": [r.ci[1] if r.ci else None for r in rows],
                "p_value": [r.p_value for r in rows],
                "p_adjusted": [r.p_adjusted for r in rows],
                "verdict": [r.verdict for r in rows],
            },
            index=pd.Index([r.name for r in rows], name="slice"),
        )
        return frame

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "chaosml.slices.compare/2",
            "suite": self.suite,
            "data": self.data,
            "label": self.label,
            "v1": self.v1_name,
            "v2": self.v2_name,
            "metric": self.metric,
            "test": self.test,
            "alpha": self.alpha,
            "max_drop": self.max_drop,
            "correction": self.correction,
            "confidence": self.confidence,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "min_discordant": self.min_discordant,
            "family": self.family,
            "family_includes_fragility_cells": self.joint,
            "passed": self.passed,
            "regressed": [s.name for s in self.regressed],
            "overall": self.overall.to_dict(),
            "slices": [s.to_dict() for s in self.slices],
        } | ({"equivalence": self.equivalence.to_dict()} if self.equivalence else {})


DEFAULT_TOLERANCE = (
    1e-6  # the largest score difference a served model may show against its artifact
)


def compare_versions(
    suite: SliceSuite,
    v1: Version,
    v2: Version,
    data: object,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    correction: Literal["holm", "bh"] | None = None,
    config: ProjectConfig | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Progress | None = None,
    engine: Engine | str | None = None,
    tolerance: float | None = None,
) -> Comparison:
    """Compare ``v2`` against ``v1`` on every slice of ``suite``, paired on the same rows.

    With a ``tolerance`` (by default 1e-6 when a version is a served endpoint) it also checks
    equivalence: per slice, the rows both label alike and the largest score difference; the
    comparison passes only if every row agrees and every score is within the tolerance.

    ``data`` and ``engine`` are as for ``evaluate``: a path, a pandas, Dask or Spark DataFrame;
    the pass runs locally, on Dask or on Spark, with the same result. Every interval of a clean
    comparison is a score interval; ``n_boot`` and ``seed`` are recorded with it and seed the
    bootstrap of a fragility comparison run alongside (``compare_under_faults``)."""
    policy = suite.compare
    if n_boot < 0:
        raise InputError("n_boot must be >= 0")
    if v1.name == v2.name:
        raise InputError(
            f"both versions are labelled {v1.name!r}: give them distinct names, or the report "
            "cannot tell them apart"
        )
    correction = correction or policy.correction
    if tolerance is None and any(isinstance(v, EndpointVersion) for v in (v1, v2)):
        tolerance = DEFAULT_TOLERANCE
    if tolerance is not None and not tolerance >= 0:
        raise InputError(f"tolerance must be >= 0, not {tolerance}")
    evaluation = evaluate(
        suite,
        data,
        [v1, v2],
        config=config,
        chunk_rows=chunk_rows,
        progress=progress,
        engine=engine,
        score_gaps=tolerance is not None,
    )
    stats, cells = evaluation.stats, evaluation.stats.cells
    metric = METRICS[policy.metric]
    first, second = evaluation.metric(metric.name, 0), evaluation.metric(metric.name, 1)
    delta = second - first

    tested = paired_tests(metric, cells, delta, confidence=policy.confidence, alpha=policy.alpha)
    discordant, p_values = tested.discordant, tested.p_values

    big_enough = stats.n >= np.array([info.min_size for info in stats.slices])
    p_adjusted, verdicts, needed = judge(
        delta,
        p_values,
        discordant=discordant,
        big_enough=big_enough,
        correction=correction,
        direction=metric.direction,
        alpha=policy.alpha,
        max_drop=policy.max_drop,
    )
    per_version = _per_version(suite, evaluation)
    rows = [
        SliceComparison(
            name=info.name,
            where=info.where,
            n=int(stats.n[i]),
            discordant=int(discordant[i]),
            v1=as_number(first[i]),
            v2=as_number(second[i]),
            delta=as_number(delta[i]),
            ci=None if math.isnan(tested.low[i]) else (float(tested.low[i]), float(tested.high[i])),
            p_value=as_number(p_values[i]),
            p_adjusted=as_number(p_adjusted[i]),
            verdict=verdicts[i],
            metrics=_metrics_at(per_version, i),
        )
        for i, info in enumerate(stats.slices)
    ]
    return Comparison(
        suite=str(suite.path or "<suite>"),
        data=evaluation.data,
        label=evaluation.label,
        v1_name=v1.name,
        v2_name=v2.name,
        metric=metric.name,
        test=metric.paired_test,
        alpha=policy.alpha,
        max_drop=policy.max_drop,
        correction=correction,
        confidence=policy.confidence,
        n_boot=n_boot,
        seed=seed,
        min_discordant=needed,
        overall=rows[0],
        slices=rows[1:],
        family=int(np.isfinite(p_adjusted).sum()),
        equivalence=None if tolerance is None else equivalence(evaluation, tolerance),
    )


def _per_version(suite: SliceSuite, evaluation: Evaluation) -> dict[str, dict[str, np.ndarray]]:
    """Every metric of the suite per slice, for each version; beside every AUC, the bound on
    its binning error."""
    per_version = {
        key: {name: evaluation.metric(name, v) for name in suite.all_metrics}
        for v, key in enumerate(("v1", "v2"))
    }
    if "roc_auc" in suite.all_metrics:
        for v, key in enumerate(("v1", "v2")):
            auc = per_version[key]["roc_auc"]
            per_version[key][AUC_BOUND] = np.where(
                np.isfinite(auc), evaluation.auc_error(v), np.nan
            )
    return per_version


def _metrics_at(
    per_version: dict[str, dict[str, np.ndarray]], i: int
) -> dict[str, dict[str, float | None]]:
    return {
        key: {name: as_number(values[i]) for name, values in by_metric.items()}
        for key, by_metric in per_version.items()
    }
