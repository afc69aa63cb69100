"""The fragility statistics: difference in differences of two versions under a scenario's faults.

A scenario pass counts each slice's rows in 32 cells: label | v1 | v2 | v1 under | v2 under. The
fragility delta is (v2 under - v2) - (v1 under - v1), tested under "the versions are exchangeable":
swapping v1 and v2 on a row (clean and faulted together) is as likely as not. For a proportion
metric each row has a score d of the metric's event, a swap turns d into -d, and the null
distribution is an exact grid over the rows with |d| = 1 and |d| = 2 (``did_p_values``; McNemar's
test is its one-version case). For a ratio metric it is the clean comparison's studentized
permutation test over the 12 pairs of cells a swap exchanges (``SWAPS``). The interval is a
bootstrap percentile interval from the cell counts, withheld below ``min_discordant(alpha)``.
"""

from __future__ import annotations

import numpy as np

from chaosml.slices.metrics import Metric
from chaosml.slices.stats.metric import PairedTests, events, studentized
from chaosml.slices.stats.paired import (
    FloatArray,
    IntArray,
    bootstrap_cells,
    floored,
    log_binom_cdf,
    log_binom_pmf,
    log_sum_exp,
    min_discordant,
    percentile_interval,
    permutation_p_values,
    swappable,
)
from chaosml.slices.sums import confusion

# versions in a scenario pass: v1, v2 clean, then v1, v2 under the faults (bits label|3|2|1|0)
DID = ((3, 1.0), (1, -1.0), (2, -1.0), (0, 1.0))  # (v2 under - v2) - (v1 under - v1)


def _swapped(cell: int) -> int:
    """The cell a row moves to when v1 and v2 trade places (clean and under the fault)."""
    label, a, b, c, d = cell >> 4, (cell >> 3) & 1, (cell >> 2) & 1, (cell >> 1) & 1, cell & 1
    return label << 4 | b << 3 | a << 2 | d << 1 | c


SWAPS = tuple((i, _swapped(i)) for i in range(32) if i < _swapped(i))


def did_tests(
    metric: Metric,
    counts: IntArray,
    delta: FloatArray,
    *,
    confidence: float,
    alpha: float,
    n_boot: int,
    seed: int,
) -> PairedTests:
    """Per (slice, scenario) cell of 32 counts: the fragility test, and its bootstrap interval
    from ``n_boot`` replicates seeded by ``seed`` (none with ``n_boot=0``)."""
    if metric.proportion:  # a per-row score: the exact two-dimensional sign-flip grid
        e = [events(metric, 4, v) for v in range(4)]
        d = (e[3] - e[1]) - (e[2] - e[0])  # per cell pattern: v2's change - v1's change
        d = np.where(np.isnan(d), 0, d)
        ones = counts @ (np.abs(d) == 1).astype(np.int64)
        twos = counts @ (np.abs(d) == 2).astype(np.int64)
        p_values = did_p_values(ones, twos, (counts @ d).astype(np.int64))
        discordant = ones + twos
    else:  # a ratio: the studentized permutation test over the cells a swap exchanges
        p_values = permutation_p_values(
            lambda x: studentized(metric, x, DID, n_versions=4), counts, SWAPS
        )
        discordant = swappable(counts, SWAPS)
    low = high = np.full(len(counts), np.nan)
    if n_boot > 0:
        boot = bootstrap_cells(counts, n_boot, np.random.default_rng(seed))
        value = [metric.value(*confusion(boot, 4, v)) for v in range(4)]
        replicates = (value[3] - value[1]) - (value[2] - value[0])
        low, high = percentile_interval(replicates, confidence)
    defined = np.isfinite(delta)
    # with fewer discordant rows than any test needs, every replicate moves the same few rows:
    # the percentile interval is too narrow to be trusted, so none is given (inconclusive)
    trusted = defined & (discordant >= min_discordant(alpha))
    return PairedTests(
        discordant=discordant,
        p_values=np.where(defined, p_values, np.nan),
        low=np.where(trusted, low, np.nan),
        high=np.where(trusted, high, np.nan),
    )


def did_p_values(ones: IntArray, twos: IntArray, observed: IntArray) -> FloatArray:
    """Exact sign-flip p-values of sum(d) = ``observed`` with ``ones`` rows of |d| = 1 and
    ``twos`` rows of |d| = 2, each as likely +d as -d, at any number of rows.

    With K1 ~ Binomial(ones, 1/2) of the |d| = 1 rows and K2 ~ Binomial(twos, 1/2) of the
    |d| = 2 rows positive, sum(d) = (2 K1 - ones) + 2 (2 K2 - twos): for each K2 the tail of K1 is
    a binomial CDF, so the p-value is one sum over K2, taken in log space (no normal limit, no
    underflow down to ``P_FLOOR``)."""
    out = np.ones(len(ones))
    for i, (a, b, t) in enumerate(zip(ones, twos, observed, strict=True)):
        if a + b == 0 or t == 0:
            continue
        a, b, target = int(a), int(b), abs(int(t))
        kb = np.arange(b + 1, dtype=np.float64)
        log_w = log_binom_pmf(kb, b)
        kb, log_w = kb[log_w > log_w.max() - 745], log_w[log_w > log_w.max() - 745]
        shift = 2 * (2 * kb - b)
        up = np.ceil((target + a - shift) / 2)  # K1 >= up, i.e. by symmetry K1 <= a - up
        down = np.floor((a - shift - target) / 2)  # K1 <= down
        log_tail = np.logaddexp(log_binom_cdf(a - up, a), log_binom_cdf(down, a))
        out[i] = float(floored(log_sum_exp(log_w + log_tail)))
    return out
