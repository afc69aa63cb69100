"""``slices compare v1 v2``: per-slice paired comparison of two versions on the same rows.

Per slice: the delta v2 - v1 of the suite's compared metric, a paired test and a per-slice interval
(``chaosml.slices.stats``: McNemar's exact test and Newcombe's score interval for proportion metrics,
an exact paired permutation test and a bootstrap interval for ratio metrics), p-values adjusted across
slices (Holm or Benjamini-Hochberg; the overall row is reported unadjusted) and a verdict:

- *too_small*: fewer than ``min_size`` rows;
- *undefined*: the metric is undefined for a version (no positives for recall, no positive
  predictions for precision): there is nothing to compare, and no p-value;
- *inconclusive*: the versions differ on some rows, but on fewer than ``min_discordant(alpha)`` of
  them, too few for any test to reach ``alpha`` even before correction (nor for an interval to be
  trusted); the delta is shown, undecided;
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

from chaosml.config import ProjectConfig
from chaosml.data import DEFAULT_CHUNK_ROWS
from chaosml.errors import InputError
from chaosml.slices.collect import evaluate
from chaosml.slices.engine import IntArray, confusion, quadrants
from chaosml.slices.engines import Engine, Progress
from chaosml.slices.metrics import METRICS, Metric, PairedTest, as_number
from chaosml.slices.stats import (
    adjust,
    bootstrap_cells,
    mcnemar_exact,
    min_discordant,
    newcombe_interval,
    percentile_interval,
    permutation_p_values,
    swappable,
)
from chaosml.slices.suite import SliceSuite
from chaosml.versions import Version

Verdict = Literal["regressed", "improved", "unchanged", "inconclusive", "undefined", "too_small"]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SliceComparison:
    """One slice's comparison. ``v1``/``v2``/``delta``/``ci`` are of the compared metric."""

    name: str
    where: str
    n: int
    discordant: int  # rows on which the versions differ (in the metric's event, for a proportion)
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
    the pass runs locally, on Dask or on Spark, with the same result."""
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
        a, b, c, d = paired_table(metric, cells)
        discordant = b + c
        p_values = mcnemar_exact(b, c)
        ci_low, ci_high = newcombe_interval(a, b, c, d, policy.confidence)
    else:
        discordant = swappable(cells)
        p_values = permutation_p_values(lambda x: studentized(metric, x), cells)
        ci_low = ci_high = np.full(len(stats.slices), np.nan)
        if n_boot > 0:
            boot = bootstrap_cells(cells, n_boot, np.random.default_rng(seed))
            replicates = _metric(metric, boot, 1) - _metric(metric, boot, 0)
            ci_low, ci_high = percentile_interval(replicates, policy.confidence)
    defined = np.isfinite(delta)
    ci_low, ci_high = np.where(defined, ci_low, np.nan), np.where(defined, ci_high, np.nan)
    p_values = np.where(defined, p_values, np.nan)

    big_enough = stats.n >= np.array([info.min_size for info in stats.slices])
    overall = np.arange(len(stats.slices)) == 0
    p_adjusted, verdicts, needed = judge(
        delta,
        p_values,
        discordant=discordant,
        big_enough=big_enough,
        overall=overall,
        correction=correction,
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
    )


def _metric(metric: Metric, cells: IntArray, version: int) -> FloatArray:
    assert metric.confusion is not None
    return metric.confusion(*confusion(cells, 2, version))


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
    gradient = np.zeros(cells.shape)
    for version, sign in signs:
        quads = quadrants(n_versions, version)
        for ratio in metric.ratios:
            num, den = quads @ np.array(ratio.num), quads @ np.array(ratio.den)
            n, d = cells @ num, cells @ den
            with np.errstate(all="ignore"):
                value = np.where(d > 0, n / np.where(d > 0, d, 1.0), np.nan)
                delta += sign * ratio.weight * value
                gradient += sign * ratio.weight * (num - value[..., None] * den) / d[..., None]
    se = np.sqrt(np.sum(gradient**2 * cells, axis=-1))
    with np.errstate(all="ignore"):
        t = np.where(se > 0, delta / se, np.sign(delta) * np.inf)
    return np.where(delta == 0, 0.0, t)


def judge(
    delta: FloatArray,
    p_values: FloatArray,
    *,
    discordant: IntArray,
    big_enough: npt.NDArray[np.bool_],
    overall: npt.NDArray[np.bool_],
    correction: Literal["holm", "bh"],
    direction: int,
    alpha: float,
    max_drop: float,
) -> tuple[FloatArray, list[Verdict], int]:
    """Adjusted p-values, verdicts, and the fewest discordant rows that can reach ``alpha``.

    The family is the rows that can reach ``alpha`` at all: large enough, with a p-value, with
    enough discordant rows (Tarone 1990). ``overall`` rows keep their own p-value, outside it."""
    needed = min_discordant(alpha)
    testable = big_enough & np.isfinite(p_values) & (discordant >= needed)
    p_adjusted = adjust(np.where(testable & ~overall, p_values, np.nan), correction)
    p_adjusted = np.where(testable & overall, p_values, p_adjusted)
    verdicts = verdict(
        delta,
        p_adjusted,
        big_enough=big_enough,
        discordant=discordant,
        needed=needed,
        direction=direction,
        alpha=alpha,
        max_drop=max_drop,
    )
    return p_adjusted, verdicts, needed


def verdict(
    delta: FloatArray,
    p_adjusted: FloatArray,
    *,
    big_enough: npt.NDArray[np.bool_],
    discordant: IntArray,
    needed: int,
    direction: int,
    alpha: float,
    max_drop: float,
) -> list[Verdict]:
    """Regressed/improved need significance and a change beyond ``max_drop`` in that direction."""
    out: list[Verdict] = []
    for d, p, ok, k in zip(delta, p_adjusted, big_enough, discordant, strict=True):
        better = direction * d
        if not ok:
            out.append("too_small")
        elif math.isnan(d):
            out.append("undefined")
        elif 0 < k < needed:
            out.append("inconclusive")
        elif p < alpha and better < -max_drop:
            out.append("regressed")
        elif p < alpha and better > max_drop:
            out.append("improved")
        else:
            out.append("unchanged")
    return out
