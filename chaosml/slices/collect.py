"""From a suite, a data source and versions to ``SliceStats``: validation against the data, a
``SlicePlan`` of what to count, then one pass on the chosen engine (``engines``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from chaosml.codecs import plain
from chaosml.config import ProjectConfig
from chaosml.data import DEFAULT_CHUNK_ROWS, DataSource, open_table
from chaosml.errors import DataError, InputError, VersionError
from chaosml.slices.engines import Engine, Job, Progress, engine_for
from chaosml.slices.metrics import METRICS, auc_histogram_error, roc_auc_from_histograms
from chaosml.slices.suite import SliceSuite
from chaosml.slices.sums import SliceInfo, SlicePlan, SliceStats, confusion, slice_stats
from chaosml.versions import PREDICTION_COLUMN, InMemory, PredictionsFile, Scalar, Version

NO_LABEL = "no label column: set `label:` in the suite or in chaosml.yaml"
EMPTY_SLICE = "{where}: slice {name!r} matches no rows of {data}"
AUC_BOUND = "roc_auc_bound"  # the column beside roc_auc: the bound on its binning error
POSITIVE_NOT_A_LABEL = (
    "{where}: positive: the positive class {positive!r} is not among the values of label "
    "{label!r} in {data} (seen: {seen}); expected one of them"
)
POSITIVE_NOT_PREDICTED = (
    "{where}: prediction: the positive class {positive!r} is not among its values (seen: "
    "{seen}), nor are they the label's classes ({labels})"
)


@dataclass(frozen=True, kw_only=True)
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
        if "roc_auc" in metrics:
            frame[AUC_BOUND] = np.where(
                np.isfinite(frame["roc_auc"]), self.auc_error(version), np.nan
            )
        return frame


def evaluate(
    suite: SliceSuite,
    data: object,
    versions: Sequence[Version],
    *,
    config: ProjectConfig | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Progress | None = None,
    engine: Engine | str | None = None,
    score_gaps: bool = False,
) -> Evaluation:
    """Read ``data`` once and accumulate every slice's statistics for ``versions`` (with
    ``score_gaps``, two versions: also the largest difference of their scores per slice).

    ``data`` is a path (a Parquet or CSV file, a folder or glob of Parquet files), a pandas
    DataFrame, or a Dask or Spark DataFrame (or, with the Spark engine, a table name). ``engine``
    says where the work runs (``"local"``, ``"dask"``, ``"spark"`` or an ``Engine``); by default in
    this process, or on the engine a Dask or Spark DataFrame belongs to. The answer is the same on
    every engine."""
    config = config or ProjectConfig()
    with engine_for(engine, data) as runner:
        return _evaluate(
            suite,
            data,
            versions,
            config=config,
            chunk_rows=chunk_rows,
            progress=progress,
            runner=runner,
            score_gaps=score_gaps,
        )


def _evaluate(
    suite: SliceSuite,
    data: object,
    versions: Sequence[Version],
    *,
    config: ProjectConfig,
    chunk_rows: int,
    progress: Progress | None,
    runner: Engine,
    score_gaps: bool = False,
) -> Evaluation:
    table = runner.open(data)
    label = suite.label or config.label
    if label is None:
        raise InputError(f"{suite.path or '<suite>'}: {NO_LABEL}")
    table.require([label], "the label")
    _check_columns(suite, table)
    positive = suite.positive if suite.positive is not None else 1
    where = [
        (
            SliceInfo(
                name=spec.name or "",
                where=spec.where or "",
                min_size=spec.min_size or suite.min_size,
            ),
            spec.predicate,
            f"{suite.where_line(index)}: slices[{index}].where",
        )
        for index, spec in enumerate(suite.slices)
        if spec.where is not None
    ]
    plan = SlicePlan(
        where=tuple(where),
        groups=tuple(_groups(suite)),
        n_versions=len(versions),
        scores="roc_auc" in suite.all_metrics,
        maxdiff=score_gaps and len(versions) == 2,
    )
    features = [
        c
        for version in versions
        for c in version.feature_columns(table, label, positive, cached=runner.name == "local")
    ]
    columns = [
        label,
        *sorted({c for _, p, _ in where for c in p.columns}),
        *[c for spec in suite.slices for c in spec.by or []],
        *[c for test in suite.tests for c in test.by or []],
        *features,
    ]
    job = Job(
        table=table,
        plan=plan,
        label=label,
        positive=positive,
        columns=list(dict.fromkeys(columns)),
        versions=versions,
        chunk_rows=chunk_rows,
    )
    sums = runner.run(job, progress)
    if sums.rows == 0:
        raise DataError(f"{table.name}: no rows")
    stats = slice_stats(plan, sums, suite.min_size)
    _check_classes(stats, table, label, positive, versions, suite.positive_line())
    for i, (info, _, _) in enumerate(where):
        if stats.n[i + 1] == 0:
            raise DataError(
                EMPTY_SLICE.format(
                    where=_where_line(suite, info.name), name=info.name, data=table.name
                )
            )
    return Evaluation(
        stats=stats, versions=[v.name for v in versions], label=label, data=table.name
    )


def _check_classes(
    stats: SliceStats,
    table: DataSource,
    label: str,
    positive: Scalar,
    versions: Sequence[Version],
    where: str,
) -> None:
    """``positive`` must be a value of the label, and of a version's predicted classes unless
    they are all the label's classes (a model that never predicts the positive class). Checked
    from the counts; the values are read again only when a version never predicts positive,
    and to name them when a check fails."""
    v = stats.n_versions
    cells = stats.cells[0]
    bits = np.arange(len(cells))
    if cells[(bits >> v) & 1 == 1].sum() == 0:
        seen = _values(table, label)
        raise DataError(
            POSITIVE_NOT_A_LABEL.format(
                where=where, data=table.name, label=label, positive=positive, seen=_show(seen)
            )
        )
    for index, version in enumerate(versions):
        if cells[(bits >> (v - 1 - index)) & 1 == 1].sum() > 0:
            continue
        predicted = _predicted_values(version)
        if predicted is None or (pd.Series(predicted, dtype=object) == positive).any():
            continue
        labels = _values(table, label)
        if labels is None or set(predicted) <= set(labels) or _negative_alone(predicted, labels):
            continue
        source = getattr(version, "path", None) or f"version {version.name!r}"
        raise VersionError(
            POSITIVE_NOT_PREDICTED.format(
                where=source, positive=positive, seen=_show(predicted), labels=_show(labels)
            )
        )


def _negative_alone(predicted: list[object], labels: list[object]) -> bool:
    """Rows that are all of the positive class, answered with one class of the same kind: the
    negative class, whose spelling the data cannot show."""

    def kind(value: object) -> type:
        return float if isinstance(value, bool | int | float) else type(value)

    return len(labels) == 1 and len(predicted) == 1 and kind(predicted[0]) == kind(labels[0])


def _values(table: DataSource, column: str) -> list[object] | None:
    """A column's distinct values, in order seen (None where the source cannot be re-read)."""
    if not isinstance(table.source, Path | pd.DataFrame):
        return None
    seen: dict[object, None] = {}
    for chunk in table.chunks([column]):
        seen.update(dict.fromkeys(plain(v) for v in pd.unique(chunk[column])))
        if len(seen) > 5:
            break
    return list(seen)


def _predicted_values(version: Version) -> list[object] | None:
    """The classes a version of precomputed predictions gives (None for a model, whose classes
    were checked against ``positive`` when it was loaded)."""
    if isinstance(version, InMemory):
        return [plain(v) for v in pd.unique(pd.Series(np.asarray(version.prediction)))[:6]]
    if isinstance(version, PredictionsFile):
        return _values(open_table(version.path), PREDICTION_COLUMN)
    return None


def _show(values: list[object] | None) -> str:
    if values is None:
        return "not listed"
    return ", ".join(repr(v) for v in values[:5]) + (", ..." if len(values) > 5 else "")


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
