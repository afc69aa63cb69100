"""The slice statistics, all functions of cell counts.

- ``paired``: any metric's building blocks: exact binomial tails, McNemar's test, score intervals
  (Wilson, Newcombe, MOVER), the exact paired permutation test, the bootstrap of cell counts,
  multiple-testing corrections;
- ``metric``: a metric's paired statistics (its events, paired table, gradient, studentized delta,
  interval) and the clean comparison's per-slice test (``paired_tests``);
- ``did``: the fragility statistics, difference in differences under a scenario's faults;
- ``gate``: the family's adjusted p-values and each row's verdict.
"""

from chaosml.slices.stats.did import DID, SWAPS, did_p_values, did_tests
from chaosml.slices.stats.gate import Verdict, judge, verdict
from chaosml.slices.stats.metric import (
    PairedTests,
    events,
    gradient,
    interval,
    paired_table,
    paired_tests,
    studentized,
    swappable_events,
)
from chaosml.slices.stats.paired import (
    EXACT_GRID,
    P_FLOOR,
    PAIRED,
    FloatArray,
    IntArray,
    adjust,
    binomial_grid,
    bootstrap_cells,
    effective_wilson,
    floored,
    log_binom_cdf,
    log_binom_pmf,
    log_sum_exp,
    mcnemar_exact,
    min_discordant,
    mover,
    newcombe_interval,
    percentile_interval,
    permutation_p_values,
    swappable,
    wilson,
    z_value,
)

__all__ = [
    "DID",
    "EXACT_GRID",
    "PAIRED",
    "P_FLOOR",
    "SWAPS",
    "FloatArray",
    "IntArray",
    "PairedTests",
    "Verdict",
    "adjust",
    "binomial_grid",
    "bootstrap_cells",
    "did_p_values",
    "did_tests",
    "effective_wilson",
    "events",
    "floored",
    "gradient",
    "interval",
    "judge",
    "log_binom_cdf",
    "log_binom_pmf",
    "log_sum_exp",
    "mcnemar_exact",
    "min_discordant",
    "mover",
    "newcombe_interval",
    "paired_table",
    "paired_tests",
    "percentile_interval",
    "permutation_p_values",
    "studentized",
    "swappable",
    "swappable_events",
    "verdict",
    "wilson",
    "z_value",
]
