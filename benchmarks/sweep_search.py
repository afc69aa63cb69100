"""The sweep's search against an oracle bisection, on simulated detectors with known thresholds.

A simulated detector fires with probability ``1 / (1 + exp(-(level - t) / s))`` (a logistic
curve through 0.5 at the threshold ``t``, steeper for smaller ``s``), one seeded draw per run.
The goal: place the 0.5 crossing within +-0.02 (of rate) in at least 90% of seeded sweeps, on the
range 0.02:0.6. The estimate is the middle of the bracket the search reports.

Two baselines, measured in the same run:

- the exact oracle: a bisection told the true detection probability at each level (one
  noise-free "run" per level); it needs ceil(log2(0.58 / 0.04)) = 4 runs whatever the detector.
  No search that sees runs, not probabilities, can come near it on a shallow detector; it is
  printed for scale.
- the best fixed-replicate bisection (the goal's baseline): majority of ``n`` runs per level,
  arithmetic midpoints, no runs at the range's ends (it knows the threshold is inside), stopping
  at a bracket of 0.04, with the smallest odd ``n`` that reaches 90% on that detector (it knows
  the detector's slope, so ``n`` is tuned per detector).

chaosml's search (``chaosml.sweep.search``, width 0.04) tests both ends first and decides a
level as soon as its majority is settled; it is given the smallest ``--replicates`` that reaches
90% on the detector, like the baseline. The ratio is chaosml's mean runs over the baseline's.
The last columns show chaosml at its default (``--replicates 3``), untuned, for what a user who
does not know the slope gets.

Run: python benchmarks/sweep_search.py [--seeds 300]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import numpy as np

from chaosml.sweep import RunResult, search, threshold

LOW, HIGH, HALF_WIDTH, GOAL = 0.02, 0.6, 0.02, 0.9
THRESHOLDS = (0.08, 0.15, 0.25, 0.4, 0.5)
SLOPES = (0.0025, 0.005, 0.01, 0.02)
ODD = (1, 3, 5, 7, 9, 11, 13, 15)
ALERT = "Simulated"


def probability(level: float, t: float, s: float) -> float:
    return 1 / (1 + math.exp(-(level - t) / s))


def oracle(t: float, s: float, n: int, rng: np.random.Generator | None) -> tuple[float, int]:
    """(estimate, runs) of a bisection deciding each level by a majority of ``n`` runs (by the
    true probability when ``rng`` is None)."""
    lo, hi, runs = LOW, HIGH, 0
    while hi - lo > 2 * HALF_WIDTH:
        mid = (lo + hi) / 2
        p = probability(mid, t, s)
        if rng is None:
            detected, runs = p >= 0.5, runs + 1
        else:
            detected, runs = int((rng.random(n) < p).sum()) * 2 > n, runs + n
        lo, hi = (lo, mid) if detected else (mid, hi)
    return (lo + hi) / 2, runs


def chaosml(t: float, s: float, n: int, rng: np.random.Generator) -> tuple[float | None, int]:
    def run(level: float) -> tuple[str, RunResult]:
        hit = bool(rng.random() < probability(level, t, s))
        return "run", {ALERT: (hit, None)}

    levels = search(run, LOW, HIGH, alert=ALERT, replicates=n, max_runs=200, width=2 * HALF_WIDTH)
    runs = sum(len(level.runs) for level in levels)
    below, above = threshold(levels, ALERT)
    if below is None or above is None:
        return None, runs
    return (below + above) / 2, runs


Method = Callable[[float, float, int, np.random.Generator], tuple[float | None, int]]


def trial(method: Method, t: float, s: float, n: int, seeds: int) -> tuple[float, float]:
    """(the share of seeded sweeps within the goal's width, their mean runs)."""
    hits, runs = 0, 0
    for seed in range(seeds):
        estimate, spent = method(t, s, n, np.random.default_rng(seed))
        hits += estimate is not None and abs(estimate - t) <= HALF_WIDTH
        runs += spent
    return hits / seeds, runs / seeds


def tuned(method: Method, t: float, s: float, seeds: int) -> tuple[int, float, float]:
    """(the smallest odd n reaching the goal, its success share, its mean runs)."""
    for n in ODD:
        ok, runs = trial(method, t, s, n, seeds)
        if ok >= GOAL or n == ODD[-1]:
            return n, ok, runs
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=300)
    args = parser.parse_args()
    print(
        f"range {LOW}:{HIGH}, goal: 0.5 crossing within +-{HALF_WIDTH} in {GOAL:.0%} of "
        f"{args.seeds} seeded sweeps per detector"
    )
    print(
        f"{'t':>5} {'s':>7} | {'exact':>5} | {'fixed n':>7} {'ok':>5} {'runs':>6} | "
        f"{'chaosml n':>9} {'ok':>5} {'runs':>6} | {'ratio':>5} | {'default':>7} {'ok':>5}"
    )
    by_slope: dict[float, list[tuple[float, float]]] = {s: [] for s in SLOPES}
    for s in SLOPES:
        for t in THRESHOLDS:
            _, exact = oracle(t, s, 1, None)
            n_fixed, ok_fixed, runs_fixed = tuned(
                lambda t, s, n, rng: oracle(t, s, n, rng), t, s, args.seeds
            )
            n_ours, ok_ours, runs_ours = tuned(chaosml, t, s, args.seeds)
            ok_default, runs_default = trial(chaosml, t, s, 3, args.seeds)
            by_slope[s].append((runs_ours, runs_fixed))
            print(
                f"{t:5.2f} {s:7.4f} | {exact:5d} | {n_fixed:7d} {ok_fixed:5.0%} {runs_fixed:6.1f} | "
                f"{n_ours:9d} {ok_ours:5.0%} {runs_ours:6.1f} | {runs_ours / runs_fixed:5.2f} | "
                f"{runs_default:7.1f} {ok_default:5.0%}"
            )
    print("mean runs, chaosml / best fixed-replicate bisection (goal <= 1.5):")
    total_ours = total_fixed = 0.0
    for s, pairs in by_slope.items():
        ours, fixed = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        total_ours, total_fixed = total_ours + ours, total_fixed + fixed
        print(f"  slope {s:g}: {ours / fixed:.2f}")
    print(f"  all detectors: {total_ours / total_fixed:.2f}")


if __name__ == "__main__":
    main()
