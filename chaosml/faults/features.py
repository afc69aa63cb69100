"""Request-side faults: corrupted input features."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from chaosml.faults.base import Rate, RequestFault

Columns = list[str]


class _ColumnFault(RequestFault):
    columns: Columns = Field(min_length=1)
    rate: float = Rate

    def _targets(self, frame: pd.DataFrame) -> list[str]:
        return [column for column in self.columns if column in frame.columns]

    def apply(self, frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        targets = self._targets(frame)
        if not targets or frame.empty:
            return frame
        out = frame.copy()
        for column in targets:
            rows = self.rows(frame, len(frame), rng, self.rate)
            if rows.any():
                out[column] = self._change(out[column], rows, rng)
        return out

    def _change(self, values: pd.Series, rows: np.ndarray, rng: np.random.Generator) -> pd.Series:
        raise NotImplementedError


def _numeric(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce").astype(float)


class MissingValues(_ColumnFault):
    """Null values in ``columns`` for a ``rate`` of rows (the upstream ETL dropped them)."""

    type: ClassVar[str] = "missing_values"

    def _change(self, values: pd.Series, rows: np.ndarray, rng: np.random.Generator) -> pd.Series:
        out = values.astype(object) if not pd.api.types.is_float_dtype(values) else values.copy()
        out[rows] = np.nan if pd.api.types.is_float_dtype(values) else None
        return out


class Scale(_ColumnFault):
    """A unit error: values multiplied by ``factor`` (e.g. x1000, grams for kilograms)."""

    type: ClassVar[str] = "scale"
    factor: float = 1000.0

    def _change(self, values: pd.Series, rows: np.ndarray, rng: np.random.Generator) -> pd.Series:
        out = _numeric(values)
        out[rows] = out[rows] * self.factor
        return out


class Shift(_ColumnFault):
    """Values moved by ``by``."""

    type: ClassVar[str] = "shift"
    by: float

    def _change(self, values: pd.Series, rows: np.ndarray, rng: np.random.Generator) -> pd.Series:
        out = _numeric(values)
        out[rows] = out[rows] + self.by
        return out


class Noise(_ColumnFault):
    """Gaussian noise with standard deviation ``std`` added to values."""

    type: ClassVar[str] = "noise"
    std: float = Field(gt=0)

    def _change(self, values: pd.Series, rows: np.ndarray, rng: np.random.Generator) -> pd.Series:
        out = _numeric(values)
        out[rows] = out[rows] + rng.normal(0, self.std, size=int(rows.sum()))
        return out


class Constant(_ColumnFault):
    """A stuck sensor: values replaced by ``value``."""

    type: ClassVar[str] = "constant"
    value: float | str | bool

    def _change(self, values: pd.Series, rows: np.ndarray, rng: np.random.Generator) -> pd.Series:
        out = values.astype(object)
        out[rows] = self.value
        return out


class WrongType(_ColumnFault):
    """A string where a number belongs (``value``, default ``"N/A"``)."""

    type: ClassVar[str] = "wrong_type"
    value: str = "N/A"

    def _change(self, values: pd.Series, rows: np.ndarray, rng: np.random.Generator) -> pd.Series:
        out = values.astype(object)
        out[rows] = self.value
        return out


class UnseenCategory(_ColumnFault):
    """A category the model never saw (``value``)."""

    type: ClassVar[str] = "unseen_category"
    value: str = "__unseen__"

    def _change(self, values: pd.Series, rows: np.ndarray, rng: np.random.Generator) -> pd.Series:
        out = values.astype(object)
        out[rows] = self.value
        return out


class SwapColumns(RequestFault):
    """Two columns' values exchanged (a schema mix-up) for a ``rate`` of rows."""

    type: ClassVar[str] = "swap_columns"
    columns: Columns = Field(min_length=2, max_length=2)
    rate: float = Rate

    def apply(self, frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        first, second = self.columns
        if first not in frame.columns or second not in frame.columns or frame.empty:
            return frame
        rows = self.rows(frame, len(frame), rng, self.rate)
        out = frame.copy()
        out[first], out[second] = out[first].astype(object), out[second].astype(object)
        left = out.loc[rows, first].copy()
        out.loc[rows, first] = out.loc[rows, second].to_numpy()
        out.loc[rows, second] = left.to_numpy()
        return out


class DropField(RequestFault):
    """Fields removed from the request altogether (a client on an old schema). Applies to whole
    requests: online, the keys vanish from every record; offline, the columns from the frame."""

    type: ClassVar[str] = "drop_field"
    columns: Columns = Field(min_length=1)

    @field_validator("where")
    @classmethod
    def _no_where(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(
                "drop_field removes fields from whole requests; use toxicity, not where"
            )
        return value

    def apply(self, frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        return frame.drop(columns=[c for c in self.columns if c in frame.columns])
