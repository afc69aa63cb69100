"""Shared fixtures: the demo models and data, trained once per test session."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from chaosml.demo.train import DemoArtifacts, train_demo


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoArtifacts:
    return train_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder so no project config or cache leaks between tests."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


ENGINE_NEEDS = {"dask": ["distributed", "dask.dataframe"], "spark": ["pyspark"]}


def needs(engine: str) -> None:
    """Skip without an engine's packages (or Spark's Java) locally; fail under CI=true."""
    missing = [m for m in ENGINE_NEEDS[engine] if importlib.util.find_spec(m.split(".")[0]) is None]
    if engine == "spark" and shutil.which("java") is None:
        missing.append("java")
    if missing:
        reason = f"the {engine} engine needs {', '.join(missing)} (pip install 'chaosml[{engine}]')"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)


pytest_plugins = ["tests.live_servers"]
