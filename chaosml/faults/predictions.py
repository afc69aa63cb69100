"""Response-side faults: what a degraded, stale or biased model answers."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field, model_validator

from chaosml._types import BoolArray
from chaosml.faults.base import Place, Predictions, Rate, ResponseFault, Route, Scores

Label = int | float | str | bool


class _Binary(ResponseFault):
    """A fault that knows the two predicted classes."""

    positive: Label = 1
    negative: Label = 0


class ScoreNoise(_Binary):
    """Gaussian noise on scores (a model drifting off calibration); labels follow ``threshold``."""

    type: ClassVar[str] = "score_noise"
    std: float = Field(gt=0)
    threshold: float | None = Field(default=0.5, ge=0, le=1)

    def change(
        self, predictions: Predictions, scores: Scores, rows: BoolArray, rng: np.random.Generator
    ) -> tuple[Predictions, Scores]:
        if scores is None:
            return predictions, scores
        noisy = scores.copy()
        noisy[rows] = np.clip(noisy[rows] + rng.normal(0, self.std, int(rows.sum())), 0, 1)
        if self.threshold is None:
            return predictions, noisy
        labels = predictions.copy()
        labels[rows] = np.where(noisy[rows] >= self.threshold, self.positive, self.negative)
        return labels, noisy


class LabelFlip(_Binary):
    """Predicted classes flipped (``positive`` ↔ ``negative``) for a ``rate`` of rows."""

    type: ClassVar[str] = "label_flip"
    rate: float = Rate

    def change(
        self, predictions: Predictions, scores: Scores, rows: BoolArray, rng: np.random.Generator
    ) -> tuple[Predictions, Scores]:
        labels = predictions.copy()
        labels[rows & (predictions == self.positive)] = self.negative
        labels[rows & (predictions == self.negative)] = self.positive
        return labels, None if scores is None else np.where(rows, 1 - scores, scores)


class ConstantPrediction(ResponseFault):
    """Every answer is ``value`` (a model stuck on one class); scores become ``score``."""

    type: ClassVar[str] = "constant_prediction"
    value: Label = 0
    score: float | None = Field(default=None, ge=0, le=1)

    def change(
        self, predictions: Predictions, scores: Scores, rows: BoolArray, rng: np.random.Generator
    ) -> tuple[Predictions, Scores]:
        labels = predictions.copy()
        labels[rows] = self.value
        if scores is None or self.score is None:
            return labels, scores
        return labels, np.where(rows, self.score, scores)


class NanPrediction(ResponseFault):
    """Null predictions (and scores) for a ``rate`` of rows."""

    type: ClassVar[str] = "nan_prediction"
    rate: float = Rate

    def change(
        self, predictions: Predictions, scores: Scores, rows: BoolArray, rng: np.random.Generator
    ) -> tuple[Predictions, Scores]:
        labels = predictions.astype(object)
        labels[rows] = None
        return labels, None if scores is None else np.where(rows, np.nan, scores)


class Bias(_Binary):
    """Positive outcomes turned negative at ``rate`` for rows matching ``where`` (e.g.
    ``sex == 'F'``): injected bias against a group."""

    type: ClassVar[str] = "bias"
    rate: float = Rate

    def change(
        self, predictions: Predictions, scores: Scores, rows: BoolArray, rng: np.random.Generator
    ) -> tuple[Predictions, Scores]:
        hit = rows & (predictions == self.positive)
        labels = predictions.copy()
        labels[hit] = self.negative
        if scores is None:
            return labels, None
        return labels, np.where(hit, np.minimum(scores, 1 - scores), scores)


class StaleModel(ResponseFault):
    """Answers come from an older model: another ``upstream`` (``host:port``, at the proxy) or
    another ``version`` the service has loaded (at the in-service fault point).

    Offline, give that version's predictions to ``apply`` (its ``predictions``/``scores``
    arguments) and this fault keeps them.
    """

    type: ClassVar[str] = "stale_model"
    upstream: str | None = Field(default=None, pattern=r"^[^:\s]+:\d+$")
    version: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> StaleModel:
        if (self.upstream is None) == (self.version is None):
            raise ValueError("expected exactly one of upstream (host:port) or version")
        return self

    routes: ClassVar[bool] = True

    def route(self) -> Route:
        return Route(upstream=self.upstream, version=self.version)

    def places(self) -> frozenset[Place]:
        """Another upstream is a proxy's to route to; another version is the service's (or, offline,
        that version's predictions)."""
        return (
            frozenset({"proxy"}) if self.upstream is not None else frozenset({"service", "offline"})
        )

    def change(
        self, predictions: Predictions, scores: Scores, rows: BoolArray, rng: np.random.Generator
    ) -> tuple[Predictions, Scores]:
        return predictions, scores
