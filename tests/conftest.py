"""Shared fixtures: the demo models and data, trained once per test session."""

from __future__ import annotations

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


pytest_plugins = ["tests.live_servers"]
