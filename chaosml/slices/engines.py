"""Where a slice pass runs: in this process, on a Dask cluster, or on Spark.

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

import contextlib
import functools
import os
import pickle
import sys
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, Self

import pandas as pd

from chaosml.data import DataSource, open_table
from chaosml.errors import ChaosmlError, DataError, InputError, UnreachableError
from chaosml.slices.engine import Accumulator, ChunkData, Partial, SlicePlan
from chaosml.versions import (
    ArtifactVersion,
    PartPredictor,
    Predictions,
    Scalar,
    Version,
    as_binary,
)

FAULT_BLOCK = 10_000  # rows per random stream of offline faults: partitions cut at multiples
LOG4J = Path(__file__).with_name("log4j2.properties")  # a session started here logs errors only
Progress = Callable[[int, int | None], None]  # (done, total): rows locally, partitions elsewhere
MISSING_EXTRA = "the {engine} engine needs {package}: pip install 'chaosml[{engine}]' ({reason})"
WRONG_DATA = "the {engine} engine reads {reads}, not a {kind}"
NOT_PARQUET = (
    "{data}: the {engine} engine reads Parquet (a file, a folder or a glob of files), not CSV: "
    "its partitions are row ranges found from the Parquet footers"
)
NO_ROW_ORDER = (
    "{data}: a Spark table has no row order, so only model artifacts can predict on it (not "
    "predictions files, arrays or offline faults); give a Parquet path to align predictions "
    "files by row"
)
NO_TABLE = "{data}: not a file, folder or glob, nor a Spark table ({reason})"
LOCAL_SCHEDULER = "--scheduler is for the dask and spark engines, not local"
UNKNOWN_ENGINE = "unknown engine {name!r} (expected one of: {known})"
UNREACHABLE_SCHEDULER = "dask scheduler {address}: cannot connect: {reason}"


@dataclass(frozen=True)
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
        return Work(self.plan, self.label, self.positive, tuple(self.columns), predictors, table)

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


@dataclass(frozen=True)
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
            _add(
                accumulator,
                rows,
                (self.table.name, self.label, self.positive),
                [functools.partial(predict, start=start) for predict in self.predictors],
            )
        return accumulator.sums

    def reduce_range(self, start: int, stop: int) -> Partial:
        """Read rows ``start`` to ``stop`` of a path and reduce them."""
        return self.reduce(self.table.read(self.columns, start, stop), start)


def _add(
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


class _Closing:
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


class LocalEngine(_Closing):
    """This process: the data streamed once in chunks, predictions cached per artifact and data."""

    name = "local"
    unit = "rows"

    def open(self, data: object) -> DataSource:
        if not isinstance(data, str | Path | pd.DataFrame):
            raise InputError(
                WRONG_DATA.format(
                    engine=self.name, reads="a path or a pandas DataFrame", kind=_kind(data)
                )
            )
        return open_table(data)

    def run(self, job: Job, progress: Progress | None) -> Partial:
        table = job.table
        accumulator = Accumulator(job.plan)
        with contextlib.ExitStack() as stack:
            predictors = [
                stack.enter_context(v.predictor(table, job.label, job.positive))
                for v in job.versions
            ]
            for frame in table.chunks(job.columns, job.chunk_rows):
                _add(accumulator, frame, (table.name, job.label, job.positive), predictors)
                if progress is not None:
                    progress(accumulator.sums.rows, table.num_rows)
        return accumulator.sums


def _need(engine: str, module: str, package: str) -> Any:
    """Import an optional engine's package, or say in one line how to get it."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise InputError(
            MISSING_EXTRA.format(engine=engine, package=package, reason=f"{exc.name} not found")
        ) from exc


def _merge_in_order(
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


class DaskEngine(_Closing):
    """A Dask ``distributed`` cluster: a scheduler's address, or a ``LocalCluster`` started here
    (``workers`` processes, one thread each) and stopped by ``close``."""

    name = "dask"
    unit = "partitions"

    def __init__(self, scheduler: str | None = None, *, workers: int = 2, retries: int = 2):
        _need(self.name, "distributed", "dask[distributed]")
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
            distributed = _need("dask", "distributed", "dask[distributed]")
            _need("dask", "dask.dataframe", "dask[dataframe]")
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
                        dashboard_address=None,
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
        if _is_dask_frame(data):
            frame: Any = data
            return DataSource(
                frame, tuple(map(str, frame.columns)), None, display="<dask DataFrame>"
            )
        if isinstance(data, str | Path):
            return _planned(data, self.name)
        raise InputError(
            WRONG_DATA.format(
                engine=self.name, reads="a Parquet path or a dask DataFrame", kind=_kind(data)
            )
        )

    def run(self, job: Job, progress: Progress | None) -> Partial:
        import dask.dataframe as dd
        from dask.delayed import delayed
        from distributed import as_completed

        client = self.client
        if _is_dask_frame(job.table.source):
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
            return _merge_in_order(
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


def _reason(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _kind(data: object) -> str:
    return f"{type(data).__module__}.{type(data).__name__}"


def _is_dask_frame(data: object) -> bool:
    module = sys.modules.get("dask.dataframe")
    return module is not None and isinstance(data, module.DataFrame)


def _is_spark_frame(data: object) -> bool:
    module = sys.modules.get("pyspark.sql")
    return module is not None and isinstance(data, module.DataFrame)


def _planned(data: str | Path, engine: str) -> DataSource:
    table = open_table(data)
    if not table.parquet:
        raise DataError(NOT_PARQUET.format(data=table.name, engine=engine))
    return table


class SparkEngine(_Closing):
    """Spark through pyspark: the active session, or one started on ``master`` (``local[2]`` if
    not given) and stopped by ``close``."""

    name = "spark"
    unit = "partitions"

    def __init__(self, master: str | None = None, *, session: Any = None):
        _need(self.name, "pyspark", "pyspark")
        self.master = master
        self._session = session
        self._started = False

    @property
    def session(self) -> Any:
        with _quiet_pyspark():
            return self._start()

    def _start(self) -> Any:
        if self._session is None:
            sql = _need("spark", "pyspark.sql", "pyspark")
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
            if (self.master or "local").startswith("local"):  # stay on the loopback interface
                os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            active = sql.SparkSession.getActiveSession()
            if active is not None and self.master is None:
                self._session = active
            else:
                try:
                    self._session = (
                        sql.SparkSession.builder.master(self.master or "local[2]")
                        .appName("chaosml")
                        .config("spark.ui.enabled", "false")
                        .config("spark.ui.showConsoleProgress", "false")
                        .config(
                            "spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={LOG4J}"
                        )
                        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                        .getOrCreate()
                    )
                except Exception as exc:  # py4j and the JVM launcher raise anything
                    raise UnreachableError(
                        f"spark {self.master or 'local[2]'}: cannot start a session "
                        f"({_reason(exc)}); Spark needs Java 17 or later"
                    ) from exc
                self._session.sparkContext.setLogLevel("ERROR")
                self._started = True
        return self._session

    def open(self, data: object) -> DataSource:
        if _is_spark_frame(data):
            frame: Any = data
            return DataSource(frame, tuple(frame.columns), None, display="<Spark DataFrame>")
        if isinstance(data, str | Path) and _looks_like_path(str(data)):
            return _planned(data, self.name)
        if isinstance(data, str | Path):
            name = str(data)
            try:
                with _quiet_pyspark():
                    frame = self.session.table(name)
            except Exception as exc:  # pyspark's AnalysisException
                raise DataError(NO_TABLE.format(data=name, reason=_reason(exc))) from exc
            return DataSource(frame, tuple(frame.columns), None, display=name)
        reads = "a Parquet path, a table name or a Spark DataFrame"
        raise InputError(WRONG_DATA.format(engine=self.name, reads=reads, kind=_kind(data)))

    def run(self, job: Job, progress: Progress | None) -> Partial:
        with _quiet_pyspark():
            return self._run(job, progress)

    def _run(self, job: Job, progress: Progress | None) -> Partial:
        session = self.session
        context = session.sparkContext
        if _is_spark_frame(job.table.source) and job.aligned:
            raise InputError(NO_ROW_ORDER.format(data=job.table.name))
        work = context.broadcast(job.work())
        group = f"chaosml-{uuid.uuid4().hex[:12]}"
        context.setJobGroup(group, "chaosml slice pass", interruptOnCancel=True)
        schema = "part long, sums binary, error binary"
        if _is_spark_frame(job.table.source):
            frame: Any = job.table.source
            rows = frame.select(*job.columns).mapInPandas(
                _SparkPartition(work, job.chunk_rows), schema
            )
            total = rows.rdd.getNumPartitions()
        else:
            ranges = job.ranges()
            spans = session.createDataFrame(
                context.parallelize(
                    [(i, start, stop) for i, (start, stop) in enumerate(ranges)],
                    max(len(ranges), 1),
                ),
                "part long, start long, stop long",
            )
            rows = spans.mapInPandas(_SparkRanges(work), schema)
            total = len(ranges)
        with _spark_progress(context, group, total, progress):
            try:
                collected = rows.collect()
            except BaseException:
                context.cancelJobGroup(group)
                raise
            finally:
                work.unpersist()
        for row in collected:
            if row.error is not None:
                raise pickle.loads(row.error)
        parts = sorted(
            ((row.part, pickle.loads(row.sums)) for row in collected), key=lambda x: x[0]
        )
        return _merge_in_order(((i, sums) for i, (_, sums) in enumerate(parts)), len(parts), None)

    def close(self) -> None:
        if self._started and self._session is not None:
            self._session.stop()
            self._session = None
            self._started = False


@contextlib.contextmanager
def _quiet_pyspark() -> Iterator[None]:
    """pyspark warns on each pandas UDF that it does not yet support pandas 3; chaosml only moves
    pickled sums through pandas there (and its tests check the results are identical)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "PySpark does not yet fully support", FutureWarning)
        yield


def _looks_like_path(text: str) -> bool:
    import glob

    return Path(text).exists() or glob.has_magic(text) or text.endswith((".parquet", ".pq", ".csv"))


def _caught(part: int, run: Callable[[], Partial]) -> pd.DataFrame:
    """One partition's sums as a row; a chaosml error travels back pickled, to be raised as is."""
    try:
        return pd.DataFrame({"part": [part], "sums": [pickle.dumps(run())], "error": [None]})
    except ChaosmlError as exc:
        return pd.DataFrame({"part": [part], "sums": [None], "error": [pickle.dumps(exc)]})


@dataclass(frozen=True)
class _SparkRanges:
    """``mapInPandas`` over planned partitions: each input row is one row range to read."""

    work: Any  # a Broadcast of Work

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        work: Work = self.work.value
        for batch in batches:
            for part, start, stop in batch[["part", "start", "stop"]].itertuples(index=False):
                yield _caught(
                    int(part), functools.partial(work.reduce_range, int(start), int(stop))
                )


@dataclass(frozen=True)
class _SparkPartition:
    """``mapInPandas`` over a Spark DataFrame's own partitions: one sums row per partition."""

    work: Any  # a Broadcast of Work
    chunk_rows: int

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from pyspark import TaskContext

        work: Work = self.work.value
        context = TaskContext.get()
        part = context.partitionId() if context is not None else 0

        def run() -> Partial:
            sums = Partial.empty(work.plan)
            start = part << 40  # a table has no row order: a partition's rows start apart
            for rows in _rebatch(batches, self.chunk_rows):
                sums.merge(work.reduce(rows, start))
                start += len(rows)
            return sums

        yield _caught(part, run)


def _rebatch(batches: Iterator[pd.DataFrame], rows: int) -> Iterator[pd.DataFrame]:
    """Arrow batches (10,000 rows by default) joined into chunks of ``rows``."""
    held: list[pd.DataFrame] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += len(batch)
        if count >= rows:
            yield pd.concat(held, ignore_index=True)
            held, count = [], 0
    if held:
        yield pd.concat(held, ignore_index=True)


@contextlib.contextmanager
def _spark_progress(
    context: Any, group: str, total: int, progress: Progress | None
) -> Iterator[None]:
    """Report finished tasks of the job group while Spark runs it (polled from a thread)."""
    if progress is None:
        yield
        return
    stop = threading.Event()
    progress(0, total)

    def poll() -> None:
        tracker = context.statusTracker()
        shown = -1
        while not stop.wait(0.25):
            done = 0
            for job_id in tracker.getJobIdsForGroup(group):
                job = tracker.getJobInfo(job_id)
                for stage_id in job.stageIds if job is not None else []:
                    stage = tracker.getStageInfo(stage_id)
                    if stage is not None:
                        done += stage.numCompletedTasks
            if done != shown:
                shown = done
                progress(min(done, total), total)

    thread = threading.Thread(target=poll, name="chaosml-spark-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        progress(total, total)


def _local(scheduler: str | None) -> Engine:
    if scheduler is not None:
        raise InputError(LOCAL_SCHEDULER)
    return LocalEngine()


# name -> a constructor from the --scheduler value (the dask scheduler's address, Spark's master)
ENGINES: dict[str, Callable[[str | None], Engine]] = {
    "local": _local,
    "dask": lambda scheduler: DaskEngine(scheduler),
    "spark": lambda scheduler: SparkEngine(scheduler),
}


def make_engine(name: str, scheduler: str | None = None) -> Engine:
    """An engine by name: ``local``, ``dask`` (``scheduler``: its address; none starts a
    LocalCluster) or ``spark`` (``scheduler``: the master URL, ``local[2]`` if none)."""
    make = ENGINES.get(name)
    if make is None:
        raise InputError(UNKNOWN_ENGINE.format(name=name, known=", ".join(ENGINES)))
    return make(scheduler)


@contextlib.contextmanager
def engine_for(engine: Engine | str | None, data: object) -> Iterator[Engine]:
    """``choose_engine``'s engine for the passes in the block; one started here stops after it."""
    runner = choose_engine(engine, data)
    try:
        yield runner
    finally:
        if runner is not engine:
            runner.close()


def choose_engine(engine: Engine | str | None, data: object) -> Engine:
    """The engine a pass runs on: the one given, else the one ``data`` belongs to, else local."""
    if engine is None:
        if _is_dask_frame(data):
            return DaskEngine()
        if _is_spark_frame(data):
            return SparkEngine(session=getattr(data, "sparkSession", None))
        return LocalEngine()
    return make_engine(engine) if isinstance(engine, str) else engine
