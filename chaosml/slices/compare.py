"""``slices compare v1 v2``: per-slice paired comparison of two versions on the same rows.

Per slice: the delta v2 - v1 of the suite's compared metric, a paired bootstrap interval computed from
the slice's cell counts, a paired test (McNemar's exact test where the metric is a proportion of a
fixed set of rows: accuracy on all rows, recall on positives, false positive rate on negatives,
selection rate on predictions; a bootstrap test otherwise), p-values adjusted across slices (Holm or
Benjamini-Hochberg; the overall row is reported unadjusted) and a verdict. A slice *regressed* when its
adjusted p-value is below ``alpha`` **and** the metric got worse by more than ``max_drop``; *improved*
likewise in the other direction; *too_small* below ``min_size`` rows; *unchanged* otherwise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from chaosml.config import ProjectConfig
from chaosml.data import DEFAULT_CHUNK_ROWS
from chaosml.errors import InputError
from chaosml.slices.collect import Progress, evaluate
from chaosml.slices.engine import IntArray, confusion
from chaosml.slices.metrics import METRICS, Metric, PairedTest, as_number
from chaosml.slices.stats import (
    adjust,
    bootstrap_cells,
    bootstrap_p_value,
    mcnemar_exact,
    percentile_interval,
)
from chaosml.slices.suite import SliceSuite
from chaosml.versions import Version

Verdict = Literal["regressed", "improved", "unchanged", "too_small"]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SliceComparison:
    """One slice's comparison. ``v1``/``v2``/``delta``/``ci`` are of the compared metric."""

    name: str
    where: str
    n: int
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


@dataclass(frozen=True)
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
    overall: SliceComparison
    slices: list[SliceComparison]

    @property
    def regressed(self) -> list[SliceComparison]:
        return [s for s in [self.overall, *self.slices] if s.verdict == "regressed"]

    @property
    def improved(self) -> list[SliceComparison]:
        return [s for s in [self.overall, *self.slices] if s.verdict == "improved"]

    @property
    def passed(self) -> bool:
        return not self.regressed

    @property
    def by_slice(self) -> pd.DataFrame:
        """One row per slice (overall first): n, v1, v2, delta, CI, p-values, verdict."""
        rows = [self.overall, *self.slices]
        frame = pd.DataFrame(
            {
                "n": [r.n for r in rows],
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
            "schema": "chaosml.slices.compare/1",
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
            "passed": self.passed,
            "regressed": [s.name for s in self.regressed],
            "overall": self.overall.to_dict(),
            "slices": [s.to_dict() for s in self.slices],
        }


def compare_versions(
    suite: SliceSuite,
    v1: Version,
    v2: Version,
    data: str | Path | pd.DataFrame,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    correction: Literal["holm", "bh"] | None = None,
    config: ProjectConfig | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Progress | None = None,
) -> Comparison:
    """Compare ``v2`` against ``v1`` on every slice of ``suite``, paired on the same rows."""
    policy = suite.compare
    if n_boot < 0 or (n_boot == 0 and METRICS[policy.metric].paired_test == "bootstrap"):
        raise InputError(
            f"n_boot must be > 0: {policy.metric} is compared with a bootstrap test"
            if n_boot == 0
            else "n_boot must be >= 0"
        )
    correction = correction or policy.correction
    evaluation = evaluate(
        suite, data, [v1, v2], config=config, chunk_rows=chunk_rows, progress=progress
    )
    stats = evaluation.stats
    metric = METRICS[policy.metric]
    first, second = evaluation.metric(metric.name, 0), evaluation.metric(metric.name, 1)
    delta = second - first

    ci_low = ci_high = np.full(len(stats.slices), np.nan)
    replicates = None
    if n_boot > 0:
        boot = bootstrap_cells(stats.cells, n_boot, np.random.default_rng(seed))
        replicates = _metric(metric, boot, 1) - _metric(metric, boot, 0)
        ci_low, ci_high = percentile_interval(replicates, policy.confidence)
    p_values = paired_p_values(metric, stats.cells, replicates)

    min_sizes = np.array([info.min_size for info in stats.slices])
    eligible = (stats.n >= min_sizes) & np.isfinite(delta)
    family = np.where(eligible, p_values, np.nan)
    family[0] = np.nan
    p_adjusted = adjust(family, correction)
    p_adjusted[0] = p_values[0] if eligible[0] else np.nan

    verdicts = verdict(
        delta,
        p_adjusted,
        eligible=stats.n >= min_sizes,
        direction=metric.direction,
        alpha=policy.alpha,
        max_drop=policy.max_drop,
    )
    per_version = {
        key: {name: evaluation.metric(name, v) for name in suite.all_metrics}
        for v, key in enumerate(("v1", "v2"))
    }
    rows = [
        SliceComparison(
            name=info.name,
            where=info.where,
            n=int(stats.n[i]),
            v1=as_number(first[i]),
            v2=as_number(second[i]),
            delta=as_number(delta[i]),
            ci=None if math.isnan(ci_low[i]) else (float(ci_low[i]), float(ci_high[i])),
            p_value=as_number(p_values[i]),
            p_adjusted=as_number(p_adjusted[i]),
            verdict=verdicts[i],
            metrics={
                key: {name: as_number(values[i]) for name, values in by_metric.items()}
                for key, by_metric in per_version.items()
            },
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
        overall=rows[0],
        slices=rows[1:],
    )


def _metric(metric: Metric, cells: IntArray, version: int) -> FloatArray:
    assert metric.confusion is not None
    return metric.confusion(*confusion(cells, 2, version))


def paired_p_values(metric: Metric, cells: IntArray, replicates: FloatArray | None) -> FloatArray:
    """Two-sided p-values of "no difference" per slice, by the metric's paired test."""
    if metric.paired_test == "bootstrap":
        if replicates is None:
            return np.full(len(cells), np.nan)
        return bootstrap_p_value(replicates)
    bits = np.arange(cells.shape[-1])
    label, first, second = (bits >> 2) & 1, (bits >> 1) & 1, bits & 1
    if metric.paired_test == "mcnemar_selection":
        only_first, only_second = (first == 1) & (second == 0), (first == 0) & (second == 1)
    else:
        rows = {
            "mcnemar_all": label >= 0,
            "mcnemar_positives": label == 1,
            "mcnemar_negatives": label == 0,
        }[metric.paired_test]
        right1, right2 = first == label, second == label
        only_first, only_second = rows & right1 & ~right2, rows & ~right1 & right2
    return mcnemar_exact(cells[:, only_first].sum(axis=1), cells[:, only_second].sum(axis=1))


def verdict(
    delta: FloatArray,
    p_adjusted: FloatArray,
    *,
    eligible: npt.NDArray[np.bool_],
    direction: int,
    alpha: float,
    max_drop: float,
) -> list[Verdict]:
    """Regressed/improved need significance and a change beyond ``max_drop`` in that direction."""
    out: list[Verdict] = []
    for d, p, ok in zip(delta, p_adjusted, eligible, strict=True):
        better = direction * d
        if not ok:
            out.append("too_small")
        elif p < alpha and better < -max_drop:
            out.append("regressed")
        elif p < alpha and better > max_drop:
            out.append("improved")
        else:
            out.append("unchanged")
    return out
