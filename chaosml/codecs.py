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
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from chaosml._types import Table
from chaosml.errors import CodecError as CodecError

if TYPE_CHECKING:
    import pandas as pd

SCORE_KEYS = ("scores", "score", "probabilities")


@dataclass
class Batch:
    """Decoded request rows as columns (object arrays of equal length, cheap to build per request)."""

    columns: Table
    layout: dict[str, Any] = field(default_factory=dict)

    @property
    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame with inferred dtypes (for a model or a predicate)."""
        import pandas as pd

        return pd.DataFrame(self.columns).infer_objects()

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


@dataclass
class Outputs:
    predictions: list[Any]
    scores: list[Any] | None = None
    layout: dict[str, Any] = field(default_factory=dict)


def plain(value: Any) -> Any:
    """A JSON-ready Python value: NaN/NA become None, numpy scalars Python scalars."""
    pandas = sys.modules.get("pandas")  # if pandas is not loaded, nothing here is pandas' NA
    if value is None or (pandas is not None and value is pandas.NA):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _column(values: list[Any]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _table(rows: Any) -> tuple[Table, bool]:
    """Columns from records (``[{...}]``) or positional rows (``[[...]]``); the flag: positional."""
    if not isinstance(rows, list):
        raise CodecError("expected a list of records")
    if rows and all(isinstance(row, list) for row in rows):
        width = len(rows[0])
        if any(len(row) != width for row in rows):
            raise CodecError("rows of different lengths")
        return {str(i): _column([row[i] for row in rows]) for i in range(width)}, True
    if not all(isinstance(row, dict) for row in rows):
        raise CodecError("expected a list of records")
    names = list(dict.fromkeys(key for row in rows for key in row))
    return {name: _column([row.get(name) for row in rows]) for name in names}, False


def _records(rows: Any) -> list[dict[str, Any]] | None:
    if isinstance(rows, list) and all(isinstance(row, dict) for row in rows):
        return rows
    return None


AS_IS = frozenset({type(None), bool, int, str})  # what ``plain`` gives back unchanged


def _values(array: np.ndarray) -> list[Any]:
    return [v if type(v) in AS_IS else plain(v) for v in array.tolist()]


def partial_table(records: list[dict[str, Any]], names: Iterable[str]) -> Table:
    """Columns ``names`` (those present in some record) of ``records``, in the order given: the
    proxy's fast path, decoding only what its faults read."""
    table = {}
    for name in names:
        values = [record.get(name) for record in records]
        if any(v is not None for v in values) or any(name in record for record in records):
            table[name] = _column(values)
    return table


def patch_records(records: list[dict[str, Any]], before: Table, after: Table) -> bool:
    """Write the columns that changed from ``before`` to ``after`` back into ``records`` (and
    remove those ``after`` dropped), in place; False if nothing changed."""
    changed = False
    for name in before.keys() - after.keys():
        for record in records:
            record.pop(name, None)
        changed = True
    for name, values in after.items():
        if before.get(name) is not values:
            for record, value in zip(records, _values(values), strict=True):
                record[name] = value
            changed = True
    return changed


def _rows(table: Table, positional: bool) -> list[Any]:
    names = list(table)
    columns = [_values(table[name]) for name in names]
    if positional:
        return [list(values) for values in zip(*columns, strict=True)]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


class Codec:
    name: ClassVar[str]
    default_layout: ClassVar[dict[str, Any]] = {}  # how ``request`` lays out new rows

    def request(self, table: Table) -> Any:
        """A new request carrying the rows of ``table``, in this protocol's usual shape."""
        return self.encode_request(Batch(table, dict(self.default_layout)))

    def decode_request(self, payload: Any) -> Batch:
        raise NotImplementedError

    def records(self, payload: Any) -> list[dict[str, Any]] | None:
        """The request's rows, if it carries them as records (``[{...}]``) that can be changed
        in place; None for any other layout."""
        return None

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
            table, positional = _table(payload)
            return Batch(table, {"bare": True, "positional": positional})
        if isinstance(payload, dict) and isinstance(payload.get("instances"), list):
            table, positional = _table(payload["instances"])
            extra = {k: v for k, v in payload.items() if k != "instances"}
            return Batch(table, {"positional": positional, "extra": extra})
        raise CodecError("expected {'instances': [...]} or a list of records")

    def records(self, payload: Any) -> list[dict[str, Any]] | None:
        rows = payload.get("instances") if isinstance(payload, dict) else payload
        return _records(rows)

    def encode_request(self, batch: Batch) -> Any:
        rows = _rows(batch.columns, batch.layout.get("positional", False))
        if batch.layout.get("bare"):
            return rows
        return {"instances": rows, **batch.layout.get("extra", {})}


class TFServingCodec(RecordsCodec):
    name = "tfserving"

    def records(self, payload: Any) -> list[dict[str, Any]] | None:
        return super().records(payload) if isinstance(payload, dict) else None

    def decode_request(self, payload: Any) -> Batch:
        if not isinstance(payload, dict) or "instances" not in payload:
            raise CodecError("expected TF Serving's {'instances': [...]}")
        return super().decode_request(payload)


class MlflowCodec(Codec):
    name = "mlflow"
    default_layout: ClassVar[dict[str, Any]] = {"format": "dataframe_records"}

    def decode_request(self, payload: Any) -> Batch:
        if not isinstance(payload, dict):
            raise CodecError("expected an MLflow scoring request")
        if "dataframe_split" in payload:
            split = payload["dataframe_split"]
            if not isinstance(split, dict) or not isinstance(split.get("data"), list):
                raise CodecError("dataframe_split needs 'data'")
            table, _ = _table(split["data"]) if split["data"] else ({}, True)
            if "columns" in split:
                if len(split["columns"]) != len(table) and split["data"]:
                    raise CodecError("dataframe_split: columns and data differ in width")
                table = dict(zip(map(str, split["columns"]), table.values(), strict=False))
            extra = {k: v for k, v in split.items() if k not in ("data", "columns")}
            named = "columns" in split
            return Batch(table, {"format": "dataframe_split", "extra": extra, "named": named})
        for key in ("dataframe_records", "instances"):
            if key in payload:
                table, positional = _table(payload[key])
                return Batch(table, {"format": key, "positional": positional})
        if "inputs" in payload:
            inputs = payload["inputs"]
            if isinstance(inputs, dict):
                if not all(isinstance(v, list) for v in inputs.values()):
                    raise CodecError("columnar inputs need a list per column")
                columns = {str(k): _column(v) for k, v in inputs.items()}
                return Batch(columns, {"format": "inputs", "columnar": True})
            table, positional = _table(inputs)
            return Batch(table, {"format": "inputs", "positional": positional})
        raise CodecError("expected dataframe_split, dataframe_records, instances or inputs")

    def records(self, payload: Any) -> list[dict[str, Any]] | None:
        if not isinstance(payload, dict) or "dataframe_split" in payload:
            return None
        key = next((k for k in ("dataframe_records", "instances", "inputs") if k in payload), None)
        return None if key is None else _records(payload[key])

    def encode_request(self, batch: Batch) -> Any:
        layout, table = batch.layout, batch.columns
        if layout["format"] == "dataframe_split":
            split: dict[str, Any] = {}
            if layout.get("named", True):
                split["columns"] = list(table)
            split["data"] = _rows(table, positional=True)
            split.update(layout.get("extra", {}))
            return {"dataframe_split": split}
        if layout.get("columnar"):
            return {"inputs": {name: _values(values) for name, values in table.items()}}
        return {layout["format"]: _rows(table, layout.get("positional", False))}


class KServeV2Codec(Codec):
    name = "kserve"
    default_layout: ClassVar[dict[str, Any]] = {"tensors": [], "nested": [], "extra": {}}
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
            data = _flat_matrix(tensor["data"], rows, width)
            names = (tensor.get("parameters") or {}).get("columns") or [
                str(i) for i in range(width)
            ]
            meta = {k: v for k, v in tensor.items() if k != "data"}
            table = {str(name): _column(data[i::width]) for i, name in enumerate(names)}
            return Batch(table, {"matrix": meta, "extra": extra, "nested": _nested(tensor["data"])})
        lengths = {len(t["data"]) for t in inputs if isinstance(t["data"], list)}
        if len(lengths) != 1:
            raise CodecError("KServe v2 input tensors differ in length")
        table = {str(t["name"]): _column(_flat(t["data"])) for t in inputs}
        tensors = [{k: v for k, v in t.items() if k != "data"} for t in inputs]
        return Batch(
            table,
            {"tensors": tensors, "extra": extra, "nested": [_nested(t["data"]) for t in inputs]},
        )

    def encode_request(self, batch: Batch) -> Any:
        table, layout, n = batch.columns, batch.layout, len(batch)
        if "matrix" in layout:
            meta = dict(layout["matrix"])
            meta["shape"] = [n, len(table)]
            rows = _rows(table, positional=True)
            meta["data"] = rows if layout["nested"] else [v for row in rows for v in row]
            return {"inputs": [meta], **layout["extra"]}
        tensors = []
        known = {
            m["name"]: (m, nested)
            for m, nested in zip(layout["tensors"], layout["nested"], strict=True)
        }
        for name, column in table.items():
            values = _values(column)
            fallback = {"name": name, "shape": [n], "datatype": _datatype(values)}
            meta, nested = known.get(name, (fallback, False))
            meta = dict(meta)
            if "shape" in meta:
                meta["shape"] = [n, *meta["shape"][1:]]
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


def _datatype(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "BOOL"
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "INT64" if all(isinstance(v, int) for v in present) else "FP64"
    return "BYTES"


def _flat_matrix(data: Any, rows: int, width: int) -> list[Any]:
    flat = [v for row in data for v in row] if _nested(data) else list(data)
    if len(flat) != rows * width:
        raise CodecError("KServe v2 tensor data does not match its shape")
    return flat


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
        raise CodecError(
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
