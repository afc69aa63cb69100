"""The slice gate holds its level: every cell that can fail it is in one correction, every report
agrees on which cells failed, intervals are honest at every count, classes are checked, and a
scenario that breaks the model is a result. Seeded simulations against known truth, brute-force
enumeration and statsmodels / scikit-learn as oracles."""

from __future__ import annotations

import itertools
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import joblib
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from rich.console import Console
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from statsmodels.stats.contingency_tables import mcnemar
from typer.testing import CliRunner

from chaosml.cli import app
from chaosml.errors import DataError, VersionError
from chaosml.report.console import fmt_p, render_under_faults
from chaosml.report.html import write_test_html
from chaosml.report.junit import write_under_faults_junit
from chaosml.slices.checks import run_slice_tests
from chaosml.slices.compare import compare_versions
from chaosml.slices.fragility import UnderFaults, compare_under_faults, fragility
from chaosml.slices.metrics import METRICS
from chaosml.slices.offline import offline_scenarios
from chaosml.slices.stats import (
    P_FLOOR,
    did_p_values,
    interval,
    mcnemar_exact,
    permutation_p_values,
    swappable,
)
from chaosml.slices.suite import ComparePolicy, SliceSpec, SliceSuite, SliceTest
from chaosml.slices.sums import confusion
from chaosml.versions import ArtifactVersion, InMemory

HEAD = (
    "name: {name}\nload: {{users: 1, rate: 1}}\nphases: {{steady: 1s, fault: 1s, recovery: 1s}}\n"
)
FAULTS = {
    "a-noise": "faults:\n  - {type: noise, columns: [a], std: 0.5}\n",
    "a-nulls": "faults:\n  - {type: missing_values, columns: [a], rate: 0.3}\n",
}


class Noisy:
    """A model whose answer on a row is ``a + noise[row] > 0``: two of them with independent noise
    of one law are exchangeable on every row, clean and faulted alike (the null, exactly)."""

    feature_names_in_ = np.array(["a", "row"])
    classes_ = np.array([0, 1])

    def __init__(self, noise: npt.NDArray[np.float64]) -> None:
        self.noise = noise

    def predict(self, features: pd.DataFrame) -> npt.NDArray[np.int64]:
        a = features["a"].to_numpy(dtype=np.float64)
        answer: npt.NDArray[np.int64] = (a + self.noise[features["row"].to_numpy()] > 0).astype(
            np.int64
        )
        return answer


def _scenarios(folder: Path, faults: dict[str, str]) -> Path:
    folder.mkdir(exist_ok=True)
    for name, text in faults.items():
        (folder / f"{name}.yaml").write_text(HEAD.format(name=name) + text, encoding="utf-8")
    return folder


def _exchangeable(
    rng: np.random.Generator, n: int
) -> tuple[pd.DataFrame, ArtifactVersion, ArtifactVersion]:
    a = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "a": a,
            "row": np.arange(n),
            "g": rng.choice(["x", "y", "z"], size=n),
            "y": (a + rng.normal(scale=0.7, size=n) > 0).astype(int),
        }
    )
    v1, v2 = (
        ArtifactVersion(name=name, path=Path(f"{name}.joblib"), _model=Noisy(rng.normal(0, 0.6, n)))
        for name in ("v1", "v2")
    )
    return frame, v1, v2


@pytest.mark.parametrize("metric", ["accuracy", "precision"])
def test_exchangeable_versions_fail_the_gate_at_most_alpha_of_the_time(
    metric: str, tmp_path: Path
) -> None:
    """200 seeded runs of ``slices compare --scenarios`` (clean slices and fragility cells, three
    slices of about 300 rows, two input-fault scenarios) on versions exchangeable by construction:
    the share of runs whose exit code is 1 stays within alpha + 2 SE, and so does the share where
    the clean comparison alone or the fragility cells alone fail."""
    scenarios = offline_scenarios([_scenarios(tmp_path / "scenarios", FAULTS)])
    alpha, runs = 0.05, 200
    suite = SliceSuite(
        label="y",
        min_size=30,
        slices=[SliceSpec(by=["g"])],
        compare=ComparePolicy(metric=metric, alpha=alpha),
    )
    rng = np.random.default_rng(21)
    failed = clean_failed = fragile_failed = 0
    for run in range(runs):
        frame, v1, v2 = _exchangeable(rng, 900)
        result = compare_under_faults(suite, v1, v2, frame, scenarios, seed=run, n_boot=0)
        assert len(result.fragility.cells) == 2 * 4  # overall and three slices per scenario
        failed += result.exit_code == 1
        clean_failed += not compare_versions(suite, v1, v2, frame, n_boot=0).passed
        fragile_failed += not fragility(suite, [v1, v2], frame, scenarios, n_boot=0).passed
    bound = alpha + 2 * math.sqrt(alpha * (1 - alpha) / runs)
    assert failed / runs <= bound, failed
    assert clean_failed / runs <= bound, clean_failed
    assert fragile_failed / runs <= bound, fragile_failed


def _planted(tmp_path: Path) -> tuple[pd.DataFrame, list[ArtifactVersion], Path]:
    """v2 leans on ``b``, which one scenario shifts everywhere: its overall cell regresses too."""
    rng = np.random.default_rng(4)
    n = 3000
    a = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "a": a,
            "b": a + rng.normal(scale=0.2, size=n),
            "g": rng.choice(["x", "y"], size=n),
            "y": (a + rng.normal(scale=0.5, size=n) > 0).astype(int),
        }
    )
    versions = []
    for name, columns in (("v1", ["a"]), ("v2", ["a", "b"])):
        model = LogisticRegression().fit(frame[columns], frame["y"])
        if name == "v2":
            model.coef_ = np.array([[0.5, 4.0]])
        joblib.dump(model, tmp_path / f"{name}.joblib")
        versions.append(ArtifactVersion(name, tmp_path / f"{name}.joblib"))
    shift = {"b-shift": "faults:\n  - {type: shift, columns: [b], by: 3.0}\n"}
    return frame, versions, _scenarios(tmp_path / "scenarios", shift)


def test_console_json_and_junit_agree_on_every_failed_cell(tmp_path: Path) -> None:
    """The overall cell of a scenario is a cell of the family like any other: when it fails, the
    exit code, the JSON, the JUnit and the console all say so, and the console names it."""
    frame, (v1, v2), folder = _planted(tmp_path)
    suite = SliceSuite(label="y", slices=[SliceSpec(by=["g"])])
    result = compare_under_faults(suite, v1, v2, frame, offline_scenarios([folder]), n_boot=200)
    failed = {(c.slice, c.scenario) for c in result.fragility.fragile}
    assert ("overall", "b-shift") in failed and result.exit_code == 1
    report = result.to_dict()
    assert {(c["slice"], c["scenario"]) for c in report["fragile"]} == failed
    assert (
        report["family"]
        == report["clean"]["family"]
        == len([c for c in report["cells"] if c["p_adjusted"] is not None])
        + sum(
            s["p_adjusted"] is not None
            for s in [report["clean"]["overall"], *report["clean"]["slices"]]
        )
    )
    write_under_faults_junit(result, tmp_path / "f.xml")
    cases = ET.parse(tmp_path / "f.xml").getroot().findall("testsuite")[1].findall("testcase")
    junit_failed = {
        (c.get("name"), c.get("classname", "").rsplit(".", 1)[-1])
        for c in cases
        if c.find("failure") is not None
    }
    assert junit_failed == failed
    console = Console(width=200, record=True)
    render_under_faults(result, console)
    text = console.export_text()
    listed = text.split(f"v2 more fragile in {len(failed)} cells: ")[1].splitlines()[0]
    assert {tuple(item.split(" under ")) for item in listed.split(", ")} == failed
    tally = text.split("(slice, scenario) cells: ")[1]
    assert f"{len(failed)} regressed" in tally


def test_a_ratio_metric_with_no_discordant_row_is_inconclusive_without_an_interval() -> None:
    """Both versions answer alike on every row: precision's delta is 0 on these rows, but with no
    discordant row no test can reach alpha and no interval is honest (its correlation is 1)."""
    y = np.array([1, 0] * 25)
    pred = np.array([1, 1, 0, 0, 1] * 10)
    frame = pd.DataFrame({"y": y, "g": ["a"] * 50})
    for metric in ("precision", "f1", "balanced_accuracy", "accuracy"):
        suite = SliceSuite(
            label="y",
            min_size=10,
            slices=[SliceSpec(by=["g"])],
            compare=ComparePolicy(metric=metric),
        )
        result = compare_versions(suite, InMemory("v1", pred), InMemory("v2", pred.copy()), frame)
        row = result.slices[0]
        assert (row.verdict, row.discordant, row.p_adjusted) == ("inconclusive", 0, None)
        if METRICS[metric].proportion:  # Newcombe's interval is honest at 0: [-0.038, +0.038]
            assert row.ci is not None and row.ci[0] < -0.03 and row.ci[1] > 0.03
        else:
            assert row.ci is None


def _population(prev: float, acc1: float, acc2: float, both: float) -> npt.NDArray[np.float64]:
    pi = np.zeros(8)
    for y, share in ((0, 1 - prev), (1, prev)):
        right, wrong = y, 1 - y
        pi[y << 2 | right << 1 | right] = share * both
        pi[y << 2 | right << 1 | wrong] = share * (acc1 - both)
        pi[y << 2 | wrong << 1 | right] = share * (acc2 - both)
        pi[y << 2 | wrong << 1 | wrong] = share * (1 - acc1 - acc2 + both)
    return pi


@pytest.mark.parametrize("metric", ["precision", "f1", "balanced_accuracy"])
@pytest.mark.parametrize("n", [50, 200, 1000])
def test_ratio_intervals_cover_the_true_delta(metric: str, n: int) -> None:
    """Seeded simulation from a population with a known delta (about -0.03): the 95% interval
    covers it in 93-97% of the data sets that get one (those with fewer than 6 discordant rows are
    inconclusive, without one: at n = 50 about 15% of them). Marked exception: balanced accuracy
    at n = 50, whose halves' Newcombe intervals (about 10 and 15 rows) are conservative (98%)."""
    rng = np.random.default_rng(n)
    pi = _population(0.4, 0.85, 0.82, 0.75)
    m = METRICS[metric]
    truth = float(m.value(*confusion(pi[None], 2, 1))[0] - m.value(*confusion(pi[None], 2, 0))[0])
    cells = rng.multinomial(n, pi, size=2000)
    low, high = interval(m, cells, 0.95)
    given = (swappable(cells) >= 6) & np.isfinite(low)
    coverage = float(np.mean((low[given] <= truth) & (truth <= high[given])))
    assert given.mean() > 0.8
    high_end = 0.985 if (metric, n) == ("balanced_accuracy", 50) else 0.97
    assert 0.93 <= coverage <= high_end, coverage


@pytest.mark.parametrize(("ones", "twos"), [(150, 150), (300, 60), (40, 600), (1000, 1000)])
def test_the_sign_flip_test_is_exact_past_the_old_grid_limit(ones: int, twos: int) -> None:
    """Grids of more than 20,000 points (where a normal limit used to take over, 6-9% too small):
    against the exact distribution built by brute-force convolution of the rows' +-1 and +-2."""
    dist = np.zeros(1, dtype=object)
    dist[0] = 1
    for weight in [1] * ones + [2] * twos:  # exact integer counts of each sum, no rounding
        wider = np.zeros(len(dist) + 2 * weight, dtype=object)
        wider[: len(dist)] += dist
        wider[2 * weight :] += dist
        dist = wider
    total = 2 ** (ones + twos)
    sums = np.arange(len(dist)) - (ones + 2 * twos)
    for t in (6, 30, int(2.5 * math.sqrt(ones + 4 * twos)), 4 * int(math.sqrt(ones + 4 * twos))):
        exact = float(sum(dist[np.abs(sums) >= t]) / total)
        got = did_p_values(np.array([ones]), np.array([twos]), np.array([t]))[0]
        assert got == pytest.approx(exact, rel=1e-9)


def test_far_tail_p_values_are_exact_down_to_the_floor() -> None:
    """The permutation grid reaches the observed split, so a far tail is not floored at 2/2**k;
    McNemar's tail against statsmodels at 1e-30; below 1e-300, reported as the floor and printed
    ``<1e-300``, never 0."""
    accuracy = METRICS["accuracy"]

    def delta(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return accuracy.value(*confusion(x, 2, 1)) - accuracy.value(*confusion(x, 2, 0))

    for b, c in ((8, 120), (30, 150), (0, 200)):
        cells = np.array([[50, b // 2, c // 2, 5, 6, c - c // 2, b - b // 2, 40]])
        expected = mcnemar([[0, b], [c, 0]], exact=True).pvalue
        assert permutation_p_values(delta, cells)[0] == pytest.approx(
            max(expected, P_FLOOR), rel=1e-9
        )
        assert mcnemar_exact(np.array([b]), np.array([c]))[0] == pytest.approx(
            max(expected, P_FLOOR), rel=1e-9
        )
    assert 1e-31 < mcnemar_exact(np.array([8]), np.array([120]))[0] < 1e-20
    huge = mcnemar_exact(np.array([0]), np.array([5000]))[0]
    assert huge == P_FLOOR and fmt_p(huge) == "<1e-300"
    assert fmt_p(3.2e-31) == "3.2e-31" and fmt_p(0.0123) == "0.0123"


def _labelled(tmp_path: Path, labels: list[str]) -> tuple[SliceSuite, pd.DataFrame]:
    suite_file = tmp_path / "s.yaml"
    suite_file.write_text(
        'label: y\npositive: "yes"\nmin_size: 1\nslices:\n  - {by: [g]}\n', encoding="utf-8"
    )
    from chaosml.slices.suite import load_suite

    frame = pd.DataFrame({"y": labels * 20, "g": ["a", "b"] * (10 * len(labels))})
    return load_suite(suite_file), frame


def test_a_positive_class_that_is_not_a_label_value_is_bad_input(tmp_path: Path) -> None:
    suite, frame = _labelled(tmp_path, ["Yes", "No"])
    preds = InMemory("v1", np.array(["Yes", "No"] * 20))
    with pytest.raises(DataError) as caught:
        run_slice_tests(suite, preds, frame)
    assert str(caught.value) == (
        f"{tmp_path / 's.yaml'}:2: positive: the positive class 'yes' is not among the values "
        "of label 'y' in <DataFrame> (seen: 'Yes', 'No'); expected one of them"
    )


def test_a_positive_class_that_is_not_a_predicted_value_is_bad_input(tmp_path: Path) -> None:
    suite, frame = _labelled(tmp_path, ["yes", "no"])
    misspelt = InMemory("v1", np.array(["Yes", "No"] * 20))
    with pytest.raises(VersionError) as caught:
        compare_versions(suite, misspelt, InMemory("v2", frame["y"].to_numpy()), frame)
    assert str(caught.value) == (
        "version 'v1': prediction: the positive class 'yes' is not among its values (seen: "
        "'Yes', 'No'), nor are they the label's classes ('yes', 'no')"
    )
    never = InMemory("v1", np.array(["no"] * 40))  # a model that never says yes: a result
    report = run_slice_tests(suite, never, frame)
    assert report.overall["recall"] == 0.0


def test_the_positive_class_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    _, frame = _labelled(tmp_path, ["yes", "no"])
    frame.to_csv(tmp_path / "eval.csv", index=False)
    pd.DataFrame({"prediction": ["Yes", "No"] * 20}).to_csv(tmp_path / "p.csv", index=False)
    pd.DataFrame({"prediction": frame["y"]}).to_csv(tmp_path / "q.csv", index=False)
    args = ["--data", str(tmp_path / "eval.csv"), "--suite", str(tmp_path / "s.yaml")]
    result = CliRunner().invoke(
        app, ["slices", "compare", str(tmp_path / "p.csv"), str(tmp_path / "q.csv"), *args]
    )
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        f"chaosml: error: {tmp_path / 'p.csv'}: prediction: the positive class 'yes' is not "
        "among its values (seen: 'Yes', 'No'), nor are they the label's classes ('yes', 'no')"
    )


def test_a_scenario_that_breaks_the_model_is_an_error_result(tmp_path: Path) -> None:
    """A model that cannot take NaN, a scenario that nulls its input: that scenario's cells are
    ``error`` with the model's message and the scenario's name, the others run, exit 3."""
    rng = np.random.default_rng(2)
    n = 600
    a = rng.normal(size=n)
    frame = pd.DataFrame(
        {"a": a, "g": rng.choice(["x", "y"], size=n), "y": (a + rng.normal(size=n) > 0).astype(int)}
    )
    versions = []
    for name in ("v1", "v2"):
        model = LogisticRegression(C=0.5 if name == "v1" else 1.0).fit(frame[["a"]], frame["y"])
        joblib.dump(model, tmp_path / f"{name}.joblib")
        versions.append(ArtifactVersion(name, tmp_path / f"{name}.joblib"))
    faults = {
        "a-gone": "faults:\n  - {type: missing_values, columns: [a], rate: 1.0}\n",
        "a-noise": FAULTS["a-noise"],
    }
    folder = _scenarios(tmp_path / "scenarios", faults)
    suite = SliceSuite(label="y", slices=[SliceSpec(by=["g"])])
    v1, v2 = versions
    result = compare_under_faults(suite, v1, v2, frame, offline_scenarios([folder]), n_boot=50)
    assert isinstance(result, UnderFaults) and result.exit_code == 3
    gone = [c for c in result.fragility.cells if c.scenario == "a-gone"]
    ran = [c for c in result.fragility.cells if c.scenario == "a-noise"]
    assert {c.slice for c in gone} == {"overall", "g=x", "g=y"} == {c.slice for c in ran}
    assert all(c.verdict == "error" and c.p_adjusted is None for c in gone)
    message = gone[0].error or ""
    assert message.startswith("scenario 'a-gone': v1 failed to predict on the faulted rows")
    assert "ValueError: Input X contains NaN" in message
    assert all(c.verdict in ("unchanged", "inconclusive", "regressed", "improved") for c in ran)
    assert json.loads(json.dumps(result.to_dict()))["errors"] == {"a-gone": message}
    console = Console(width=200, record=True)
    render_under_faults(result, console)
    assert f"could not run: {message}" in console.export_text()

    report = run_slice_tests(
        suite.model_copy(
            update={
                "tests": [SliceTest(slice="g=*", metric="accuracy", under="a-gone", max_drop=0.1)]
            }
        ),
        versions[1],
        frame,
        scenarios=offline_scenarios([folder]),
    )
    assert report.exit_code == 3 and set(report.under) == {"a-noise"}
    assert {o.status for o in report.outcomes} == {"error"}
    assert "v2 failed to predict" in report.outcomes[0].detail

    config = tmp_path / "chaosml.yaml"
    config.write_text(
        f"versions:\n  v1: {versions[0].path}\n  v2: {versions[1].path}\nlabel: y\n",
        encoding="utf-8",
    )
    frame.to_parquet(tmp_path / "eval.parquet")
    suite_file = tmp_path / "s.yaml"
    suite_file.write_text("slices:\n  - {by: [g]}\n", encoding="utf-8")
    cli = CliRunner().invoke(
        app,
        [
            *("slices", "compare", "v1", "v2", str(suite_file), "--config", str(config)),
            *("--data", str(tmp_path / "eval.parquet"), "--scenarios", str(folder), "--json"),
        ],
    )
    assert cli.exit_code == 3, cli.output
    assert json.loads(cli.stdout)["errors"]["a-gone"].startswith("scenario 'a-gone'")


def test_every_auc_has_its_binning_bound_beside_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=400)
    score = np.clip(0.5 * y + rng.normal(0.25, 0.2, size=400), 0, 1)
    frame = pd.DataFrame({"y": y, "g": rng.choice(["a", "b"], size=400)})
    suite = SliceSuite(label="y", slices=[SliceSpec(by=["g"])], metrics=["accuracy", "roc_auc"])
    version = InMemory("v", (score > 0.5).astype(int), score)
    report = run_slice_tests(suite, version, frame)
    for entry in [report.to_dict()["overall"], *report.to_dict()["slices"]]:
        bound = entry["metrics"]["roc_auc_bound"]
        assert 0 < bound < 0.01 and entry["metrics"]["roc_auc"] is not None
    write_test_html(report, tmp_path / "t.html")
    page = (tmp_path / "t.html").read_text(encoding="utf-8")
    auc = report.overall["roc_auc"]
    assert f"{auc:.4f} (±{report.overall['roc_auc_bound']:.4f})" in page
    other = InMemory("w", (score > 0.4).astype(int), score)
    compared = compare_versions(suite, version, other, frame).to_dict()
    assert compared["overall"]["metrics"]["v1"]["roc_auc_bound"] == pytest.approx(
        report.overall["roc_auc_bound"]
    )


def test_balanced_accuracy_is_undefined_on_a_one_class_slice() -> None:
    """A decision, not an accident: on a slice with one class balanced accuracy would be that
    class's recall alone (scikit-learn returns it, with a warning), which is not balanced; chaosml
    reports it undefined, and recall / true_negative_rate carry the class's number."""
    y = np.array([1] * 30 + [0, 1] * 15)
    pred = np.array([1, 0, 1] * 10 + [0, 1] * 15)
    frame = pd.DataFrame({"y": y, "g": ["one"] * 30 + ["two"] * 30})
    suite = SliceSuite(
        label="y",
        min_size=1,
        slices=[SliceSpec(by=["g"])],
        metrics=["balanced_accuracy", "recall"],
    )
    report = run_slice_tests(suite, InMemory("v", pred), frame)
    one, two = report.by_slice.loc["g=one"], report.by_slice.loc["g=two"]
    assert math.isnan(one["balanced_accuracy"])
    assert one["recall"] == pytest.approx(20 / 30)
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        assert balanced_accuracy_score(y[:30], pred[:30]) == pytest.approx(one["recall"])
    assert two["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y[30:], pred[30:]))


def test_discordant_counts_the_rows_the_test_uses() -> None:
    """For recall, only positives on which the versions differ; for precision, every row on which
    they differ (the ``discordant`` column)."""
    cells = [[10, 4, 3, 10, 10, 2, 5, 10]]  # bits label|v1|v2
    g = np.repeat(0, 54)
    bits = np.repeat(np.arange(8), cells[0])
    frame = pd.DataFrame({"g": g, "y": (bits >> 2) & 1})
    v1, v2 = InMemory("v1", (bits >> 1) & 1), InMemory("v2", bits & 1)
    for metric, expected in (("recall", 7), ("precision", 14), ("false_positive_rate", 7)):
        suite = SliceSuite(
            label="y",
            min_size=1,
            slices=[SliceSpec(by=["g"])],
            compare=ComparePolicy(metric=metric),
        )
        assert compare_versions(suite, v1, v2, frame).overall.discordant == expected


def test_sign_flip_p_values_match_brute_force_at_small_sizes() -> None:
    for ones, twos in itertools.product(range(5), range(4)):
        weights = [1] * ones + [2] * twos
        sums = [
            sum(w * s for w, s in zip(weights, signs, strict=True))
            for signs in itertools.product((1, -1), repeat=len(weights))
        ]
        for observed in sorted(set(sums)):
            expected = np.mean([abs(s) >= abs(observed) for s in sums])
            got = did_p_values(np.array([ones]), np.array([twos]), np.array([observed]))[0]
            assert got == pytest.approx(expected, rel=1e-12)
