"""Paired statistics against independent oracles: statsmodels and a direct row bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from chaosml.slices.compare import compare_versions
from chaosml.slices.engine import confusion
from chaosml.slices.metrics import METRICS
from chaosml.slices.stats import adjust, bootstrap_cells, mcnemar_exact, percentile_interval
from chaosml.slices.suite import ComparePolicy, SliceSpec, SliceSuite
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


def test_bootstrap_tested_metric_needs_replicates() -> None:
    from chaosml.errors import InputError

    frame = pd.DataFrame({"g": [1, 2] * 50, "y": [0, 1, 1, 0] * 25})
    suite = SliceSuite(label="y", slices=[SliceSpec(by=["g"])], compare=ComparePolicy(metric="f1"))
    version = InMemory("v", frame["y"].to_numpy())
    with pytest.raises(InputError, match="n_boot must be > 0: f1 is compared with a bootstrap"):
        compare_versions(suite, version, version, frame, n_boot=0)
