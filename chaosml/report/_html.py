"""The building blocks of chaosml's self-contained HTML pages, shared by the slice reports and the
game-day report (so that one does not import the other's half): the page, tables, cells, and an
inline SVG of a matplotlib figure (matplotlib is imported only when a figure is drawn)."""

from __future__ import annotations

import html
import io

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;font-size:.9rem}td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.regressed,.failed{color:#b00020;font-weight:600}.improved,.passed{color:#1b7f3b}
.too_small,.skipped,.inconclusive,.undefined{color:#a66b00}.unchanged{color:#666}
.error{color:#8e24aa;font-weight:600}
.legend span{margin-right:1.2rem}.note{color:#555;max-width:60rem}
"""


def _svg(figure: object) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(figure)  # type: ignore[arg-type]
    text = buffer.getvalue()
    return text[text.index("<svg") :]


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
