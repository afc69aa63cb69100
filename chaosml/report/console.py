"""Rich tables for the terminal: worst slices first, counts beside metrics."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

from chaosml.slices.checks import SliceTestReport
from chaosml.slices.compare import Comparison, SliceComparison
from chaosml.slices.metrics import METRICS

VERDICT_STYLE = {
    "regressed": "bold red",
    "improved": "green",
    "unchanged": "dim",
    "too_small": "yellow",
}
STATUS_STYLE = {"failed": "bold red", "passed": "green", "skipped": "yellow"}


def fmt(value: float | None, digits: int = 4) -> str:
    """A metric for display; undefined (None or NaN) as an en dash."""
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "<1e-4" if value < 1e-4 else f"{value:.4f}"


def worst_first(comparison: Comparison) -> list[SliceComparison]:
    """Regressed slices first, then by how much worse v2 is (metric direction aware)."""
    rank = {"regressed": 0, "unchanged": 1, "improved": 2, "too_small": 3}
    direction = METRICS[comparison.metric].direction

    def key(row: SliceComparison) -> tuple[int, float]:
        better = direction * row.delta if row.delta is not None else math.inf
        return (rank[row.verdict], better)

    return sorted(comparison.slices, key=key)


def render_comparison(comparison: Comparison, console: Console) -> None:
    c = comparison
    title = (
        f"{c.metric}: {c.v2_name} vs {c.v1_name} on {c.data} "
        f"({c.correction} α={c.alpha}, max_drop={c.max_drop}, {c.n_boot} bootstrap)"
    )
    table = Table(title=title, title_justify="left", header_style="bold")
    for name in (
        "slice",
        "n",
        c.v1_name,
        c.v2_name,
        "Δ",
        f"{c.confidence:.0%} CI",
        "p",
        "p adj",
        "verdict",
    ):
        table.add_column(
            name, justify="left" if name in ("slice", "verdict") else "right", no_wrap=True
        )
    for index, row in enumerate([c.overall, *worst_first(c)]):
        ci = f"[{row.ci[0]:+.3f}, {row.ci[1]:+.3f}]" if row.ci else "–"
        table.add_row(
            row.name,
            f"{row.n:,}",
            fmt(row.v1),
            fmt(row.v2),
            fmt(row.delta, 4) if row.delta is None else f"{row.delta:+.4f}",
            ci,
            _p(row.p_value),
            _p(row.p_adjusted),
            Text(row.verdict, style=VERDICT_STYLE[row.verdict]),
            end_section=index == 0,
        )
    console.print(table)
    if c.regressed:
        names = ", ".join(row.name for row in c.regressed)
        console.print(Text(f"{len(c.regressed)} slice(s) regressed: {names}", style="bold red"))
    else:
        console.print(Text(f"no slice regressed ({len(c.improved)} improved)", style="green"))


def render_test_report(report: SliceTestReport, console: Console) -> None:
    table = Table(
        title=f"{report.version} on {report.data}", title_justify="left", header_style="bold"
    )
    table.add_column("slice", no_wrap=True)
    table.add_column("n", justify="right")
    for metric in report.metrics:
        table.add_column(METRICS[metric].short or metric, justify="right")
    failing = {outcome.slice for outcome in report.failed}
    for index, (info, (_, row)) in enumerate(
        zip(report.slices, report.table.iterrows(), strict=True)
    ):
        name = Text(info.name, style="bold red" if info.name in failing else "")
        size = f"{int(row['n']):,}" + (" (small)" if row["n"] < info.min_size else "")
        table.add_row(name, size, *[fmt(row[m]) for m in report.metrics], end_section=index == 0)
    console.print(table)
    counts = {
        status: sum(o.status == status for o in report.outcomes)
        for status in ("passed", "failed", "skipped")
    }
    for outcome in report.outcomes:
        if outcome.status != "passed":
            console.print(
                Text(f"{outcome.status.upper():7} ", style=STATUS_STYLE[outcome.status])
                + Text(f"{outcome.test} [{outcome.slice}]: {outcome.detail} ({outcome.location})")
            )
    summary = ", ".join(f"{count} {status}" for status, count in counts.items())
    console.print(Text(f"tests: {summary}", style="bold red" if counts["failed"] else "green"))
