"""The demo: deterministic data, the planted weak slices are found, `chaosml demo` runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from chaosml.cli import app
from chaosml.demo.data import make_credit


def test_data_is_deterministic_and_shaped() -> None:
    first, second = make_credit(500, seed=4), make_credit(500, seed=4)
    pd.testing.assert_frame_equal(first, second)
    assert not first.equals(make_credit(500, seed=5))
    assert set(first["approved"].unique()) == {0, 1}
    assert first["income"].isna().any()
    assert set(first["sex"]) == {"F", "M"}


def test_demo_command_runs_and_finds_the_planted_regression(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.stderr
    assert "slice(s) regressed" in result.stdout
    assert "region=APAC" in result.stdout.split("slice(s) regressed")[1]
    for name in ("v1.skops", "v2.skops", "eval.parquet", "chaosml.yaml"):
        assert (tmp_path / "demo" / name).is_file()
