"""Slice tests: thresholds, gaps to overall and fairlearn's between-group difference and ratio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import demographic_parity_difference, demographic_parity_ratio

from chaosml.errors import DataError, InputError, SpecError
from chaosml.slices.checks import run_slice_tests
from chaosml.slices.suite import SliceSpec, SliceSuite, SliceTest, load_suite
from chaosml.versions import InMemory


def frame(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], size=n)
    y = rng.random(n) < 0.5
    pred = np.where(sex == "F", rng.random(n) < 0.35, rng.random(n) < 0.5)
    return pd.DataFrame(
        {
            "sex": sex,
            "age": rng.integers(18, 80, size=n),
            "y": y.astype(int),
            "pred": pred.astype(int),
        }
    )


@pytest.mark.parametrize(("bound", "status"), [(0.2, "passed"), (0.1, "failed")])
def test_fairness_difference_is_fairlearns(bound: float, status: str) -> None:
    data = frame()
    suite = SliceSuite(
        label="y", tests=[SliceTest(by=["sex"], metric="selection_rate", max_difference=bound)]
    )
    report = run_slice_tests(suite, InMemory("v", data["pred"].to_numpy()), data)
    (outcome,) = report.outcomes
    expected = demographic_parity_difference(
        data["y"], data["pred"], sensitive_features=data["sex"]
    )
    assert outcome.value == pytest.approx(expected)
    assert outcome.status == status
    assert {s.name for s in report.slices} >= {"sex=F", "sex=M"}  # the group is evaluated


def test_fairness_ratio_is_fairlearns() -> None:
    data = frame(seed=1)
    suite = SliceSuite(
        label="y", tests=[SliceTest(by=["sex"], metric="selection_rate", min_ratio=0.9)]
    )
    (outcome,) = run_slice_tests(suite, InMemory("v", data["pred"].to_numpy()), data).outcomes
    expected = demographic_parity_ratio(data["y"], data["pred"], sensitive_features=data["sex"])
    assert outcome.value == pytest.approx(expected)
    assert outcome.status == "failed"


def test_thresholds_gaps_and_small_slices() -> None:
    data = frame(seed=2)
    suite = SliceSuite(
        label="y",
        min_size=100,
        slices=[
            SliceSpec(name="young", where="age < 25"),
            SliceSpec(name="tiny", where="age == 18"),
            SliceSpec(name="women", where="sex == 'F'", min_size=10),
        ],
        tests=[
            SliceTest(slice="*", metric="accuracy", min=0.0, max=1.0),
            SliceTest(slice="women", metric="recall", max_gap_to_overall=0.05),
        ],
    )
    report = run_slice_tests(suite, InMemory("v", data["pred"].to_numpy()), data)
    status = {(o.test.split()[0], o.slice): o.status for o in report.outcomes}
    assert status[("accuracy", "tiny")] == "skipped"  # below min_size
    assert status[("accuracy", "young")] == "passed"
    assert status[("recall", "women")] == "failed"  # women are selected less: lower recall
    assert not report.passed


def test_a_test_of_a_slice_that_does_not_exist_is_bad_input(tmp_path: Path) -> None:
    """Not a failed test: the suite is wrong, so the run stops with the place and a suggestion."""
    data = frame(seed=2)

    def load_suite_text(text: str) -> SliceSuite:
        (tmp_path / "suite.yaml").write_text(text, encoding="utf-8")
        return load_suite(tmp_path / "suite.yaml")

    with pytest.raises(
        SpecError, match=r"tests\[0\]\.slice: no slice named 'youngg' \(did you mean 'young'\?\)"
    ):
        load_suite_text(
            "slices: [{name: young, where: 'age < 25'}]\ntests: [{slice: youngg, metric: recall, min: 0.5}]\n"
        )
    suite = SliceSuite(
        label="y",
        slices=[SliceSpec(by=["sex"])],
        tests=[SliceTest(slice="sx=*", metric="recall", min=0.5)],
    )
    with pytest.raises(
        InputError,
        match=r"tests\[0\]\.slice: no slice matches 'sx=\*' \(did you mean 'sex=[FM]'\?\)",
    ):
        run_slice_tests(suite, InMemory("v", data["pred"].to_numpy()), data)
    with pytest.raises(SpecError, match="slices: List should have at least 1 item"):
        load_suite_text("label: y\nslices: []\n")


def test_string_labels_need_the_positive_class() -> None:
    data = frame().assign(
        y=lambda f: np.where(f["y"] == 1, "yes", "no"),
        pred=lambda f: np.where(f["pred"] == 1, "yes", "no"),
    )
    suite = SliceSuite(label="y", slices=[SliceSpec(by=["sex"])])
    with pytest.raises(DataError, match="set `positive:` to the positive class"):
        run_slice_tests(suite, InMemory("v", data["pred"].to_numpy()), data)
    suite = SliceSuite(label="y", positive="yes", slices=[SliceSpec(by=["sex"])])
    report = run_slice_tests(suite, InMemory("v", data["pred"].to_numpy()), data)
    assert report.overall["selection_rate"] == pytest.approx((data["pred"] == "yes").mean())
