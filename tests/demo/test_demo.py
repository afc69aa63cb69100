"""The demo's data is deterministic (`chaosml demo` itself runs in tests/test_readme.py, as the
README's Quickstart)."""

from __future__ import annotations

import pandas as pd

from chaosml.demo.data import make_credit


def test_data_is_deterministic_and_shaped() -> None:
    first, second = make_credit(500, seed=4), make_credit(500, seed=4)
    pd.testing.assert_frame_equal(first, second)
    assert not first.equals(make_credit(500, seed=5))
    assert set(first["approved"].unique()) == {0, 1}
    assert first["income"].isna().any()
    assert set(first["sex"]) == {"F", "M"}
