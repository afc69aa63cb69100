"""Metrics as functions of sufficient statistics.

Each confusion metric is a weighted sum of ratios of the counts ``tp, fp, fn, tn`` (numpy arrays of any
shape, so the same definition serves a point estimate and 1000 bootstrap replicates at once). Their definitions
match scikit-learn's and fairlearn's; where those divide by zero, chaosml returns NaN ("undefined")
instead of a silent 0. ``roc_auc`` is computed from per-label score histograms.

``direction`` says which way is better (+1 higher, -1 lower, 0 neither): it decides what a regression
and a gap to overall mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

Counts: TypeAlias = npt.NDArray[np.float64] | npt.NDArray[np.int64]
FloatArray: TypeAlias = npt.NDArray[np.float64]
PairedTest: TypeAlias = Literal["mcnemar", "permutation"]

UNKNOWN_METRIC = "unknown metric {name!r} (expected one of: {known})"


def _ratio(num: Counts, den: Counts) -> FloatArray:
    num_f = np.asarray(num, dtype=np.float64)
    den_f = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den_f > 0, num_f / np.where(den_f > 0, den_f, 1.0), np.nan)


def roc_auc_from_histograms(positive: Counts, negative: Counts) -> FloatArray:
    """ROC AUC from score histograms over the same bins (last axis); ties within a bin count 1/2.

    Exact when no bin holds both a positive and a negative with different scores; otherwise off by at
    most ``auc_histogram_error`` of the same histograms.
    """
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    below = np.cumsum(neg, axis=-1) - neg
    wins = np.sum(pos * (below + 0.5 * neg), axis=-1)
    return _ratio(wins, pos.sum(axis=-1) * neg.sum(axis=-1))


def auc_histogram_error(positive: Counts, negative: Counts) -> FloatArray:
    """Upper bound on |histogram AUC - exact AUC|: half the tied pairs within bins."""
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    return _ratio(0.5 * np.sum(pos * neg, axis=-1), pos.sum(axis=-1) * neg.sum(axis=-1))


ConfusionMetric: TypeAlias = Callable[[Counts, Counts, Counts, Counts], FloatArray]
Quadrants: TypeAlias = tuple[int, int, int, int]  # weights on (tp, fp, fn, tn)
TP, FP, FN, TN = (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)
POSITIVES, NEGATIVES, ALL, PREDICTED = (1, 0, 1, 0), (0, 1, 0, 1), (1, 1, 1, 1), (1, 1, 0, 0)


def _plus(*quadrants: Quadrants) -> Quadrants:
    a, b, c, d = (sum(q[k] for q in quadrants) for k in range(4))
    return a, b, c, d


@dataclass(frozen=True)
class Ratio:
    """``weight * (num . counts) / (den . counts)`` over the confusion counts (tp, fp, fn, tn)."""

    num: Quadrants
    den: Quadrants
    weight: float = 1.0


@dataclass(frozen=True)
class Metric:
    """A metric as a weighted sum of ratios of confusion counts (none: ROC AUC, from scores).

    One definition gives the value, its gradient (for the delta method) and the paired test: a
    metric that is one proportion of a set of rows both versions share (accuracy on all rows, recall
    on positives, FPR on negatives, selection rate on all rows) is compared by McNemar's exact test
    with Newcombe's score interval; any other ratio (precision, F1, balanced accuracy) by an exact
    paired permutation test with a bootstrap interval."""

    name: str
    direction: Literal[-1, 0, 1]
    ratios: tuple[Ratio, ...] = ()
    short: str = ""  # column header in terminal tables

    @property
    def confusion(self) -> ConfusionMetric | None:
        """The metric as a function of (tp, fp, fn, tn); None if it needs scores."""
        return self.value if self.ratios else None

    def value(self, tp: Counts, fp: Counts, fn: Counts, tn: Counts) -> FloatArray:
        counts = (tp, fp, fn, tn)
        total = np.zeros(np.shape(tp))
        for ratio in self.ratios:
            num = sum(w * np.asarray(c) for w, c in zip(ratio.num, counts, strict=True) if w)
            den = sum(w * np.asarray(c) for w, c in zip(ratio.den, counts, strict=True) if w)
            total = total + ratio.weight * _ratio(num, den)  # type: ignore[arg-type]
        return total

    @property
    def proportion(self) -> bool:
        """One share of a set of rows fixed by the label alone, so both versions count the same
        rows and the paired comparison is a paired 2x2 table."""
        if len(self.ratios) != 1 or self.ratios[0].weight != 1:
            return False
        ratio = self.ratios[0]
        inside = all(n <= d for n, d in zip(ratio.num, ratio.den, strict=True))
        return ratio.den in (POSITIVES, NEGATIVES, ALL) and inside

    @property
    def parts(self) -> tuple[tuple[float, Metric], ...]:
        """A weighted sum of proportions over disjoint sets of rows fixed by the label (balanced
        accuracy: half recall on the positives, half TNR on the negatives), as (weight, proportion)
        pairs; empty for any other metric. Its parts are independent, so their score intervals
        combine into one."""
        dens = [ratio.den for ratio in self.ratios]
        if len(self.ratios) < 2 or any(d not in (POSITIVES, NEGATIVES) for d in dens):
            return ()
        if len(set(dens)) != len(dens):
            return ()
        parts = tuple(
            (
                ratio.weight,
                Metric(f"{self.name}[{k}]", self.direction, (Ratio(ratio.num, ratio.den),)),
            )
            for k, ratio in enumerate(self.ratios)
        )
        return parts if all(metric.proportion for _, metric in parts) else ()

    @property
    def paired_test(self) -> PairedTest:
        return "mcnemar" if self.proportion else "permutation"


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("accuracy", 1, (Ratio(_plus(TP, TN), ALL),), "acc"),
        Metric("precision", 1, (Ratio(TP, PREDICTED),), "prec"),
        Metric("recall", 1, (Ratio(TP, POSITIVES),), "recall"),
        Metric("f1", 1, (Ratio((2, 0, 0, 0), (2, 1, 1, 0)),), "f1"),
        Metric("false_positive_rate", -1, (Ratio(FP, NEGATIVES),), "fpr"),
        Metric("false_negative_rate", -1, (Ratio(FN, POSITIVES),), "fnr"),
        Metric("true_negative_rate", 1, (Ratio(TN, NEGATIVES),), "tnr"),
        Metric(
            "balanced_accuracy",
            1,
            (Ratio(TP, POSITIVES, 0.5), Ratio(TN, NEGATIVES, 0.5)),
            "bal_acc",
        ),
        Metric("selection_rate", 0, (Ratio(PREDICTED, ALL),), "sel_rate"),
        Metric("roc_auc", 1, (), "auc"),
    )
}
DEFAULT_METRICS = ("accuracy", "precision", "recall", "f1", "false_positive_rate", "selection_rate")


def as_number(value: Any) -> float | None:
    """A metric value for results: a float, or None where it is undefined (NaN)."""
    number = float(value)
    return None if math.isnan(number) else number


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(UNKNOWN_METRIC.format(name=name, known=", ".join(METRICS))) from None
