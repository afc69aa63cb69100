"""Slices under failure scenarios: the matrix against a direct pandas computation, the exact test
against brute force, and a version made fragile to one fault flagged for exactly that cell."""

from __future__ import annotations

import itertools
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from chaosml.errors import InputError
from chaosml.faults import apply_offline
from chaosml.slices.checks import run_slice_tests
from chaosml.slices.fragility import fragility
from chaosml.slices.metrics import METRICS
from chaosml.slices.offline import offline_scenarios
from chaosml.slices.stats import (
    DID,
    SWAPS,
    FloatArray,
    did_p_values,
    events,
    permutation_p_values,
    studentized,
)
from chaosml.slices.suite import ComparePolicy, SliceSpec, SliceSuite, SliceTest
from chaosml.slices.sums import confusion
from chaosml.versions import ArtifactVersion, InMemory

SCENARIOS = {
    "b-shift": "faults:\n  - {type: shift, columns: [b], by: 4.0, where: \"g == 'x'\"}\n",
    "a-noise": "faults:\n  - {type: noise, columns: [a], std: 0.3}\n",
    "flip": "faults:\n  - {type: label_flip, rate: 0.3}\n",
    "slow": "faults:\n  - {type: latency, latency: 100}\n",
}
HEAD = (
    "name: {name}\nload: {{users: 1, rate: 1}}\nphases: {{steady: 1s, fault: 1s, recovery: 1s}}\n"
)


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[pd.DataFrame, list[ArtifactVersion], Path]:
    """Data, v1 reading only ``a``, v2 leaning on ``b`` (a noisy copy of ``a``), scenario files."""
    folder = tmp_path_factory.mktemp("fragility")
    rng = np.random.default_rng(4)
    n = 6000
    a = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "a": a,
            "b": a + rng.normal(scale=0.2, size=n),
            "g": rng.choice(["x", "y", "z"], size=n),
            "y": (a + rng.normal(scale=0.5, size=n) > 0).astype(int),
        }
    )
    versions = []
    for name, columns in (("v1", ["a"]), ("v2", ["a", "b"])):
        model = LogisticRegression().fit(frame[columns], frame["y"])
        if name == "v2":  # lean on b
            model.coef_ = np.array([[0.5, 4.0]])
        joblib.dump(model, folder / f"{name}.joblib")
        versions.append(ArtifactVersion(name, folder / f"{name}.joblib"))
    scenarios = folder / "scenarios"
    scenarios.mkdir()
    for name, faults in SCENARIOS.items():
        (scenarios / f"{name}.yaml").write_text(HEAD.format(name=name) + faults, encoding="utf-8")
    return frame, versions, scenarios


SUITE = SliceSuite(
    label="y",
    min_size=30,
    slices=[SliceSpec(by=["g"])],
    compare=ComparePolicy(metric="accuracy", max_drop_under_fault=0.02),
)


def test_a_version_fragile_to_one_fault_is_flagged_there_only(
    world: tuple[pd.DataFrame, list[ArtifactVersion], Path],
) -> None:
    frame, versions, scenarios = world
    result = fragility(SUITE, versions, frame, offline_scenarios([scenarios]), n_boot=200)
    assert [s.name for s in result.scenarios if not s.applicable] == ["slow"]
    flagged = {(c.slice, c.scenario) for c in result.fragile if c.slice != "overall"}
    assert flagged == {("g=x", "b-shift")}
    cell = next(c for c in result.cells if (c.slice, c.scenario) == ("g=x", "b-shift"))
    assert cell.change("v1") == 0 and cell.delta is not None and cell.delta < -0.2
    assert cell.ci is not None and cell.ci[1] < 0
    # a fault on the answers hits both models alike: shown, not judged
    flips = [c for c in result.cells if c.scenario == "flip"]
    assert flips and all(c.verdict is None and c.p_value is None for c in flips)
    assert all(c.change("v1") is not None and c.change("v1") < 0 for c in flips)  # type: ignore[operator]


def test_the_matrix_equals_a_direct_pandas_computation(
    world: tuple[pd.DataFrame, list[ArtifactVersion], Path],
) -> None:
    """Same seeded faults, predictions and accuracies per slice, computed by hand."""
    frame, versions, scenarios = world
    loaded = offline_scenarios([scenarios])
    result = fragility(SUITE, versions, frame, loaded, seed=7, n_boot=0)
    applied = [s.name for s in loaded if s.applicable]
    assert {"b-shift", "flip"} <= set(applied), applied  # a request and a response fault
    checked = 0
    for index, scenario in enumerate(loaded):
        if not scenario.applicable:
            continue
        for version in versions:
            rng = np.random.default_rng([7, index, 0])  # one chunk: its generator
            rows = frame
            for fault, toxicity in scenario.faults:
                if fault.side == "request":
                    rows, _, _ = apply_offline(fault, rows, toxicity=toxicity, rng=rng)
            model = joblib.load(version.path)
            said = model.predict(rows[list(model.feature_names_in_)])
            for fault, toxicity in scenario.faults:
                if fault.side == "response":
                    _, said, _ = apply_offline(fault, rows, said, toxicity=toxicity, rng=rng)
            clean = model.predict(frame[list(model.feature_names_in_)])
            by_slice = pd.DataFrame(
                {
                    "g": frame["g"],
                    "clean": clean == frame["y"],
                    "faulted": np.asarray(said) == frame["y"],
                }
            )
            expected = by_slice.groupby("g")[["clean", "faulted"]].mean()
            for g, row in expected.iterrows():
                cell = next(
                    c for c in result.cells if (c.slice, c.scenario) == (f"g={g}", scenario.name)
                )
                assert cell.clean[version.name] == pytest.approx(row["clean"], abs=1e-12)
                assert cell.faulted[version.name] == pytest.approx(row["faulted"], abs=1e-12)
                checked += 1
    assert checked == len(applied) * len(versions) * frame["g"].nunique()


@pytest.mark.parametrize(("ones", "twos"), [(0, 1), (3, 0), (2, 2), (5, 3), (1, 6)])
def test_the_exact_test_is_the_sign_flip_distribution(ones: int, twos: int) -> None:
    """Against brute force over every sign assignment of the rows' d = +-1, +-2."""
    weights = [1] * ones + [2] * twos
    sums = [
        sum(w * s for w, s in zip(weights, signs, strict=True))
        for signs in itertools.product((1, -1), repeat=len(weights))
    ]
    for observed in sorted(set(sums)):
        expected = np.mean([abs(s) >= abs(observed) for s in sums])
        got = did_p_values(np.array([ones]), np.array([twos]), np.array([observed]))[0]
        assert got == pytest.approx(expected, rel=1e-12)


def test_scenarios_that_cannot_apply_to_a_version_are_bad_input(
    world: tuple[pd.DataFrame, list[ArtifactVersion], Path], tmp_path: Path
) -> None:
    frame, versions, scenarios = world
    precomputed = InMemory("p", np.zeros(len(frame), dtype=int))
    with pytest.raises(
        InputError, match="changes the model's inputs, and version 'p' is precomputed"
    ):
        fragility(SUITE, [precomputed], frame, offline_scenarios([scenarios / "a-noise.yaml"]))
    stale = tmp_path / "stale.yaml"
    stale.write_text(
        HEAD.format(name="stale") + "faults:\n  - {type: stale_model, version: v0}\n",
        encoding="utf-8",
    )
    with pytest.raises(InputError, match="stale_model version 'v0' is not a version here"):
        fragility(SUITE, versions, frame, offline_scenarios([stale]))


def test_slice_tests_run_under_a_scenario(
    world: tuple[pd.DataFrame, list[ArtifactVersion], Path],
) -> None:
    frame, versions, scenarios = world
    suite = SliceSuite(
        label="y",
        slices=[SliceSpec(by=["g"])],
        tests=[
            SliceTest(slice="g=*", metric="accuracy", under="b-shift", max_drop=0.05),
            SliceTest(slice="g=x", metric="accuracy", under="slow", min=0.5),
        ],
    )
    loaded = offline_scenarios([scenarios])
    report = run_slice_tests(suite, versions[1], frame, scenarios=loaded, seed=3)
    status = {(o.slice, o.test.split(" under ")[-1]): o.status for o in report.outcomes}
    assert status == {
        ("g=x", "b-shift"): "failed",  # v2 leans on b, shifted for g == 'x' only
        ("g=y", "b-shift"): "passed",
        ("g=z", "b-shift"): "passed",
        ("g=x", "slow"): "skipped",  # transport faults: nothing to run offline
    }
    cells = fragility(suite, [versions[1]], frame, loaded, seed=3, n_boot=0).cells
    cell = next(c for c in cells if (c.slice, c.scenario) == ("g=x", "b-shift"))
    assert report.change("b-shift", "accuracy")["g=x"] == pytest.approx(cell.change("v2"))
    listed = {s["name"]: s for s in report.to_dict()["scenarios"]}
    assert not listed["slow"]["applicable"] and "slices" not in listed["slow"]
    x = next(s for s in listed["b-shift"]["slices"] if s["name"] == "g=x")
    assert x["change"]["accuracy"] == pytest.approx(cell.change("v2"))

    alone = run_slice_tests(suite, versions[1], frame)
    assert {o.status for o in alone.outcomes} == {"skipped"}
    assert all("needs --scenarios" in o.detail for o in alone.outcomes)
    typo = suite.model_copy(
        update={"tests": [SliceTest(slice="g=x", metric="accuracy", under="b-shfit", min=0.5)]}
    )
    with pytest.raises(
        InputError,
        match=r"tests\[0\]\.under: no scenario named 'b-shfit' \(did you mean 'b-shift'\?\)",
    ):
        run_slice_tests(typo, versions[1], frame, scenarios=loaded)


@pytest.mark.parametrize("metric", ["f1", "precision"])
def test_ratio_metrics_are_compared_under_faults_too(
    world: tuple[pd.DataFrame, list[ArtifactVersion], Path], metric: str
) -> None:
    frame, versions, scenarios = world
    suite = SUITE.model_copy(
        update={"compare": ComparePolicy(metric=metric, max_drop_under_fault=0.02)}
    )
    result = fragility(suite, versions, frame, offline_scenarios([scenarios]), n_boot=200)
    flagged = {(c.slice, c.scenario) for c in result.fragile if c.slice != "overall"}
    assert flagged == {("g=x", "b-shift")}


def test_the_swap_grid_is_the_sign_flip_test_for_a_proportion() -> None:
    """Unstudentized, the permutation over the 12 cell pairs a swap of versions exchanges gives
    the two-dimensional sign-flip test's p-value for the accuracy difference of changes."""
    rng = np.random.default_rng(2)
    accuracy = METRICS["accuracy"]

    def did(x: FloatArray) -> FloatArray:
        value = [accuracy.value(*confusion(x, 4, v)) for v in range(4)]
        return (value[3] - value[1]) - (value[2] - value[0])

    for _ in range(8):
        cells = rng.multinomial(14, rng.dirichlet(np.ones(32)))[None]
        e = [events(accuracy, 4, v) for v in range(4)]
        d = np.nan_to_num((e[3] - e[1]) - (e[2] - e[0]))
        ones, twos = cells @ (np.abs(d) == 1), cells @ (np.abs(d) == 2)
        expected = did_p_values(ones, twos, (cells @ d).astype(np.int64))[0]
        assert permutation_p_values(did, cells, SWAPS)[0] == pytest.approx(expected, rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["f1", "precision", "balanced_accuracy"])
def test_the_ratio_fragility_test_holds_its_level(metric: str) -> None:
    """Seeded simulation: versions exchangeable under the faults (no difference in fragility);
    the share of p < 0.05 stays within 5% (plus Monte Carlo error)."""
    rng = np.random.default_rng(13)
    swapped = np.arange(32)
    for a, b in SWAPS:
        swapped[a], swapped[b] = b, a
    cells = []
    for _ in range(1500):
        pi = rng.dirichlet(np.ones(32) * 2)
        cells.append(rng.multinomial(200, (pi + pi[swapped]) / 2))
    m = METRICS[metric]
    p = permutation_p_values(lambda x: studentized(m, x, DID, 4), np.array(cells), SWAPS)
    p = p[np.isfinite(p)]
    assert np.mean(p < 0.05) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / len(p))
