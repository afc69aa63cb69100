"""The sweep's offline harm curve at scale: chaosml's own work against the model's prediction passes.

`chaosml sweep ... --suite --model` applies each level of the swept fault offline per slice
(``chaosml.sweep.offline_harm``: the fragility path, same fault code, seeded). Here: the demo's
``income-nulls`` scenario at 20 levels of ``faults[0].rate`` (0.02 to 0.6), v2, 1M rows, 100
slices (the fragility benchmark's suite). Every call to the model's predict/predict_proba is
timed in the same run (as ``benchmarks/fragility.py`` does), so the split is:

- prediction: the model answering the clean rows once, then the faulted rows once per level;
- chaosml: everything else (reading the data, writing the level files, applying the fault, the
  engine's counts per slice, the losses).

Run: python benchmarks/sweep_harm.py [--rows 1000000] [--levels 20]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import chaosml.versions
from chaosml.demo.data import make_credit
from chaosml.demo.train import train_demo
from chaosml.sweep import offline_harm, write_level

SCENARIO = Path(__file__).parents[1] / "scenarios" / "income-nulls.yaml"
SUITE = """label: approved
min_size: 50
slices:
{where}
  - {{by: [region]}}
  - {{by: [employment]}}
  - {{by: [sex]}}
  - {{by: [sex, region]}}
  - {{by: [region, employment]}}
  - {{by: [sex, region, employment]}}
compare: {{metric: accuracy, max_drop: 0.01}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--levels", type=int, default=20)
    args = parser.parse_args()

    spent = {"prediction": 0.0, "calls": 0}
    predict = chaosml.versions._predict

    def timed(*a: Any, **k: Any) -> Any:
        start = time.perf_counter()
        try:
            return predict(*a, **k)
        finally:
            spent["prediction"] += time.perf_counter() - start
            spent["calls"] += 1

    chaosml.versions._predict = timed  # type: ignore[assignment]

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        artifacts = train_demo(work / "demo")
        data = work / "eval.parquet"
        make_credit(args.rows, seed=9).to_parquet(data, row_group_size=200_000)
        bands = [(a, a + 2) for a in range(18, 78, 2)] + [(18, 30), (30, 45), (45, 60), (60, 80)]
        ages = [  # 34 age bands and 66 `by` groups: 100 slices
            f'  - {{name: "age {a}-{b}", where: "{a} <= age < {b}"}}' for a, b in bands
        ]
        (work / "suite.yaml").write_text(SUITE.format(where="\n".join(ages)), encoding="utf-8")
        raw = yaml.safe_load(SCENARIO.read_text(encoding="utf-8"))

        start = time.perf_counter()
        levels = [float(f"{v:.4g}") for v in np.linspace(0.02, 0.6, args.levels)]
        paths = [write_level(raw, SCENARIO, 0, "rate", v, work / "levels") for v in levels]
        harm, metric, _ = offline_harm(work / "suite.yaml", "v2", data, artifacts.config)
        losses = harm(paths)
        total = time.perf_counter() - start
    own = total - spent["prediction"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    slices = max(len(by_slice) for by_slice in losses.values())
    print(
        f"{args.rows:,} rows, {slices} slices, {len(levels)} levels of faults[0].rate "
        f"({levels[0]:g} to {levels[-1]:g}), v2, metric {metric}"
    )
    print(
        f"  total {total:6.1f} s   model predictions {spent['prediction']:6.1f} s "
        f"({spent['calls']} calls)   chaosml {own:6.1f} s"
    )
    print(f"  chaosml's own work / prediction time: {own / spent['prediction']:.2f}")
    worst = [max(losses[p].values(), default=0.0) for p in paths]
    print(f"  peak RSS {peak:,.0f} MB; worst slice loss {worst[0]:.3f} to {worst[-1]:.3f}")


if __name__ == "__main__":
    main()
