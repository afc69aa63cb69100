"""Paired statistics against independent oracles (statsmodels, a direct row bootstrap) and against
known truth in seeded simulations at the edges: tiny slices, few discordant rows, many slices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from chaosml.slices.compare import Comparison, compare_versions
from chaosml.slices.metrics import METRICS
from chaosml.slices.stats import (
    FloatArray,
    adjust,
    bootstrap_cells,
    mcnemar_exact,
    min_discordant,
    newcombe_interval,
    paired_table,
    percentile_interval,
    permutation_p_values,
    studentized,
)
from chaosml.slices.suite import ComparePolicy, SliceSpec, SliceSuite
from chaosml.slices.sums import confusion
from chaosml.versions import InMemory


@pytest.mark.parametrize(("b", "c"), [(0, 0), (0, 5), (3, 7), (10, 10), (50, 80), (400, 480)])
def test_mcnemar_matches_statsmodels(b: int, c: int) -> None:
    expected = mcnemar([[20, b], [c, 30]], exact=True).pvalue
    assert mcnemar_exact(np.array([b]), np.array([c]))[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("method", "oracle"), [("holm", "holm"), ("bh", "fdr_bh")])
def test_corrections_match_statsmodels(method: str, oracle: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = rng.random(15) ** 3
        expected = multipletests(p, method=oracle)[1]
        np.testing.assert_allclose(adjust(p, method), expected)  # type: ignore[arg-type]


def test_corrections_leave_nan_out_of_the_family() -> None:
    p = np.array([0.01, np.nan, 0.04])
    np.testing.assert_allclose(adjust(p, "holm"), [0.02, np.nan, 0.04])


def test_cell_bootstrap_agrees_with_row_bootstrap() -> None:
    """Resampling cell counts is the row bootstrap: same distribution of the accuracy delta."""
    rng = np.random.default_rng(1)
    n = 150
    y = rng.random(n) < 0.5
    p1 = y ^ (rng.random(n) < 0.3)
    p2 = y ^ (rng.random(n) < 0.2)
    cells = np.bincount(y * 4 + p1 * 2 + p2, minlength=8)[None, :]
    accuracy = METRICS["accuracy"].confusion
    assert accuracy is not None

    boot = bootstrap_cells(cells, 20_000, np.random.default_rng(2))
    fast = (accuracy(*confusion(boot, 2, 1)) - accuracy(*confusion(boot, 2, 0)))[:, 0]

    index = np.random.default_rng(3).integers(0, n, size=(20_000, n))
    slow = (p2[index] == y[index]).mean(axis=1) - (p1[index] == y[index]).mean(axis=1)

    assert fast.mean() == pytest.approx(slow.mean(), abs=0.002)
    assert fast.std() == pytest.approx(slow.std(), rel=0.03)
    for q in (2.5, 50, 97.5):
        assert np.percentile(fast, q) == pytest.approx(np.percentile(slow, q), abs=0.0101)
    low, high = percentile_interval(fast[:, None], 0.95)
    assert low[0] == pytest.approx(np.percentile(slow, 2.5), abs=0.0101)
    assert high[0] == pytest.approx(np.percentile(slow, 97.5), abs=0.0101)


def test_bootstrap_keeps_slice_sizes_and_empty_slices() -> None:
    cells = np.array([[5, 0, 3, 2, 0, 0, 1, 9], [0] * 8])
    boot = bootstrap_cells(cells, 100, np.random.default_rng(0))
    assert (boot.sum(axis=-1) == cells.sum(axis=-1)).all()
    assert (boot[:, :, cells[0] == 0] == 0).all()


@pytest.mark.slow
@pytest.mark.parametrize("correction", ["holm", "bh"])
def test_no_true_difference_flags_at_most_alpha(correction: str) -> None:
    """With two versions that are equally good everywhere, the share of runs in which any slice is
    called regressed stays within alpha (Holm controls it family-wise; BH controls the false
    discovery rate, which equals the family-wise rate when nothing is truly different)."""
    alpha, runs, n, groups = 0.1, 300, 2000, 10
    suite = SliceSuite(
        label="y",
        min_size=30,
        slices=[SliceSpec(by=["g"])],
        compare=ComparePolicy(alpha=alpha, correction=correction),
    )  # type: ignore[arg-type]
    rng = np.random.default_rng(11)
    flagged = 0
    for _ in range(runs):
        y = rng.random(n) < 0.5
        frame = pd.DataFrame({"g": rng.integers(0, groups, size=n), "y": y.astype(int)})
        error_rate = 0.1 + 0.02 * frame["g"].to_numpy()  # slices differ, versions do not
        p1 = y ^ (rng.random(n) < error_rate)
        p2 = y ^ (rng.random(n) < error_rate)
        result = compare_versions(
            suite, InMemory("v1", p1.astype(int)), InMemory("v2", p2.astype(int)), frame, n_boot=0
        )
        flagged += any(s.verdict == "regressed" for s in result.slices)
    rate = flagged / runs
    # one-sided: only drops count, so the expected rate is about alpha / 2
    assert rate <= alpha + 2 * np.sqrt(alpha * (1 - alpha) / runs), rate


def test_a_real_drop_in_one_slice_is_flagged_there_only() -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    frame = pd.DataFrame({"g": rng.integers(0, 8, size=n), "y": rng.integers(0, 2, size=n)})
    y = frame["y"].to_numpy().astype(bool)
    worse = np.where(frame["g"] == 3, 0.25, 0.1)
    p1 = y ^ (rng.random(n) < 0.1)
    p2 = y ^ (rng.random(n) < worse)
    suite = SliceSuite(
        label="y", slices=[SliceSpec(by=["g"])], compare=ComparePolicy(max_drop=0.05)
    )
    result = compare_versions(
        suite, InMemory("v1", p1.astype(int)), InMemory("v2", p2.astype(int)), frame, n_boot=200
    )
    assert [s.name for s in result.slices if s.verdict == "regressed"] == ["g=3"]
    assert not result.passed
    regressed = next(s for s in result.slices if s.name == "g=3")
    assert regressed.ci is not None and regressed.ci[1] < -0.05


def _frame(slices: list[list[int]]) -> tuple[pd.DataFrame, InMemory, InMemory]:
    """Rows spelling out each slice's cell counts (bits label|v1|v2), slice ``g`` = its index."""
    cells = np.asarray(slices)
    g = np.repeat(np.repeat(np.arange(len(cells)), 8), cells.ravel())
    bits = np.repeat(np.tile(np.arange(8), len(cells)), cells.ravel())
    frame = pd.DataFrame({"g": g, "y": (bits >> 2) & 1})
    return frame, InMemory("v1", (bits >> 1) & 1), InMemory("v2", bits & 1)


def _compare(slices: list[list[int]], metric: str, **policy: object) -> Comparison:
    frame, v1, v2 = _frame(slices)
    suite = SliceSuite(
        label="y",
        min_size=1,
        slices=[SliceSpec(by=["g"])],
        compare=ComparePolicy(metric=metric, **policy),  # type: ignore[arg-type]
    )
    return compare_versions(suite, v1, v2, frame, n_boot=500)


def _population(prev: float, acc1: float, acc2: float, both_right: float) -> FloatArray:
    """Cell probabilities (bits label|v1|v2) with the versions right at rates ``acc1``/``acc2``
    on every label, and right together at rate ``both_right``."""
    pi = np.zeros(8)
    for y, share in ((0, 1 - prev), (1, prev)):
        right, wrong = y, 1 - y
        pi[y << 2 | right << 1 | right] = share * both_right
        pi[y << 2 | right << 1 | wrong] = share * (acc1 - both_right)
        pi[y << 2 | wrong << 1 | right] = share * (acc2 - both_right)
        pi[y << 2 | wrong << 1 | wrong] = share * (1 - acc1 - acc2 + both_right)
    return pi


@pytest.mark.parametrize("metric", ["precision", "f1", "balanced_accuracy"])
def test_a_ratio_metric_regression_is_flagged_among_100_slices(metric: str) -> None:
    """A p-value floored by the replicate count (2/1001) times Holm's 100 never reaches 0.05:
    the exact permutation test has no floor, so a large drop in one slice of 100 is flagged."""
    rng = np.random.default_rng(7)
    same = _population(0.4, 0.85, 0.85, 0.8)
    slices = [rng.multinomial(1000, same).tolist() for _ in range(99)]
    worse = np.zeros(8)  # v2 turns two thirds of v1's right negatives into false positives
    worse[0b000], worse[0b001], worse[0b111], worse[0b100] = 0.2, 0.4, 0.3, 0.1
    slices.append(rng.multinomial(1000, worse).tolist())
    result = _compare(slices, metric)
    flagged = {s.name: s.verdict for s in result.slices if s.verdict != "unchanged"}
    assert flagged == {"g=99": "regressed"}
    assert result.slices[-1].p_adjusted is not None and result.slices[-1].p_adjusted < 1e-6


@pytest.mark.parametrize("metric", ["precision", "f1", "balanced_accuracy", "accuracy"])
def test_paired_tests_hold_their_level_with_few_discordant_rows(metric: str) -> None:
    """Seeded simulation, versions exchangeable (no difference): with 4-30 discordant rows the
    share of p < 0.05 stays at or below 5%."""
    rng = np.random.default_rng(3)
    runs = 3000
    counts = np.concatenate(
        [
            rng.multinomial(n, _population(0.4, 0.85, 0.85, 0.85 - disc / 2), size=runs // 3)
            for n, disc in ((50, 0.1), (100, 0.12), (300, 0.08))
        ]
    )
    m = METRICS[metric]
    if m.proportion:
        _, b, c, _ = paired_table(m, counts)
        p = mcnemar_exact(b, c)
    else:
        p = permutation_p_values(lambda x: studentized(m, x), counts)
    p = p[np.isfinite(p)]
    rate = float(np.mean(p < 0.05))
    assert rate <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / len(p)), rate


@pytest.mark.parametrize(("b", "c"), [(0, 1), (1, 5), (3, 7), (10, 10), (40, 70)])
def test_the_permutation_grid_is_mcnemar_for_the_accuracy_delta(b: int, c: int) -> None:
    """Unstudentized, the permutation test of the accuracy delta is McNemar's exact test."""
    cells = np.array([[30, b // 2, c // 2, 5, 6, c - c // 2, b - b // 2, 40]])
    accuracy = METRICS["accuracy"]

    def delta(x: FloatArray) -> FloatArray:
        return accuracy.value(*confusion(x, 2, 1)) - accuracy.value(*confusion(x, 2, 0))

    expected = mcnemar([[0, b], [c, 0]], exact=True).pvalue
    assert permutation_p_values(delta, cells)[0] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("metric", "prev", "n", "acc1", "acc2"),
    [
        ("recall", 1.0, 50, 0.97, 0.95),  # recall near 0.97 on 50 positives
        ("accuracy", 0.5, 50, 0.97, 0.96),  # high accuracy at n = 50
        ("recall", 0.05, 200, 0.8, 0.75),  # rare positives: about 10 of 200
        ("false_positive_rate", 0.3, 80, 0.95, 0.9),
    ],
)
def test_score_intervals_cover_at_small_counts(
    metric: str, prev: float, n: int, acc1: float, acc2: float
) -> None:
    """Seeded simulation against the known population delta: Newcombe's interval covers it about
    95% of the time where the percentile bootstrap covered 22-85%."""
    rng = np.random.default_rng(17)
    pi = _population(prev, acc1, acc2, min(acc1, acc2) - 0.02)
    m = METRICS[metric]
    truth = float(m.value(*confusion(pi[None], 2, 1))[0] - m.value(*confusion(pi[None], 2, 0))[0])
    counts = rng.multinomial(n, pi, size=4000)
    low, high = newcombe_interval(*paired_table(m, counts), 0.95)
    ok = np.isfinite(low)
    coverage = float(np.mean((low[ok] <= truth) & (truth <= high[ok])))
    assert coverage >= 0.93, coverage


def test_a_one_row_slice_is_inconclusive_not_regressed() -> None:
    result = _compare([[0, 0, 0, 0, 0, 0, 1, 0], [40, 2, 2, 6, 8, 1, 1, 40]], "f1")
    one = result.slices[0]
    assert (one.verdict, one.p_value, one.p_adjusted) == ("inconclusive", 1.0, None)
    accuracy = _compare([[0, 0, 0, 0, 0, 0, 1, 0]], "accuracy").slices[0]
    assert accuracy.verdict == "inconclusive"
    assert accuracy.ci is not None and accuracy.ci[0] == -1.0 and accuracy.ci[1] > 0


def test_an_undefined_metric_is_undefined_not_unchanged() -> None:
    """No positives in slice 0: recall is undefined for both versions, so it has no verdict of
    its own and no p-value, and it is not part of the family."""
    result = _compare([[50, 5, 5, 40, 0, 0, 0, 0], [20, 3, 9, 20, 20, 9, 3, 20]], "recall")
    none = result.slices[0]
    assert (none.verdict, none.delta, none.p_value, none.p_adjusted) == (
        "undefined",
        None,
        None,
        None,
    )
    # a family of two: the overall row, which can fail the gate too, and slice 1
    family = [result.overall.p_value, result.slices[1].p_value]
    expected = multipletests(family, method="holm")[1]
    assert [result.overall.p_adjusted, result.slices[1].p_adjusted] == pytest.approx(expected)


def test_few_discordant_rows_are_inconclusive_and_left_out_of_the_family() -> None:
    needed = min_discordant(0.05)
    assert needed == 6 and 2 * 0.5**needed < 0.05 <= 2 * 0.5 ** (needed - 1)
    result = _compare([[30, 0, 0, 0, 0, 0, 3, 30], [200, 30, 1, 20, 20, 2, 30, 200]], "accuracy")
    assert [s.verdict for s in result.slices] == ["inconclusive", "regressed"]
    family = [result.overall.p_value, result.slices[1].p_value]  # slice 0 is left out
    expected = multipletests(family, method="holm")[1]
    assert [result.overall.p_adjusted, result.slices[1].p_adjusted] == pytest.approx(expected)


def test_ratio_metrics_need_no_replicates_for_their_test_or_interval() -> None:
    frame, v1, v2 = _frame([[40, 6, 2, 6, 8, 1, 9, 40]] * 2)
    suite = SliceSuite(label="y", slices=[SliceSpec(by=["g"])], compare=ComparePolicy(metric="f1"))
    result = compare_versions(suite, v1, v2, frame, n_boot=0)
    assert all(s.p_value is not None for s in result.slices)
    assert all(s.ci is not None and s.ci[0] < s.delta < s.ci[1] for s in result.slices)  # type: ignore[operator]


@pytest.mark.parametrize("metric", ["precision", "f1", "balanced_accuracy"])
def test_the_normal_limit_takes_over_where_it_agrees_with_the_exact_grid(
    metric: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the grid's size limit the studentized statistic's normal limit is used: on tables
    just past it (a few hundred discordant rows per label) both give the same p-value."""
    import chaosml.slices.stats.paired as stats

    rng = np.random.default_rng(8)
    m = METRICS[metric]
    checked = 0
    for _ in range(120):
        cells = rng.multinomial(int(rng.integers(2000, 6000)), rng.dirichlet(np.ones(8) * 3))[None]
        k0, _ = stats.binomial_grid(int(cells[0, 1] + cells[0, 2]))
        k1, _ = stats.binomial_grid(int(cells[0, 5] + cells[0, 6]))
        if len(k0) * len(k1) <= stats.EXACT_GRID:
            continue
        normal = permutation_p_values(lambda x: studentized(m, x), cells)[0]
        monkeypatch.setattr(stats, "EXACT_GRID", 10**9)
        exact = permutation_p_values(lambda x: studentized(m, x), cells)[0]
        monkeypatch.undo()
        if exact > 1e-4:
            assert normal == pytest.approx(exact, rel=0.05)
            checked += 1
    assert checked >= 5
