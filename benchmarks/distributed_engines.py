"""Dask and Spark engines against the local engine, measured in the same run.

The same comparison (100 slices, precision: permutation test and 1000 bootstrap replicates, two
predictions-file versions, so the model is not the cost) runs on a Parquet dataset of ``--small``
and ``--rows`` rows with each engine: the local engine (one core), Dask on a LocalCluster of 2
worker processes with one thread each, and Spark ``local[2]``. From the two sizes:

- throughput, rows/s per core: the extra rows over the extra time, divided by the cores used
  (Dask with 1 worker shows the per-core cost without the client and scheduler competing for the
  2 cores of a small machine);
- fixed overhead per job: the time the job would take on zero rows (the line's intercept);
- start-up: starting the cluster or session, paid once per command;
- the break-even size above which the engine on 2 cores finishes before the local engine.

Every engine's answer is checked equal to the local one. Run:
python benchmarks/distributed_engines.py [--rows 20000000] [--small 4000000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import chaosml

SUITE = """label: y
min_size: 30
slices:
  - {by: [g]}
metrics: [accuracy, precision]
compare: {metric: precision, max_drop: 0.01}
"""
FILE_ROWS = 1_000_000


def write_dataset(folder: Path, rows: int) -> tuple[Path, Path, Path]:
    data = folder / "eval"
    data.mkdir()
    predictions: dict[str, list[pd.DataFrame]] = {"v1": [], "v2": []}
    for index, start in enumerate(range(0, rows, FILE_ROWS)):
        n = min(FILE_ROWS, rows - start)
        rng = np.random.default_rng(start)
        y = rng.random(n) < 0.4
        g = rng.integers(0, 100, size=n)
        frame = pd.DataFrame({"g": g, "y": y.astype(np.int8)})
        frame.to_parquet(data / f"part-{index:04d}.parquet", index=False)
        predictions["v1"].append(pd.DataFrame({"prediction": (y ^ (rng.random(n) < 0.15))}))
        predictions["v2"].append(
            pd.DataFrame({"prediction": (y ^ (rng.random(n) < 0.14 + 0.0004 * g))})
        )
    paths = []
    for name, parts in predictions.items():
        path = folder / f"{name}.parquet"
        pd.concat(parts, ignore_index=True).astype(np.int8).to_parquet(
            path, index=False, row_group_size=FILE_ROWS
        )
        paths.append(path)
    return data, paths[0], paths[1]


def start_dask(workers: int) -> Any:
    engine = chaosml.DaskEngine(workers=workers)
    engine.client  # noqa: B018 - starts the LocalCluster
    return engine


def start_spark() -> Any:
    engine = chaosml.SparkEngine("local[2]")
    engine.session  # noqa: B018 - starts the session
    return engine


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--small", type=int, default=4_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "suite.yaml").write_text(SUITE, encoding="utf-8")
        suite = chaosml.load_suite(folder / "suite.yaml")
        sizes = {}
        for rows in (args.small, args.rows):
            (folder / str(rows)).mkdir()
            sizes[rows] = write_dataset(folder / str(rows), rows)

        def job(rows: int, engine: Any) -> Callable[[], Any]:
            data, p1, p2 = sizes[rows]
            v1, v2 = chaosml.PredictionsFile("v1", p1), chaosml.PredictionsFile("v2", p2)
            return lambda: chaosml.compare_versions(
                suite, v1, v2, str(data / "*.parquet"), engine=engine, n_boot=1000
            ).to_dict()

        engines: list[tuple[str, int, Callable[[], Any]]] = [
            ("local", 1, chaosml.LocalEngine),
            ("dask LocalCluster(1)", 1, lambda: start_dask(1)),
            ("dask LocalCluster(2)", 2, lambda: start_dask(2)),
            ("spark local[2]", 2, start_spark),
        ]
        print(
            f"compare on precision, 100 slices, 1000 bootstrap replicates, predictions files; "
            f"{args.small:,} and {args.rows:,} rows of Parquet"
        )
        answers: dict[int, Any] = {}
        lines = []
        for name, cores, make in engines:
            startup, engine = timed(make)
            with engine:
                job(args.small, engine)()  # warm: imports, worker-side caches
                times = {}
                for rows in (args.small, args.rows):
                    times[rows], answer = min(
                        (timed(job(rows, engine)) for _ in range(2)), key=lambda r: r[0]
                    )
                    assert answers.setdefault(rows, answer) == answer, f"{name}: a different answer"
            slope = (times[args.rows] - times[args.small]) / (args.rows - args.small)
            overhead = times[args.small] - slope * args.small
            lines.append((name, cores, startup, times, 1 / slope / cores, overhead, slope))
        local = lines[0]
        for name, cores, startup, times, per_core, overhead, slope in lines:
            print(
                f"  {name:22s} start-up {startup:5.1f} s; {args.small:,} rows "
                f"{times[args.small]:5.2f} s; {args.rows:,} rows {times[args.rows]:5.2f} s; "
                f"{per_core / 1e6:5.2f} M rows/s per core "
                f"({per_core / local[4]:.2f} of local's), overhead per job {overhead:5.2f} s"
            )
            if name == "local":
                continue
            gain = local[6] - slope  # seconds saved per row by the engine's cores
            if gain > 0:
                per_job = max((overhead - local[5]) / gain, 0)
                per_command = max((startup + overhead - local[5]) / gain, 0)
                print(
                    f"  {'':22s} it runs at {local[6] / slope:.2f}x local's speed: faster "
                    f"than local above {per_job / 1e6:,.1f} M rows per job once started, above "
                    f"{per_command / 1e6:,.0f} M rows for one command counting the start-up"
                )
            else:
                print(f"  {'':22s} slower than local at every size on {cores} core(s) here")


if __name__ == "__main__":
    main()
