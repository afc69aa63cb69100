"""Self-contained HTML reports (inline SVG plots drawn with matplotlib, no external assets)."""

from __future__ import annotations

import html
import io
from pathlib import Path

from chaosml.report.console import fmt, worst_first
from chaosml.slices.checks import SliceTestReport
from chaosml.slices.compare import Comparison, SliceComparison

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;font-size:.9rem}td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.regressed,.failed{color:#b00020;font-weight:600}.improved,.passed{color:#1b7f3b}
.too_small,.skipped{color:#a66b00}.unchanged{color:#666}
"""


def _svg(figure: object) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(figure)  # type: ignore[arg-type]
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def forest_plot(comparison: Comparison) -> str:
    """Per-slice delta with its interval, worst first, as inline SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[SliceComparison] = [comparison.overall, *worst_first(comparison)]
    rows = [row for row in rows if row.delta is not None]
    colors = {
        "regressed": "#b00020",
        "improved": "#1b7f3b",
        "unchanged": "#555",
        "too_small": "#c8a000",
    }
    figure, axes = plt.subplots(figsize=(7, 0.28 * len(rows) + 1.2))
    for y, row in enumerate(reversed(rows)):
        assert row.delta is not None
        low, high = row.ci if row.ci else (row.delta, row.delta)
        axes.plot([low, high], [y, y], color=colors[row.verdict], linewidth=1.5)
        axes.plot(row.delta, y, "o", color=colors[row.verdict], markersize=4)
    axes.axvline(0, color="#999", linewidth=0.8)
    if comparison.max_drop:
        axes.axvline(-comparison.max_drop, color="#b00020", linewidth=0.6, linestyle="--")
    axes.set_yticks(range(len(rows)), [row.name for row in reversed(rows)], fontsize=8)
    axes.set_xlabel(
        f"Δ {comparison.metric} ({comparison.v2_name} − {comparison.v1_name}), "
        f"{comparison.confidence:.0%} bootstrap CI"
    )
    return _svg(figure)


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(value: str, numeric: bool = False, css: str = "") -> str:
    classes = " ".join(filter(None, ["num" if numeric else "", css]))
    return f"<td class='{classes}'>{html.escape(value)}</td>"


def write_compare_html(comparison: Comparison, path: Path) -> None:
    c = comparison
    rows = []
    for row in [c.overall, *worst_first(c)]:
        ci = f"[{fmt(row.ci[0])}, {fmt(row.ci[1])}]" if row.ci else "–"
        rows.append(
            [
                _td(row.name),
                _td(row.where),
                _td(f"{row.n:,}", True),
                _td(fmt(row.v1), True),
                _td(fmt(row.v2), True),
                _td(fmt(row.delta), True),
                _td(ci, True),
                _td(fmt(row.p_value), True),
                _td(fmt(row.p_adjusted), True),
                _td(row.verdict, css=row.verdict),
            ]
        )
    summary = (
        f"<p>{len(c.regressed)} regressed, {len(c.improved)} improved. Test: {c.test}, "
        f"correction: {c.correction}, α={c.alpha}, max_drop={c.max_drop}, "
        f"{c.n_boot} bootstrap replicates (seed {c.seed}). Data: {html.escape(c.data)}.</p>"
    )
    table = _table(
        ["slice", "where", "n", c.v1_name, c.v2_name, "Δ", "CI", "p", "p adj", "verdict"], rows
    )
    body = summary + forest_plot(c) + table
    path.write_text(_page(f"{c.metric}: {c.v2_name} vs {c.v1_name}", body), encoding="utf-8")


def write_test_html(report: SliceTestReport, path: Path) -> None:
    rows = [
        [_td(info.name), _td(info.where), _td(f"{int(row['n']):,}", True)]
        + [_td(fmt(row[m]), True) for m in report.metrics]
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
    body = f"<h2>Tests</h2>{tests}<h2>Metrics per slice</h2>{metrics}"
    path.write_text(_page(f"{report.version} on {report.data}", body), encoding="utf-8")
