"""ML monitors for a model service, exported with prometheus-client.

A ``ModelMonitor`` keeps sliding windows over the last ``window`` rows a service scored and exports:

- ``chaosml_model_request_latency_seconds`` (histogram) and ``chaosml_model_requests_total{status}``;
- ``chaosml_model_feature_missing_rate{feature}`` and ``chaosml_model_feature_mean{feature}``;
- ``chaosml_model_feature_psi{feature}``: population stability index of the window against the
  training reference (10 quantile bins for numbers, the reference's categories plus "other");
- ``chaosml_model_score`` (histogram), ``chaosml_model_positive_rate`` (window) and
  ``chaosml_model_reference_positive_rate`` (set by the service from its training reference);
- ``chaosml_model_fairness_gap{attribute}``: the selection-rate difference between groups of the
  sensitive attribute over the last ``fairness_window`` rows (fairlearn's demographic parity
  difference); by default four times ``window``, since a difference of two group rates, each from
  about half the rows, has four times the variance of one rate over all of them;
- ``chaosml_model_online_accuracy`` over the last ``window`` feedback labels, and
  ``chaosml_model_feedback_total``;
- ``chaosml_model_info{version}`` = 1, and ``chaosml_model_answers_total{version}``: rows
  answered per model version (a stale model behind a fault or a botched rollout shows here).

A window statistic is NaN until its window is full: a statistic of the first few rows is noise
(one row has a positive rate of 0 or 1), and alert rules' thresholds are set for full windows.
Prometheus compares NaN as false, so an idle or just-started service fires nothing. Once full, a
window keeps its last rows while no traffic comes.

Windows are ring buffers updated in O(features) per row, so a request pays microseconds.
Add them to a FastAPI/Starlette app with ``instrument(app, monitor)``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

EPSILON = 1e-4  # PSI smoothing for empty bins
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Ring:
    """The last ``size`` values of a column as bin indices, with running counts."""

    def __init__(self, size: int, bins: int) -> None:
        self.index = np.full(size, -1, dtype=np.int64)
        self.values = np.full(size, np.nan)
        self.counts = np.zeros(bins + 1, dtype=np.int64)  # last bin: missing
        self.filled = 0
        self.position = 0

    def push(self, bins: npt.NDArray[np.int64], values: npt.NDArray[np.float64]) -> None:
        size = len(self.index)
        for b, v in zip(bins[-size:], values[-size:], strict=True):
            old = self.index[self.position]
            if old >= 0:
                self.counts[old] -= 1
            self.index[self.position], self.values[self.position] = b, v
            self.counts[b] += 1
            self.position = (self.position + 1) % size
            self.filled = min(self.filled + 1, size)

    @property
    def full(self) -> bool:
        return self.filled == len(self.index)


class _Tally:
    """The last ``size`` codes (small non-negative integers), with running counts per code."""

    def __init__(self, size: int) -> None:
        self.codes = np.full(size, -1, dtype=np.int64)
        self.counts = np.zeros(4, dtype=np.int64)
        self.filled = 0
        self.position = 0

    def push(self, codes: Sequence[int]) -> None:
        size = len(self.codes)
        for code in codes[-size:]:
            if code >= len(self.counts):
                self.counts = np.pad(self.counts, (0, code + 1 - len(self.counts)))
            old = self.codes[self.position]
            if old >= 0:
                self.counts[old] -= 1
            self.codes[self.position] = code
            self.counts[code] += 1
            self.position = (self.position + 1) % size
            self.filled = min(self.filled + 1, size)

    @property
    def full(self) -> bool:
        return self.filled == len(self.codes)


class _Feature:
    """How one feature is binned, from the training reference."""

    def __init__(self, name: str, reference: pd.Series, window: int) -> None:
        self.name = name
        self.numeric = pd.api.types.is_numeric_dtype(reference) and not pd.api.types.is_bool_dtype(
            reference
        )
        present = reference.dropna()
        if self.numeric:
            edges = np.unique(np.quantile(present.astype(float), np.linspace(0, 1, 11)[1:-1]))
            self.edges = edges
            self.categories: dict[Any, int] = {}
            bins = len(edges) + 1
            expected = np.bincount(
                np.searchsorted(edges, present.astype(float), side="right"), minlength=bins
            )
        else:
            self.edges = np.empty(0)
            self.categories = {c: i for i, c in enumerate(present.astype(str).unique())}
            bins = len(self.categories) + 1  # + "other"
            codes = present.astype(str).map(self.categories).to_numpy()
            expected = np.bincount(codes, minlength=bins)
        self.bins = bins
        self.expected = (expected + EPSILON) / (expected.sum() + EPSILON * bins)
        self.ring = _Ring(window, bins)

    def push(self, values: Sequence[Any]) -> None:
        """Add a request's values (plain Python: a handful per request, so no pandas here)."""
        numbers = [_number(v) for v in values] if self.numeric else [math.nan] * len(values)
        if self.numeric:
            bins = np.searchsorted(self.edges, np.nan_to_num(numbers), side="right")
            missing = [math.isnan(x) for x in numbers]
        else:
            other = len(self.categories)
            bins = np.array([self.categories.get(str(v), other) for v in values], dtype=np.int64)
            missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in values]
        self.ring.push(
            np.where(missing, self.bins, bins).astype(np.int64),
            np.asarray(numbers, dtype=np.float64),
        )

    def missing_rate(self) -> float:
        return float(self.ring.counts[-1] / self.ring.filled) if self.ring.full else math.nan

    def mean(self) -> float:
        if not self.numeric or not self.ring.full:
            return float("nan")
        values = self.ring.values[: self.ring.filled]
        present = values[~np.isnan(values)]
        return float(present.mean()) if len(present) else float("nan")

    def psi(self) -> float:
        if not self.ring.full:
            return math.nan
        counts = self.ring.counts[:-1]
        total = counts.sum()
        if total == 0:
            return 0.0
        actual = (counts + EPSILON) / (total + EPSILON * self.bins)
        return float(np.sum((actual - self.expected) * np.log(actual / self.expected)))


def _number(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class ModelMonitor:
    """Sliding-window ML monitors for one model version: the last ``window`` rows (and feedback
    labels), and the last ``fairness_window`` rows (default ``4 * window``) for the fairness gap."""

    def __init__(
        self,
        *,
        reference: pd.DataFrame,
        features: Sequence[str],
        model_version: str,
        sensitive: str | None = None,
        window: int = 500,
        fairness_window: int | None = None,
        positive: Any = 1,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.window, self.positive, self.sensitive = window, positive, sensitive
        self.fairness_window = fairness_window or 4 * window
        self.features = [_Feature(f, reference[f], window) for f in features]
        self._lock = threading.Lock()
        self._positives = _Tally(window)  # 1: predicted positive
        self._groups: dict[Any, int] = {None: 0}  # sensitive group -> index (None: no group)
        self._selections = _Tally(self.fairness_window)  # 2 * group index + predicted positive
        self._pending: OrderedDict[str, Any] = OrderedDict()  # request id -> prediction
        self._correct = _Tally(window)  # 1: feedback label equals the prediction
        r = self.registry
        self.latency = Histogram(
            "chaosml_model_request_latency_seconds",
            "Time to answer /predict",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "chaosml_model_requests", "Prediction requests by outcome", ["status"], registry=r
        )
        self.missing = Gauge(
            "chaosml_model_feature_missing_rate",
            "Share of missing values over the window",
            ["feature"],
            registry=r,
        )
        self.means = Gauge(
            "chaosml_model_feature_mean",
            "Mean of the feature over the window",
            ["feature"],
            registry=r,
        )
        self.psi = Gauge(
            "chaosml_model_feature_psi",
            "Population stability index of the window against the training data",
            ["feature"],
            registry=r,
        )
        self.scores = Histogram(
            "chaosml_model_score",
            "Predicted probability of the positive class",
            buckets=tuple(np.round(np.linspace(0.1, 1, 10), 2)),
            registry=r,
        )
        self.positive_rate = Gauge(
            "chaosml_model_positive_rate",
            "Share of positive predictions over the window",
            registry=r,
        )
        self.fairness = Gauge(
            "chaosml_model_fairness_gap",
            "Selection-rate difference between groups over the window",
            ["attribute"],
            registry=r,
        )
        self.accuracy = Gauge(
            "chaosml_model_online_accuracy", "Accuracy over the last feedback labels", registry=r
        )
        self.feedback_total = Counter(
            "chaosml_model_feedback", "Feedback labels received", registry=r
        )
        self.reference_positive_rate = Gauge(
            "chaosml_model_reference_positive_rate",
            "Share of positive predictions on the training reference",
            registry=r,
        )
        self.model_version = model_version
        Gauge(
            "chaosml_model_info", "The model version being served", ["version"], registry=r
        ).labels(model_version).set(1)
        self.answers = Counter(
            "chaosml_model_answers",
            "Rows answered, by the model version that answered them",
            ["version"],
            registry=r,
        )
        for gauge in (self.accuracy, self.positive_rate):
            gauge.set(math.nan)

    def observe(
        self,
        columns: Mapping[str, Any],
        predictions: Sequence[Any],
        scores: Sequence[float] | None,
        request_ids: Sequence[str],
        version: str | None = None,
    ) -> None:
        """Record one scored request's rows (``columns``: feature name to values, e.g. a
        DataFrame or a decoded request's columns); ``version``: the model version that answered,
        if not the one served (a stale model behind a fault or a botched rollout)."""
        n = len(predictions)
        self.answers.labels(version or self.model_version).inc(n)
        positive = [int(p == self.positive) for p in predictions]
        with self._lock:
            for feature in self.features:
                values = list(columns[feature.name]) if feature.name in columns else [None] * n
                feature.push(values)
                self.missing.labels(feature.name).set(feature.missing_rate())
                self.means.labels(feature.name).set(feature.mean())
                self.psi.labels(feature.name).set(feature.psi())
            self._positives.push(positive)
            self.positive_rate.set(_share(self._positives, 1))
            if self.sensitive:
                groups = list(columns[self.sensitive]) if self.sensitive in columns else [None] * n
                self._selections.push(
                    [2 * self._group(g) + p for g, p in zip(groups, positive, strict=True)]
                )
                self.fairness.labels(self.sensitive).set(self._gap())
            for request_id, prediction in zip(request_ids, predictions, strict=True):
                self._pending[request_id] = prediction
            while len(self._pending) > 10 * self.window:
                self._pending.popitem(last=False)
        for score in scores or []:
            self.scores.observe(score)

    def _group(self, group: Any) -> int:
        if isinstance(group, float) and math.isnan(group):
            group = None
        return self._groups.setdefault(group, len(self._groups))

    def _gap(self) -> float:
        if not self._selections.full:
            return math.nan
        counts = np.pad(self._selections.counts, (0, len(self._selections.counts) % 2))
        rows, positives = counts[0::2] + counts[1::2], counts[1::2]
        present = rows[1:] > 0  # group 0 is "no group"
        if present.sum() < 2:
            return 0.0
        rates = positives[1:][present] / rows[1:][present]
        return float(rates.max() - rates.min())

    def feedback(self, request_id: str, label: Any) -> bool:
        """Record the true label of an earlier prediction; False if the id is unknown."""
        with self._lock:
            prediction = self._pending.pop(request_id, _UNKNOWN)
            if prediction is _UNKNOWN:
                return False
            self._correct.push([int(prediction == label)])
            self.accuracy.set(_share(self._correct, 1))
        self.feedback_total.inc()
        return True

    def render(self) -> bytes:
        return generate_latest(self.registry)


_UNKNOWN = object()


def _share(tally: _Tally, code: int) -> float:
    """The share of ``code`` in a full window, else NaN."""
    if not tally.full:
        return math.nan
    return float(tally.counts[code] / tally.filled) if code < len(tally.counts) else 0.0


def instrument(app: Any, monitor: ModelMonitor, *, path: str = "/predict") -> None:
    """Time ``path`` and count its outcomes, and serve ``/metrics``, on a Starlette/FastAPI app."""
    from starlette.requests import Request
    from starlette.responses import Response

    async def metrics(request: Request) -> Response:
        return Response(monitor.render(), media_type="text/plain; version=0.0.4")

    app.add_route("/metrics", metrics, methods=["GET"])
    app.add_middleware(_Timing, monitor=monitor, path=path)


class _Timing:
    """Pure ASGI middleware (much cheaper than Starlette's BaseHTTPMiddleware)."""

    def __init__(self, app: Any, *, monitor: ModelMonitor, path: str) -> None:
        self.app, self.monitor, self.path = app, monitor, path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.monitor.latency.observe(time.perf_counter() - start)
            self.monitor.requests.labels("ok" if status[0] < 400 else "error").inc()
