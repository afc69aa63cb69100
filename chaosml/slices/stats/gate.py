"""The gate: p-values adjusted over the family of rows that can fail it, and a verdict per row."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt

from chaosml.slices.stats.paired import FloatArray, IntArray, adjust, min_discordant

Verdict = Literal[
    "regressed", "improved", "unchanged", "inconclusive", "undefined", "too_small", "error"
]


def judge(
    delta: FloatArray,
    p_values: FloatArray,
    *,
    discordant: IntArray,
    big_enough: npt.NDArray[np.bool_],
    correction: Literal["holm", "bh"],
    direction: int,
    alpha: float,
    max_drop: float | FloatArray,
    failed: npt.NDArray[np.bool_] | None = None,
) -> tuple[FloatArray, list[Verdict], int]:
    """Adjusted p-values, verdicts, and the fewest discordant rows that can reach ``alpha``.

    The family is every row that can fail the gate, overall rows included: large enough, with a
    p-value and enough discordant rows (Tarone 1990: the others can never be flagged). ``failed``
    rows (a scenario that could not run) get ``error``."""
    needed = min_discordant(alpha)
    failed = np.zeros(len(delta), dtype=bool) if failed is None else failed
    testable = big_enough & np.isfinite(p_values) & (discordant >= needed) & ~failed
    p_adjusted = adjust(np.where(testable, p_values, np.nan), correction)
    verdicts = verdict(
        delta,
        p_adjusted,
        big_enough=big_enough,
        discordant=discordant,
        needed=needed,
        direction=direction,
        alpha=alpha,
        max_drop=np.broadcast_to(np.asarray(max_drop, dtype=np.float64), np.shape(delta)),
    )
    return (
        p_adjusted,
        ["error" if bad else v for v, bad in zip(verdicts, failed, strict=True)],
        needed,
    )


def verdict(
    delta: FloatArray,
    p_adjusted: FloatArray,
    *,
    big_enough: npt.NDArray[np.bool_],
    discordant: IntArray,
    needed: int,
    direction: int,
    alpha: float,
    max_drop: FloatArray,
) -> list[Verdict]:
    """Regressed/improved need significance and a change beyond ``max_drop`` in that direction."""
    out: list[Verdict] = []
    for d, p, ok, k, drop in zip(delta, p_adjusted, big_enough, discordant, max_drop, strict=True):
        better = direction * d
        if not ok:
            out.append("too_small")
        elif math.isnan(d):
            out.append("undefined")
        elif k < needed:
            out.append("inconclusive")
        elif p < alpha and better < -drop:
            out.append("regressed")
        elif p < alpha and better > drop:
            out.append("improved")
        else:
            out.append("unchanged")
    return out
