"""Metrics as functions of sufficient statistics.

Each confusion metric is a plain function of the counts ``tp, fp, fn, tn`` (numpy arrays of any shape,
so the same function serves a point estimate and 1000 bootstrap replicates at once). Their definitions
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
PairedTest: TypeAlias = Literal[
    "mcnemar_all", "mcnemar_positives", "mcnemar_negatives", "mcnemar_selection", "bootstrap"
]

UNKNOWN_METRIC = "unknown metric {name!r} (expected one of: {known})"


def _ratio(num: Counts, den: Counts) -> FloatArray:
    num_f = np.asarray(num, dtype=np.float64)
    den_f = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den_f > 0, num_f / np.where(den_f > 0, den_f, 1.0), np.nan)


def accuracy(tp: Counts, fp: Counts, fn: Counts, tn: Counts) -> FloatArray:
    return _ratio(tp + tn, tp + fp + fn + tn)


def precision(tp: Counts, fp: Counts, fn: Counts, tn: Counts) -> FloatArray:
    return _ratio(tp, tp + fp)


def recall(tp: Counts, fp: Counts, fn: Counts, tn: Counts) -> FloatArray:
    return _ratio(tp, tp + fn)


def f1(tp: Counts, fp: Counts, fn: Counts, tn: Counts) -> FloatArray:
    return _ratio(2 * tp, 2 * tp + fp + fn)


def false_positive_rate(tp: Counts, fp: Counts, fn: Counts, tn: Counts) -> FloatArray:
    return _ratio(fp, fp + tn)


def false_negative_rate(tp: Counts, fp: Counts, fn: Counts, tn: Counts) -> FloatArray:
    return _ratio(fn, fn + tp)


def true_negative_rate(tp: Counts, fp: Counts, fn: Counts, tn: Counts) -> FloatArray:
    return _ratio(tn, tn + fp)


def selection_rate(tp: Counts, fp: Counts, fn: Counts, tn: Counts) -> FloatArray:
    return _ratio(tp + fp, tp + fp + fn + tn)


def balanced_accuracy(tp: Counts, fp: Counts, fn: Counts, tn: Counts) -> FloatArray:
    return (recall(tp, fp, fn, tn) + true_negative_rate(tp, fp, fn, tn)) / 2


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


@dataclass(frozen=True)
class Metric:
    name: str
    direction: Literal[-1, 0, 1]
    paired_test: PairedTest
    confusion: ConfusionMetric | None = None  # None: needs score histograms (roc_auc)
    short: str = ""  # column header in terminal tables


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("accuracy", 1, "mcnemar_all", accuracy, "acc"),
        Metric("precision", 1, "bootstrap", precision, "prec"),
        Metric("recall", 1, "mcnemar_positives", recall, "recall"),
        Metric("f1", 1, "bootstrap", f1, "f1"),
        Metric("false_positive_rate", -1, "mcnemar_negatives", false_positive_rate, "fpr"),
        Metric("false_negative_rate", -1, "mcnemar_positives", false_negative_rate, "fnr"),
        Metric("true_negative_rate", 1, "mcnemar_negatives", true_negative_rate, "tnr"),
        Metric("balanced_accuracy", 1, "bootstrap", balanced_accuracy, "bal_acc"),
        Metric("selection_rate", 0, "mcnemar_selection", selection_rate, "sel_rate"),
        Metric("roc_auc", 1, "bootstrap", None, "auc"),
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
