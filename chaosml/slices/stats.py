"""Paired statistics on cell counts: bootstrap, McNemar's exact test, multiple-testing corrections.

The bootstrap resamples a slice's *cell counts*: drawing ``n`` rows with replacement from a slice and
counting them by cell is a multinomial draw with the slice's cell frequencies, so
``rng.multinomial(n, cells / n)`` is the row bootstrap of every metric that depends on the cells
alone, at a cost independent of ``n``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import special

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


def bootstrap_p_value(replicates: FloatArray) -> FloatArray:
    """Two-sided p-value of "delta = 0" from bootstrap replicates of delta (axis 0)."""
    finite = np.isfinite(replicates)
    count = finite.sum(axis=0)
    below = np.sum(np.where(finite, replicates <= 0, False), axis=0)
    above = np.sum(np.where(finite, replicates >= 0, False), axis=0)
    with np.errstate(all="ignore"):
        p = 2 * (np.minimum(below, above) + 1) / (count + 1)
    return np.where(count > 0, np.minimum(p, 1.0), np.nan)


def mcnemar_exact(only_first: IntArray, only_second: IntArray) -> FloatArray:
    """McNemar's exact test from discordant counts; p = 1 where there are none."""
    b = np.asarray(only_first, dtype=np.int64)
    c = np.asarray(only_second, dtype=np.int64)
    p = 2 * special.bdtr(np.minimum(b, c), b + c, 0.5)
    return np.where(b + c > 0, np.minimum(p, 1.0), 1.0)


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
