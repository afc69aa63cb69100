"""The demo's data is deterministic (`chaosml demo` itself runs in tests/test_readme.py, as the
README's Quickstart)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from chaosml.demo import run, train
from chaosml.demo.data import make_credit
from chaosml.demo.train import train_demo


def test_data_is_deterministic_and_shaped() -> None:
    first, second = make_credit(500, seed=4), make_credit(500, seed=4)
    pd.testing.assert_frame_equal(first, second)
    assert not first.equals(make_credit(500, seed=5))
    assert set(first["approved"].unique()) == {0, 1}
    assert first["income"].isna().any()
    assert set(first["sex"]) == {"F", "M"}


def test_the_demo_reads_the_repository_suite_and_scenarios() -> None:
    """One suite file and one scenario folder: editing them changes what the demo runs."""
    root = Path(__file__).parents[2]
    assert root / "slices" / "credit.yaml" == run.SUITE
    assert root / "scenarios" == run.SCENARIOS
    assert not run.SUITE.is_symlink() and not any(p.is_symlink() for p in run.SCENARIOS.iterdir())


def test_training_is_reused_while_its_inputs_are_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []
    first = train_demo(tmp_path, say=said.append)
    stamp = (tmp_path / "trained.sha256").read_text(encoding="utf-8")
    mtime = first.v2.stat().st_mtime_ns
    assert train_demo(tmp_path, say=said.append) == first
    assert first.v2.stat().st_mtime_ns == mtime and len(said) == 1  # trained once
    monkeypatch.setattr(train, "fingerprint", lambda seed: "changed inputs")
    train_demo(tmp_path, say=said.append)
    assert len(said) == 2 and (tmp_path / "trained.sha256").read_text(encoding="utf-8") != stamp
    first.v1.unlink()
    train_demo(tmp_path, say=said.append)  # a file gone: trained again
    assert len(said) == 3 and first.v1.is_file()
