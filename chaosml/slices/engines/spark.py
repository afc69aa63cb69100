"""The Spark engine: a pass through pyspark, one ``mapInPandas`` task per partition."""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import sys
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from chaosml.data import DataSource
from chaosml.errors import ChaosmlError, DataError, InputError, UnreachableError
from chaosml.slices.engines.base import (
    WRONG_DATA,
    Closing,
    Job,
    Progress,
    Work,
    is_spark_frame,
    kind_of,
    merge_in_order,
    need,
    one_line,
    planned,
)
from chaosml.slices.sums import Partial

LOG4J = Path(__file__).with_name("log4j2.properties")  # a session started here logs errors only
NO_ROW_ORDER = (
    "{data}: a Spark table has no row order, so only model artifacts can predict on it (not "
    "predictions files, arrays or offline faults); give a Parquet path to align predictions "
    "files by row"
)
NO_TABLE = "{data}: not a file, folder or glob, nor a Spark table ({reason})"


class SparkEngine(Closing):
    """Spark through pyspark: the active session, or one started on ``master`` (``local[2]`` if
    not given) and stopped by ``close``."""

    name = "spark"
    unit = "partitions"

    def __init__(self, master: str | None = None, *, session: Any = None):
        need(self.name, "pyspark", "pyspark")
        self.master = master
        self._session = session
        self._started = False

    @property
    def session(self) -> Any:
        with _quiet_pyspark():
            return self._start()

    def _start(self) -> Any:
        if self._session is None:
            sql = need("spark", "pyspark.sql", "pyspark")
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
            if (self.master or "local").startswith("local"):  # stay on the loopback interface
                os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            active = sql.SparkSession.getActiveSession()
            if active is not None and self.master is None:
                self._session = active
            else:
                try:
                    with _jvm_output_to(SPARK_LOG):  # its launch banner is not the user's
                        self._session = self._build(sql)
                except Exception as exc:  # py4j and the JVM launcher raise anything
                    raise UnreachableError(
                        f"spark {self.master or 'local[2]'}: cannot start a session "
                        f"({one_line(exc)}); Spark needs Java 17 or later (its log: {SPARK_LOG})"
                    ) from exc
                self._session.sparkContext.setLogLevel("ERROR")
                self._started = True
        return self._session

    def _build(self, sql: Any) -> Any:
        return (
            sql.SparkSession.builder.master(self.master or "local[2]")
            .appName("chaosml")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={LOG4J}")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .getOrCreate()
        )

    def open(self, data: object) -> DataSource:
        if is_spark_frame(data):
            frame: Any = data
            return DataSource(
                source=frame,
                columns=tuple(frame.columns),
                num_rows=None,
                display="<Spark DataFrame>",
            )
        if isinstance(data, str | Path) and _looks_like_path(str(data)):
            return planned(data, self.name)
        if isinstance(data, str | Path):
            name = str(data)
            try:
                with _quiet_pyspark():
                    frame = self.session.table(name)
            except Exception as exc:  # pyspark's AnalysisException
                raise DataError(NO_TABLE.format(data=name, reason=one_line(exc))) from exc
            return DataSource(
                source=frame, columns=tuple(frame.columns), num_rows=None, display=name
            )
        reads = "a Parquet path, a table name or a Spark DataFrame"
        raise InputError(WRONG_DATA.format(engine=self.name, reads=reads, kind=kind_of(data)))

    def run(self, job: Job, progress: Progress | None) -> Partial:
        with _quiet_pyspark():
            return self._run(job, progress)

    def _run(self, job: Job, progress: Progress | None) -> Partial:
        session = self.session
        context = session.sparkContext
        if is_spark_frame(job.table.source) and job.aligned:
            raise InputError(NO_ROW_ORDER.format(data=job.table.name))
        work = context.broadcast(job.work())
        group = f"chaosml-{uuid.uuid4().hex[:12]}"
        context.setJobGroup(group, "chaosml slice pass", interruptOnCancel=True)
        schema = "part long, sums binary, error binary"
        if is_spark_frame(job.table.source):
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
        return merge_in_order(((i, sums) for i, (_, sums) in enumerate(parts)), len(parts), None)

    def close(self) -> None:
        if self._started and self._session is not None:
            self._session.stop()
            self._session = None
            self._started = False


SPARK_LOG = Path(".chaosml") / "logs" / "spark.log"


@contextlib.contextmanager
def _jvm_output_to(path: Path) -> Iterator[None]:
    """Standard error goes to ``path`` while the JVM starts: it inherits that, so its banner
    and its own log lines go there, and chaosml's terminal keeps only chaosml's lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with path.open("ab") as sink:
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


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
