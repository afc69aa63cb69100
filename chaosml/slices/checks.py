"""``slices test``: per-slice metrics of one version and the suite's threshold and fairness tests."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from chaosml.config import ProjectConfig
from chaosml.data import DEFAULT_CHUNK_ROWS
from chaosml.errors import InputError, ScenarioFailed
from chaosml.slices.collect import AUC_BOUND, Evaluation, evaluate
from chaosml.slices.engines import Engine, Progress, engine_for
from chaosml.slices.metrics import METRICS, as_number
from chaosml.slices.suite import SliceSuite, SliceTest, no_such_slice
from chaosml.slices.sums import SliceInfo
from chaosml.versions import Version

if TYPE_CHECKING:  # the fault matrix is imported only when scenarios are asked for
    from chaosml.slices.offline import OfflineScenario

Status = Literal["passed", "failed", "skipped", "error"]


@dataclass(frozen=True, kw_only=True)
class TestOutcome:
    """One test applied to one slice (or, for a ``by`` test, to one group)."""

    test: str
    slice: str
    metric: str
    value: float | None
    status: Status
    detail: str
    location: str

    __test__ = False  # not a pytest class


@dataclass(frozen=True, kw_only=True)
class SliceTestReport:
    """Metrics of one version per slice, and the outcome of every test.

    ``overall`` and ``by_slice`` read like fairlearn's ``MetricFrame``.
    """

    version: str
    suite: str
    data: str
    label: str
    metrics: list[str]
    slices: list[SliceInfo]
    table: pd.DataFrame  # index: slice name (first row "overall"); columns: n, metrics
    outcomes: list[TestOutcome]
    scenarios: list[OfflineScenario] = field(default_factory=list)
    under: dict[str, pd.DataFrame] = field(default_factory=dict)  # scenario: the same table
    errors: dict[str, str] = field(default_factory=dict)  # scenario: why it could not run

    def change(self, scenario: str, metric: str) -> pd.Series:
        """Each slice's change in ``metric`` from clean data under ``scenario``'s faults."""
        return self.under[scenario][metric] - self.table[metric]

    @property
    def overall(self) -> pd.Series:
        return self.table.iloc[0]

    @property
    def by_slice(self) -> pd.DataFrame:
        return self.table.iloc[1:]

    @property
    def passed(self) -> bool:
        return all(outcome.status != "failed" for outcome in self.outcomes)

    @property
    def failed(self) -> list[TestOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status == "failed"]

    @property
    def exit_code(self) -> int:
        """3 if a scenario could not run (its tests' verdicts are unknown), else 1 if a test
        failed, else 0."""
        return 3 if self.errors else 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for info, (_, row) in zip(self.slices, self.table.iterrows(), strict=True):
            rows.append(
                {
                    "name": info.name,
                    "where": info.where,
                    "n": int(row["n"]),
                    "too_small": bool(row["n"] < info.min_size),
                    "metrics": self._metrics(row),
                }
            )
        return {
            "schema": "chaosml.slices.test/1",
            "suite": self.suite,
            "data": self.data,
            "label": self.label,
            "version": self.version,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "overall": rows[0],
            "slices": rows[1:],
            "tests": [outcome.__dict__ for outcome in self.outcomes],
            "scenarios": [self._scenario(s) for s in self.scenarios],
        }

    def _metrics(self, row: pd.Series) -> dict[str, float | None]:
        """A row's metrics; an AUC with the bound on its binning error beside it."""
        out = {m: as_number(row[m]) for m in self.metrics}
        if AUC_BOUND in row.index:
            out[AUC_BOUND] = as_number(row[AUC_BOUND])
        return out

    def _scenario(self, scenario: OfflineScenario) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": scenario.name,
            "path": str(scenario.path),
            "applicable": scenario.applicable,
            "not_applicable_offline": list(scenario.transport),
            "error": self.errors.get(scenario.name),
        }
        table = self.under.get(scenario.name)
        if table is not None:
            out["slices"] = [
                {
                    "name": name,
                    "metrics": self._metrics(row),
                    "change": {m: as_number(row[m] - base[m]) for m in self.metrics},
                }
                for (name, row), (_, base) in zip(
                    table.iterrows(), self.table.iterrows(), strict=True
                )
            ]
        return out


def run_slice_tests(
    suite: SliceSuite,
    version: Version,
    data: object,
    *,
    scenarios: Sequence[OfflineScenario] = (),
    others: Mapping[str, Version] | None = None,
    seed: int = 0,
    config: ProjectConfig | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Progress | None = None,
    engine: Engine | str | None = None,
) -> SliceTestReport:
    """Evaluate ``version`` on every slice of ``suite`` and run the suite's tests; with
    ``scenarios``, also every slice under each scenario's faults (applied offline), where the
    tests with ``under:`` run. ``data`` and ``engine`` are as for ``evaluate``."""
    with engine_for(engine, data) as runner:
        return _run_slice_tests(
            suite,
            version,
            data,
            scenarios=scenarios,
            others=others,
            seed=seed,
            config=config,
            chunk_rows=chunk_rows,
            progress=progress,
            engine=runner,
        )


def _run_slice_tests(
    suite: SliceSuite,
    version: Version,
    data: object,
    *,
    scenarios: Sequence[OfflineScenario],
    others: Mapping[str, Version] | None,
    seed: int,
    config: ProjectConfig | None,
    chunk_rows: int,
    progress: Progress | None,
    engine: Engine,
) -> SliceTestReport:
    evaluation = evaluate(
        suite,
        data,
        [version],
        config=config,
        chunk_rows=chunk_rows,
        progress=progress,
        engine=engine,
    )
    metrics = suite.all_metrics
    table = evaluation.frame(0, metrics)
    known = {version.name: version, **(others or {})}
    faulted, errors = _evaluate_under(
        suite, version, data, scenarios, known, seed, config, chunk_rows, progress, engine
    )
    under = {name: result.frame(0, metrics) for name, result in faulted.items()}
    outcomes = []
    for index, test in enumerate(suite.tests):
        location = suite.test_line(index)
        if test.under is None:
            outcomes += _run_test(test, index, location, evaluation, table)
        elif test.under in under:
            outcomes += _run_test(
                test, index, location, faulted[test.under], under[test.under], clean=table
            )
        else:
            outcomes.append(_not_under(test, index, location, scenarios, errors))
    return SliceTestReport(
        version=version.name,
        suite=str(suite.path or "<suite>"),
        data=evaluation.data,
        label=evaluation.label,
        metrics=metrics,
        slices=evaluation.stats.slices,
        table=table,
        outcomes=outcomes,
        scenarios=list(scenarios),
        under=under,
        errors=errors,
    )


def _evaluate_under(
    suite: SliceSuite,
    version: Version,
    data: object,
    scenarios: Sequence[OfflineScenario],
    known: Mapping[str, Version],
    seed: int,
    config: ProjectConfig | None,
    chunk_rows: int,
    progress: Progress | None,
    engine: Engine,
) -> tuple[dict[str, Evaluation], dict[str, str]]:
    """The faulted answers of ``version`` under each applicable scenario (the clean ones are
    evaluated once, elsewhere); a scenario that could not run is an error, the others run."""
    from chaosml.slices.offline import UnderFault

    faulted: dict[str, Evaluation] = {}
    errors: dict[str, str] = {}
    for index, scenario in enumerate(scenarios):
        if not scenario.applicable:
            continue
        try:
            faulted[scenario.name] = evaluate(
                suite,
                data,
                [UnderFault(base=version, scenario=scenario, seed=seed, index=index, others=known)],
                config=config,
                chunk_rows=chunk_rows,
                progress=progress,
                engine=engine,
            )
        except ScenarioFailed as exc:  # a result: its tests are errors
            errors[scenario.name] = str(exc)
    return faulted, errors


def _not_under(
    test: SliceTest,
    index: int,
    location: str,
    scenarios: Sequence[OfflineScenario],
    errors: Mapping[str, str],
) -> TestOutcome:
    """The outcome of a test ``under`` a scenario that did not run: an error when it failed,
    skipped when it does not apply offline or no scenarios were given; a typo is bad input."""
    assert test.under is not None
    names = [s.name for s in scenarios]
    if scenarios and test.under not in names:
        close = difflib.get_close_matches(test.under, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(
            f"{location}: tests[{index}].under: no scenario named {test.under!r}{hint}"
        )
    if test.under in errors:
        return TestOutcome(
            test=_describe(test),
            slice=test.slice or ", ".join(test.by or []),
            metric=test.metric,
            value=None,
            status="error",
            detail=errors[test.under],
            location=location,
        )
    why = "not applicable offline" if scenarios else "needs --scenarios"
    return TestOutcome(
        test=_describe(test),
        slice=test.slice or "",
        metric=test.metric,
        value=None,
        status="skipped",
        detail=f"under {test.under}: {why}",
        location=location,
    )


def _run_test(
    test: SliceTest,
    index: int,
    location: str,
    evaluation: Evaluation,
    table: pd.DataFrame,
    clean: pd.DataFrame | None = None,
) -> list[TestOutcome]:
    """``test`` on ``table`` (under a scenario: the faulted table, with the ``clean`` one)."""
    if test.by is not None:
        return [_group_test(test, location, evaluation, table)]
    overall = float(table[test.metric].iloc[0])
    outcomes = []
    before = (table if clean is None else clean)[test.metric].iloc[1:]
    for info, value, n, was in zip(
        evaluation.stats.slices[1:],
        table[test.metric].iloc[1:],
        table["n"].iloc[1:],
        before if clean is not None else [math.nan] * len(before),
        strict=True,
    ):
        if not test.matches(info.name):
            continue
        outcomes.append(_slice_test(test, location, info, float(value), int(n), overall, was))
    if not outcomes:  # a pattern the data gave no slice for: the suite is wrong, not the model
        names = [info.name for info in evaluation.stats.slices[1:]]
        problem = no_such_slice(test.slice or "", names).replace("named", "matches")
        raise InputError(f"{location}: tests[{index}].slice: {problem}")
    return outcomes


def _slice_test(
    test: SliceTest,
    location: str,
    info: SliceInfo,
    value: float,
    n: int,
    overall: float,
    clean: float = math.nan,
) -> TestOutcome:
    def outcome(status: Status, detail: str) -> TestOutcome:
        return TestOutcome(
            test=_describe(test),
            slice=info.name,
            metric=test.metric,
            value=None if math.isnan(value) else value,
            status=status,
            detail=detail,
            location=location,
        )

    if n < info.min_size:
        return outcome("skipped", f"too small: n={n} < min_size={info.min_size}")
    if math.isnan(value):
        return outcome("skipped", f"{test.metric} is undefined on this slice (n={n})")
    problems = []
    if test.min is not None and value < test.min:
        problems.append(f"{test.metric}={value:.4f} < min {test.min}")
    if test.max is not None and value > test.max:
        problems.append(f"{test.metric}={value:.4f} > max {test.max}")
    if test.max_gap_to_overall is not None and not math.isnan(overall):
        gap = _gap(test.metric, value, overall)
        if gap > test.max_gap_to_overall:
            problems.append(
                f"{test.metric}={value:.4f} is {gap:.4f} worse than overall "
                f"{overall:.4f} (max gap {test.max_gap_to_overall})"
            )
    if test.max_drop is not None and not math.isnan(clean):
        drop = _gap(test.metric, value, clean)
        if drop > test.max_drop:
            problems.append(
                f"{test.metric}={value:.4f} under {test.under} is {drop:.4f} worse than clean "
                f"{clean:.4f} (max drop {test.max_drop})"
            )
    if problems:
        return outcome("failed", "; ".join(problems))
    return outcome("passed", f"{test.metric}={value:.4f} (n={n})")


def _gap(metric: str, value: float, overall: float) -> float:
    """How much worse the slice is than overall (both sides for metrics with no better direction)."""
    direction = METRICS[metric].direction
    return abs(value - overall) if direction == 0 else direction * (overall - value)


def _group_test(
    test: SliceTest, location: str, evaluation: Evaluation, table: pd.DataFrame
) -> TestOutcome:
    """fairlearn's between-groups difference (max - min) and ratio (min / max) over the group's
    slices that are at least ``min_size`` rows."""
    columns = tuple(test.by or [])
    name = f"by {', '.join(columns)}"
    picked = [i + 1 for i, info in enumerate(evaluation.stats.slices[1:]) if info.group == columns]
    values = table[test.metric].to_numpy()[picked]
    sizes = table["n"].to_numpy()[picked]
    mins = np.array([evaluation.stats.slices[i].min_size for i in picked])
    usable = values[(sizes >= mins) & np.isfinite(values)]
    if len(usable) < 2:
        return TestOutcome(
            test=_describe(test),
            slice=name,
            metric=test.metric,
            value=None,
            status="skipped",
            detail="fewer than two groups large enough to compare",
            location=location,
        )
    difference, high = float(usable.max() - usable.min()), float(usable.max())
    ratio = float(usable.min() / high) if high > 0 else float("nan")
    problems = []
    if test.max_difference is not None and difference > test.max_difference:
        problems.append(f"{test.metric} difference {difference:.4f} > {test.max_difference}")
    if test.min_ratio is not None and not ratio >= test.min_ratio:
        problems.append(f"{test.metric} ratio {ratio:.4f} < {test.min_ratio}")
    value = difference if test.max_difference is not None else ratio
    detail = "; ".join(problems) or f"difference {difference:.4f}, ratio {ratio:.4f}"
    return TestOutcome(
        test=_describe(test),
        slice=name,
        metric=test.metric,
        value=value,
        status="failed" if problems else "passed",
        detail=detail,
        location=location,
    )


def _describe(test: SliceTest) -> str:
    parts = []
    for key in ("min", "max", "max_gap_to_overall", "max_drop", "max_difference", "min_ratio"):
        bound = getattr(test, key)
        if bound is not None:
            parts.append(f"{key}={bound}")
    target = f"slice {test.slice}" if test.slice is not None else f"by {', '.join(test.by or [])}"
    under = f" under {test.under}" if test.under is not None else ""
    return f"{test.metric} {' '.join(parts)} on {target}{under}"
