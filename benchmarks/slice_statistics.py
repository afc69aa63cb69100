"""How `chaosml slices compare`'s statistics behave against known truth: seeded simulations.

Every figure comes from populations whose true per-slice delta is known (cell probabilities over
label x v1 x v2), sampled with a fixed seed, and is printed next to the bootstrap methods the
comparison used before (percentile interval, bootstrap p-value), computed in the same run:

1. Coverage of 95% intervals for proportion metrics at small counts (Newcombe's hybrid score
   interval against the percentile bootstrap).
2. The rate of p < 0.05 when nothing changed, with few discordant rows (exact permutation test /
   McNemar against the bootstrap test), also when the versions differ but the metric does not.
3. Family-wise error with 100 slices and no change anywhere (Holm, alpha 0.05), through
   `compare_versions`.
4. Power: 100 slices of 1000 rows, one slice's precision 0.67 -> 0.36 (the README's example).

Run: python benchmarks/slice_statistics.py [--runs 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from chaosml.slices.compare import compare_versions
from chaosml.slices.metrics import METRICS, Metric
from chaosml.slices.stats import (
    FloatArray,
    IntArray,
    adjust,
    bootstrap_cells,
    mcnemar_exact,
    newcombe_interval,
    paired_table,
    percentile_interval,
    permutation_p_values,
    studentized,
)
from chaosml.slices.suite import ComparePolicy, SliceSpec, SliceSuite
from chaosml.slices.sums import confusion
from chaosml.versions import InMemory

N_BOOT = 1000


def population(prev: float, acc1: float, acc2: float, both_right: float) -> FloatArray:
    """Cell probabilities (bits label|v1|v2): each version right at its rate on every label."""
    pi = np.zeros(8)
    for y, share in ((0, 1 - prev), (1, prev)):
        right, wrong = y, 1 - y
        pi[y << 2 | right << 1 | right] = share * both_right
        pi[y << 2 | right << 1 | wrong] = share * (acc1 - both_right)
        pi[y << 2 | wrong << 1 | right] = share * (acc2 - both_right)
        pi[y << 2 | wrong << 1 | wrong] = share * (1 - acc1 - acc2 + both_right)
    return pi


def true_delta(metric: Metric, pi: FloatArray) -> float:
    return float(
        metric.value(*confusion(pi[None], 2, 1))[0] - metric.value(*confusion(pi[None], 2, 0))[0]
    )


def bootstrap_delta(metric: Metric, cells: IntArray, rng: np.random.Generator) -> FloatArray:
    boot = bootstrap_cells(cells, N_BOOT, rng)
    return metric.value(*confusion(boot, 2, 1)) - metric.value(*confusion(boot, 2, 0))


def bootstrap_p(replicates: FloatArray) -> FloatArray:
    """The bootstrap test the comparison used before: its p-value cannot go below 2/(n_boot+1)."""
    finite = np.isfinite(replicates)
    below = np.sum(finite & (replicates <= 0), axis=0)
    above = np.sum(finite & (replicates >= 0), axis=0)
    return np.minimum(2 * (np.minimum(below, above) + 1) / (finite.sum(axis=0) + 1), 1.0)


def coverage(runs: int, rng: np.random.Generator) -> None:
    print("1. Coverage of 95% intervals for the delta (known population delta)")
    print(f"   {'case':44s} {'Newcombe':>9s} {'bootstrap':>10s}")
    cases = [
        ("recall 0.97 -> 0.95, 50 positives", "recall", 1.0, 50, 0.97, 0.95),
        ("accuracy 0.97 -> 0.96, n = 50", "accuracy", 0.5, 50, 0.97, 0.96),
        ("recall 0.80 -> 0.75, 5% positives, n = 200", "recall", 0.05, 200, 0.8, 0.75),
        ("false positive rate, n = 80", "false_positive_rate", 0.3, 80, 0.95, 0.9),
        ("accuracy 0.85 -> 0.83, n = 1000", "accuracy", 0.5, 1000, 0.85, 0.83),
    ]
    for label, name, prev, n, acc1, acc2 in cases:
        metric = METRICS[name]
        pi = population(prev, acc1, acc2, min(acc1, acc2) - 0.02)
        truth = true_delta(metric, pi)
        counts = rng.multinomial(n, pi, size=runs)
        low, high = newcombe_interval(*paired_table(metric, counts), 0.95)
        ok = np.isfinite(low)
        new = np.mean((low[ok] <= truth) & (truth <= high[ok]))
        b_low, b_high = percentile_interval(bootstrap_delta(metric, counts, rng), 0.95)
        ok = np.isfinite(b_low)
        old = np.mean((b_low[ok] <= truth) & (truth <= b_high[ok]))
        print(f"   {label:44s} {new:9.3f} {old:10.3f}")


def level(runs: int, rng: np.random.Generator) -> None:
    print("2. Share of p < 0.05 with no change (nominal 0.05), by discordant rows per slice")
    print(f"   {'metric':18s} {'discordant':>10s} {'exact test':>11s} {'bootstrap':>10s}")
    for name in ("accuracy", "precision", "f1", "balanced_accuracy"):
        metric = METRICS[name]
        for n, disc in ((50, 0.08), (100, 0.1), (200, 0.1), (1000, 0.03)):
            counts = rng.multinomial(n, population(0.4, 0.85, 0.85, 0.85 - disc / 2), size=runs)
            if metric.proportion:
                _, b, c, _ = paired_table(metric, counts)
                new = mcnemar_exact(b, c)
            else:
                new = permutation_p_values(lambda x, m=metric: studentized(m, x), counts)
            old = bootstrap_p(bootstrap_delta(metric, counts, rng))
            print(
                f"   {name:18s} {n * disc:10.0f} {np.mean(new[np.isfinite(new)] < 0.05):11.3f} "
                f"{np.mean(old[np.isfinite(old)] < 0.05):10.3f}"
            )
    # versions that differ, with the same precision: v2 predicts positive twice as often
    pi = np.zeros(8)
    pi[0b111], pi[0b011], pi[0b101], pi[0b001] = 0.16, 0.04, 0.16, 0.04
    pi[0b100], pi[0b000] = 0.08, 0.52
    metric = METRICS["precision"]
    for n in (100, 300, 1000):
        counts = rng.multinomial(n, pi, size=runs)
        new = permutation_p_values(lambda x: studentized(metric, x), counts)
        old = bootstrap_p(bootstrap_delta(metric, counts, rng))
        print(
            f"   {'precision, v2 predicts 2x':30s} n={n:<5d} {np.mean(new[np.isfinite(new)] < 0.05):6.3f}"
            f" {np.mean(old[np.isfinite(old)] < 0.05):10.3f}"
        )


def _run(slices: IntArray, metric: str) -> list[str]:
    cells = np.asarray(slices)
    g = np.repeat(np.repeat(np.arange(len(cells)), 8), cells.ravel())
    bits = np.repeat(np.tile(np.arange(8), len(cells)), cells.ravel())
    frame = pd.DataFrame({"g": g, "y": (bits >> 2) & 1})
    suite = SliceSuite(
        label="y", min_size=1, slices=[SliceSpec(by=["g"])], compare=ComparePolicy(metric=metric)
    )
    v1, v2 = InMemory("v1", (bits >> 1) & 1), InMemory("v2", bits & 1)
    result = compare_versions(suite, v1, v2, frame, n_boot=0)
    return [s.name for s in result.slices if s.verdict == "regressed"]


def family(runs: int, rng: np.random.Generator) -> None:
    print("3. Family-wise error, 100 slices x 1000 rows, no change anywhere (Holm, alpha 0.05)")
    same = population(0.4, 0.85, 0.85, 0.8)
    for name in ("accuracy", "precision", "f1"):
        flagged = sum(bool(_run(rng.multinomial(1000, same, size=100), name)) for _ in range(runs))
        print(f"   {name:18s} runs with any slice regressed: {flagged / runs:.3f}")


def power(runs: int, rng: np.random.Generator) -> None:
    print("4. Power: 100 slices x 1000 rows, one slice's precision 0.67 -> 0.36 (Holm, alpha 0.05)")
    same = population(0.4, 0.85, 0.85, 0.8)
    worse = np.zeros(8)  # v2 turns two thirds of v1's right negatives into false positives
    worse[0b000], worse[0b001], worse[0b111], worse[0b100] = 0.2, 0.4, 0.3, 0.1
    metric = METRICS["precision"]
    found_new = found_old = 0
    for _ in range(runs):
        slices = np.vstack([rng.multinomial(1000, same, size=99), rng.multinomial(1000, worse)])
        found_new += "g=99" in _run(slices, "precision")
        old = adjust(bootstrap_p(bootstrap_delta(metric, slices, rng)), "holm")
        found_old += bool(old[99] < 0.05)
    print(
        f"   flagged in the right slice: exact test {found_new / runs:.3f}, bootstrap test {found_old / runs:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="simulated data sets per figure")
    parser.add_argument("--seed", type=int, default=20261126)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    coverage(args.runs, rng)
    level(args.runs, rng)
    family(max(args.runs // 10, 20), rng)
    power(max(args.runs // 40, 10), rng)
    print(f"({time.perf_counter() - start:.0f} s, seed {args.seed}, {args.runs} runs per figure)")


if __name__ == "__main__":
    main()
