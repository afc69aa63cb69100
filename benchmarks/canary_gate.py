"""How often the canary gate rolls back a healthy candidate, and how often it catches a bad one,
by seeded simulation (the baseline, on the same simulated data: a pooled two-sample z-test at the
same alpha, Bonferroni over the same families, with the same minimum counts, checked at every
look the way a canary checks its figures).

The canary: 3 slices x 2 figures (an error rate, worse_if_higher; the positive-prediction rate,
two-sided), steps at 5%, 25%, 50% and 100% of the traffic, looked at every tenth of each step
(40 looks); ``rows`` rows of each slice per look, both arms together. Null: the candidate is
the primary. Harm: the candidate's error rate on one slice is ``harm`` higher.

Run: python benchmarks/canary_gate.py [--runs 1000] [--seed 0] [--tau2 0.04]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import numpy.typing as npt
from scipy import stats

from chaosml.release.sequential import (
    DEFAULT_MIN_COUNT,
    DEFAULT_MIN_EVENTS,
    DEFAULT_TAU2,
    Direction,
    Family,
    Gate,
    Proportion,
)

ALPHA = 0.05
SLICES = ("EU", "US", "APAC")
WEIGHTS = (0.05, 0.25, 0.5, 1.0)
LOOKS = 10
Array = npt.NDArray[np.int64]


def simulate(
    rng: np.random.Generator, runs: int, rows: int, error: float, harm: float
) -> tuple[Array, Array, dict[str, tuple[Array, Array]]]:
    share = np.repeat(WEIGHTS, LOOKS)[None, :, None]
    n_c = rng.binomial(rows, share, size=(runs, len(WEIGHTS) * LOOKS, len(SLICES)))
    n_p = rows - n_c
    out = {}
    for figure, rate in (("error_rate", error), ("positive_rate", 0.5)):
        rates = np.full(len(SLICES), rate)
        if figure == "error_rate":
            rates[-1] += harm
        out[figure] = (
            rng.binomial(n_c, rates[None, None, :]).cumsum(axis=1),
            rng.binomial(n_p, rate).cumsum(axis=1),
        )
    return n_c.cumsum(axis=1), n_p.cumsum(axis=1), out


FIGURES: tuple[tuple[str, Direction], ...] = (
    ("error_rate", "worse_if_higher"),
    ("positive_rate", "two_sided"),
)
FAMILIES = [Family(s, f, direction=d) for s in SLICES for f, d in FIGURES]


def gate_rollbacks(
    data: tuple[Array, Array, dict[str, tuple[Array, Array]]], tau2: float
) -> tuple[float, float | None, int]:
    """The share rolled back, the median look (1 to 40) they were rolled back at, looks made."""
    n_c, n_p, out = data
    at: list[int] = []
    looks = 0
    for run in range(n_c.shape[0]):
        gate = Gate(ALPHA, FAMILIES, tau2=tau2)
        for t in range(n_c.shape[1]):
            looks += 1
            decision = gate.look(
                {
                    (s, f): (
                        Proportion(int(n_c[run, t, j]), int(out[f][0][run, t, j])),
                        Proportion(int(n_p[run, t, j]), int(out[f][1][run, t, j])),
                    )
                    for j, s in enumerate(SLICES)
                    for f in out
                }
            )
            if decision.rolled_back:
                at.append(t + 1)
                break
    return len(at) / n_c.shape[0], float(np.median(at)) if at else None, looks


def fixed_rollbacks(data: tuple[Array, Array, dict[str, tuple[Array, Array]]]) -> float:
    n_c, n_p, out = data
    level = ALPHA / len(FAMILIES)
    rolled = np.zeros(n_c.shape[0], dtype=bool)
    for figure, (x_c, x_p) in out.items():
        rate = (x_c + x_p) / (n_c + n_p)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (x_c / n_c - x_p / n_p) / np.sqrt(rate * (1 - rate) * (1 / n_c + 1 / n_p))
        p = stats.norm.sf(z) if figure == "error_rate" else 2 * stats.norm.sf(np.abs(z))
        fewest = np.minimum(n_c, n_p)
        enough = (fewest >= DEFAULT_MIN_COUNT) & (
            fewest * np.minimum(rate, 1 - rate) >= DEFAULT_MIN_EVENTS
        )
        rolled |= (enough & (p <= level)).any(axis=(1, 2))
    return float(rolled.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tau2", type=float, default=DEFAULT_TAU2)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(
        f"alpha {ALPHA}, tau2 {args.tau2}, {len(FAMILIES)} families, 40 looks, {args.runs} canaries per row"
    )
    print(
        f"{'rows/look':>9} {'error':>6} {'harm':>5} {'gate':>6} {'fixed':>6} {'fixed/gate':>10} {'look':>5}"
    )
    elapsed, looks = 0.0, 0
    for rows in (50, 200, 1000):
        for error in (0.1, 0.01):
            for harm in (0.0, 0.02, 0.1):
                data = simulate(rng, args.runs, rows, error, harm)
                start = time.perf_counter()
                gate, look, n = gate_rollbacks(data, args.tau2)
                elapsed, looks = elapsed + time.perf_counter() - start, looks + n
                fixed = fixed_rollbacks(data)
                ratio = f"{fixed / gate:10.1f}" if gate else f"{'inf':>10}"
                when = f"{look:5.1f}" if look is not None else f"{'-':>5}"
                print(f"{rows:9d} {error:6.2f} {harm:5.2f} {gate:6.3f} {fixed:6.3f} {ratio} {when}")
    print(
        f"harm 0: false rollbacks; harm > 0: rollbacks (power); look: the gate's median look "
        f"of rollback (10 per step). {looks} looks, "
        f"{1e6 * elapsed / looks:.0f} us per look of {len(FAMILIES)} families"
    )


if __name__ == "__main__":
    main()
