"""Request-side faults: corrupted input features.

They work on a ``Table`` (column name to array), which is cheap to build from one request's JSON
and from a DataFrame alike; arrays may be typed (offline) or of Python objects (a request).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import Field, field_validator

from chaosml._types import Table
from chaosml.faults.base import Rate, RequestFault

Array = npt.NDArray[Any]


def as_numbers(values: Array) -> npt.NDArray[np.float64]:
    """Values as floats (a copy); what is not a number becomes NaN."""
    if values.dtype.kind in "biuf":
        return values.astype(np.float64)
    return np.array(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=np.float64)


def as_objects(values: Array) -> Array:
    return values.astype(object)


class _ColumnFault(RequestFault):
    columns: list[str] = Field(min_length=1)
    rate: float = Rate
    numeric: ClassVar[bool] = False  # works on numbers: text in its columns becomes null

    def apply(self, table: Table, rng: np.random.Generator) -> Table:
        targets = [column for column in self.columns if column in table]
        n = len(next(iter(table.values()))) if table else 0
        if not targets or n == 0:
            return table
        out = dict(table)
        for column in targets:
            rows = self.rows(table, n, rng, self.rate)
            if np.count_nonzero(rows):  # not rows.any(): a tenth the cost on one row
                out[column] = self._change(table[column], rows, rng)
        return out

    def inert(self) -> str | None:
        return "rate 0 picks no row" if self.rate == 0 else None

    def _change(
        self, values: Array, rows: npt.NDArray[np.bool_], rng: np.random.Generator
    ) -> Array:
        raise NotImplementedError


class MissingValues(_ColumnFault):
    """Null values in ``columns`` for a ``rate`` of rows (the upstream ETL dropped them)."""

    type: ClassVar[str] = "missing_values"

    def _change(
        self, values: Array, rows: npt.NDArray[np.bool_], rng: np.random.Generator
    ) -> Array:
        out = values.copy() if values.dtype.kind == "f" else as_objects(values)
        out[rows] = np.nan if values.dtype.kind == "f" else None
        return out


class Scale(_ColumnFault):
    """A unit error: values multiplied by ``factor`` (e.g. x1000, grams for kilograms)."""

    type: ClassVar[str] = "scale"
    factor: float = 1000.0
    numeric: ClassVar[bool] = True

    def inert(self) -> str | None:
        return "factor 1 leaves every value as it is" if self.factor == 1 else super().inert()

    def _change(
        self, values: Array, rows: npt.NDArray[np.bool_], rng: np.random.Generator
    ) -> Array:
        out = as_numbers(values)
        out[rows] *= self.factor
        return out


class Shift(_ColumnFault):
    """Values moved by ``by``."""

    type: ClassVar[str] = "shift"
    by: float
    numeric: ClassVar[bool] = True

    def inert(self) -> str | None:
        return "by 0 leaves every value as it is" if self.by == 0 else super().inert()

    def _change(
        self, values: Array, rows: npt.NDArray[np.bool_], rng: np.random.Generator
    ) -> Array:
        out = as_numbers(values)
        out[rows] += self.by
        return out


class Noise(_ColumnFault):
    """Gaussian noise with standard deviation ``std`` added to values."""

    type: ClassVar[str] = "noise"
    std: float = Field(gt=0)
    numeric: ClassVar[bool] = True

    def _change(
        self, values: Array, rows: npt.NDArray[np.bool_], rng: np.random.Generator
    ) -> Array:
        out = as_numbers(values)
        out[rows] += rng.normal(0, self.std, size=int(rows.sum()))
        return out


class _Replace(_ColumnFault):
    value: Any

    def _change(
        self, values: Array, rows: npt.NDArray[np.bool_], rng: np.random.Generator
    ) -> Array:
        out = as_objects(values)
        out[rows] = self.value
        return out


class Constant(_Replace):
    """A stuck sensor: values replaced by ``value``."""

    type: ClassVar[str] = "constant"
    value: float | str | bool


class WrongType(_Replace):
    """A string where a number belongs (``value``, default ``"N/A"``)."""

    type: ClassVar[str] = "wrong_type"
    value: str = "N/A"


class UnseenCategory(_Replace):
    """A category the model never saw (``value``)."""

    type: ClassVar[str] = "unseen_category"
    value: str = "__unseen__"


class SwapColumns(RequestFault):
    """Two columns' values exchanged (a schema mix-up) for a ``rate`` of rows."""

    type: ClassVar[str] = "swap_columns"
    columns: list[str] = Field(min_length=2, max_length=2)
    rate: float = Rate

    def apply(self, table: Table, rng: np.random.Generator) -> Table:
        first, second = self.columns
        if first not in table or second not in table or len(table[first]) == 0:
            return table
        rows = self.rows(table, len(table[first]), rng, self.rate)
        left, right = as_objects(table[first]), as_objects(table[second])
        left[rows], right[rows] = table[second][rows], table[first][rows]
        return {**table, first: left, second: right}


class DropField(RequestFault):
    """Fields removed from the request altogether (a client on an old schema). Applies to whole
    requests: online, the keys vanish from every record; offline, the rows hit get missing values."""

    type: ClassVar[str] = "drop_field"
    columns: list[str] = Field(min_length=1)

    @field_validator("where")
    @classmethod
    def _no_where(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(
                "drop_field removes fields from whole requests; use toxicity, not where"
            )
        return value

    def apply(self, table: Table, rng: np.random.Generator) -> Table:
        return {name: values for name, values in table.items() if name not in self.columns}
