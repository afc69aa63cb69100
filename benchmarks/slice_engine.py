"""Slice engine benchmark: chaosml vs fairlearn's MetricFrame, measured in the same run.

1. In process: 1,000,000 rows x 100 slices (`by:` a 100-valued column), three metrics, a paired
   comparison with 1000 bootstrap replicates, against MetricFrame computing point estimates only
   for the same groups (once per version, as a comparison needs both).
2. End to end as processes on Parquet, process start to exit: the `chaosml slices compare ...
   --json` command (1,000,000 rows x 100 slices, predictions-file versions) against a fairlearn
   script computing the same per-slice metrics with MetricFrame on the same files; the ratio,
   against the goal of 20x, and how much of the command was imports (`-X importtime`).
3. 100,000,000 rows x 100 slices from Parquet, predictions-file versions: wall time and peak RSS
   of `chaosml slices compare` on precision (a ratio metric: permutation test and 1000 bootstrap
   replicates), against the budget of 60 s and 2 GiB.

Run: python benchmarks/slice_engine.py [--rows 1000000] [--big-rows 100000000]
     python benchmarks/slice_engine.py --only-end-to-end  (part 2 alone)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

METRICS = ["accuracy", "recall", "precision"]
SUITE = """label: y
min_size: 30
slices:
  - {by: [g]}
metrics: [accuracy, recall, precision]
compare: {metric: accuracy, max_drop: 0.01}
"""
BIG_SUITE = SUITE.replace("metric: accuracy", "metric: precision")
FAIRLEARN_SCRIPT = """
import sys
import pandas as pd
from fairlearn.metrics import MetricFrame
from sklearn.metrics import accuracy_score, precision_score, recall_score
data = pd.read_parquet(sys.argv[1])
metrics = {"accuracy": accuracy_score, "recall": recall_score, "precision": precision_score}
for path in sys.argv[2:]:
    pred = pd.read_parquet(path)["prediction"]
    frame = MetricFrame(metrics=metrics, y_true=data["y"], y_pred=pred, sensitive_features=data["g"])
    print(frame.by_group.shape, frame.overall.to_dict())
"""


def make_data(rows: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(rows) < 0.4
    g = rng.integers(0, 100, size=rows)
    p1 = y ^ (rng.random(rows) < 0.15)
    p2 = y ^ (rng.random(rows) < 0.14 + 0.0004 * g)
    return pd.DataFrame({"g": g, "y": y.astype(np.int8)}), p1.astype(np.int8), p2.astype(np.int8)


def best_of(repeats: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def in_process(rows: int) -> None:
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import accuracy_score, precision_score, recall_score

    import chaosml

    frame, p1, p2 = make_data(rows)
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "suite.yaml").write_text(SUITE, encoding="utf-8")
        suite = chaosml.load_suite(Path(folder, "suite.yaml"))

    def ours(metric: str) -> Callable[[], object]:
        policy = suite.compare.model_copy(update={"metric": metric})
        compared = suite.model_copy(update={"compare": policy})
        v1, v2 = chaosml.InMemory("v1", p1), chaosml.InMemory("v2", p2)
        return lambda: chaosml.compare_versions(compared, v1, v2, frame, n_boot=1000)

    oracle = {"accuracy": accuracy_score, "recall": recall_score, "precision": precision_score}

    def metricframe() -> object:
        for pred in (p1, p2):
            MetricFrame(
                metrics=oracle, y_true=frame["y"], y_pred=pred, sensitive_features=frame["g"]
            )
        return None

    def engine_pass() -> object:  # what MetricFrame computes: every metric, every group
        versions = [chaosml.InMemory("v1", p1), chaosml.InMemory("v2", p2)]
        evaluation = chaosml.evaluate(suite, frame, versions)
        return [evaluation.frame(v, METRICS) for v in (0, 1)]

    result = ours("accuracy")()
    assert len(result.slices) == 100  # type: ignore[attr-defined]
    pass_s = best_of(5, engine_pass)
    accuracy_s = best_of(5, ours("accuracy"))
    precision_s = best_of(5, ours("precision"))
    fairlearn_s = best_of(1, metricframe)
    print(f"in process, {rows:,} rows x 100 slices, 3 metrics, 2 versions:")
    print(
        f"  chaosml engine pass (the 3 metrics per slice, both versions): {pass_s * 1000:8.1f} ms"
    )
    print(f"  chaosml compare on accuracy (McNemar, score intervals): {accuracy_s * 1000:8.1f} ms")
    print(
        f"  chaosml compare on precision (permutation test, 1000 bootstrap replicates): "
        f"{precision_s * 1000:8.1f} ms"
    )
    print(f"  fairlearn MetricFrame x2 (point estimates):  {fairlearn_s * 1000:8.1f} ms")
    for name, ours_s in (
        ("engine pass", pass_s),
        ("accuracy", accuracy_s),
        ("precision", precision_s),
    ):
        print(
            f"  ratio, {name}: chaosml is {fairlearn_s / ours_s:.0f}x faster "
            f"({fairlearn_s / 2 / ours_s:.0f}x against a single MetricFrame)"
        )


def write_parquet(folder: Path, rows: int) -> tuple[Path, Path, Path, Path]:
    data, p1_path, p2_path = folder / "data.parquet", folder / "v1.parquet", folder / "v2.parquet"
    writers: dict[Path, pq.ParquetWriter] = {}
    step = 1_000_000
    for start in range(0, rows, step):
        frame, p1, p2 = make_data(min(step, rows - start), seed=start)
        for path, table in (
            (data, frame),
            (p1_path, pd.DataFrame({"prediction": p1})),
            (p2_path, pd.DataFrame({"prediction": p2})),
        ):
            arrow = pa.Table.from_pandas(table, preserve_index=False)
            if path not in writers:
                writers[path] = pq.ParquetWriter(path, arrow.schema)
            writers[path].write_table(arrow, row_group_size=step)
    for writer in writers.values():
        writer.close()
    suite = folder / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    return data, p1_path, p2_path, suite


def run_process(
    argv: list[str], out: Path | None = None, env: dict[str, str] | None = None
) -> tuple[float, float]:
    """Wall time and peak RSS (MiB) of one child process (``wait4`` reports that child alone)."""
    with tempfile.TemporaryFile() as errors, open(out or os.devnull, "wb") as output:
        start = time.perf_counter()
        child = subprocess.Popen(argv, stdout=output, stderr=errors, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode not in (0, 1):
            errors.seek(0)
            raise SystemExit(f"{argv[:4]} failed ({child.returncode}): {errors.read().decode()}")
    return elapsed, usage.ru_maxrss / 1024


GOAL = 20.0  # end to end, chaosml is to be at least this many times faster than fairlearn


def chaosml_command() -> list[str]:
    """The installed ``chaosml`` console script beside this interpreter (what a user runs), else
    ``python -m chaosml``."""
    script = Path(sys.executable).with_name("chaosml")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "chaosml"]


def import_seconds(stderr: str) -> float:
    """Sum of the top-level imports' cumulative microseconds in ``-X importtime`` output."""
    total = 0
    for line in stderr.splitlines():
        if line.startswith("import time:") and "cumulative" not in line:
            _, cumulative, name = line.split("|")
            if not name.startswith("  "):
                total += int(cumulative)
    return total / 1e6


def chaosml_argv(data: Path, p1: Path, p2: Path, suite: Path) -> list[str]:
    return [*chaosml_command(), *compare_args(data, p1, p2, suite)]


def compare_args(data: Path, p1: Path, p2: Path, suite: Path) -> list[str]:
    return [
        "slices",
        "compare",
        str(p1),
        str(p2),
        "--suite",
        str(suite),
        "--data",
        str(data),
        "--json",
        "--n-boot",
        "1000",
    ]


def end_to_end(rows: int, folder: Path, repeat: int = 3) -> None:
    data, p1, p2, suite = write_parquet(folder, rows)
    script = folder / "fairlearn_baseline.py"
    script.write_text(FAIRLEARN_SCRIPT, encoding="utf-8")
    argv = chaosml_argv(data, p1, p2, suite)
    baseline = [sys.executable, str(script), str(data), str(p1), str(p2)]
    out = folder / "compare.json"
    # both programs start from bytecode, as installed packages do (PYTHONDONTWRITEBYTECODE would
    # make chaosml, an editable install here, compile every module on every start)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    warm = "import fairlearn.metrics, sklearn.metrics, pandas, pyarrow.parquet, chaosml.cli"
    subprocess.run([sys.executable, "-c", warm], env=env, check=True)
    run_process(argv, out, env)  # the modules chaosml imports lazily
    ours = min(run_process(argv, out, env)[0] for _ in range(repeat))
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["overall"]["n"] == rows and len(report["slices"]) == 100, "an incomplete pass"
    theirs = run_process(baseline, env=env)[0]
    timed = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "chaosml",
        *compare_args(data, p1, p2, suite),
    ]
    traced = subprocess.run(timed, capture_output=True, text=True, check=False, env=env)
    imports = import_seconds(traced.stderr)
    print(f"end to end, processes on Parquet, {rows:,} rows x 100 slices (best of {repeat}):")
    print(f"  chaosml slices compare --json --n-boot 1000: {ours:6.2f} s")
    print(f"    of which imports (-X importtime, one run):  {imports:6.2f} s")
    print(f"  fairlearn script (MetricFrame x2):           {theirs:6.2f} s")
    verdict = "met" if theirs / ours >= GOAL else "not met"
    print(f"  ratio: chaosml is {theirs / ours:.1f}x faster (goal {GOAL:.0f}x: {verdict})")


def big(rows: int, folder: Path) -> None:
    data, p1, p2, suite = write_parquet(folder, rows)
    suite.write_text(BIG_SUITE, encoding="utf-8")
    size = sum(path.stat().st_size for path in (data, p1, p2)) / 2**20
    elapsed, peak = run_process(chaosml_argv(data, p1, p2, suite), folder / "out.json")
    report = json.loads((folder / "out.json").read_text(encoding="utf-8"))
    assert report["overall"]["n"] == rows and len(report["slices"]) == 100, "an incomplete pass"
    assert report["overall"]["ci"] is not None  # the bootstrap interval of precision
    print(
        f"{rows:,} rows x 100 slices from Parquet ({size:,.0f} MiB on disk), compare on "
        f"precision with 1000 bootstrap replicates: {elapsed:.1f} s "
        f"({elapsed / 60:.2f} of the 60 s budget), peak RSS {peak:,.0f} MiB "
        f"({peak / 2048:.2f} of the 2 GiB budget)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=100_000_000)
    parser.add_argument("--only-big", action="store_true", help="run part 3 alone")
    parser.add_argument("--only-end-to-end", action="store_true", help="run part 2 alone")
    args = parser.parse_args()
    if args.only_end_to_end:
        with tempfile.TemporaryDirectory() as folder:
            end_to_end(args.rows, Path(folder))
        return
    if not args.only_big:
        in_process(args.rows)
        with tempfile.TemporaryDirectory() as folder:
            end_to_end(args.rows, Path(folder))
    with tempfile.TemporaryDirectory() as folder:
        big(args.big_rows, Path(folder))


if __name__ == "__main__":
    main()
