"""From a suite, a data source and versions to ``SliceStats``: validation against the data, then one
streamed pass through the engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from chaosml.config import ProjectConfig
from chaosml.data import DEFAULT_CHUNK_ROWS, DataSource, open_table
from chaosml.errors import DataError, InputError, PredicateError
from chaosml.slices.engine import Accumulator, ChunkData, SliceInfo, SliceStats, confusion
from chaosml.slices.metrics import METRICS, auc_histogram_error, roc_auc_from_histograms
from chaosml.slices.suite import SliceSuite
from chaosml.versions import Version, as_binary

Progress = Callable[[int, int | None], None]
NO_LABEL = "no label column: set `label:` in the suite or in chaosml.yaml"
EMPTY_SLICE = "{where}: slice {name!r} matches no rows of {data}"


@dataclass(frozen=True)
class Evaluation:
    """What one pass produced: the statistics and the names needed to read them."""

    stats: SliceStats
    versions: list[str]
    label: str
    data: str

    def metric(self, name: str, version: int) -> npt.NDArray[np.float64]:
        """One metric of one version for every slice."""
        metric = METRICS[name]
        if metric.confusion is not None:
            return metric.confusion(*confusion(self.stats.cells, self.stats.n_versions, version))
        hist = self.stats.hist
        if hist is None or not self.stats.has_scores[version]:
            return np.full(len(self.stats.slices), np.nan)
        return roc_auc_from_histograms(hist[:, version, 1], hist[:, version, 0])

    def auc_error(self, version: int) -> npt.NDArray[np.float64]:
        hist = self.stats.hist
        if hist is None:
            return np.full(len(self.stats.slices), np.nan)
        return auc_histogram_error(hist[:, version, 1], hist[:, version, 0])

    def frame(self, version: int, metrics: Sequence[str]) -> pd.DataFrame:
        """Metrics per slice as a DataFrame indexed by slice name (like fairlearn's ``by_group``)."""
        data = {name: self.metric(name, version) for name in metrics}
        index = pd.Index([info.name for info in self.stats.slices], name="slice")
        frame = pd.DataFrame(data, index=index)
        frame.insert(0, "n", self.stats.n)
        return frame


def evaluate(
    suite: SliceSuite,
    data: str | Path | pd.DataFrame,
    versions: Sequence[Version],
    *,
    config: ProjectConfig | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Progress | None = None,
) -> Evaluation:
    """Stream ``data`` once and accumulate every slice's statistics for ``versions``."""
    config = config or ProjectConfig()
    table = open_table(data)
    label = suite.label or config.label
    if label is None:
        raise InputError(f"{suite.path or '<suite>'}: {NO_LABEL}")
    table.require([label], "the label")
    _check_columns(suite, table)
    positive = suite.positive if suite.positive is not None else 1
    where = [
        (
            SliceInfo(spec.name or "", spec.where or "", spec.min_size or suite.min_size),
            spec.predicate,
        )
        for spec in suite.slices
        if spec.where is not None
    ]
    accumulator = Accumulator(
        where=where,
        groups=_groups(suite),
        n_versions=len(versions),
        scores="roc_auc" in suite.all_metrics,
        on_error=lambda i, exc: _slice_error(suite, i, exc),
    )
    features = [c for version in versions for c in version.feature_columns(table, label, positive)]
    columns = [
        label,
        *sorted({c for _, p in where for c in p.columns}),
        *[c for spec in suite.slices for c in spec.by or []],
        *[c for test in suite.tests for c in test.by or []],
        *features,
    ]
    rows = 0
    with ExitStack() as stack:
        predictors = [stack.enter_context(v.predictor(table, label, positive)) for v in versions]
        for frame in table.chunks(columns, chunk_rows):
            y = as_binary(frame[label], positive, f"{table.name}: label {label!r}")
            outputs = [predict(frame) for predict in predictors]
            accumulator.add(
                ChunkData(frame, y, [o.positive for o in outputs], [o.score for o in outputs])
            )
            rows += len(frame)
            if progress is not None:
                progress(rows, table.num_rows)
    if rows == 0:
        raise DataError(f"{table.name}: no rows")
    stats = accumulator.result(suite.min_size)
    for i, (info, _) in enumerate(where):
        if stats.n[i + 1] == 0:
            raise DataError(
                EMPTY_SLICE.format(
                    where=_where_line(suite, info.name), name=info.name, data=table.name
                )
            )
    return Evaluation(stats, [v.name for v in versions], label, table.name)


def _groups(suite: SliceSuite) -> list[tuple[tuple[str, ...], int]]:
    groups: list[tuple[tuple[str, ...], int]] = []
    seen: set[tuple[str, ...]] = set()
    for spec in suite.slices:
        if spec.by is not None and tuple(spec.by) not in seen:
            seen.add(tuple(spec.by))
            groups.append((tuple(spec.by), spec.min_size or suite.min_size))
    for test in suite.tests:  # a fairness test's group is evaluated even if not listed as slices
        if test.by is not None and tuple(test.by) not in seen:
            seen.add(tuple(test.by))
            groups.append((tuple(test.by), suite.min_size))
    return groups


def _check_columns(suite: SliceSuite, table: DataSource) -> None:
    for index, spec in enumerate(suite.slices):
        names = sorted(spec.predicate.columns) if spec.where is not None else list(spec.by or [])
        field = "where" if spec.where is not None else "by"
        for name in names:
            if name not in table.columns:
                raise DataError(
                    f"{suite.where_line(index, field)}: slices[{index}].{field}: "
                    f"unknown column {name!r} in {table.name}"
                )
    for index, test in enumerate(suite.tests):
        for name in test.by or []:
            if name not in table.columns:
                raise DataError(
                    f"{suite.test_line(index)}: tests[{index}].by: "
                    f"unknown column {name!r} in {table.name}"
                )


def _where_line(suite: SliceSuite, name: str) -> str:
    index = next(i for i, spec in enumerate(suite.slices) if spec.name == name)
    return f"{suite.where_line(index)}: slices[{index}].where"


def _slice_error(suite: SliceSuite, where_index: int, exc: Exception) -> Exception:
    specs = [i for i, spec in enumerate(suite.slices) if spec.where is not None]
    index = specs[where_index]
    if isinstance(exc, PredicateError | TypeError | ValueError):
        return PredicateError(f"{suite.where_line(index)}: slices[{index}].where: {exc}")
    return exc
