"""``slices compare v1 v2``: per-slice paired comparison of two versions on the same rows.

Per slice: the delta v2 - v1 of the suite's compared metric, a paired test and a per-slice interval
(``chaosml.slices.stats``: McNemar's exact test and Newcombe's score interval for proportion metrics;
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
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import special

from chaosml.config import ProjectConfig
from chaosml.data import DEFAULT_CHUNK_ROWS
from chaosml.errors import InputError
from chaosml.slices.collect import AUC_BOUND, evaluate
from chaosml.slices.engines import Engine, Progress
from chaosml.slices.metrics import METRICS, Metric, PairedTest, as_number
from chaosml.slices.stats import (
    adjust,
    effective_wilson,
    mcnemar_exact,
    min_discordant,
    mover,
    newcombe_interval,
    permutation_p_values,
    swappable,
)
from chaosml.slices.suite import SliceSuite
from chaosml.slices.sums import IntArray, quadrants
from chaosml.versions import Version

Verdict = Literal[
    "regressed", "improved", "unchanged", "inconclusive", "undefined", "too_small", "error"
]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
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
    min_discordant: int
    overall: SliceComparison
    slices: list[SliceComparison]
    family: int = 0  # rows (and fragility cells, with --scenarios) in the correction's family
    joint: bool = False  # the family also holds the (slice, scenario) cells of a fragility run

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
        }


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
) -> Comparison:
    """Compare ``v2`` against ``v1`` on every slice of ``suite``, paired on the same rows.

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
    evaluation = evaluate(
        suite,
        data,
        [v1, v2],
        config=config,
        chunk_rows=chunk_rows,
        progress=progress,
        engine=engine,
    )
    stats, cells = evaluation.stats, evaluation.stats.cells
    metric = METRICS[policy.metric]
    first, second = evaluation.metric(metric.name, 0), evaluation.metric(metric.name, 1)
    delta = second - first

    if metric.proportion:
        discordant = swappable_events(metric, cells)
        p_values = mcnemar_exact(*paired_table(metric, cells)[1:3])
    else:
        discordant = swappable(cells)
        p_values = permutation_p_values(lambda x: studentized(metric, x), cells)
    ci_low, ci_high = interval(metric, cells, policy.confidence)
    needed = min_discordant(policy.alpha)
    defined = np.isfinite(delta)
    trusted = defined & (metric.proportion | (discordant >= needed))
    ci_low, ci_high = np.where(trusted, ci_low, np.nan), np.where(trusted, ci_high, np.nan)
    p_values = np.where(defined, p_values, np.nan)

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
    per_version = {
        key: {name: evaluation.metric(name, v) for name in suite.all_metrics}
        for v, key in enumerate(("v1", "v2"))
    }
    if "roc_auc" in suite.all_metrics:  # beside every AUC, the bound on its binning error
        for v, key in enumerate(("v1", "v2")):
            auc = per_version[key]["roc_auc"]
            per_version[key][AUC_BOUND] = np.where(
                np.isfinite(auc), evaluation.auc_error(v), np.nan
            )
    rows = [
        SliceComparison(
            name=info.name,
            where=info.where,
            n=int(stats.n[i]),
            discordant=int(discordant[i]),
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
        min_discordant=needed,
        overall=rows[0],
        slices=rows[1:],
        family=int(np.isfinite(p_adjusted).sum()),
    )


def events(metric: Metric, n_versions: int, version: int) -> FloatArray:
    """Per cell (bits label|version 0|version 1|...): 1 if ``version``'s answer is a proportion
    metric's event (its numerator: a right answer, a false positive, a positive prediction) in a
    row the metric counts, 0 if not, NaN if the metric does not count the row."""
    quads = quadrants(n_versions, version)
    ratio = metric.ratios[0]
    counted, event = quads @ np.array(ratio.den), quads @ np.array(ratio.num)
    return np.where(counted > 0, event, np.nan)


def paired_table(metric: Metric, cells: IntArray) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """A proportion metric's paired 2x2 table per slice, over the rows it counts: the event under
    both versions, v1 only, v2 only, neither (the rows it counts depend on the label alone)."""
    e1, e2 = events(metric, 2, 0), events(metric, 2, 1)
    masks = [
        (e1 == 1) & (e2 == 1),
        (e1 == 1) & (e2 == 0),
        (e1 == 0) & (e2 == 1),
        (e1 == 0) & (e2 == 0),
    ]
    a, b, c, d = (cells[:, mask].sum(axis=1) for mask in masks)
    return a, b, c, d


def swappable_events(metric: Metric, cells: IntArray) -> IntArray:
    """A proportion metric's discordant rows: those it counts on which its event differs."""
    _, b, c, _ = paired_table(metric, cells)
    moved: IntArray = b + c
    return moved


def interval(metric: Metric, cells: IntArray, confidence: float) -> tuple[FloatArray, FloatArray]:
    """The delta's score interval per slice: Newcombe's for a proportion; for a weighted sum of
    proportions on disjoint rows (balanced accuracy), its parts' Newcombe intervals combined (they
    are independent); for any other ratio, a MOVER interval of each version's effective-size
    Wilson interval with their delta-method correlation."""
    if metric.proportion:
        return newcombe_interval(*paired_table(metric, cells), confidence)
    if metric.parts:
        center = np.zeros(len(cells))
        below, above = np.zeros(len(cells)), np.zeros(len(cells))
        for weight, part in metric.parts:
            a, b, c, d = paired_table(part, cells)
            with np.errstate(all="ignore"):
                part_delta = (c - b) / (a + b + c + d)
            low, high = newcombe_interval(a, b, c, d, confidence)
            center += weight * part_delta
            below += (weight * (part_delta - low)) ** 2
            above += (weight * (high - part_delta)) ** 2
        return np.maximum(center - np.sqrt(below), -1.0), np.minimum(center + np.sqrt(above), 1.0)
    z = float(special.ndtri(1 - (1 - confidence) / 2))
    counts = np.asarray(cells, dtype=np.float64)
    (f1, g1, rows1), (f2, g2, rows2) = (gradient(metric, counts, v) for v in (0, 1))
    v1, v2 = (g1**2 * counts).sum(axis=-1), (g2**2 * counts).sum(axis=-1)
    with np.errstate(all="ignore"):
        r = np.where(v1 * v2 > 0, (g1 * g2 * counts).sum(axis=-1) / np.sqrt(v1 * v2), 0.0)
    return mover(
        f1,
        effective_wilson(f1, v1, rows1, z),
        f2,
        effective_wilson(f2, v2, rows2, z),
        r,
    )


def gradient(
    metric: Metric, cells: FloatArray, version: int, n_versions: int = 2
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """A version's metric, its gradient in the cell counts, and its first ratio's denominator
    (rows), for cell counts of shape (..., 2 ** (n_versions + 1))."""
    value = np.zeros(cells.shape[:-1])
    grad = np.zeros(cells.shape)
    quads = quadrants(n_versions, version)
    rows = cells @ (quads @ np.array(metric.ratios[0].den))
    for ratio in metric.ratios:
        num, den = quads @ np.array(ratio.num), quads @ np.array(ratio.den)
        n, d = cells @ num, cells @ den
        with np.errstate(all="ignore"):
            part = np.where(d > 0, n / np.where(d > 0, d, 1.0), np.nan)
            value += ratio.weight * part
            grad += ratio.weight * (num - part[..., None] * den) / d[..., None]
    return value, grad, rows


def studentized(
    metric: Metric,
    cells: FloatArray,
    signs: Sequence[tuple[int, float]] = ((1, 1.0), (0, -1.0)),
    n_versions: int = 2,
) -> FloatArray:
    """A signed sum of versions' metric (by default v2 - v1) over its delta-method standard
    error, for cell counts of shape (..., 2 ** (n_versions + 1)).

    The metric is a weighted sum of ratios N/D of cell counts, so the delta's gradient in the counts
    is exact, and its multinomial variance is sum(gradient**2 * counts) (the gradient of a ratio is
    orthogonal to the counts). 0 where the delta is 0; +-inf where it is not but has no variance."""
    delta = np.zeros(cells.shape[:-1])
    total = np.zeros(cells.shape)
    for version, sign in signs:
        value, grad, _ = gradient(metric, cells, version, n_versions)
        delta += sign * value
        total += sign * grad
    se = np.sqrt(np.sum(total**2 * cells, axis=-1))
    with np.errstate(all="ignore"):
        t = np.where(se > 0, delta / se, np.sign(delta) * np.inf)
    return np.where(delta == 0, 0.0, t)


def judge(
    delta: FloatArray,
    p_values: FloatArray,
    *,
    discordant: IntArray,
    big_enough: npt.NDArray[np.bool_],
    correction: Literal["holm", "bh"],
    direction: int,
    alpha: float,
    max_drop: float | FloatArray,
    failed: npt.NDArray[np.bool_] | None = None,
) -> tuple[FloatArray, list[Verdict], int]:
    """Adjusted p-values, verdicts, and the fewest discordant rows that can reach ``alpha``.

    The family is every row that can fail the gate, overall rows included: large enough, with a
    p-value and enough discordant rows (Tarone 1990: the others can never be flagged). ``failed``
    rows (a scenario that could not run) get ``error``."""
    needed = min_discordant(alpha)
    failed = np.zeros(len(delta), dtype=bool) if failed is None else failed
    testable = big_enough & np.isfinite(p_values) & (discordant >= needed) & ~failed
    p_adjusted = adjust(np.where(testable, p_values, np.nan), correction)
    verdicts = verdict(
        delta,
        p_adjusted,
        big_enough=big_enough,
        discordant=discordant,
        needed=needed,
        direction=direction,
        alpha=alpha,
        max_drop=np.broadcast_to(np.asarray(max_drop, dtype=np.float64), np.shape(delta)),
    )
    return (
        p_adjusted,
        ["error" if bad else v for v, bad in zip(verdicts, failed, strict=True)],
        needed,
    )


def verdict(
    delta: FloatArray,
    p_adjusted: FloatArray,
    *,
    big_enough: npt.NDArray[np.bool_],
    discordant: IntArray,
    needed: int,
    direction: int,
    alpha: float,
    max_drop: FloatArray,
) -> list[Verdict]:
    """Regressed/improved need significance and a change beyond ``max_drop`` in that direction."""
    out: list[Verdict] = []
    for d, p, ok, k, drop in zip(delta, p_adjusted, big_enough, discordant, max_drop, strict=True):
        better = direction * d
        if not ok:
            out.append("too_small")
        elif math.isnan(d):
            out.append("undefined")
        elif k < needed:
            out.append("inconclusive")
        elif p < alpha and better < -drop:
            out.append("regressed")
        elif p < alpha and better > drop:
            out.append("improved")
        else:
            out.append("unchanged")
    return out
