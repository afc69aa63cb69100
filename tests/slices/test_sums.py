"""Per-slice metrics equal scikit-learn's and fairlearn's MetricFrame on the same rows."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate
from sklearn import metrics as skm

from chaosml.slices.collect import Evaluation, evaluate
from chaosml.slices.suite import SliceSpec, SliceSuite
from chaosml.slices.sums import SCORE_BINS
from chaosml.versions import InMemory

ORACLES = {
    "accuracy": skm.accuracy_score,
    "precision": partial(skm.precision_score, zero_division=np.nan),
    "recall": partial(skm.recall_score, zero_division=np.nan),
    "f1": partial(skm.f1_score, zero_division=np.nan),
    "false_positive_rate": false_positive_rate,
    "selection_rate": selection_rate,
    "balanced_accuracy": skm.balanced_accuracy_score,
}


def make_rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    return pd.DataFrame(
        {
            "g": rng.choice(["a", "b", "c", "d"], size=n, p=[0.5, 0.3, 0.15, 0.05]),
            "h": rng.integers(0, 3, size=n),
            "x": np.where(rng.random(n) < 0.1, np.nan, rng.random(n)),
            "y": y.astype(int),
            "p1": (y ^ (rng.random(n) < 0.25)).astype(int),
            "s1": np.clip(0.5 * y + rng.normal(0.25, 0.2, size=n), 0, 1),
        }
    )


SUITE = SliceSuite(
    label="y",
    min_size=1,
    slices=[
        SliceSpec(name="low_x", where="x < 0.3"),
        SliceSpec(name="x_missing", where="isna(x)"),
        SliceSpec(by=["g"]),
        SliceSpec(by=["g", "h"]),
    ],
    metrics=[*ORACLES, "roc_auc"],
)


def run(frame: pd.DataFrame, chunk_rows: int = 1_000_000) -> Evaluation:
    version = InMemory("v", frame["p1"].to_numpy(), frame["s1"].to_numpy())
    return evaluate(SUITE, frame, [version], chunk_rows=chunk_rows)


def masks(frame: pd.DataFrame, evaluation: Evaluation) -> dict[str, np.ndarray]:
    out = {
        "overall": np.ones(len(frame), dtype=bool),
        "low_x": (frame["x"] < 0.3).to_numpy(),
        "x_missing": frame["x"].isna().to_numpy(),
    }
    for info in evaluation.stats.slices:
        if info.group is not None and info.value is not None:
            mask = np.ones(len(frame), dtype=bool)
            for column, value in zip(info.group, info.value, strict=True):
                mask &= (frame[column] == value).to_numpy()
            out[info.name] = mask
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn(seed: int) -> None:
    frame = make_rows(3000, seed)
    evaluation = run(frame)
    table = evaluation.frame(0, [*ORACLES, "roc_auc"])
    slice_masks = masks(frame, evaluation)
    assert len(slice_masks) == len(evaluation.stats.slices)
    error = evaluation.auc_error(0)
    for index, info in enumerate(evaluation.stats.slices):
        rows = frame[slice_masks[info.name]]
        assert table.loc[info.name, "n"] == len(rows)
        for name, oracle in ORACLES.items():
            expected = oracle(rows["y"], rows["p1"])
            np.testing.assert_allclose(table.loc[info.name, name], expected, err_msg=name)
        if rows["y"].nunique() == 2:
            exact = skm.roc_auc_score(rows["y"], rows["s1"])
            assert abs(table.loc[info.name, "roc_auc"] - exact) <= error[index] + 1e-12
            assert error[index] < 2 / SCORE_BINS * 10


@pytest.mark.parametrize("columns", [["g"], ["g", "h"]])
def test_by_slices_match_metricframe(columns: list[str]) -> None:
    frame = make_rows(5000, 7)
    evaluation = run(frame)
    table = evaluation.frame(0, list(ORACLES))
    mf = MetricFrame(
        metrics=ORACLES, y_true=frame["y"], y_pred=frame["p1"], sensitive_features=frame[columns]
    )
    group = [
        (i, info) for i, info in enumerate(evaluation.stats.slices) if info.group == tuple(columns)
    ]
    assert len(group) == len(mf.by_group)
    for _, info in group:
        assert info.value is not None
        key = info.value[0] if len(columns) == 1 else info.value
        for name in ORACLES:
            np.testing.assert_allclose(table.loc[info.name, name], mf.by_group.loc[key, name])
    for name in ORACLES:
        values = table.loc[[info.name for _, info in group], name]
        np.testing.assert_allclose(values.max() - values.min(), mf.difference()[name])
        np.testing.assert_allclose(values.min() / values.max(), mf.ratio()[name])


def test_chunking_does_not_change_statistics(tmp_path: Path) -> None:
    frame = make_rows(2000, 3)
    whole = run(frame).stats
    chunked = run(frame, chunk_rows=37).stats
    np.testing.assert_array_equal(whole.cells, chunked.cells)
    assert whole.hist is not None and chunked.hist is not None
    np.testing.assert_array_equal(whole.hist, chunked.hist)
    assert [s.name for s in whole.slices] == [s.name for s in chunked.slices]

    frame.to_parquet(tmp_path / "rows.parquet", row_group_size=300)
    frame.to_csv(tmp_path / "rows.csv", index=False)
    for path in (tmp_path / "rows.parquet", tmp_path / "rows.csv"):
        version = InMemory("v", frame["p1"].to_numpy(), frame["s1"].to_numpy())
        streamed = evaluate(SUITE, path, [version], chunk_rows=111).stats
        np.testing.assert_array_equal(whole.cells, streamed.cells)


def test_by_slice_names_and_predicates() -> None:
    frame = pd.DataFrame({"g": ["a", None, "b", "a"], "h": [1, 2, 1, 1], "y": [1, 0, 1, 0]})
    suite = SliceSuite(label="y", min_size=1, slices=[SliceSpec(by=["g", "h"])])
    evaluation = evaluate(suite, frame, [InMemory("v", frame["y"].to_numpy())])
    slices = {info.name: info.where for info in evaluation.stats.slices[1:]}
    assert slices == {
        "g=a & h=1": "g == 'a' and h == 1",
        "g=b & h=1": "g == 'b' and h == 1",
        "g=<missing> & h=2": "isna(g) and h == 2",
    }
    assert list(evaluation.stats.n) == [4, 2, 1, 1]


def test_by_slice_where_selects_the_same_rows() -> None:
    from chaosml.predicate import parse_predicate

    frame = make_rows(1000, 5)
    evaluation = run(frame)
    for info, mask in zip(
        evaluation.stats.slices[1:], list(masks(frame, evaluation).values())[1:], strict=True
    ):
        assert parse_predicate(info.where).evaluate(frame).sum() == mask.sum(), info.name
