"""Game days: scenario files that break a live model service under load, and the check that its
monitoring noticed."""

from __future__ import annotations

from pathlib import Path

from chaosml.gameday.coverage import Coverage, GamedayReport, coverage
from chaosml.gameday.journal import Journal, load_journal
from chaosml.gameday.runner import GameDay, Interrupted, Observer, Quiet, RunOptions, run_gameday
from chaosml.gameday.target import Target, TargetFile, load_target
from chaosml.gameday.validate import Validation, validate
from chaosml.scenario import Scenario, ScenarioFile, load_scenario, load_scenarios


def run_files(
    paths: list[Path],
    target: Path,
    options: RunOptions | None = None,
    observer: Observer | None = None,
) -> GamedayReport:
    """Load and check ``paths`` (scenario files or folders) against the target file ``target``,
    run them, and report. Ctrl-C and SIGTERM roll back and report what ran."""
    options = options or RunOptions()
    checked = validate(paths, target, strict_rules=False, time_scale=options.time_scale)
    assert checked.target is not None
    game = GameDay(
        scenarios=checked.scenarios,
        target=checked.target,
        options=options,
        observer=observer or Quiet(),
        notes=checked.notes,
    )
    try:
        journal = game.run()
    except Interrupted as exc:
        if game.journal is None:
            raise
        return GamedayReport(game.journal, interrupted=str(exc))
    return GamedayReport(journal)


__all__ = [
    "Coverage",
    "GameDay",
    "GamedayReport",
    "Interrupted",
    "Journal",
    "RunOptions",
    "Scenario",
    "ScenarioFile",
    "Target",
    "TargetFile",
    "Validation",
    "coverage",
    "load_journal",
    "load_scenario",
    "load_scenarios",
    "load_target",
    "run_files",
    "run_gameday",
    "validate",
]
