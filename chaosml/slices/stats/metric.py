"""A metric's paired statistics from cell counts: which rows it counts and where its event
differs between versions, its delta's score interval, its delta-method gradient and the studentized
statistic the permutation test uses; and ``paired_tests``, the clean comparison's per-slice test
and interval (McNemar's exact test and Newcombe's interval for a proportion metric, the exact
permutation test and a MOVER score interval for a ratio)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chaosml.slices.metrics import Metric
from chaosml.slices.stats.paired import (
    FloatArray,
    IntArray,
    effective_wilson,
    mcnemar_exact,
    min_discordant,
    mover,
    newcombe_interval,
    permutation_p_values,
    swappable,
    z_value,
)
from chaosml.slices.sums import quadrants


@dataclass(frozen=True, kw_only=True)
class PairedTests:
    """Per row (a slice, or a (slice, scenario) cell): the discordant rows the test uses, its
    p-value (NaN where the delta is undefined) and the delta's interval (NaN where none is given)."""

    discordant: IntArray
    p_values: FloatArray
    low: FloatArray
    high: FloatArray


def paired_tests(
    metric: Metric, cells: IntArray, delta: FloatArray, *, confidence: float, alpha: float
) -> PairedTests:
    """The clean comparison's test and interval per slice, from its cells label|v1|v2. A ratio
    metric's interval is withheld below ``min_discordant(alpha)`` discordant rows (inconclusive)."""
    if metric.proportion:
        discordant = swappable_events(metric, cells)
        p_values = mcnemar_exact(*paired_table(metric, cells)[1:3])
    else:
        discordant = swappable(cells)
        p_values = permutation_p_values(lambda x: studentized(metric, x), cells)
    low, high = interval(metric, cells, confidence)
    defined = np.isfinite(delta)
    trusted = defined & (metric.proportion | (discordant >= min_discordant(alpha)))
    return PairedTests(
        discordant=discordant,
        p_values=np.where(defined, p_values, np.nan),
        low=np.where(trusted, low, np.nan),
        high=np.where(trusted, high, np.nan),
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
    z = z_value(confidence)
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
