"""Paired statistics on cell counts, for any metric: exact paired tests, score intervals, the
bootstrap, and multiple-testing corrections.

A slice's rows fall into cells (label x v1's prediction x v2's prediction); everything here is a
function of those counts. Rows on which the two versions differ are the *discordant* rows: only they
carry information about a difference, and each test's smallest attainable p-value is set by their
number (``min_discordant``).

- Proportion metrics (accuracy, recall, FPR, ...): McNemar's exact test, and Newcombe's hybrid score
  interval for a difference of paired proportions (Newcombe 1998, method 10), which holds its
  coverage with few discordant rows where a bootstrap percentile interval does not.
- Ratio metrics (precision, F1, balanced accuracy): an exact paired permutation test. Under "the
  versions are exchangeable on each row" each discordant row is v1's way or v2's way with
  probability 1/2, so the permutation distribution is a grid over how many discordant rows of each
  label fall each way, enumerated with binomial weights: no Monte Carlo floor on the p-value. The
  statistic is studentized (delta over its delta-method standard error), which keeps the test valid
  for "same metric" when the versions are not exchangeable (Janssen 1997; Chung & Romano 2013).
  With a few hundred discordant rows of both labels the grid is replaced by the normal limit of
  the same studentized statistic. McNemar's exact test is the same permutation test for a proportion.

The bootstrap resamples a slice's *cell counts*: drawing ``n`` rows with replacement from a slice and
counting them by cell is a multinomial draw with the slice's cell frequencies, so
``rng.multinomial(n, cells / n)`` is the row bootstrap of every metric that depends on the cells
alone, at a cost independent of ``n``.

Nothing here imports scipy at the top (0.3 s of a command's start): the binomial tails are summed
here, exactly, from Loader's saddle-point binomial probability; only the normal limit of a large
permutation grid imports ``scipy.special``, where it is used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def bootstrap_cells(cells: IntArray, n_boot: int, rng: np.random.Generator) -> IntArray:
    """Bootstrap replicates of cell counts: shape (n_boot, slices, cells)."""
    cells = np.asarray(cells, dtype=np.int64)
    n = cells.sum(axis=-1)
    safe_n = np.where(n > 0, n, 1)
    pvals = np.where(n[:, None] > 0, cells / safe_n[:, None], 1.0 / cells.shape[-1])
    draws = rng.multinomial(safe_n, pvals, size=(n_boot, len(cells)))
    return np.where(n[None, :, None] > 0, draws, 0).astype(np.int64)


def percentile_interval(replicates: FloatArray, confidence: float) -> tuple[FloatArray, FloatArray]:
    """Percentile interval over axis 0, ignoring undefined (NaN) replicates."""
    tail = (1 - confidence) / 2 * 100
    finite = np.isfinite(replicates)
    defined = np.asarray(finite.any(axis=0))
    # np.percentile is much faster than np.nanpercentile; use the latter only where needed
    quantile = np.percentile if finite.all() else np.nanpercentile
    with np.errstate(all="ignore"):
        filled = np.where(defined[np.newaxis], replicates, 0.0)
        low = quantile(filled, tail, axis=0)
        high = quantile(filled, 100 - tail, axis=0)
    return np.where(defined, low, np.nan), np.where(defined, high, np.nan)


# p-values are computed in log space and reported down to this; below it they are reported as
# this value and printed "<1e-300" (a double cannot hold much less, and nothing needs it).
P_FLOOR = 1e-300


def floored(log_p: npt.ArrayLike) -> FloatArray:
    """p-values from their logarithms: at most 1, at least ``P_FLOOR``."""
    with np.errstate(under="ignore"):
        p = np.exp(np.minimum(np.asarray(log_p, dtype=np.float64), 0.0))
    return np.maximum(p, P_FLOOR)


def log_sum_exp(values: npt.ArrayLike) -> float:
    """log(sum(exp(values))), without overflow or underflow; -inf for no values."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return -math.inf
    top = float(x.max())
    if not math.isfinite(top):
        return top
    return top + math.log(float(np.exp(x - top).sum()))


def z_value(confidence: float) -> float:
    """The standard normal quantile of a two-sided ``confidence`` interval (1.96 at 0.95)."""
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def log_binom_cdf(k: npt.ArrayLike, n: npt.ArrayLike) -> FloatArray:
    """log P(K <= k) for K ~ Binomial(n, 1/2), -inf below 0, summed term by term in log space:
    exact to a few units of the last place wherever a p-value can still be told from
    ``P_FLOOR``, at any ``n`` (the terms further than ``_tail_width(n)`` below ``k`` are less than
    e**-50 of it)."""
    kk = np.floor(np.asarray(k, dtype=np.float64))
    nn = np.asarray(n, dtype=np.int64)
    kk, nn = np.broadcast_arrays(kk, nn)
    out = np.where(kk < 0, -np.inf, 0.0)
    inside = (kk >= 0) & (kk < nn)
    for m in np.unique(nn[inside]):
        at = inside & (nn == m)
        out[at] = _log_cdf_of(kk[at], int(m))
    return out


def _log_cdf_of(k: FloatArray, n: int) -> FloatArray:
    """``log_binom_cdf`` for one ``n`` and 0 <= k < n: the lower half of the distribution summed
    directly, the upper half as 1 - its mirror's lower tail."""
    lower = 2 * k < n
    below = np.where(lower, k, n - k - 1).astype(np.int64)  # every one below n / 2
    top, bottom = int(below.max()), max(0, int(below.min()) - _tail_width(n))
    log_cdf = np.logaddexp.accumulate(_log_terms(bottom, top, n))  # from `bottom` up to `top`
    tail = log_cdf[below - bottom]
    with np.errstate(divide="ignore"):
        return np.where(lower, tail, np.log1p(-np.exp(tail)))


def _log_terms(bottom: int, top: int, n: int, block: int = 4096) -> FloatArray:
    """log P(K = j) for j from ``bottom`` to ``top``: each block of terms from its first by the
    ratio of neighbours (term j + 1 is term j * (n - j) / (j + 1)), so rounding cannot build up
    over more than a block."""
    out = np.empty(top - bottom + 1)
    for start in range(bottom, top + 1, block):
        j = np.arange(start, min(start + block, top + 1) - 1, dtype=np.float64)
        steps = np.cumsum(np.log((n - j) / (j + 1)))
        out[start - bottom] = log_half_binom_pmf(start, n)
        out[start - bottom + 1 : start - bottom + 1 + len(steps)] = out[start - bottom] + steps
    return out


def _tail_width(n: int) -> int:
    """How far below ``k <= n / 2`` the binomial terms fall under e**-50 of the k-th."""
    return int(6 * math.sqrt(n)) + 60


_STIRLING = (1 / 12, 1 / 360, 1 / 1260, 1 / 1680, 1 / 1188)
_LOG_2PI = math.log(2 * math.pi)


def _stirling_error(n: float) -> float:
    """log(n!) - log(sqrt(2 pi n) (n / e)**n), to the last place (Loader 2000)."""
    if n <= 15:
        return math.lgamma(n + 1) - (n + 0.5) * math.log(n) + n - _LOG_2PI / 2
    s0, s1, s2, s3, s4 = _STIRLING
    nn = n * n
    if n > 500:
        return (s0 - s1 / nn) / n
    if n > 80:
        return (s0 - (s1 - s2 / nn) / nn) / n
    if n > 35:
        return (s0 - (s1 - (s2 - s3 / nn) / nn) / nn) / n
    return (s0 - (s1 - (s2 - (s3 - s4 / nn) / nn) / nn) / nn) / n


def _deviance(x: float, mean: float) -> float:
    """x log(x / mean) + mean - x, without cancellation when x is near ``mean`` (Loader 2000)."""
    if abs(x - mean) < 0.1 * (x + mean):
        v = (x - mean) / (x + mean)
        s, term, v2 = (x - mean) * v, 2 * x * v, v * v
        for j in range(1, 1000):
            term *= v2
            following = s + term / (2 * j + 1)
            if following == s:
                break
            s = following
        return s
    return x * math.log(x / mean) + mean - x


def log_half_binom_pmf(k: int, n: int) -> float:
    """log P(K = k) for K ~ Binomial(n, 1/2), by Loader's saddle-point formula: exact to the last
    places at any ``n`` (log-gamma differences lose digits to cancellation when ``n`` is large)."""
    if k < 0 or k > n:
        return -math.inf
    if k in (0, n):
        return -n * math.log(2)
    log_c = (
        _stirling_error(n)
        - _stirling_error(k)
        - _stirling_error(n - k)
        - _deviance(k, n / 2)
        - _deviance(n - k, n / 2)
    )
    return log_c - 0.5 * (_LOG_2PI + math.log(k) + math.log1p(-k / n))


def log_binom_pmf(k: npt.ArrayLike, n: int) -> FloatArray:
    """log P(K = k) for K ~ Binomial(n, 1/2), from log-gamma: no underflow at any n."""
    kk = np.asarray(k, dtype=np.float64)
    return np.asarray(
        math.lgamma(n + 1) - _lgamma(kk + 1) - _lgamma(n - kk + 1) - n * math.log(2),
        dtype=np.float64,
    )


def _lgamma(x: FloatArray) -> FloatArray:
    return np.asarray(_LGAMMA(x), dtype=np.float64)


_LGAMMA = np.frompyfunc(math.lgamma, 1, 1)


def mcnemar_exact(only_first: IntArray, only_second: IntArray) -> FloatArray:
    """McNemar's exact test from discordant counts; p = 1 where there are none. Computed in log
    space, so a far tail is reported down to ``P_FLOOR`` rather than as 0."""
    b = np.asarray(only_first, dtype=np.int64)
    c = np.asarray(only_second, dtype=np.int64)
    p = floored(math.log(2) + log_binom_cdf(np.minimum(b, c), b + c))
    return np.where(b + c > 0, p, 1.0)


def adjust(p_values: FloatArray, method: Literal["holm", "bh"]) -> FloatArray:
    """Holm (family-wise error) or Benjamini-Hochberg (false discovery rate) adjusted p-values.

    NaN p-values are left out of the family and stay NaN.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    present = np.flatnonzero(np.isfinite(p))
    m = len(present)
    if m == 0:
        return out
    order = present[np.argsort(p[present], kind="stable")]
    ranked = p[order]
    if method == "holm":
        adjusted = np.maximum.accumulate(ranked * (m - np.arange(m)))
    else:
        adjusted = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    out[order] = np.minimum(adjusted, 1.0)
    return out


def min_discordant(alpha: float) -> int:
    """Fewest discordant rows with which an exact paired test can reach ``p < alpha`` at all (its
    smallest p-value is 2 / 2**k): 6 at alpha = 0.05."""
    k = 1
    while 2.0 * 0.5**k >= alpha:
        k += 1
    return k


def wilson(x: npt.ArrayLike, n: npt.ArrayLike, z: float) -> tuple[FloatArray, FloatArray]:
    """Wilson score interval of a proportion ``x / n`` (NaN where n = 0)."""
    k, m = np.asarray(x, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(all="ignore"):
        p = k / m
        center = (k + z * z / 2) / (m + z * z)
        half = z * np.sqrt(m * p * (1 - p) + z * z / 4) / (m + z * z)
    return center - half, center + half


def newcombe_interval(
    a: IntArray, b: IntArray, c: IntArray, d: IntArray, confidence: float
) -> tuple[FloatArray, FloatArray]:
    """Newcombe's hybrid score interval for ``p2 - p1`` from a paired 2x2 table: ``a`` rows with
    the event under both versions, ``b`` under v1 only, ``c`` under v2 only, ``d`` under neither.
    Wilson intervals of the two margins, combined with their correlation (continuity-adjusted as
    Newcombe recommends). NaN where the table is empty."""
    fa, fb, fc, fd = (np.asarray(x, dtype=np.float64) for x in (a, b, c, d))
    n = fa + fb + fc + fd
    z = z_value(confidence)
    with np.errstate(all="ignore"):
        p1, p2 = (fa + fb) / n, (fa + fc) / n
        l1, u1 = wilson(fa + fb, n, z)
        l2, u2 = wilson(fa + fc, n, z)
        margins = (fa + fb) * (fc + fd) * (fa + fc) * (fb + fd)
        cross = fa * fd - fb * fc
        cross = np.where(cross > n / 2, cross - n / 2, np.where(cross < 0, cross, 0.0))
        phi = np.where(margins > 0, cross / np.sqrt(np.where(margins > 0, margins, 1.0)), 0.0)
        delta = p2 - p1
        low = delta - np.sqrt(
            np.maximum((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2, 0.0)
        )
        high = delta + np.sqrt(
            np.maximum((u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2, 0.0)
        )
    empty = n == 0
    return np.where(empty, np.nan, np.maximum(low, -1.0)), np.where(
        empty, np.nan, np.minimum(high, 1.0)
    )


def mover(
    first: FloatArray,
    first_ci: tuple[FloatArray, FloatArray],
    second: FloatArray,
    second_ci: tuple[FloatArray, FloatArray],
    correlation: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """The interval of ``second - first`` from each estimate's own interval and their correlation
    (the method of variance estimates recovery, Zou & Donner 2008; Newcombe's method 10 is this with
    Wilson intervals of paired proportions)."""
    (l1, u1), (l2, u2) = first_ci, second_ci
    r = correlation
    delta = second - first
    with np.errstate(invalid="ignore"):
        low = delta - np.sqrt(
            np.maximum(
                (second - l2) ** 2 - 2 * r * (second - l2) * (u1 - first) + (u1 - first) ** 2, 0
            )
        )
        high = delta + np.sqrt(
            np.maximum(
                (u2 - second) ** 2 - 2 * r * (u2 - second) * (first - l1) + (first - l1) ** 2, 0
            )
        )
    return np.maximum(low, -1.0), np.minimum(high, 1.0)


def effective_wilson(
    value: FloatArray, variance: FloatArray, rows: FloatArray, z: float
) -> tuple[FloatArray, FloatArray]:
    """A Wilson interval for a metric in [0, 1] that is not one proportion (precision, F1), on the
    effective number of rows its delta-method variance implies, ``value (1 - value) / variance``
    (the metric's denominator ``rows`` where the variance is 0: a value of 0 or 1)."""
    with np.errstate(all="ignore"):
        n = np.where(variance > 0, value * (1 - value) / variance, rows)
        return wilson(value * n, n, z)


# Above this many grid points (a few hundred discordant rows of both labels) the permutation
# distribution of the studentized statistic is replaced by its normal limit; there the two agree
# within a few percent of the p-value down to 1e-4 (tests/slices/test_stats.py).
EXACT_GRID = 20_000
_TAIL_SD = 9.0  # the binomial grid is cut 9 standard deviations out: less than 1e-18 of mass left


PAIRED = ((0b010, 0b001), (0b110, 0b101))  # label|v1|v2: the cells a swap of versions exchanges


def swappable(cells: IntArray, pairs: Sequence[tuple[int, int]] = PAIRED) -> IntArray:
    """Per slice, the rows a swap of versions can move: the discordant rows."""
    moved: IntArray = np.asarray(cells)[:, [cell for pair in pairs for cell in pair]].sum(axis=1)
    return moved


def permutation_p_values(
    statistic: Callable[[FloatArray], FloatArray],
    cells: IntArray,
    pairs: Sequence[tuple[int, int]] = PAIRED,
) -> FloatArray:
    """Exact paired permutation p-values, one per slice, of the studentized ``statistic``.

    Under the null, swapping the versions on a row is as likely as not, so for each pair of cells
    (a, b) that a swap exchanges, how many of their rows sit in a is Binomial(n_a + n_b, 1/2),
    independently across pairs (``PAIRED``: bits label|v1|v2, the discordant rows of each label).
    ``statistic`` maps cell counts of shape (..., cells) to delta / standard error. The p-value is
    the probability of a statistic at least as far from 0 as the observed one, among permutations
    where it is defined. The grid always reaches the observed split (and its mirror), and its
    weights are summed in log space, so a far-tail p-value is exact down to ``P_FLOOR``."""
    cells = np.asarray(cells, dtype=np.int64)
    observed = statistic(cells.astype(np.float64))
    out = np.full(len(cells), np.nan)
    for i, row in enumerate(cells):
        if np.isnan(observed[i]):  # the metric is undefined for a version
            continue
        moving = [(a, b, int(row[a] + row[b])) for a, b in pairs if row[a] + row[b] > 0]
        if not moving:
            out[i] = 1.0
            continue
        grids = [binomial_grid(d, int(row[a])) for a, _, d in moving]
        if math.prod(len(k) for k, _ in grids) > EXACT_GRID:
            out[i] = _normal_limit(float(observed[i]))
            continue
        out[i] = _grid_p_value(statistic, row, moving, grids, abs(float(observed[i])))
    return out


def _normal_limit(statistic: float) -> float:
    """The two-sided p-value of a studentized statistic from its normal limit."""
    from scipy import special  # only here: a large grid, past EXACT_GRID

    return float(floored(math.log(2) + special.log_ndtr(-abs(statistic))))


def _grid_p_value(
    statistic: Callable[[FloatArray], FloatArray],
    row: IntArray,
    moving: list[tuple[int, int, int]],
    grids: list[tuple[FloatArray, FloatArray]],
    target: float,
) -> float:
    mesh = np.meshgrid(*[k for k, _ in grids], indexing="ij")
    log_weight = np.zeros(mesh[0].shape)
    for axis, (_, w) in enumerate(grids):
        log_weight = log_weight + w.reshape([-1 if j == axis else 1 for j in range(len(grids))])
    grid = np.broadcast_to(row.astype(np.float64), (*mesh[0].shape, len(row))).copy()
    for (a, b, d), k in zip(moving, mesh, strict=True):
        grid[..., a], grid[..., b] = k, d - k
    values = np.abs(statistic(grid))
    defined = ~np.isnan(values)
    extreme = defined & (values >= target * (1 - 1e-9) - 1e-12)
    if not defined.any():
        return math.nan
    log_p = log_sum_exp(log_weight[extreme]) - log_sum_exp(log_weight[defined])
    return float(floored(log_p))


def binomial_grid(d: int, observed: int | None = None) -> tuple[FloatArray, FloatArray]:
    """Counts k of Binomial(d, 1/2) within the grid's cut (widened to reach ``observed`` and its
    mirror ``d - observed``), with their log-probabilities."""
    half_width = _TAIL_SD * np.sqrt(d) / 2
    low, high = max(0, int(np.floor(d / 2 - half_width))), min(d, int(np.ceil(d / 2 + half_width)))
    if observed is not None:
        low, high = min(low, observed, d - observed), max(high, observed, d - observed)
    k = np.arange(low, high + 1, dtype=np.float64)
    # the pmf from log-gamma: scipy.stats.binom.pmf's per-call overhead would cost more than this
    return k, log_binom_pmf(k, d)
