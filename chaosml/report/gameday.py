"""Game-day reports: the terminal summary and coverage matrix, a live display during the run,
JUnit (one testcase per expectation) and HTML (a timeline per scenario, and the matrix)."""

from __future__ import annotations

import html
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from chaosml.alerts.base import NOISE_LABELS
from chaosml.gameday.coverage import Coverage, GamedayReport
from chaosml.report.html import _page, _svg, _table, _td
from chaosml.report.junit import _case

VERDICT = {"passed": "green", "failed": "bold red", "aborted": "yellow"}
CELL = {
    "fired": ("✓", "green"),
    "missed": ("✗", "bold red"),
    "noise": ("!", "yellow"),
    "": ("", ""),
}


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} s"


def _fault(fault: dict[str, Any]) -> str:
    where = fault.get("where") or fault.get("attributes", {}).get("where")
    return f"{fault['type']}@{fault['point']}" + (f" [{where}]" if where else "")


def render_gameday(report: GamedayReport, console: Console) -> None:
    table = Table(title="Game day", title_justify="left", header_style="bold")
    for column in (
        "scenario",
        "faults",
        "expectation",
        "verdict",
        "detected",
        "resolved",
        "source",
    ):
        table.add_column(column, no_wrap=column in ("detected", "resolved"))
    for s in report.scenarios:
        faults = ", ".join(_fault(f) for f in s.get("faults", [])) or "none"
        rows = s.get("expectations") or [None]
        for i, e in enumerate(rows):
            first = i == 0
            verdict: Text | str
            if e is None:
                expectation, verdict, detected, resolved, source = "(none)", "", "", "", ""
            else:
                labels = ",".join(f"{k}={v}" for k, v in e["labels"].items())
                expectation = e["alert"] + (f"{{{labels}}}" if labels else "")
                expectation += "" if e["fires"] else " stays quiet"
                verdict = Text(e["verdict"], style=VERDICT[e["verdict"]])
                detected = _seconds(e["detected_after_s"]) if e["fires"] else ""
                resolved = _seconds(e["resolved_after_s"]) if e["fires"] else ""
                source = e["source"] or ""
            name = Text(s["name"], style=VERDICT.get(s["verdict"], "")) if first else Text("")
            table.add_row(
                name, faults if first else "", expectation, verdict, detected, resolved, source
            )
        for note in _notes(s):
            table.add_row("", "", Text(note, style="dim"), "", "", "", "")
    console.print(table)
    for note in report.journal.data.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    render_coverage(report.coverage, console)
    passed = sum(s["verdict"] == "passed" for s in report.scenarios)
    console.print(
        f"{passed} of {len(report.scenarios)} scenarios passed. Journal: {report.journal.path}"
    )


def _notes(scenario: dict[str, Any]) -> list[str]:
    notes = []
    for e in scenario.get("expectations", []):
        if e["verdict"] != "passed" and e.get("reason"):
            notes.append(f"{e['alert']}: {e['reason']}")
    if scenario.get("stopped_by"):
        notes.append(f"stopped: {scenario['stopped_by']} held; rolled back")
    if scenario.get("reason"):
        notes.append(str(scenario["reason"]))
    for name, counts in (scenario.get("fault_points") or {}).items():
        if counts.get("errors"):
            notes.append(f"{int(counts['errors'])} fault errors at {name}: see its /metrics")
    return notes


def render_coverage(coverage: Coverage, console: Console) -> None:
    matrix = Table(
        title="Alert coverage (✓ fired as expected, ✗ expected but silent, ! fired unexpected)",
        title_justify="left",
        header_style="bold",
    )
    matrix.add_column("scenario")
    matrix.add_column("failure mode")
    for rule in coverage.rules:
        matrix.add_column(rule, justify="center")
    for s in coverage.scenarios:
        cells = [Text(*CELL[coverage.cell(s, rule)]) for rule in coverage.rules]
        blind = s.name in coverage.blind_spots
        mode = Text((s.failure_mode or "") + (" BLIND SPOT" if blind else ""))
        matrix.add_row(Text(s.name, style="bold red" if blind else ""), mode, *cells)
    console.print(matrix)
    for label, items in (
        ("Blind spots (no alert fired)", coverage.blind_spots),
        ("Failure modes no rule covers", coverage.uncovered_failure_modes),
        ("Rules no scenario set off", coverage.unexercised_rules),
        ("Noisy rules (fired where not expected)", coverage.noisy_rules),
    ):
        if items:
            console.print(f"[bold]{label}:[/bold] {', '.join(items)}")


class LiveDisplay:
    """The runner's progress on stderr: a live panel on a terminal, a line per step otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.interactive = console.is_terminal
        self.scenario_name, self.index, self.total = "", 0, 0
        self.phase_name, self.phase_end = "", 0.0
        self.figures: dict[str, Any] = {}
        self.alerts: list[str] = []
        self._live: Live | None = None

    def _render(self) -> Group:
        left = max(self.phase_end - time.time(), 0)
        f = self.figures
        load = (
            f"{f.get('rps', 0):.1f} req/s, errors {f.get('error_rate', 0):.1%}, "
            f"p95 {f.get('p95_ms') or 0:.0f} ms"
            if f
            else "starting load"
        )
        head = Text.assemble(
            (f"[{self.index + 1}/{self.total}] {self.scenario_name}", "bold"),
            f"  {self.phase_name} ({left:.0f} s left)  {load}",
        )
        return Group(head, *(Text(a, style="dim") for a in self.alerts[-5:]))

    def scenario(self, name: str, index: int, total: int) -> None:
        self.scenario_name, self.index, self.total = name, index, total
        self.alerts, self.figures = [], {}
        if self.interactive and self._live is None:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4)
            self._live.start()
        elif not self.interactive:
            self.console.print(f"[{index + 1}/{total}] {name}", highlight=False)

    def phase(self, name: str, seconds: float) -> None:
        self.phase_name, self.phase_end = name, time.time() + seconds
        if not self.interactive:
            self.console.print(f"  {name} ({seconds:.1f} s)", highlight=False)
        self._refresh()

    def tick(self, figures: dict[str, Any]) -> None:
        self.figures = figures
        self._refresh()

    def alert(self, event: dict[str, Any]) -> None:
        labels = ",".join(f"{k}={v}" for k, v in event["labels"].items() if k not in NOISE_LABELS)
        line = f"  {event['source']}: {event['alert']}{{{labels}}} {event['state']}"
        self.alerts.append(line)
        if not self.interactive:
            self.console.print(line, highlight=False, markup=False)
        self._refresh()

    def finished(self, record: dict[str, Any]) -> None:
        if not self.interactive:
            self.console.print(f"  → {record['verdict']}", highlight=False)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def write_gameday_junit(report: GamedayReport, path: Path) -> None:
    root = ET.Element("testsuites")
    for s in report.scenarios:
        cases = []
        for e in s.get("expectations", []):
            what = "fires" if e["fires"] else "stays quiet"
            detail = e.get("reason") or (
                f"detected after {_seconds(e['detected_after_s'])}, resolved after "
                f"{_seconds(e['resolved_after_s'])} ({e['source']})"
                if e["fires"]
                else "stayed quiet"
            )
            cases.append(
                _case(f"chaosml.gameday.{s['name']}", f"{e['alert']} {what}", e["verdict"], detail)
            )
        if not cases or s["verdict"] == "aborted":
            status = "failed" if s["verdict"] == "aborted" else "passed"
            detail = s.get("reason") or s.get("stopped_by") or "no expectations"
            cases.append(_case(f"chaosml.gameday.{s['name']}", "scenario", status, str(detail)))
        suite = ET.SubElement(
            root,
            "testsuite",
            name=s["name"],
            tests=str(len(cases)),
            failures=str(sum(c.find("failure") is not None for c in cases)),
        )
        suite.extend(cases)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def timeline(scenario: dict[str, Any]) -> str:
    """The scenario over time as inline SVG: rps, error rate and p95 (from Locust), the fault
    window shaded, and when each alert went pending (dashed) and fired (solid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = scenario["started_at"]
    ticks = scenario.get("load") or []
    figure, axes = plt.subplots(3, 1, figsize=(9, 4.8), sharex=True)
    series = (("rps", "req/s", 1), ("error_rate", "errors %", 100), ("p95_ms", "p95 ms", 1))
    xs = [t["t"] - start for t in ticks]
    for ax, (key, label, factor) in zip(axes, series, strict=True):
        ax.plot(xs, [(t.get(key) or 0) * factor for t in ticks], color="#1f4e79", linewidth=1)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        if scenario.get("injected_at"):
            end = scenario.get("rolled_back_at") or scenario["ended_at"]
            ax.axvspan(scenario["injected_at"] - start, end - start, color="#f4b183", alpha=0.35)
    colors = plt.get_cmap("tab10")
    first: dict[str, dict[str, Any]] = {}  # per alert, the episode its earliest source saw
    for track in sorted(scenario.get("alerts", []), key=lambda t: t.get("pending_at") or 0):
        first.setdefault(track["name"], track)
    names = sorted(first)
    for name, track in first.items():
        color = colors(names.index(name) % 10)
        for ax in axes:
            for key, style in (("pending_at", "--"), ("firing_at", "-"), ("resolved_at", ":")):
                if track.get(key) and (key != "resolved_at" or track.get("firing_at")):
                    ax.axvline(track[key] - start, color=color, linestyle=style, linewidth=1)
    for i, name in enumerate(names):
        axes[0].plot([], [], color=colors(i % 10), label=name)
    if names:
        axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    axes[-1].set_xlabel(
        "seconds since the scenario started (fault window shaded; alerts: - - pending, "
        "— firing, ··· resolved)",
        fontsize=8,
    )
    return _svg(figure)


def write_gameday_html(report: GamedayReport, path: Path) -> None:
    parts = []
    for s in report.scenarios:
        rows = [
            [
                _td(e["alert"] + ("" if e["fires"] else " (quiet)")),
                _td(e["verdict"], css=e["verdict"]),
                _td(_seconds(e["detected_after_s"]), True),
                _td(_seconds(e["resolved_after_s"]), True),
                _td(e["source"] or ""),
                _td(e.get("reason") or ""),
            ]
            for e in s.get("expectations", [])
        ]
        faults = ", ".join(_fault(f) for f in s.get("faults", [])) or "none"
        parts.append(
            f"<h2 class='{s['verdict']}'>{html.escape(s['name'])}: {s['verdict']}</h2>"
            f"<p>{html.escape(s.get('description') or '')} Faults: {html.escape(faults)}.</p>"
            + timeline(s)
            + _table(["alert", "verdict", "detected", "resolved", "source", "why"], rows)
        )
    coverage = report.coverage
    matrix = _table(
        ["scenario", "failure mode", *coverage.rules],
        [
            [_td(s.name), _td(s.failure_mode or "")]
            + [
                _td(
                    CELL[coverage.cell(s, r)][0],
                    css=coverage.cell(s, r).replace("missed", "failed"),
                )
                for r in coverage.rules
            ]
            for s in coverage.scenarios
        ],
    )
    summary = "".join(
        f"<p><b>{label}:</b> {html.escape(', '.join(items) or 'none')}</p>"
        for label, items in (
            ("Blind spots", coverage.blind_spots),
            ("Rules no scenario set off", coverage.unexercised_rules),
            ("Noisy rules", coverage.noisy_rules),
        )
    )
    body = f"<h2>Coverage</h2>{matrix}{summary}{''.join(parts)}"
    path.write_text(_page(f"Game day {report.journal.data['run_id']}", body), encoding="utf-8")
