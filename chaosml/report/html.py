"""Self-contained HTML reports (inline SVG plots drawn with matplotlib, no external assets)."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from chaosml.report._html import _page, _svg, _table, _td
from chaosml.report.console import (
    counts,
    discordant_note,
    family_note,
    fmt,
    fmt_p,
    methods,
    worst_first,
)
from chaosml.slices.collect import AUC_BOUND

if TYPE_CHECKING:
    from chaosml.slices.checks import SliceTestReport
    from chaosml.slices.compare import Comparison, SliceComparison
    from chaosml.slices.fragility import Cell, Fragility, UnderFaults

COLORS = {
    "regressed": "#b00020",
    "improved": "#1b7f3b",
    "unchanged": "#555",
    "inconclusive": "#c8a000",
    "undefined": "#c8a000",
    "too_small": "#c8a000",
    "error": "#8e24aa",
}


def forest_plot(comparison: Comparison) -> str:
    """Per-slice delta with its interval, worst first, as inline SVG. The axis spans the bulk of
    the intervals (an outlier slice does not squash the others): an interval running past it is
    cut at the edge and marked with an arrowhead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[SliceComparison] = [comparison.overall, *worst_first(comparison)]
    rows = [row for row in rows if row.delta is not None]
    ends = np.array(
        [v for row in rows for v in (row.ci or (row.delta, row.delta)) if v is not None] or [0.0]
    )
    low_q, high_q = np.percentile(ends, [5, 95])
    pad = max(high_q - low_q, 0.01) * 0.25
    left = min(low_q - pad, -comparison.max_drop - pad / 2, -pad / 2)
    right = max(high_q + pad, pad / 2)
    figure, axes = plt.subplots(figsize=(7, 0.28 * len(rows) + 1.2))
    for y, row in enumerate(reversed(rows)):
        assert row.delta is not None
        color = COLORS[row.verdict]
        low, high = row.ci if row.ci else (row.delta, row.delta)
        axes.plot([max(low, left), min(high, right)], [y, y], color=color, linewidth=1.5)
        if left <= row.delta <= right:
            axes.plot(row.delta, y, "o", color=color, markersize=4)
        if low < left:
            axes.plot(left, y, "<", color=color, markersize=5)
        if high > right:
            axes.plot(right, y, ">", color=color, markersize=5)
    axes.set_xlim(left, right)
    axes.axvline(0, color="#999", linewidth=0.8)
    if comparison.max_drop:
        axes.axvline(-comparison.max_drop, color="#b00020", linewidth=0.6, linestyle="--")
    axes.set_yticks(range(len(rows)), [row.name for row in reversed(rows)], fontsize=8)
    interval, _ = methods(comparison)
    axes.set_xlabel(
        f"Δ {comparison.metric} ({comparison.v2_name} − {comparison.v1_name}), "
        f"{comparison.confidence:.0%} {interval} per slice"
    )
    return _svg(figure)


def _legend(comparison: Comparison) -> str:
    used = dict.fromkeys(row.verdict for row in [comparison.overall, *comparison.slices])
    items = [f"<span><b style='color:{COLORS[v]}'>●</b> {html.escape(v)}</span>" for v in used]
    if comparison.max_drop:
        items.append(
            f"<span><b style='color:#b00020'>┆</b> −max_drop ({comparison.max_drop:g}): "
            "a drop must pass this line to count as a regression</span>"
        )
    items.append("<span>◀ ▶ interval runs past the axis</span>")
    return f"<p class='legend'>{''.join(items)}</p>"


def write_compare_html(comparison: Comparison, path: Path, extra: str = "") -> None:
    """The comparison's page; ``extra`` goes after its table."""
    c = comparison
    interval, test = methods(c)
    rows = []
    for row in [c.overall, *worst_first(c)]:
        ci = f"[{row.ci[0]:+.4f}, {row.ci[1]:+.4f}]" if row.ci else "–"
        rows.append(
            [
                _td(row.name),
                _td(row.where),
                _td(f"{row.n:,}", True),
                _td(f"{row.discordant:,}", True),
                _td(fmt(row.v1), True),
                _td(fmt(row.v2), True),
                _td("–" if row.delta is None else f"{row.delta:+.4f}", True),
                _td(ci, True),
                _td(fmt_p(row.p_value), True),
                _td(fmt_p(row.p_adjusted), True),
                _td(row.verdict, css=row.verdict),
            ]
        )
    summary = (
        f"<p>{html.escape(counts(c))}.</p>"
        f"<p class='note'>Δ = {html.escape(c.v2_name)} − {html.escape(c.v1_name)}; discordant = "
        f"{html.escape(discordant_note(c.metric))}. Interval: {c.confidence:.0%} {interval}, per "
        f"slice. p: {test}. <b>Verdict rule</b>: a slice <i>regressed</i> when its "
        f"{html.escape(family_note(c))} is below α={c.alpha} and the "
        f"metric got worse by more than max_drop={c.max_drop}; <i>improved</i> likewise the other "
        f"way; <i>inconclusive</i> below {c.min_discordant} discordant rows (too few for any test "
        "to reach α; no interval for a ratio metric); <i>undefined</i> where the metric is "
        "undefined for a version; "
        "<i>too_small</i> below min_size rows. An interval that excludes 0 next to "
        "<i>unchanged</i> is significant for that slice alone, not after the correction. "
        f"Data: {html.escape(c.data)}; seed {c.seed}.</p>"
    )
    table = _table(
        [
            "slice",
            "where",
            "n",
            "discordant",
            c.v1_name,
            c.v2_name,
            "Δ",
            "CI",
            "p",
            "p adj",
            "verdict",
        ],
        rows,
    )
    body = summary + _legend(c) + forest_plot(c) + table + extra
    path.write_text(_page(f"{c.metric}: {c.v2_name} vs {c.v1_name}", body), encoding="utf-8")


def _value(row: object, metric: str) -> str:
    """A metric of a test report's row; an AUC with the bound on its binning error beside it."""
    value = fmt(row[metric])  # type: ignore[index]
    if metric == "roc_auc" and value != "–":
        value += f" (±{fmt(row[AUC_BOUND])})"  # type: ignore[index]
    return value


def write_test_html(report: SliceTestReport, path: Path) -> None:
    rows = [
        [_td(info.name), _td(info.where), _td(f"{int(row['n']):,}", True)]
        + [_td(_value(row, m), True) for m in report.metrics]
        for info, (_, row) in zip(report.slices, report.table.iterrows(), strict=True)
    ]
    metrics = _table(["slice", "where", "n", *report.metrics], rows)
    tests = _table(
        ["status", "test", "slice", "detail", "where in the suite"],
        [
            [_td(o.status, css=o.status), _td(o.test), _td(o.slice), _td(o.detail), _td(o.location)]
            for o in report.outcomes
        ],
    )
    note = (
        "<p class='note'>Metric values are this version's on these rows; roc_auc is computed "
        "from 2048-bin score histograms, ± the bound on its binning error.</p>"
        if "roc_auc" in report.metrics
        else ""
    )
    errors = "".join(
        f"<p class='error'>could not run: {html.escape(e)}</p>" for e in report.errors.values()
    )
    counts: dict[str, int] = {}
    for outcome in report.outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    verdict = "failed" if counts.get("failed") or counts.get("error") else "passed"
    tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no tests"
    headline = (
        f"<h2 class='{verdict}'>{html.escape(report.version)}: {verdict} "
        f"({len(report.outcomes)} tests: {html.escape(tally)})</h2>"
    )
    body = f"{headline}<h2>Tests</h2>{errors}{tests}<h2>Metrics per slice</h2>{note}{metrics}"
    if report.under:
        names = list(report.under)
        metric = report.metrics[0]
        values = np.column_stack([report.change(name, metric).to_numpy() for name in names])
        title = f"Δ {metric} of {report.version} under each scenario (change from clean data)"
        body += "<h2>Under the scenarios' faults</h2>" + heatmap(
            [info.name for info in report.slices], names, values, title
        )
    path.write_text(_page(f"{report.version} on {report.data}", body), encoding="utf-8")


def heatmap(rows: list[str], columns: list[str], values: np.ndarray, title: str) -> str:
    """A slice x scenario grid of changes, as inline SVG: red for a loss, blue for a gain, the
    number in each cell; the colour scale is symmetric around 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = values[np.isfinite(values)]
    limit = max(float(np.abs(finite).max()) if finite.size else 0.0, 0.01)
    figure, axes = plt.subplots(figsize=(1.1 * len(columns) + 2.5, 0.3 * len(rows) + 1.4))
    image = axes.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    axes.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    axes.set_yticks(range(len(rows)), rows, fontsize=8)
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            color = "white" if abs(value) > 0.6 * limit else "black"
            axes.text(j, i, f"{value:+.2f}", ha="center", va="center", fontsize=6, color=color)
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.03)
    return _svg(figure)


def _fragility_maps(f: Fragility) -> str:
    """Per version, each (slice, scenario)'s change from clean data; for two, v2's minus v1's."""
    scenarios = list(dict.fromkeys(c.scenario for c in f.cells))
    slices = list(dict.fromkeys(c.slice for c in f.cells))
    where = {(c.slice, c.scenario): c for c in f.cells}

    def grid(value: Callable[[Cell], float | None]) -> np.ndarray:
        out = np.full((len(slices), len(scenarios)), np.nan)
        for i, name in enumerate(slices):
            for j, scenario in enumerate(scenarios):
                cell = where.get((name, scenario))
                got = None if cell is None else value(cell)
                out[i, j] = np.nan if got is None else got
        return out

    def change_of(version: str) -> Callable[[Cell], float | None]:
        return lambda cell: cell.change(version)

    parts = [
        heatmap(slices, scenarios, grid(change_of(v)), f"Δ {f.metric} of {v}") for v in f.versions
    ]
    if len(f.versions) == 2:
        v1, v2 = f.versions
        parts.append(heatmap(slices, scenarios, grid(lambda c: c.delta), f"{v2}'s change − {v1}'s"))
    skipped = [s.name for s in f.scenarios if not s.applicable]
    note = (
        f"<p class='note'>Not applicable offline (transport faults only): "
        f"{html.escape(', '.join(skipped))}.</p>"
        if skipped
        else ""
    )
    return "<h2>Under the scenarios' faults</h2>" + note + "".join(parts)


def write_under_faults_html(result: UnderFaults, path: Path) -> None:
    """The clean comparison's page, with the slice x scenario heatmaps after it."""
    f = result.fragility
    fragile = "".join(
        f"<li>{html.escape(c.slice)} under {html.escape(c.scenario)}: {c.delta:+.4f} "
        f"(p adj {fmt_p(c.p_adjusted)})</li>"
        for c in f.fragile
        if c.delta is not None
    )
    errors = "".join(
        f"<p class='error'>could not run: {html.escape(e)}</p>" for e in f.errors.values()
    )
    summary = (
        f"<p>{html.escape(f.versions[1])} loses significantly more than {html.escape(f.versions[0])} "
        f"(by more than max_drop_under_fault={f.max_drop}) in:</p><ul>{fragile}</ul>"
        if fragile
        else "<p>No cell where one version is significantly more fragile.</p>"
    )
    write_compare_html(result.clean, path, extra=_fragility_maps(f) + errors + summary)
