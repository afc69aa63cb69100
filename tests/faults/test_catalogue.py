"""The fault catalogue offline, and offline application matching the proxy's online effect."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from toxiproxy import Toxiproxy

from chaosml.codecs import plain
from chaosml.faults import FAULTS, apply_offline, make_fault

FEATURE_FAULTS = {
    "missing_values",
    "scale",
    "shift",
    "noise",
    "swap_columns",
    "constant",
    "wrong_type",
    "unseen_category",
    "drop_field",
}
PREDICTION_FAULTS = {
    "score_noise",
    "label_flip",
    "constant_prediction",
    "nan_prediction",
    "stale_model",
    "bias",
}
TRANSPORT_FAULTS = {
    "latency",
    "http_error",
    "timeout",
    "reset_peer",
    "bandwidth",
    "slow_close",
    "limit_data",
    "slicer",
    "noop",
}


def test_the_catalogue_has_every_fault_kind_once() -> None:
    assert set(FAULTS) == FEATURE_FAULTS | PREDICTION_FAULTS | TRANSPORT_FAULTS
    assert {k for k, f in FAULTS.items() if f.side == "request"} == FEATURE_FAULTS
    assert {k for k, f in FAULTS.items() if f.side == "response"} == PREDICTION_FAULTS


@pytest.mark.parametrize(
    ("kind", "attributes", "message"),
    [
        ("missing_values", {}, "invalid attribute 'columns': Field required"),
        (
            "missing_values",
            {"columns": ["a"], "rate": 2},
            "invalid attribute 'rate': Input should be less than or equal to 1",
        ),
        (
            "swap_columns",
            {"columns": ["a"]},
            "invalid attribute 'columns': List should have at least 2 items after validation, not 1",
        ),
        (
            "bias",
            {"where": "f(x) == 1"},
            "invalid attribute 'where': a function call is not allowed in a predicate (allowed: comparisons, and/or/not, in, isna(col))",
        ),
        (
            "stale_model",
            {"upstream": "nowhere"},
            "invalid attribute 'upstream': String should match pattern '^[^:\\s]+:\\d+$'",
        ),
        (
            "latency",
            {"latency": 10, "colour": "red"},
            "invalid attribute 'colour': unknown attribute for latency",
        ),
        ("teleport", {}, "invalid toxic type"),
    ],
)
def test_invalid_attributes_name_the_field(kind: str, attributes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make_fault(kind, attributes)


def frame_of(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame.from_records(rows)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


@pytest.mark.parametrize(
    ("kind", "attributes"),
    [
        ("scale", {"columns": ["income"], "factor": 1000}),
        ("shift", {"columns": ["age"], "by": -3}),
        ("constant", {"columns": ["debt_ratio"], "value": 0.9, "where": "age > 40"}),
        ("wrong_type", {"columns": ["n_accounts"], "value": "many"}),
        ("unseen_category", {"columns": ["employment"]}),
        ("swap_columns", {"columns": ["age", "credit_history_years"]}),
        ("missing_values", {"columns": ["region"], "where": "sex == 'M'"}),
    ],
)
def test_offline_equals_online_for_request_faults(
    kind: str,
    attributes: dict,
    toxiproxy: Toxiproxy,
    echo_service: str,
    rows: list,
    http: requests.Session,
) -> None:
    proxy = toxiproxy.create(upstream=echo_service, name="echo")
    proxy.add_toxic(type=kind, stream="upstream", attributes=attributes)
    online = http.post(f"http://{proxy.listen}/predict", json={"instances": rows}).json()
    offline, _, _ = apply_offline(
        make_fault(kind, attributes), frame_of(rows), rng=np.random.default_rng(0)
    )
    expected = records(offline)
    for got, want in zip(online["echo"]["instances"], expected, strict=True):
        assert got == pytest.approx(want) if kind == "scale" else got == want


def test_offline_drop_field_leaves_missing_values(rows: list) -> None:
    frame = frame_of(rows)
    offline, _, _ = apply_offline(
        make_fault("drop_field", {"columns": ["income"]}),
        frame,
        toxicity=1.0,
        rng=np.random.default_rng(0),
    )
    assert offline["income"].isna().all() and list(offline.columns) == list(frame.columns)


def test_offline_rate_matches_online_rate(
    toxiproxy: Toxiproxy, echo_service: str, rows: list, http: requests.Session
) -> None:
    """missing_values at rate 0.25: the share of nulls online and offline agree (binomial)."""
    attributes = {"columns": ["age"], "rate": 0.25}
    proxy = toxiproxy.create(upstream=echo_service, name="echo")
    proxy.add_toxic(type="missing_values", stream="upstream", attributes=attributes)
    online = [
        r["age"] is None
        for _ in range(30)
        for r in http.post(f"http://{proxy.listen}/predict", json={"instances": rows}).json()[
            "echo"
        ]["instances"]
    ]
    big = frame_of(rows * 30)
    offline, _, _ = apply_offline(
        make_fault("missing_values", attributes), big, rng=np.random.default_rng(1)
    )
    p_online, p_offline = np.mean(online), offline["age"].isna().mean()
    se = np.sqrt(0.25 * 0.75 / len(online) * 2)
    assert abs(p_online - p_offline) < 4.5 * se


@pytest.mark.parametrize(
    ("kind", "attributes"),
    [
        ("bias", {"where": "region == 'EU'"}),
        ("label_flip", {}),
        ("constant_prediction", {"value": 0, "score": 0.01}),
    ],
)
def test_offline_equals_online_for_response_faults(
    kind: str,
    attributes: dict,
    toxiproxy: Toxiproxy,
    model_v2: str,
    rows: list,
    http: requests.Session,
) -> None:
    direct = http.post(f"http://{model_v2}/predict", json={"instances": rows}).json()
    proxy = toxiproxy.create(upstream=model_v2, name="model")
    proxy.add_toxic(type=kind, attributes=attributes)
    online = http.post(f"http://{proxy.listen}/predict", json={"instances": rows}).json()
    _, labels, scores = apply_offline(
        make_fault(kind, attributes),
        frame_of(rows),
        np.asarray(direct["predictions"]),
        np.asarray(direct["scores"]),
        rng=np.random.default_rng(0),
    )
    assert labels is not None and scores is not None
    assert online["predictions"] == labels.tolist()
    assert online["scores"] == pytest.approx(scores.tolist())
