"""Codecs: a model service's request/response JSON to and from a table of features and predictions.

A codec decodes a request into a ``Batch`` (a DataFrame with one row per instance, plus what it needs
to encode the request again in the same shape) and a response into ``Outputs`` (predictions, and
scores where the service returns them). ``encode(decode(x))`` gives back ``x``; faults change the
table or the predictions in between. Codecs work on parsed JSON (``json.loads`` output).

Registered codecs (``CODECS``), chosen per proxy or by ``detect``:

- ``records``: ``{"instances": [{...}, ...]}`` or a bare list of records → ``{"predictions": [...]}``
  (optionally ``"scores": [...]``) or a bare list;
- ``mlflow``: MLflow scoring: ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``
  → ``{"predictions": [...]}``;
- ``kserve``: KServe v2 / Open Inference Protocol: ``{"inputs": [{"name", "shape", "datatype",
  "data"}, ...]}`` → ``{"outputs": [...]}`` (one named input tensor per feature, or one 2-D tensor);
- ``tfserving``: TF Serving's row format ``{"instances": [...]}`` → ``{"predictions": [...]}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

SCORE_KEYS = ("scores", "score", "probabilities")


class CodecError(ValueError):
    """The payload is not in the codec's format (the proxy then passes it through untouched)."""


@dataclass
class Batch:
    frame: pd.DataFrame
    layout: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outputs:
    predictions: list[Any]
    scores: list[Any] | None = None
    layout: dict[str, Any] = field(default_factory=dict)


def plain(value: Any) -> Any:
    """A JSON-ready Python value: NaN/NA become None, numpy scalars Python scalars."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    columns = list(frame.columns)
    return [
        {column: plain(value) for column, value in zip(columns, row, strict=True)}
        for row in frame.itertuples(index=False, name=None)
    ]


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise CodecError("expected a list of records")
    return pd.DataFrame.from_records(rows)


def _rows_to_frame(rows: Any) -> tuple[pd.DataFrame, bool]:
    """Records (``[{...}]``) or positional rows (``[[...]]``); the flag says positional."""
    if isinstance(rows, list) and rows and all(isinstance(row, list) for row in rows):
        return pd.DataFrame(rows, columns=[str(i) for i in range(len(rows[0]))]), True
    return _frame(rows), False


def _frame_to_rows(frame: pd.DataFrame, positional: bool) -> list[Any]:
    if positional:
        return [[plain(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    return _records(frame)


class Codec:
    name: ClassVar[str]

    def decode_request(self, payload: Any) -> Batch:
        raise NotImplementedError

    def encode_request(self, batch: Batch) -> Any:
        raise NotImplementedError

    def decode_response(self, payload: Any) -> Outputs:
        if isinstance(payload, list):
            return Outputs(list(payload), None, {"bare": True})
        if not isinstance(payload, dict) or not isinstance(payload.get("predictions"), list):
            raise CodecError("expected {'predictions': [...]}")
        key = next((k for k in SCORE_KEYS if isinstance(payload.get(k), list)), None)
        extra = {k: v for k, v in payload.items() if k not in ("predictions", key)}
        return Outputs(
            payload["predictions"],
            payload[key] if key else None,
            {"score_key": key, "extra": extra},
        )

    def encode_response(self, outputs: Outputs) -> Any:
        predictions = [plain(v) for v in outputs.predictions]
        if outputs.layout.get("bare"):
            return predictions
        payload: dict[str, Any] = {"predictions": predictions}
        key = outputs.layout.get("score_key")
        if key and outputs.scores is not None:
            payload[key] = [plain(v) for v in outputs.scores]
        payload.update(outputs.layout.get("extra", {}))
        return payload


class RecordsCodec(Codec):
    name = "records"

    def decode_request(self, payload: Any) -> Batch:
        if isinstance(payload, list):
            frame, positional = _rows_to_frame(payload)
            return Batch(frame, {"bare": True, "positional": positional})
        if isinstance(payload, dict) and isinstance(payload.get("instances"), list):
            frame, positional = _rows_to_frame(payload["instances"])
            extra = {k: v for k, v in payload.items() if k != "instances"}
            return Batch(frame, {"positional": positional, "extra": extra})
        raise CodecError("expected {'instances': [...]} or a list of records")

    def encode_request(self, batch: Batch) -> Any:
        rows = _frame_to_rows(batch.frame, batch.layout.get("positional", False))
        if batch.layout.get("bare"):
            return rows
        return {"instances": rows, **batch.layout.get("extra", {})}


class TFServingCodec(RecordsCodec):
    name = "tfserving"

    def decode_request(self, payload: Any) -> Batch:
        if not isinstance(payload, dict) or "instances" not in payload:
            raise CodecError("expected TF Serving's {'instances': [...]}")
        return super().decode_request(payload)


class MlflowCodec(Codec):
    name = "mlflow"

    def decode_request(self, payload: Any) -> Batch:
        if not isinstance(payload, dict):
            raise CodecError("expected an MLflow scoring request")
        if "dataframe_split" in payload:
            split = payload["dataframe_split"]
            if not isinstance(split, dict) or "data" not in split:
                raise CodecError("dataframe_split needs 'data'")
            frame = pd.DataFrame(split["data"], columns=split.get("columns"))
            extra = {k: v for k, v in split.items() if k not in ("data", "columns")}
            return Batch(
                frame, {"format": "dataframe_split", "extra": extra, "named": "columns" in split}
            )
        for key in ("dataframe_records", "instances"):
            if key in payload:
                frame, positional = _rows_to_frame(payload[key])
                return Batch(frame, {"format": key, "positional": positional})
        if "inputs" in payload:
            inputs = payload["inputs"]
            if isinstance(inputs, dict):
                return Batch(pd.DataFrame(inputs), {"format": "inputs", "columnar": True})
            frame, positional = _rows_to_frame(inputs)
            return Batch(frame, {"format": "inputs", "positional": positional})
        raise CodecError("expected dataframe_split, dataframe_records, instances or inputs")

    def encode_request(self, batch: Batch) -> Any:
        layout, frame = batch.layout, batch.frame
        if layout["format"] == "dataframe_split":
            split: dict[str, Any] = {}
            if layout.get("named", True):
                split["columns"] = [plain(c) for c in frame.columns]
            split["data"] = _frame_to_rows(frame, positional=True)
            split.update(layout.get("extra", {}))
            return {"dataframe_split": split}
        if layout.get("columnar"):
            return {"inputs": {c: [plain(v) for v in frame[c]] for c in frame.columns}}
        return {layout["format"]: _frame_to_rows(frame, layout.get("positional", False))}


class KServeV2Codec(Codec):
    name = "kserve"
    SCORE_NAMES = ("score", "scores", "probability", "probabilities", "predict_proba")

    def decode_request(self, payload: Any) -> Batch:
        inputs = payload.get("inputs") if isinstance(payload, dict) else None
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(t, dict) and {"name", "data"} <= set(t) for t in inputs)
        ):
            raise CodecError(
                "expected KServe v2 {'inputs': [{'name', 'shape', 'datatype', 'data'}]}"
            )
        extra = {k: v for k, v in payload.items() if k != "inputs"}
        if len(inputs) == 1 and len(inputs[0].get("shape", [])) == 2:
            tensor = inputs[0]
            rows, width = tensor["shape"]
            data = np.asarray(tensor["data"], dtype=object).reshape(rows, width)
            columns = (tensor.get("parameters") or {}).get("columns") or [
                str(i) for i in range(width)
            ]
            meta = {k: v for k, v in tensor.items() if k != "data"}
            return Batch(
                pd.DataFrame(data.tolist(), columns=columns),
                {"matrix": meta, "extra": extra, "nested": _nested(tensor["data"])},
            )
        frame = pd.DataFrame({t["name"]: _flat(t["data"]) for t in inputs})
        tensors = [{k: v for k, v in t.items() if k != "data"} for t in inputs]
        return Batch(
            frame,
            {"tensors": tensors, "extra": extra, "nested": [_nested(t["data"]) for t in inputs]},
        )

    def encode_request(self, batch: Batch) -> Any:
        frame, layout = batch.frame, batch.layout
        if "matrix" in layout:
            meta = dict(layout["matrix"])
            meta["shape"] = [len(frame), frame.shape[1]]
            rows = _frame_to_rows(frame, positional=True)
            meta["data"] = rows if layout["nested"] else [v for row in rows for v in row]
            return {"inputs": [meta], **layout["extra"]}
        tensors = []
        known = {
            m["name"]: (m, nested)
            for m, nested in zip(layout["tensors"], layout["nested"], strict=True)
        }
        for column in frame.columns:
            meta, nested = known.get(column, ({"name": column, "datatype": "BYTES"}, False))
            meta = dict(meta)
            values = [plain(v) for v in frame[column]]
            if "shape" in meta:
                meta["shape"] = [len(frame), *meta["shape"][1:]]
            meta["data"] = [[v] for v in values] if nested else values
            tensors.append(meta)
        return {"inputs": tensors, **layout["extra"]}

    def decode_response(self, payload: Any) -> Outputs:
        outputs = payload.get("outputs") if isinstance(payload, dict) else None
        if (
            not isinstance(outputs, list)
            or not outputs
            or not all(isinstance(t, dict) and "data" in t for t in outputs)
        ):
            raise CodecError("expected KServe v2 {'outputs': [{'name', 'data', ...}]}")
        scores_at = next(
            (
                i
                for i, t in enumerate(outputs)
                if t.get("name") in self.SCORE_NAMES and len(outputs) > 1
            ),
            None,
        )
        predict_at = next(i for i in range(len(outputs)) if i != scores_at)
        return Outputs(
            _flat(outputs[predict_at]["data"]),
            None if scores_at is None else _flat(outputs[scores_at]["data"]),
            {"payload": payload, "predict_at": predict_at, "scores_at": scores_at},
        )

    def encode_response(self, outputs: Outputs) -> Any:
        layout = outputs.layout
        payload = dict(layout["payload"])
        tensors = [dict(t) for t in payload["outputs"]]
        for index, values in (
            (layout["predict_at"], outputs.predictions),
            (layout["scores_at"], outputs.scores),
        ):
            if index is None or values is None:
                continue
            nested = _nested(tensors[index]["data"])
            clean = [plain(v) for v in values]
            tensors[index]["data"] = [[v] for v in clean] if nested else clean
        payload["outputs"] = tensors
        return payload


def _nested(data: Any) -> bool:
    return isinstance(data, list) and bool(data) and isinstance(data[0], list)


def _flat(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise CodecError("tensor data must be a list")
    return [row[0] if isinstance(row, list) and len(row) == 1 else row for row in data]


CODECS: dict[str, Codec] = {
    codec.name: codec
    for codec in (RecordsCodec(), MlflowCodec(), KServeV2Codec(), TFServingCodec())
}


def get_codec(name: str) -> Codec:
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(
            f"unknown codec {name!r} (expected one of: {', '.join(CODECS)}, auto)"
        ) from None


def detect(payload: Any) -> Codec | None:
    """The codec a request payload unambiguously belongs to, or None."""
    if isinstance(payload, list):
        return CODECS["records"]
    if not isinstance(payload, dict):
        return None
    if "dataframe_split" in payload or "dataframe_records" in payload:
        return CODECS["mlflow"]
    inputs = payload.get("inputs")
    if (
        isinstance(inputs, list)
        and inputs
        and all(isinstance(t, dict) and "data" in t for t in inputs)
    ):
        return CODECS["kserve"]
    if "inputs" in payload:
        return CODECS["mlflow"]
    if "instances" in payload:
        return CODECS["records"]  # TF Serving rows have the same shape
    return None
