"""JUnit XML, for CI systems: one testcase per slice test (``slices test``) or per slice
(``slices compare``: "no regression")."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from chaosml.report._junit import Suite, _case, _write
from chaosml.report.console import fmt_p

if TYPE_CHECKING:
    from chaosml.slices.checks import SliceTestReport
    from chaosml.slices.compare import Comparison
    from chaosml.slices.fragility import UnderFaults


def write_test_junit(report: SliceTestReport, path: Path) -> None:
    cases = [
        _case(
            f"chaosml.slices.{outcome.test}",
            outcome.slice,
            outcome.status,
            f"{outcome.detail} ({outcome.location})",
        )
        for outcome in report.outcomes
    ]
    _write(path, (f"chaosml slices test {report.version}", cases))


def write_compare_junit(comparison: Comparison, path: Path) -> None:
    _write(path, _compare_suite(comparison))


def write_under_faults_junit(result: UnderFaults, path: Path) -> None:
    """The clean comparison's cases, then one per (slice, scenario) cell."""
    f = result.fragility
    cases = []
    for cell in f.cells:
        detail = (
            f"{cell.verdict}: {cell.error}"
            if cell.error is not None
            else f"{cell.verdict}: {f.metric} change under {cell.scenario}: "
            + ", ".join(f"{v} {_num(cell.change(v), signed=True)}" for v in f.versions)
            + f" (difference {_num(cell.delta, signed=True)}, ci {_ci(cell.ci)}, "
            f"p_adjusted {fmt_p(cell.p_adjusted)})"
        )
        classname = f"chaosml.slices.fragility.{cell.scenario}"
        cases.append(_case(classname, cell.slice, _status(cell.verdict), detail))
    fragility = (f"chaosml slices fragility {' '.join(f.versions)}", cases)
    _write(path, _compare_suite(result.clean), fragility)


def _compare_suite(c: Comparison) -> Suite:
    cases = []
    for row in [c.overall, *c.slices]:
        detail = (
            f"{row.verdict}: {c.metric} {_num(row.v1)} -> {_num(row.v2)} (delta "
            f"{_num(row.delta, signed=True)}, ci {_ci(row.ci)}, p_adjusted "
            f"{fmt_p(row.p_adjusted)}, n {row.n}, discordant {row.discordant})"
        )
        classname = f"chaosml.slices.compare.{c.metric}"
        cases.append(_case(classname, row.name, _status(row.verdict), detail))
    return f"chaosml slices compare {c.v1_name} {c.v2_name}", cases


def _status(verdict: str | None) -> str:
    """A comparison verdict as a test status: a slice without a verdict either way is skipped, a
    scenario that could not run an error; only ``regressed`` fails, as it fails the command."""
    if verdict in ("too_small", "undefined", "inconclusive"):
        return "skipped"
    if verdict == "error":
        return "error"
    return "failed" if verdict == "regressed" else "passed"


def _num(value: object, *, signed: bool = False) -> str:
    """A metric value as the console prints it: 4 decimals, undefined as a dash."""
    if not isinstance(value, int | float) or value != value:
        return "–"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _ci(ci: object) -> str:
    if not isinstance(ci, tuple | list) or len(ci) != 2:
        return "–"
    return f"[{_num(ci[0], signed=True)}, {_num(ci[1], signed=True)}]"
