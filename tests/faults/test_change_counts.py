"""Evidence counts: the element-by-element comparison of a request's few rows gives the counts the
array comparison gives (the oracle: the same tables with the small-table path turned off)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosml.faults import evidence
from chaosml.faults.evidence import table_changes

SCALARS = st.one_of(
    st.none(),
    st.just(math.nan),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.0, 2.5, -0.0, math.inf]),
    st.sampled_from(["", "a", "1", "EU"]),
)
OTHERS = st.one_of(SCALARS, st.just(np.float64(1.0)), st.just([1, 2]), st.just(np.nan))


def column(values: list[Any], kind: str) -> np.ndarray:
    if kind == "float":
        return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):  # one by one: a list in a cell stays one value
        array[i] = value
    return array


@st.composite
def tables(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> tuple[dict, dict, int]:
    n = draw(st.integers(0, 8))
    names = draw(st.lists(st.sampled_from("abcd"), unique=True, max_size=4))
    before, after = {}, {}
    for name in names:
        numeric = draw(st.booleans())
        kind = "float" if numeric and draw(st.booleans()) else "object"
        cells = st.floats(allow_nan=True) | st.none() if kind == "float" else values
        old = column(draw(st.lists(cells, min_size=n, max_size=n)), kind)
        before[name] = old
        fate = draw(st.sampled_from(["same", "new", "gone", "shorter", "floats"]))
        if fate == "same":
            after[name] = old
        elif fate == "new":
            changed = draw(st.lists(st.tuples(st.integers(0, max(n - 1, 0)), values), max_size=3))
            new = old.copy()
            for row, value in changed:
                if row < n and kind == "object":
                    new[row] = value
            after[name] = new
        elif fate == "shorter":
            after[name] = old[: max(n - 1, 0)]
        elif fate == "floats" and kind == "object":
            after[name] = column([v if isinstance(v, int | float) else None for v in old], "float")
    return before, after, n


def arrays_only(monkeypatch: pytest.MonkeyPatch, before: dict, after: dict, n: int) -> Any:
    with monkeypatch.context() as patched:
        patched.setattr(evidence, "SMALL", -1)
        return table_changes(before, after, n)


@settings(max_examples=300, deadline=None)
@given(tables(SCALARS))
def test_json_scalars_are_counted_as_the_arrays_count_them(table: tuple[dict, dict, int]) -> None:
    before, after, n = table
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert table_changes(before, after, n) == arrays_only(monkeypatch, before, after, n)


@settings(max_examples=200, deadline=None)
@given(tables(OTHERS))
def test_other_values_are_counted_as_the_arrays_count_them(table: tuple[dict, dict, int]) -> None:
    before, after, n = table
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert table_changes(before, after, n) == arrays_only(monkeypatch, before, after, n)


def test_a_null_replaced_by_a_null_is_no_change() -> None:
    old = column([None, math.nan, 1, "x"], "object")
    new = column([math.nan, None, None, "x"], "object")
    assert table_changes({"a": old}, {"a": new}, 4) == (1, {"a": 1})
