"""The ML monitors: window statistics against direct computations and fairlearn; /metrics of the
demo service carries every monitor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import requests
from fairlearn.metrics import demographic_parity_difference
from prometheus_client.parser import text_string_to_metric_families

from chaosml.codecs import plain
from chaosml.demo.data import make_credit
from chaosml.demo.train import DemoArtifacts
from chaosml.monitors import EPSILON, ModelMonitor

FEATURES = ["age", "income", "region"]


def samples(monitor: ModelMonitor) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(monitor.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_window_statistics() -> None:
    reference = make_credit(3000, seed=1)
    monitor = ModelMonitor(
        reference=reference,
        features=FEATURES,
        model_version="v9",
        sensitive="sex",
        window=400,
        fairness_window=600,
    )
    traffic = make_credit(1000, seed=2)
    predictions = (traffic["income"].fillna(0) > 40000).astype(int).tolist()
    for start in range(0, 1000, 50):  # requests of 50 rows
        part = traffic.iloc[start : start + 50]
        monitor.observe(
            part,
            predictions[start : start + 50],
            [0.5] * len(part),
            [f"r{i}" for i in range(start, start + len(part))],
        )
    window = traffic.iloc[-400:]
    got = samples(monitor)
    assert got[("chaosml_model_feature_missing_rate", (("feature", "income"),))] == pytest.approx(
        window["income"].isna().mean()
    )
    assert got[("chaosml_model_feature_mean", (("feature", "age"),))] == pytest.approx(
        window["age"].mean()
    )
    # PSI of region against the reference, computed directly
    ref = reference["region"].value_counts()
    now = window["region"].value_counts().reindex(ref.index, fill_value=0)
    expected = (ref + EPSILON) / (ref.sum() + EPSILON * (len(ref) + 1))
    actual = (now + EPSILON) / (now.sum() + EPSILON * (len(ref) + 1))
    psi = float(np.sum((actual - expected) * np.log(actual / expected)))
    assert got[("chaosml_model_feature_psi", (("feature", "region"),))] == pytest.approx(
        psi, abs=1e-6
    )
    gap = demographic_parity_difference(
        traffic["approved"].iloc[-600:],
        predictions[-600:],
        sensitive_features=traffic["sex"].iloc[-600:],
    )
    assert got[("chaosml_model_fairness_gap", (("attribute", "sex"),))] == pytest.approx(gap)
    assert got[("chaosml_model_positive_rate", ())] == pytest.approx(np.mean(predictions[-400:]))
    assert got[("chaosml_model_info", (("version", "v9"),))] == 1

    labels = traffic["approved"].tolist()
    assert monitor.feedback("r999", labels[999]) and not monitor.feedback("nope", 1)
    for i in range(500, 999):
        monitor.feedback(f"r{i}", labels[i])
    accuracy = np.mean([predictions[i] == labels[i] for i in range(599, 999)])  # the last 400
    assert samples(monitor)[("chaosml_model_online_accuracy", ())] == pytest.approx(accuracy)


def test_no_statistic_until_its_window_is_full() -> None:
    """An idle or just-started service exports NaN (which no rule's comparison matches), not the
    0 or 1 of its first rows."""
    monitor = ModelMonitor(
        reference=make_credit(3000, seed=1),
        features=FEATURES,
        model_version="v",
        sensitive="sex",
        window=100,
    )
    window_statistics = {
        "chaosml_model_feature_missing_rate",
        "chaosml_model_feature_mean",
        "chaosml_model_feature_psi",
        "chaosml_model_positive_rate",
        "chaosml_model_fairness_gap",
        "chaosml_model_online_accuracy",
    }

    def values() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for (name, _), value in samples(monitor).items():
            if name in window_statistics:
                out.setdefault(name, []).append(value)
        return out

    assert values() == {
        "chaosml_model_positive_rate": [pytest.approx(np.nan, nan_ok=True)],
        "chaosml_model_online_accuracy": [pytest.approx(np.nan, nan_ok=True)],
    }
    traffic = make_credit(400, seed=2)
    monitor.observe(traffic.iloc[:99], [0] * 99, None, [str(i) for i in range(99)])
    assert all(np.isnan(v) for vs in values().values() for v in vs)
    monitor.observe(traffic.iloc[99:100], [0], None, ["99"])
    full = values()
    assert full["chaosml_model_positive_rate"] == [0.0]
    assert full["chaosml_model_feature_missing_rate"] and not any(
        np.isnan(full["chaosml_model_feature_missing_rate"])
    )
    assert np.isnan(full["chaosml_model_fairness_gap"][0])  # its window is 400 rows
    monitor.observe(traffic.iloc[100:], [1] * 300, None, [str(i) for i in range(100, 400)])
    assert values()["chaosml_model_positive_rate"] == [1.0]
    gap = demographic_parity_difference(
        traffic["approved"], [0] * 100 + [1] * 300, sensitive_features=traffic["sex"]
    )
    assert values()["chaosml_model_fairness_gap"] == [pytest.approx(gap)]


def test_shifted_traffic_raises_psi() -> None:
    reference = make_credit(3000, seed=1)
    monitor = ModelMonitor(reference=reference, features=["income"], model_version="v", window=300)
    shifted = make_credit(300, seed=3).assign(income=lambda f: f["income"] * 3)
    monitor.observe(shifted, [1] * 300, None, [str(i) for i in range(300)])
    assert samples(monitor)[("chaosml_model_feature_psi", (("feature", "income"),))] > 0.25


def test_demo_service_metrics_carry_every_monitor(
    demo: DemoArtifacts, model_v2: str, http: requests.Session
) -> None:
    rows = make_credit(20, seed=4).drop(columns=["approved"]).to_dict("records")
    answer = http.post(
        f"http://{model_v2}/predict",
        json={"instances": [{k: plain(v) for k, v in r.items()} for r in rows]},
    ).json()
    assert len(answer["ids"]) == 20
    feedback = http.post(
        f"http://{model_v2}/feedback",
        json={"labels": [{"id": i, "label": 1} for i in answer["ids"][:5]]},
    )
    assert feedback.json() == {"received": 5, "matched": 5}
    text = http.get(f"http://{model_v2}/metrics").text
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {
        "chaosml_model_request_latency_seconds",
        "chaosml_model_requests",
        "chaosml_model_feature_missing_rate",
        "chaosml_model_feature_mean",
        "chaosml_model_feature_psi",
        "chaosml_model_score",
        "chaosml_model_positive_rate",
        "chaosml_model_reference_positive_rate",
        "chaosml_model_fairness_gap",
        "chaosml_model_online_accuracy",
        "chaosml_model_feedback",
        "chaosml_model_info",
        "chaosml_model_answers",
    } <= names
    assert http.post(f"http://{model_v2}/feedback", data=b"{}").status_code == 422
    assert isinstance(pd.read_parquet(demo.reference), pd.DataFrame)
