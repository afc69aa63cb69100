"""Slices under failure scenarios at scale: chaosml's own work against the model's prediction passes.

`slices compare v1 v2 --scenarios` on the demo models: 1M rows, about 100 slices, 10 scenarios (the
bundled ones, whose transport-only scenarios are skipped, and extra input faults). Every call to a
model's predict/predict_proba is timed in the same run, so the split is:

- prediction: the models answering (clean once, then cached; faulted once per version and
  scenario that changes the inputs);
- chaosml: everything else (reading the data, applying the faults, the engine's counts, the
  statistics, the clean comparison).

Run: python benchmarks/fragility.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import chaosml.versions
from chaosml.config import load_config
from chaosml.demo.data import make_credit
from chaosml.demo.train import train_demo
from chaosml.slices.compare import compare_versions
from chaosml.slices.fragility import fragility
from chaosml.slices.offline import offline_scenarios
from chaosml.slices.suite import load_suite
from chaosml.versions import resolve_version

BUNDLED = Path(__file__).parents[1] / "scenarios"
EXTRA = {
    "age-older": "{type: shift, columns: [age], by: 10}",
    "debt-noise": "{type: noise, columns: [debt_ratio], std: 0.2}",
    "region-unseen": "{type: unseen_category, columns: [region], rate: 0.5}",
    "history-nulls": "{type: missing_values, columns: [credit_history_years], rate: 0.5}",
    "eu-income-units": "{type: scale, columns: [income], factor: 0.001, where: \"region == 'EU'\"}",
}
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
    args = parser.parse_args()

    spent = {"prediction": 0.0}
    predict = chaosml.versions._predict

    def timed(*a: Any, **k: Any) -> Any:
        start = time.perf_counter()
        try:
            return predict(*a, **k)
        finally:
            spent["prediction"] += time.perf_counter() - start

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
        scenarios = work / "scenarios"
        shutil.copytree(BUNDLED, scenarios)
        for name, fault in EXTRA.items():
            (scenarios / f"{name}.yaml").write_text(
                f"name: {name}\nload: {{users: 1, rate: 1}}\n"
                "phases: {steady: 1s, fault: 1s, recovery: 1s}\n"
                f"faults:\n  - {fault}\n",
                encoding="utf-8",
            )
        config = load_config(artifacts.config)
        suite = load_suite(work / "suite.yaml")
        v1, v2 = resolve_version("v1", config), resolve_version("v2", config)
        loaded = offline_scenarios([scenarios])
        applicable = [s for s in loaded if s.applicable]

        start = time.perf_counter()
        clean = compare_versions(suite, v1, v2, data, config=config)
        result = fragility(suite, [v1, v2], data, loaded, config=config, n_boot=1000)
        total = time.perf_counter() - start
    own = total - spent["prediction"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.rows:,} rows, {len(clean.slices)} slices, {len(applicable)} scenarios applied "
        f"offline ({len(loaded) - len(applicable)} transport-only skipped), "
        f"{len(result.cells):,} (slice, scenario) cells"
    )
    print(
        f"  total {total:6.1f} s   model predictions {spent['prediction']:6.1f} s   chaosml {own:6.1f} s"
    )
    print(f"  chaosml's own work / prediction time: {own / spent['prediction']:.2f}")
    print(f"  peak RSS {peak:,.0f} MB; {len(result.fragile)} cells where v2 is more fragile")


if __name__ == "__main__":
    main()
