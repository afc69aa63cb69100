"""``chaosml demo``: the whole slice-testing story on built-in data, in one command."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from chaosml.config import load_config
from chaosml.demo.train import train_demo
from chaosml.report.console import render_comparison, render_test_report
from chaosml.slices.checks import run_slice_tests
from chaosml.slices.compare import compare_versions
from chaosml.slices.suite import load_suite
from chaosml.versions import resolve_version

SUITE = Path(__file__).with_name("credit.yaml")


def run_demo(folder: Path, out: Console, err: Console) -> None:
    """Train the demo versions into ``folder``, test v2 per slice, then compare v2 with v1."""
    err.print(
        f"training demo models v1 (logistic regression) and v2 (gradient boosting) in {folder}"
    )
    artifacts = train_demo(folder)
    config = load_config(artifacts.config)
    suite = load_suite(SUITE)
    v1, v2 = resolve_version("v1", config), resolve_version("v2", config)

    out.rule("chaosml slices test: v2 per slice")
    render_test_report(run_slice_tests(suite, v2, artifacts.data, config=config), out)
    out.rule("chaosml slices compare v1 v2")
    render_comparison(compare_versions(suite, v1, v2, artifacts.data, config=config), out)
    out.print(
        f"\nThe same, by hand:\n"
        f"  chaosml slices compare v1 v2 --suite slices/credit.yaml --config {artifacts.config}"
        f" --html report.html\n"
    )
