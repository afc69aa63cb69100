"""Scenarios offline: a scenario file's payload faults applied to evaluation rows.

A scenario file (``scenarios/*.yaml``) names the faults a game day injects; offline, its payload
faults act on the evaluation data with the same fault code the proxy and the in-service fault point
run (``chaosml.apply_offline``): request faults change the rows before the model predicts, response
faults change its answers, a routing fault (``stale_model``) answers with the named version.
Transport faults (latency, resets) act on connections and have no offline meaning: such a scenario
is listed as not applicable. ``UnderFault`` is a version's answers on the faulted rows, itself a
``Version``, so a pass evaluates it beside the clean versions.

Rows are faulted the same way for every version and on every engine: one seeded generator per
block of ``FAULT_BLOCK`` rows, the same whatever engine or chunking read them, so a comparison under
a fault is paired on the same rows.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from chaosml.data import DataSource
from chaosml.errors import InputError, ScenarioFailed, VersionError
from chaosml.faults import PayloadFault, RequestFault, ResponseFault, apply_offline
from chaosml.scenario import load_scenarios
from chaosml.slices.engines import FAULT_BLOCK
from chaosml.versions import (
    ArtifactVersion,
    PartPredictor,
    Predictions,
    Predictor,
    Scalar,
    Version,
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
        routes = [f.route() for f, _ in self.faults]
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


@dataclass(kw_only=True)
class UnderFault:
    """``base``'s answers on the rows with ``scenario``'s faults applied: a ``Version``.

    Request faults need the model itself (an artifact version); response faults also apply to
    precomputed predictions. A null answer (``nan_prediction``) counts as wrong."""

    base: Version
    scenario: OfflineScenario
    seed: int
    index: int = 0  # which scenario: each has its own stream of random choices
    others: Mapping[str, Version] = field(default_factory=dict)  # stale_model's versions
    name: str = field(init=False)  # "<base> under <scenario>"

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
            faults=self.scenario.faults,
            seed=self.seed,
            index=self.index,
            label=label,
            positive=positive,
            scenario=self.scenario.name,
            version=self.base.name,
        )


def fault_blocks(start: int, rows: int) -> list[tuple[int, int]]:
    """The pieces of rows ``start`` to ``start + rows`` cut at multiples of ``FAULT_BLOCK``."""
    cuts = range((start // FAULT_BLOCK + 1) * FAULT_BLOCK, start + rows, FAULT_BLOCK)
    edges = [start, *cuts, start + rows]
    return [(lo, hi) for lo, hi in itertools.pairwise(edges) if hi > lo]


@dataclass(frozen=True, kw_only=True)
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
            route = fault.route()
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
