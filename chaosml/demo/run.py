"""``chaosml demo`` and ``chaosml demo up``: the reference stack, a short game day on it, and the
slice-testing story, on built-in data."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from chaosml.config import load_config
from chaosml.demo.harness import ReferenceStack, reference_stack
from chaosml.demo.train import train_demo
from chaosml.gameday import GamedayReport, Interrupted, RunOptions, run_files
from chaosml.report.console import render_comparison, render_fragility, render_test_report
from chaosml.report.gameday import LiveDisplay, render_gameday
from chaosml.slices.checks import run_slice_tests
from chaosml.slices.compare import compare_versions
from chaosml.slices.fragility import fragility
from chaosml.slices.offline import offline_scenarios
from chaosml.slices.suite import load_suite
from chaosml.versions import resolve_version


def bundled(source: str, packaged: str) -> Path:
    """A file the repository keeps once at its top (``slices/credit.yaml``, ``scenarios/``): that
    one when chaosml runs from a clone, so editing it changes the demo; else the copy a wheel
    carries."""
    here = Path(__file__).resolve()
    in_clone = here.parents[2] / source
    return in_clone if in_clone.exists() else here.with_name(packaged)


SUITE = bundled("slices/credit.yaml", "credit.yaml")
SCENARIOS = bundled("scenarios", "scenarios")
DEMO_TIME_SCALE = 0.05


def write_target(stack: ReferenceStack, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Written by `chaosml demo up`: the reference stack on loopback.\n"
    path.write_text(header + yaml.safe_dump(stack.target(), sort_keys=False), encoding="utf-8")
    return path


def demo_up(
    folder: Path,
    *,
    target: Path,
    rules: Path | None,
    time_scale: float,
    err: Console,
    ready: threading.Event | None = None,
    candidate: str | None = None,
) -> None:
    """Run the reference stack in the foreground until SIGINT or SIGTERM; stop all of it. With
    ``candidate`` (v1 or v2), that version is served beside it, for ``chaosml shadow`` and
    ``chaosml canary``."""
    from contextlib import ExitStack

    from chaosml.demo.release import served

    stopped = threading.Event()
    target.unlink(missing_ok=True)  # written again once the stack is ready: a sign to wait for

    def stop(signum: int, frame: Any) -> None:
        stopped.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ExitStack() as started:
            stack = started.enter_context(
                reference_stack(
                    folder, time_scale=time_scale, rules=rules, say=lambda line: err.print(line)
                )
            )
            write_target(stack, target)
            err.print(
                f"wrote {target}. Run a game day against it:\n"
                f"  chaosml gameday scenarios/ --target {target} --time-scale {time_scale:g}"
            )
            if candidate is not None:
                address = started.enter_context(served(folder, candidate))
                err.print(
                    f"serving the candidate {candidate} at http://{address}/predict; release it:\n"
                    f"  chaosml canary --target {target} --candidate http://{address}/predict "
                    "--suite slices/credit.yaml --labels LABELS.csv"
                )
            err.print("Ctrl-C stops everything.")
            if ready is not None:
                ready.set()
            while not stopped.wait(0.2):
                pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    err.print("stopped the reference stack")


def run_demo(
    folder: Path, out: Console, err: Console, *, time_scale: float = DEMO_TIME_SCALE
) -> None:
    """Bring the reference stack up, run the bundled game day on a shortened profile (each fault
    ended once its expected alerts fired), then test v2 per slice and compare it with v1;
    everything started is stopped."""
    err.print(f"chaosml demo: models, data and logs in {folder}")
    artifacts = train_demo(folder, say=lambda line: err.print(line))
    report: GamedayReport | None = None
    with reference_stack(folder, time_scale=time_scale, say=lambda line: err.print(line)) as stack:
        target = write_target(stack, folder / "target.yaml")
        display = LiveDisplay(err)
        try:
            report = run_files(
                [SCENARIOS],
                target,
                RunOptions(time_scale=time_scale, runs=folder / "runs", until_detected=True),
                display,
            )
        finally:
            display.close()
    out.rule("chaosml gameday: would the monitoring notice?")
    render_gameday(report, out)
    if report.interrupted:
        raise Interrupted(report.interrupted)
    out.print(
        f"\nThe same, by hand: chaosml demo up --write-target target.yaml, then\n"
        f"  chaosml gameday scenarios/ --target target.yaml --time-scale {time_scale:g}"
        f" --until-detected --html gameday.html\n"
    )
    config_path = artifacts.config
    config = load_config(config_path)
    suite = load_suite(SUITE)
    v1, v2 = resolve_version("v1", config), resolve_version("v2", config)
    data = Path(config.resolve(config.data)) if config.data else folder / "eval.parquet"
    scenarios = offline_scenarios([SCENARIOS])
    out.rule("chaosml slices test --scenarios: v2 per slice, clean and under each scenario")
    others = {"v1": v1, "v2": v2}
    tested = run_slice_tests(suite, v2, data, scenarios=scenarios, others=others, config=config)
    render_test_report(tested, out)
    out.rule("chaosml slices compare v1 v2")
    render_comparison(compare_versions(suite, v1, v2, data, config=config), out)
    out.rule("chaosml slices compare v1 v2 --scenarios: which version breaks more under the faults")
    render_fragility(fragility(suite, [v1, v2], data, scenarios, config=config), out)
    out.print(
        f"\nThe same, by hand:\n"
        f"  chaosml slices compare v1 v2 --suite slices/credit.yaml --config {config_path}"
        f" --scenarios scenarios/ --html report.html\n"
    )
