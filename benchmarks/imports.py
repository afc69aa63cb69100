"""Start-up cost of chaosml's commands: what each one imports before it does its work.

Each command runs in a fresh process with ``python -X importtime``; its import time is the sum of
the top-level imports' cumulative times (what the interpreter spent importing, including its own
start-up modules). A bare ``python -c pass`` measured the same way in the same run is the
baseline, so the ratios hold on any machine. Also the wall time of each process against
``python -c pass``'s.

Commands: ``--help``, ``validate scenarios/``, ``slices compare`` on the demo suite with
predictions files and with the demo's skops artifacts, ``run`` (up to its first check of the
target file, so no stack is needed), and the embed path (``import chaosml.faultpoint,
chaosml.monitors``, what a model service pays).

Run: python benchmarks/imports.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "slices" / "credit.yaml"


def import_seconds(stderr: str) -> float:
    """Sum of the top-level imports' cumulative microseconds in ``-X importtime`` output."""
    total = 0
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if not name.startswith("  "):  # one space follows the bar; nested names add two more
            total += int(cumulative)
    return total / 1e6


def measure(argv: list[str], cwd: Path, repeat: int) -> tuple[float, float, int]:
    """Median import seconds, median wall seconds and the exit code of ``python -X importtime
    ARGV``."""
    imports, walls, code = [], [], 0
    env = {**os.environ, "COLUMNS": "100"}
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-X", "importtime", *argv],
            cwd=cwd,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        walls.append(time.perf_counter() - start)
        imports.append(import_seconds(done.stderr))
        code = done.returncode
    return statistics.median(imports), statistics.median(walls), code


def prepare(folder: Path) -> dict[str, list[str]]:
    """The demo models, data and predictions files; the command lines to measure."""
    import pandas as pd

    from chaosml.demo.train import train_demo
    from chaosml.versions import load_model

    demo = train_demo(folder / "demo")
    data = pd.read_parquet(demo.data)
    features = data.drop(columns=["approved"])
    for name, path in (("v1", demo.v1), ("v2", demo.v2)):
        model = load_model(path)
        scores = model.predict_proba(features)[:, 1]
        pd.DataFrame({"prediction": (scores >= 0.5).astype(int), "score": scores}).to_parquet(
            folder / f"{name}.parquet"
        )
    compare = ["-m", "chaosml", "slices", "compare", "--suite", str(SUITE), "--data"]
    return {
        "python -c pass": ["-c", "pass"],
        "chaosml --help": ["-m", "chaosml", "--help"],
        "chaosml validate scenarios/": ["-m", "chaosml", "validate", str(ROOT / "scenarios")],
        "slices compare (predictions files)": [
            *compare,
            str(demo.data),
            str(folder / "v1.parquet"),
            str(folder / "v2.parquet"),
        ],
        "slices compare (skops artifacts)": [*compare, str(demo.data), str(demo.v1), str(demo.v2)],
        "chaosml run (to the target check)": [
            "-m",
            "chaosml",
            "run",
            str(ROOT / "scenarios" / "latency.yaml"),
            "--target",
            str(folder / "no-target.yaml"),
        ],
        "embed: import faultpoint, monitors": [
            "-c",
            "import chaosml.faultpoint, chaosml.monitors",
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        commands = prepare(folder)
        results = {name: measure(argv, folder, args.repeat) for name, argv in commands.items()}
    base_imports, base_wall, _ = results["python -c pass"]
    print(f"{'command':38} {'imports':>9} {'× bare':>7} {'wall':>8} {'× bare':>7}  exit")
    for name, (imports, wall, code) in results.items():
        print(
            f"{name:38} {imports:8.3f}s {imports / base_imports:6.1f}× "
            f"{wall:7.3f}s {wall / base_wall:6.1f}×  {code}"
        )


if __name__ == "__main__":
    main()
