"""What every engine shares: a pass (``Job``), what a worker gets (``Work``), the ``Engine``
protocol, and the merge of partitions' sums in order.

The engine's statistics are sums (``Partial``), so a pass splits into partitions anywhere: each
partition is reduced to its sums where its rows are, the sums come back (a few kilobytes per
partition) and add up on the client, and the statistics code after that is the same for every
engine. The engine changes where work runs, never the answer:

- counts are sums of integers, so they are identical bit for bit, and everything computed from
  them (p-values, the seeded bootstrap) is too;
- a path is cut into partitions of ``chunk_rows`` rows at fixed row offsets, planned from the
  Parquet footers, exactly where the local pass cuts its chunks: each partition reads its rows
  from the row groups that hold them, a predictions file is read at the same rows (row-aligned
  without a join), and offline faults draw the same random choices for the same rows;
- partial sums are merged in partition order, so even which ``by`` value was seen first is the
  local pass's.

A worker gets what it needs once (``Work``: the plan, and each version's ``PartPredictor``, which
for an artifact is the model itself): Dask broadcasts it to every worker, Spark as a broadcast
variable. Data given as the engine's own DataFrame (or, for Spark, a table name) is reduced
partition by partition as the engine reads it; predictions for it come from artifacts, since a
Spark table has no row order to align a predictions file with.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, Self

import pandas as pd

from chaosml.data import DataSource, open_table
from chaosml.errors import DataError, InputError
from chaosml.slices.sums import Accumulator, ChunkData, Partial, SlicePlan
from chaosml.versions import (
    ArtifactVersion,
    PartPredictor,
    Predictions,
    Scalar,
    Version,
    as_binary,
)

FAULT_BLOCK = 10_000  # rows per random stream of offline faults: partitions cut at multiples
Progress = Callable[[int, int | None], None]  # (done, total): rows locally, partitions elsewhere
MISSING_EXTRA = "the {engine} engine needs {package}: pip install 'chaosml[{engine}]' ({reason})"
WRONG_DATA = "the {engine} engine reads {reads}, not a {kind}"
NOT_PARQUET = (
    "{data}: the {engine} engine reads Parquet (a file, a folder or a glob of files), not CSV: "
    "its partitions are row ranges found from the Parquet footers"
)


@dataclass(frozen=True, kw_only=True)
class Job:
    """One pass: the data, what to count, the columns to read and the versions to predict with."""

    table: DataSource
    plan: SlicePlan
    label: str
    positive: Scalar
    columns: list[str]
    versions: Sequence[Version]
    chunk_rows: int

    def work(self) -> Work:
        """What every partition needs, picklable: shipped to each worker once."""
        predictors = tuple(
            v.part_predictor(self.table, self.label, self.positive) for v in self.versions
        )
        table = self.table
        if not isinstance(table.source, Path):  # an engine's frame stays on the client
            table = replace(table, source=table.name)
        return Work(
            plan=self.plan,
            label=self.label,
            positive=self.positive,
            columns=tuple(self.columns),
            predictors=predictors,
            table=table,
        )

    def ranges(self) -> list[tuple[int, int]]:
        """The partitions of a path: ``chunk_rows`` rows each, at the local pass's chunk offsets.

        Row groups larger than that (Spark writes 128 MB ones) widen the partitions to the largest
        row group, so each is read by at most two partitions rather than by every one it spans;
        the width stays a multiple of ``FAULT_BLOCK``, so offline faults still hit the same rows."""
        rows = self.table.num_rows or 0
        step = self.chunk_rows
        largest = max((count for _, count in self.table.row_groups), default=0)
        if step % FAULT_BLOCK == 0 and largest > step:
            step = -(-largest // FAULT_BLOCK) * FAULT_BLOCK
        return [(start, min(start + step, rows)) for start in range(0, rows, step)]

    @property
    def aligned(self) -> bool:
        """Whether predictions need each row's position in the table (anything but a model)."""
        return not all(isinstance(v, ArtifactVersion) for v in self.versions)


@dataclass(frozen=True, kw_only=True)
class Work:
    """A pass as a worker sees it: reduce rows to their sums."""

    plan: SlicePlan
    label: str
    positive: Scalar
    columns: tuple[str, ...]
    predictors: tuple[PartPredictor, ...]
    table: DataSource

    def reduce(self, rows: pd.DataFrame, start: int) -> Partial:
        """The sums over ``rows``, which start at row ``start`` of the table."""
        accumulator = Accumulator(self.plan)
        if len(rows):
            rows = rows.reset_index(drop=True)
            add_rows(
                accumulator,
                rows,
                (self.table.name, self.label, self.positive),
                [functools.partial(predict, start=start) for predict in self.predictors],
            )
        return accumulator.sums

    def reduce_range(self, start: int, stop: int) -> Partial:
        """Read rows ``start`` to ``stop`` of a path and reduce them."""
        return self.reduce(self.table.read(self.columns, start, stop), start)


def add_rows(
    accumulator: Accumulator,
    rows: pd.DataFrame,
    labelled: tuple[str, str, Scalar],
    predictors: Sequence[Callable[[pd.DataFrame], Predictions]],
) -> None:
    """Add ``rows`` to ``accumulator``: their labels (``labelled``: the data's name, the label
    column, the positive class) checked, then each version's predictions."""
    data, label, positive = labelled
    y = as_binary(rows[label], positive, f"{data}: label {label!r}")
    outputs = [predict(rows) for predict in predictors]
    accumulator.add(ChunkData(rows, y, [o.positive for o in outputs], [o.score for o in outputs]))


class Closing:
    """``with engine:`` closes the engine (what it started) at the end of the block."""

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Engine(Protocol):
    """Runs a pass: opens the data, reduces it to sums, reports progress as (done, total)."""

    name: str
    unit: str  # what progress counts

    def open(self, data: object) -> DataSource: ...

    def run(self, job: Job, progress: Progress | None) -> Partial: ...

    def close(self) -> None: ...


def need(engine: str, module: str, package: str) -> Any:
    """Import an optional engine's package, or say in one line how to get it."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise InputError(
            MISSING_EXTRA.format(engine=engine, package=package, reason=f"{exc.name} not found")
        ) from exc


def merge_in_order(
    parts: Iterator[tuple[int, Partial]], total: int, progress: Progress | None
) -> Partial:
    """Add partitions' sums as they arrive, in partition order (holding those that come early)."""
    waiting: dict[int, Partial] = {}
    merged: Partial | None = None
    following = 0
    if progress is not None:
        progress(0, total)
    for done, (index, sums) in enumerate(parts, start=1):
        waiting[index] = sums
        while following in waiting:
            ready = waiting.pop(following)
            merged = ready if merged is None else merged.merge(ready)
            following += 1
        if progress is not None:
            progress(done, total)
    if merged is None or waiting:
        raise DataError("no partitions were read")
    return merged


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def kind_of(data: object) -> str:
    return f"{type(data).__module__}.{type(data).__name__}"


def is_dask_frame(data: object) -> bool:
    module = sys.modules.get("dask.dataframe")
    return module is not None and isinstance(data, module.DataFrame)


def is_spark_frame(data: object) -> bool:
    module = sys.modules.get("pyspark.sql")
    return module is not None and isinstance(data, module.DataFrame)


def planned(data: str | Path, engine: str) -> DataSource:
    table = open_table(data)
    if not table.parquet:
        raise DataError(NOT_PARQUET.format(data=table.name, engine=engine))
    return table
