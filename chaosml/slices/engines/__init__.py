"""Where a slice pass runs: in this process (``local``), on a Dask cluster (``dask``) or on Spark
(``spark``), an engine looked up by name; what every engine shares (a pass, what a worker gets, the
protocol) is in ``base``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from chaosml.errors import InputError
from chaosml.slices.engines.base import (
    FAULT_BLOCK,
    MISSING_EXTRA,
    NOT_PARQUET,
    WRONG_DATA,
    Engine,
    Job,
    Progress,
    Work,
    is_dask_frame,
    is_spark_frame,
)
from chaosml.slices.engines.dask import UNREACHABLE_SCHEDULER, DaskEngine
from chaosml.slices.engines.local import LocalEngine
from chaosml.slices.engines.spark import NO_ROW_ORDER, NO_TABLE, SparkEngine

LOCAL_SCHEDULER = "--scheduler is for the dask and spark engines, not local"
UNKNOWN_ENGINE = "unknown engine {name!r} (expected one of: {known})"

__all__ = [
    "ENGINES",
    "FAULT_BLOCK",
    "LOCAL_SCHEDULER",
    "MISSING_EXTRA",
    "NOT_PARQUET",
    "NO_ROW_ORDER",
    "NO_TABLE",
    "UNKNOWN_ENGINE",
    "UNREACHABLE_SCHEDULER",
    "WRONG_DATA",
    "DaskEngine",
    "Engine",
    "Job",
    "LocalEngine",
    "Progress",
    "SparkEngine",
    "Work",
    "choose_engine",
    "engine_for",
    "make_engine",
]


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
        if is_dask_frame(data):
            return DaskEngine()
        if is_spark_frame(data):
            return SparkEngine(session=getattr(data, "sparkSession", None))
        return LocalEngine()
    return make_engine(engine) if isinstance(engine, str) else engine
