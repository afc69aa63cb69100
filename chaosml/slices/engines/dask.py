"""The Dask engine: a pass on a ``distributed`` cluster, one task per partition."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from chaosml.data import DataSource
from chaosml.errors import InputError, UnreachableError
from chaosml.slices.engines.base import (
    WRONG_DATA,
    Closing,
    Job,
    Progress,
    Work,
    is_dask_frame,
    kind_of,
    merge_in_order,
    need,
    planned,
)
from chaosml.slices.sums import Partial

UNREACHABLE_SCHEDULER = "dask scheduler {address}: cannot connect: {reason}"


class DaskEngine(Closing):
    """A Dask ``distributed`` cluster: a scheduler's address, or a ``LocalCluster`` started here
    (``workers`` processes, one thread each) and stopped by ``close``."""

    name = "dask"
    unit = "partitions"

    def __init__(self, scheduler: str | None = None, *, workers: int = 2, retries: int = 2):
        need(self.name, "distributed", "dask[distributed]")
        self.scheduler = scheduler
        self.workers = workers
        self.retries = retries
        self._client: Any = None
        self._cluster: Any = None
        self._config: Any = None

    def _start_method(self) -> None:
        """Worker processes start by spawn, which re-imports ``__main__`` from its file; a
        program read from stdin or ``-c`` has none, so its workers fork instead."""
        main = getattr(sys.modules.get("__main__"), "__file__", None)
        if main is not None and not Path(main).is_file():
            import dask

            self._config = dask.config.set({"distributed.worker.multiprocessing-method": "fork"})

    @property
    def client(self) -> Any:
        if self._client is None:
            distributed = need("dask", "distributed", "dask[distributed]")
            need("dask", "dask.dataframe", "dask[dataframe]")
            try:
                if self.scheduler is None:
                    with contextlib.suppress(ValueError):  # a client this process already has
                        self._client = distributed.default_client()
                        return self._client
                    self._start_method()
                    self._cluster = distributed.LocalCluster(
                        n_workers=self.workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=":0",  # a free port: never 8787, which another may hold
                    )
                    self._client = distributed.Client(self._cluster)
                else:
                    self._client = distributed.Client(self.scheduler, timeout="10s")
            except OSError as exc:
                raise UnreachableError(
                    UNREACHABLE_SCHEDULER.format(address=self.scheduler, reason=exc)
                ) from exc
        return self._client

    def open(self, data: object) -> DataSource:
        if is_dask_frame(data):
            frame: Any = data
            return DataSource(
                source=frame,
                columns=tuple(map(str, frame.columns)),
                num_rows=None,
                display="<dask DataFrame>",
            )
        if isinstance(data, str | Path):
            return planned(data, self.name)
        raise InputError(
            WRONG_DATA.format(
                engine=self.name, reads="a Parquet path or a dask DataFrame", kind=kind_of(data)
            )
        )

    def run(self, job: Job, progress: Progress | None) -> Partial:
        import dask.dataframe as dd
        from dask.delayed import delayed
        from distributed import as_completed

        client = self.client
        if is_dask_frame(job.table.source):
            frame: Any = job.table.source
            frame = frame[job.columns]
            parts = frame.to_delayed()
            if job.aligned:  # predictions by row position: count the partitions' rows first
                starts, rows = _offsets(frame)
                job = replace(job, table=replace(job.table, num_rows=rows))
            else:  # a model needs no positions: partitions just start apart
                starts = [i << 40 for i in range(len(parts))]
        else:
            ranges = job.ranges()
            meta = job.table.read(job.columns, 0, 0)
            table = job.table
            columns = tuple(job.columns)
            frame = dd.from_map(  # type: ignore[no-untyped-call]
                _ReadRange(table, columns), ranges, meta=meta, enforce_metadata=False
            )
            parts = frame.to_delayed()
            starts = [start for start, _ in ranges]
        shipped = client.scatter(job.work(), broadcast=True, hash=False)
        reduce = delayed(_reduce_part, pure=True)
        tasks = [reduce(shipped, part, start) for part, start in zip(parts, starts, strict=True)]
        futures = client.compute(tasks, retries=self.retries)
        position = {future.key: index for index, future in enumerate(futures)}
        try:
            return merge_in_order(
                ((position[f.key], f.result()) for f in as_completed(futures)),  # type: ignore[no-untyped-call]
                len(futures),
                progress,
            )
        finally:
            client.cancel(futures)
            client.cancel(shipped)

    def close(self) -> None:
        if self._client is not None and (self._cluster is not None or self.scheduler is not None):
            self._client.close()
        self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
        if self._config is not None:
            self._config.__exit__(None, None, None)
            self._config = None


@dataclass(frozen=True)
class _ReadRange:
    """Reads one planned partition (``dd.from_map``'s function): picklable, so workers call it."""

    table: DataSource
    columns: tuple[str, ...]

    def __call__(self, span: tuple[int, int]) -> pd.DataFrame:
        return self.table.read(self.columns, span[0], span[1])


def _reduce_part(work: Work, rows: pd.DataFrame, start: int) -> Partial:
    return work.reduce(rows, start)


def _offsets(frame: Any) -> tuple[list[int], int]:
    """Where each partition of a dask DataFrame starts, and its rows in all."""
    lengths = frame.map_partitions(len).compute()
    starts, total = [], 0
    for length in lengths:
        starts.append(total)
        total += int(length)
    return starts, total
