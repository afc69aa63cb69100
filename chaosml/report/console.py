"""Rich tables for the terminal: worst slices first, counts beside metrics."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from chaosml.slices.metrics import METRICS
from chaosml.slices.stats import P_FLOOR

if TYPE_CHECKING:  # a report renders what it is given: importing the producers costs start-up
    from chaosml.slices.checks import SliceTestReport
    from chaosml.slices.compare import Comparison, SliceComparison
    from chaosml.slices.fragility import Cell, Fragility, UnderFaults
    from chaosml.slices.offline import OfflineScenario

VERDICT_STYLE = {
    "regressed": "bold red",
    "improved": "green",
    "unchanged": "dim",
    "inconclusive": "yellow",
    "undefined": "yellow",
    "too_small": "yellow",
    "error": "bold magenta",
}
STATUS_STYLE = {
    "failed": "bold red",
    "passed": "green",
    "skipped": "yellow",
    "error": "bold magenta",
}


def fmt(value: float | None, digits: int = 4) -> str:
    """A metric for display; undefined (None or NaN) as an en dash."""
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def fmt_p(value: float | None) -> str:
    """A p-value for display: 4 decimals, two significant digits below 1e-4, ``<1e-300`` at the
    floor p-values are computed down to."""
    if value is None:
        return "–"
    if value <= P_FLOOR:
        return "<1e-300"
    return f"{value:.1e}" if value < 1e-4 else f"{value:.4f}"


# verdicts in the order tables list their slices: those that need a look first
WORST_FIRST = (
    "regressed",
    "error",
    "inconclusive",
    "unchanged",
    "improved",
    "undefined",
    "too_small",
)


def _narrow(dropped: list[str]) -> Text:
    return Text(
        f"(not shown, the terminal is too narrow: {', '.join(dropped)}; --json has all)",
        style="dim",
    )


def _not_applicable(scenarios: list[OfflineScenario]) -> Text | None:
    skipped = [s.name for s in scenarios if not s.applicable]
    if not skipped:
        return None
    return Text(
        f"not applicable offline (transport faults only): {', '.join(skipped)}", style="dim"
    )


def worst_first(comparison: Comparison) -> list[SliceComparison]:
    """Regressed slices first, then by how much worse v2 is (metric direction aware)."""
    direction = METRICS[comparison.metric].direction

    def key(row: SliceComparison) -> tuple[int, float]:
        better = direction * row.delta if row.delta is not None else math.inf
        return (WORST_FIRST.index(row.verdict), better)

    return sorted(comparison.slices, key=key)


@dataclass
class Column:
    header: str
    cells: list[str | Text]
    priority: int  # lower is kept longer when the terminal is narrow
    numeric: bool = True

    @property
    def width(self) -> int:
        """Columns it needs: every number whole; a name column folds down to 12."""
        widest = max([cell_len(self.header), *(_cell_width(cell) for cell in self.cells)])
        return widest if self.numeric else min(widest, 12)


def _cell_width(cell: str | Text) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(cell)


def fitted_table(title: str, columns: list[Column], console: Console) -> tuple[Table, list[str]]:
    """A table of the columns that fit the console without cutting a number: lower-priority
    columns are dropped first (slice names fold instead); also the headers left out."""
    kept = list(columns)
    while True:
        table = Table(title=title, title_justify="left", header_style="bold")
        for column in kept:
            table.add_column(
                column.header,
                justify="right" if column.numeric else "left",
                no_wrap=column.numeric,
                overflow="fold",
                min_width=None if column.numeric else 12,
            )
        for row in zip(*(column.cells for column in kept), strict=True):
            table.add_row(*row)
        droppable = [c for c in kept if c.priority > 0]
        if sum(c.width + 3 for c in kept) + 1 <= console.width or not droppable:
            break
        kept.remove(max(droppable, key=lambda c: c.priority))
    return table, [c.header for c in columns if c not in kept]


def methods(comparison: Comparison) -> tuple[str, str]:
    """How the comparison's intervals and p-values were computed, in words."""
    if METRICS[comparison.metric].proportion:
        return "Newcombe score interval", "McNemar's exact test"
    return (
        f"bootstrap percentile interval, {comparison.n_boot} replicates",
        "exact paired permutation test",
    )


def counts(comparison: Comparison) -> str:
    """How many slices got each verdict (the overall row is not a slice)."""
    tally: Counter[str] = Counter(row.verdict for row in comparison.slices)
    parts = [f"{tally[v]} {v}" for v in WORST_FIRST if tally[v]]
    return (
        f"{len(comparison.slices)} slices: {', '.join(parts)}; overall {comparison.overall.verdict}"
    )


def family_note(comparison: Comparison) -> str:
    """Which rows the correction's family holds."""
    c = comparison
    what = (
        "slices, overall included, and (slice, scenario) cells"
        if c.joint
        else "rows, overall included,"
    )
    return f"p adjusted ({c.correction}) over the {c.family} {what} that can reach α"


def render_comparison(comparison: Comparison, console: Console) -> None:
    c = comparison
    rows = [c.overall, *worst_first(c)]
    interval, test = methods(c)
    columns = [
        Column("slice", [r.name for r in rows], 0, numeric=False),
        Column("Δ", ["–" if r.delta is None else f"{r.delta:+.4f}" for r in rows], 0),
        Column(
            "verdict", [Text(r.verdict, style=VERDICT_STYLE[r.verdict]) for r in rows], 0, False
        ),
        Column("p adj", [fmt_p(r.p_adjusted) for r in rows], 1),
        Column(f"{c.confidence:.0%} CI", [_ci(r) for r in rows], 2),
        Column(c.v1_name, [fmt(r.v1) for r in rows], 3),
        Column(c.v2_name, [fmt(r.v2) for r in rows], 3),
        Column("n", [f"{r.n:,}" for r in rows], 4),
        Column("discordant", [f"{r.discordant:,}" for r in rows], 5),
        Column("p", [fmt_p(r.p_value) for r in rows], 6),
    ]
    order = ["slice", "n", "discordant", c.v1_name, c.v2_name, "Δ", columns[4].header, "p", "p adj"]
    columns.sort(key=lambda col: order.index(col.header) if col.header in order else len(order))
    title = f"{c.metric}: {c.v2_name} vs {c.v1_name} on {c.data}"
    table, dropped = fitted_table(title, columns, console)
    table.rows[0].end_section = True
    console.print(table)
    notes = [
        f"Δ = {c.v2_name} − {c.v1_name}; discordant = {discordant_note(c.metric)}; "
        f"{c.confidence:.0%} CI per slice ({interval}); p by {test}.",
        f"Verdict regressed: {family_note(c)} below α={c.alpha}, and worse by more than "
        f"max_drop={c.max_drop}. A CI that excludes 0 next to 'unchanged' is significant for "
        "that slice alone, not after the correction.",
        f"inconclusive: fewer than {c.min_discordant} discordant rows, too few to reach α at "
        "all (no CI for a ratio metric: none is honest there); undefined: the metric is "
        "undefined for a version; too_small: below min_size rows (no test, no CI).",
    ]
    for note in notes:
        console.print(Text(note, style="dim"))
    if dropped:
        console.print(_narrow(dropped))
    console.print(Text(counts(c), style="bold red" if c.regressed else "green"))
    if c.regressed:
        console.print(
            Text(f"regressed: {', '.join(row.name for row in c.regressed)}", style="bold red")
        )
    if c.equivalence is not None:
        render_equivalence(c, console)


def render_equivalence(c: Comparison, console: Console) -> None:
    """Whether the versions answer the same, slice by slice (worst first after overall)."""
    eq = c.equivalence
    assert eq is not None
    rows = [eq.slices[0], *sorted(eq.slices[1:], key=lambda s: (s.share, s.name))]
    gap = "–" if not eq.scores else None
    columns = [
        Column("slice", [r.name for r in rows], 0, numeric=False),
        Column("n", [f"{r.n:,}" for r in rows], 2),
        Column("same labels", [f"{r.share:.4%}" for r in rows], 0),
        Column(
            "largest score Δ",
            [gap or ("–" if r.max_score_diff is None else f"{r.max_score_diff:.2e}") for r in rows],
            1,
        ),
        Column(
            "equivalent",
            [
                Text("yes" if r.equivalent else "no", style="green" if r.equivalent else "bold red")
                for r in rows
            ],
            0,
            False,
        ),
    ]
    title = f"Equivalence: {c.v2_name} vs {c.v1_name}, tolerance {eq.tolerance:g}"
    table, dropped = fitted_table(title, columns, console)
    table.rows[0].end_section = True
    console.print(table)
    if not eq.scores:
        console.print(Text("scores not compared: a version gives none", style="dim"))
    if dropped:
        console.print(_narrow(dropped))
    differ = [r.name for r in eq.slices if not r.equivalent]
    if differ:
        console.print(
            Text(
                f"not equivalent: {c.v2_name} does not answer as {c.v1_name} in "
                f"{', '.join(differ)}",
                style="bold red",
            )
        )
    else:
        console.print(
            Text(f"equivalent: {c.v2_name} answers as {c.v1_name} on every row", style="green")
        )


def discordant_note(metric: str) -> str:
    """What the discordant column counts, for a metric."""
    if METRICS[metric].proportion:
        return f"rows {metric} counts on which the versions' answers differ in its outcome"
    return "rows on which the versions' answers differ"


def _ci(row: SliceComparison) -> str:
    return f"[{row.ci[0]:+.3f}, {row.ci[1]:+.3f}]" if row.ci else "–"


def render_test_report(report: SliceTestReport, console: Console) -> None:
    failing = {outcome.slice for outcome in report.failed}
    tested = {outcome.metric for outcome in report.outcomes}
    rows = list(zip(report.slices, (row for _, row in report.table.iterrows()), strict=True))
    columns = [
        Column(
            "slice",
            [Text(i.name, style="bold red" if i.name in failing else "") for i, _ in rows],
            0,
            numeric=False,
        ),
        Column(
            "n",
            [f"{int(r['n']):,}" + (" (small)" if r["n"] < i.min_size else "") for i, r in rows],
            0,
        ),
    ]
    for index, metric in enumerate(report.metrics):  # metrics a test reads are kept longest
        priority = 1 + index + (0 if metric in tested else len(report.metrics))
        columns.append(
            Column(METRICS[metric].short or metric, [fmt(r[metric]) for _, r in rows], priority)
        )
    table, dropped = fitted_table(f"{report.version} on {report.data}", columns, console)
    table.rows[0].end_section = True
    console.print(table)
    if dropped:
        console.print(_narrow(dropped))
    counts = {
        status: sum(o.status == status for o in report.outcomes)
        for status in ("passed", "failed", "skipped", "error")
    }
    for outcome in report.outcomes:
        if outcome.status != "passed":
            console.print(
                Text(f"{outcome.status.upper():7} ", style=STATUS_STYLE[outcome.status])
                + Text(f"{outcome.test} [{outcome.slice}]: {outcome.detail} ({outcome.location})")
            )
    if report.under:
        render_scenario_matrix(report, console)
    for error in report.errors.values():
        console.print(Text(f"could not run: {error}", style=STATUS_STYLE["error"]))
    console.print(
        Text(
            "Metric values are this version's on these rows (no sampling interval: the tests "
            "are thresholds on them); roc_auc from score histograms, binning error at most "
            "the JSON's roc_auc_bound.",
            style="dim",
        )
    )
    summary = ", ".join(
        f"{count} {status}" for status, count in counts.items() if count or status != "error"
    )
    console.print(Text(f"tests: {summary}", style="bold red" if counts["failed"] else "green"))


def render_under_faults(result: UnderFaults, console: Console) -> None:
    """The clean comparison, then the (slice, scenario) cells where the versions' fragility
    differs most."""
    render_comparison(result.clean, console)
    render_fragility(result.fragility, console)


def render_fragility(f: Fragility, console: Console, top: int = 15) -> None:
    v1, v2 = f.versions
    order = (*WORST_FIRST, "")  # "": not compared
    direction = METRICS[f.metric].direction

    def key(c: Cell) -> tuple[int, float]:
        better = direction * c.delta if c.delta is not None else math.inf
        return (order.index(c.verdict or ""), better)

    cells = sorted(f.cells, key=key)
    fragile = f.fragile
    shown = cells[: max(top, len(fragile))]  # every cell that failed the gate, whatever `top`

    def change(c: Cell, version: str) -> str:
        value = c.change(version)
        return "–" if value is None else f"{value:+.4f}"

    def ci(c: Cell) -> str:
        return f"[{c.ci[0]:+.3f}, {c.ci[1]:+.3f}]" if c.ci else "–"

    columns = [
        Column("scenario", [c.scenario for c in shown], 0, numeric=False),
        Column("slice", [c.slice for c in shown], 0, numeric=False),
        Column(f"Δ {v1}", [change(c, v1) for c in shown], 2),
        Column(f"Δ {v2}", [change(c, v2) for c in shown], 2),
        Column("Δ−Δ", ["–" if c.delta is None else f"{c.delta:+.4f}" for c in shown], 0),
        Column(f"{f.confidence:.0%} CI", [ci(c) for c in shown], 3),
        Column("p adj", [fmt_p(c.p_adjusted) for c in shown], 1),
        Column(
            "verdict",
            [Text(c.verdict or "–", style=VERDICT_STYLE.get(c.verdict or "", "")) for c in shown],
            0,
            numeric=False,
        ),
        Column("n", [f"{c.n:,}" for c in shown], 4),
    ]
    title = f"{f.metric} under the scenarios' faults: change from clean data, {v2} vs {v1}"
    table, dropped = fitted_table(title, columns, console)
    console.print(table)
    tally: Counter[str] = Counter(c.verdict or "" for c in cells)
    family = (
        f"adjusted ({f.correction}) with the clean slices over the {f.family} rows and cells "
        "that can reach α"
        if f.joint
        else f"adjusted ({f.correction}) over the {f.family} cells that can reach α"
    )
    notes = [
        f"Δ = change from clean data on the same rows; Δ−Δ = {v2}'s change − {v1}'s, with its "
        f"bootstrap percentile CI ({f.n_boot} replicates; none below {f.min_discordant} "
        f"discordant rows: inconclusive); regressed: {v2} loses significantly more (p {family}, "
        f"below α={f.alpha}) and by more than max_drop_under_fault={f.max_drop}; the overall "
        "rows count as cells.",
        f"{len(cells)} (slice, scenario) cells: "
        + ", ".join(f"{tally[v]} {v or 'not compared (answer faults)'}" for v in order if tally[v])
        + (f"; the worst {len(shown)} shown, --json has all" if len(cells) > len(shown) else ""),
    ]
    for note in notes:
        console.print(Text(note, style="dim"))
    for line in (_not_applicable(f.scenarios), _narrow(dropped) if dropped else None):
        if line is not None:
            console.print(line)
    for error in f.errors.values():
        console.print(Text(f"could not run: {error}", style=VERDICT_STYLE["error"]))
    if fragile:
        every = ", ".join(f"{c.slice} under {c.scenario}" for c in fragile)
        console.print(Text(f"{v2} more fragile in {len(fragile)} cells: {every}", style="bold red"))


def render_scenario_matrix(report: SliceTestReport, console: Console) -> None:
    """Each slice's change in the suite's first metric under each scenario, worst scenario
    columns kept longest on a narrow terminal."""
    metric = report.metrics[0]
    names = list(report.under)
    worst = {name: float(report.change(name, metric).min()) for name in names}
    columns = [Column("slice", [info.name for info in report.slices], 0, numeric=False)]
    for rank, name in enumerate(sorted(names, key=lambda n: worst[n])):
        values = report.change(name, metric)
        columns.append(
            Column(name, [fmt(v, 3) if math.isnan(v) else f"{v:+.3f}" for v in values], 1 + rank)
        )
    columns = [columns[0], *sorted(columns[1:], key=lambda c: names.index(c.header))]
    title = f"Δ {metric} of {report.version} under each scenario's faults (change from clean data)"
    table, dropped = fitted_table(title, columns, console)
    table.rows[0].end_section = True
    console.print(table)
    for line in (_not_applicable(report.scenarios), _narrow(dropped) if dropped else None):
        if line is not None:
            console.print(line)
