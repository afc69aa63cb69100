"""Shared fixtures (the demo models and data, trained once per test run) and the two test tiers.

Plain ``pytest`` runs the fast tier. The full tier adds the tests marked ``slow``, every test that
uses the reference stack and those listed in ``FULL_TIER`` (end-to-end runs against real servers,
statistical simulations); it runs with ``--full`` (what ``.ci/check`` passes) or when tests are
named on the command line (``pytest tests/gameday`` runs all of that folder).
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chaosml.demo.train import DemoArtifacts, train_demo

# Fixtures that put a test in the full tier by themselves: the reference stack (Prometheus,
# Alertmanager, the model service and the proxy) and the game days that run against it.
FULL_TIER_FIXTURES = {"stack"}
# Tests (node-id prefixes) in the full tier by where they are: seconds to minutes each, measured.
FULL_TIER = (
    "tests/test_packaging.py",  # a fresh virtual environment per test
    "tests/demo/test_harness.py",  # real Prometheus and Alertmanager
    "tests/demo/test_demo.py::test_training_is_reused_while_its_inputs_are_unchanged",
    "tests/gameday/test_verdicts_live.py",
    "tests/gameday/test_validate_prometheus.py",
    "tests/slices/test_engines.py",  # Dask and Spark clusters
    "tests/slices/test_endpoint.py",  # the reference service in a process of its own
    "tests/test_canary.py::test_a",  # canaries of tens of seconds under traffic
    "tests/test_canary.py::test_an",
    "tests/load/",  # Locust runs of several seconds each
    "tests/slices/test_gate.py::test_exchangeable_versions_fail_the_gate_at_most_alpha",
    "tests/slices/test_stats.py::test_the_normal_limit_takes_over_where_it_agrees",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        help="also run the slow tier: end-to-end runs and simulations (what .ci/check runs)",
    )


# Tests that run a reference stack or a game day, one at a time on one pytest-xdist worker
# (``--dist loadgroup``): their leases and alert timings are what they test, and two stacks with
# their load on a busy 2-core machine let leases lapse between renewals.
ONE_AT_A_TIME = (
    "tests/gameday/",
    "tests/test_readme.py::test_every_readme_block_runs[game-days]",
    # stacks of their own, here rather than beside to balance the two workers' minutes
    "tests/test_sweep.py::test_a_live_sweep",
    "tests/test_readme.py::test_every_readme_block_runs[the-ml-test-score-from-evidence]",
)
# Stacks of their own that run beside the one-at-a-time group, one after another on another
# worker: the quiet soak, the harness's alert path and validation against Prometheus (no fault,
# no lease), and the two README sections that bring their own stack up (the Quickstart's demo,
# the sweep). Two stacks at once hold their leases (renewed every third of the lease) on this
# 2-core machine; the game-day tests that time leases and alerts finely stay one at a time.
BESIDE = (
    "tests/test_readme.py::test_every_readme_block_runs[quickstart]",
    "tests/test_readme.py::test_every_readme_block_runs[detection-thresholds",
    "tests/demo/test_live_quiet.py",
    "tests/demo/test_harness.py",
    "tests/gameday/test_validate_prometheus.py",
)


def beside(item: pytest.Item) -> bool:
    return item.nodeid.startswith(BESIDE)


def one_at_a_time(item: pytest.Item) -> bool:
    if beside(item):
        return False
    return item.nodeid.startswith(ONE_AT_A_TIME) or bool(
        FULL_TIER_FIXTURES & set(getattr(item, "fixturenames", ()))
    )


def in_full_tier(item: pytest.Item) -> bool:
    return (
        item.get_closest_marker("slow") is not None
        or item.nodeid.startswith(FULL_TIER)
        or bool(FULL_TIER_FIXTURES & set(getattr(item, "fixturenames", ())))
    )


def named_on_command_line(config: pytest.Config) -> bool:
    """True when the command line names tests (``pytest tests/test_readme.py``): run what it names."""
    return bool(config.option.file_or_dir) or bool(config.option.markexpr)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if in_full_tier(item) and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)
    if config.getoption("--full") or named_on_command_line(config):
        for item in items:
            if one_at_a_time(item):
                item.add_marker(pytest.mark.xdist_group("stack"))
            elif beside(item):
                item.add_marker(pytest.mark.xdist_group("beside"))
        # the stack's tests first (one worker runs them, longest first), then the modules with a
        # quiet stack of their own, the rest around them
        items.sort(
            key=lambda i: (
                not one_at_a_time(i),
                not beside(i),
                i.get_closest_marker("longest") is None,
            )
        )
        return
    slow = [item for item in items if in_full_tier(item)]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not in_full_tier(item)]


def pytest_report_header(config: pytest.Config) -> str:
    if config.getoption("--full") or named_on_command_line(config):
        return "tier: full"
    return "tier: fast (the slow tier runs with --full, as .ci/check does)"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (shared by every pytest-xdist worker of this run)."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoArtifacts:
    """The demo trained once per run: the first worker trains it into a folder every worker of
    the run shares, and each copies it (its stacks write their monitoring data next to it)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    with locked(shared / "demo.lock"):
        trained = train_demo(shared / "demo-trained")
    folder = tmp_path_factory.mktemp("demo")
    for path in trained.folder.iterdir():
        if path.is_file():
            shutil.copy2(path, folder / path.name)
    return train_demo(folder)  # the copy is fresh: nothing is trained again


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
