"""Codecs: encode(decode(payload)) gives the payload back, for every protocol (property-based)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosml.codecs import CODECS, CodecError, detect

values = {
    "int": st.integers(-(2**31), 2**31) | st.none(),
    "float": st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False, width=32) | st.none(),
    "text": st.text(max_size=8) | st.none(),
    "bool": st.booleans(),
}
columns = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True),
    st.sampled_from(sorted(values)),
    min_size=1,
    max_size=5,
)


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[Any]]]:
    kinds = draw(columns)
    n = draw(st.integers(1, 6))
    names = list(kinds)
    rows = [[draw(values[kinds[name]]) for name in names] for _ in range(n)]
    return names, rows


def payloads(names: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    records = [dict(zip(names, row, strict=True)) for row in rows]
    return {
        "records": {"instances": records},
        "records_bare": records,
        "mlflow_split": {"dataframe_split": {"columns": names, "data": rows}},
        "mlflow_records": {"dataframe_records": records},
        "mlflow_inputs": {"inputs": {n: [r[i] for r in rows] for i, n in enumerate(names)}},
        "kserve": {
            "inputs": [
                {"name": n, "shape": [len(rows)], "datatype": "BYTES", "data": [r[i] for r in rows]}
                for i, n in enumerate(names)
            ]
        },
        "tfserving": {"instances": records},
    }


CODEC_OF = {
    "records": "records",
    "records_bare": "records",
    "mlflow_split": "mlflow",
    "mlflow_records": "mlflow",
    "mlflow_inputs": "mlflow",
    "kserve": "kserve",
    "tfserving": "tfserving",
}


@given(tables())
@settings(max_examples=150, deadline=None)
def test_requests_round_trip(table: tuple[list[str], list[list[Any]]]) -> None:
    for shape, payload in payloads(*table).items():
        codec = CODECS[CODEC_OF[shape]]
        batch = codec.decode_request(payload)
        assert len(batch.frame) == len(table[1])
        assert codec.encode_request(batch) == payload, shape


@given(
    st.lists(st.integers(0, 1), min_size=1, max_size=8),
    st.lists(st.floats(0, 1), min_size=1, max_size=8),
)
@settings(max_examples=100, deadline=None)
def test_responses_round_trip(labels: list[int], scores: list[float]) -> None:
    scores = (scores * len(labels))[: len(labels)]
    cases = {
        "records": {"predictions": labels, "scores": scores, "model_version": "v2"},
        "mlflow": {"predictions": labels},
        "tfserving": labels,
        "kserve": {
            "model_name": "m",
            "outputs": [
                {"name": "predict", "shape": [len(labels)], "datatype": "INT64", "data": labels},
                {
                    "name": "predict_proba",
                    "shape": [len(labels)],
                    "datatype": "FP64",
                    "data": scores,
                },
            ],
        },
    }
    for name, payload in cases.items():
        codec = CODECS[name]
        outputs = codec.decode_response(payload)
        assert outputs.predictions == labels
        assert codec.encode_response(outputs) == payload


def test_kserve_matrix_input() -> None:
    payload = {
        "inputs": [
            {
                "name": "x",
                "shape": [2, 3],
                "datatype": "FP32",
                "data": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            }
        ]
    }
    codec = CODECS["kserve"]
    batch = codec.decode_request(payload)
    assert batch.frame.shape == (2, 3)
    assert codec.encode_request(batch) == payload


def test_detect_and_refuse() -> None:
    assert detect({"dataframe_split": {}}).name == "mlflow"  # type: ignore[union-attr]
    assert detect({"inputs": [{"name": "a", "data": [1]}]}).name == "kserve"  # type: ignore[union-attr]
    assert detect({"instances": []}).name == "records"  # type: ignore[union-attr]
    assert detect({"something": 1}) is None
    assert {"records", "mlflow", "kserve", "tfserving"} <= set(CODECS)
    for name, codec in CODECS.items():
        assert codec.name == name  # the name a target or a proxy's `codec` field uses
        with pytest.raises(CodecError, match=r"^expected "):  # says what it wanted
            codec.decode_request("a string")
