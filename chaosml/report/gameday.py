"""Game-day reports: the terminal summary and coverage matrix, a live display during the run,
JUnit (one testcase per expectation) and HTML (a timeline per scenario, and the matrix)."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from chaosml.alerts.base import NOISE_LABELS
from chaosml.gameday.coverage import Coverage, GamedayReport
from chaosml.gameday.journal import (
    Episode,
    ExpectationRecord,
    FaultRecord,
    Outage,
    ScenarioRecord,
)
from chaosml.report._html import _page, _svg, _table, _td
from chaosml.report._junit import _case, _write

VERDICT = {"passed": "green", "failed": "bold red", "unknown": "yellow", "running": "yellow"}
CELL = {
    "fired": ("✓", "green"),
    "missed": ("✗", "bold red"),
    "unknown": ("?", "yellow"),
    "steady": ("~", "yellow"),
    "noise": ("!", "yellow"),
    "": ("", ""),
}
LEGEND = (
    "✓ fired as expected, ✗ an expectation on it failed, ? an expectation on it not observed "
    "(unknown), ~ already firing when the fault began, ! fired where nobody expected it"
)


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} s"


def _when(at: float | None) -> str:
    if at is None:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def heading(report: GamedayReport) -> str:
    """Target, date, time scale and seed of the run, in one line."""
    run = report.journal.run
    target = run.target.get("name") or "target"
    where = f"{target} ({run.target_file})" if run.target_file else target
    return (
        f"Game day {run.run_id} against {where}, {_when(run.started_at)}, "
        f"time scale {run.time_scale:g}, seed {run.seed}"
    )


def totals(report: GamedayReport) -> str:
    """``N of M scenarios passed`` and the other verdicts."""
    counts = report.counts()
    total = len(report.scenarios)
    others = ", ".join(
        f"{counts[v]} {v}" for v in ("failed", "unknown", "running") if counts.get(v)
    )
    text = f"{counts.get('passed', 0)} of {total} scenarios passed" + (
        f" ({others})" if others else ""
    )
    interrupted = report.interrupted or report.journal.run.interrupted
    return text + (f"; interrupted: {interrupted}" if interrupted else "")


def render_gameday(report: GamedayReport, console: Console) -> None:
    console.print(heading(report), highlight=False, markup=False)
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
        faults = Text("\n".join(f.describe() for f in s.faults) or "none")
        rows: list[ExpectationRecord | None] = list(s.expectations) or [None]
        for i, e in enumerate(rows):
            first = i == 0
            verdict: Text | str
            if e is None:
                expectation, verdict, detected, resolved, source = "(none)", "", "", "", ""
            else:
                expectation = e.describe()
                verdict = Text(e.verdict, style=VERDICT[e.verdict])
                detected = _seconds(e.detected_after_s) if e.fires else ""
                resolved = _seconds(e.resolved_after_s) if e.fires else ""
                source = e.source or ""
            name = Text(s.name, style=VERDICT.get(s.verdict, "")) if first else Text("")
            table.add_row(
                name,
                faults if first else "",
                Text(expectation),
                verdict,
                detected,
                resolved,
                source,
            )
        for note in notes(s):
            table.add_row("", "", Text(note, style="dim"), "", "", "", "")
    console.print(table)
    for outage in report.journal.run.outages:
        console.print(
            f"[yellow]unreachable:[/yellow] {escape(describe_outage(outage))}", highlight=False
        )
    for note in report.journal.run.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    render_coverage(report.coverage, console)
    console.print(
        f"{totals(report)}. Journal: {report.journal.path}", highlight=False, markup=False
    )


def describe_outage(outage: Outage) -> str:
    end = "the end of the run" if outage.end is None else _when(outage.end)
    return (
        f"{outage.source} from {_when(outage.start)} to {end} ({outage.polls} failed polls: "
        f"{outage.error})"
    )


def notes(scenario: ScenarioRecord, *, expectations: bool = True) -> list[str]:
    """What a reader needs besides the verdicts: why an expectation did not pass, a stop, an
    interruption, an error, what the faults did, a load under plan, alerts already on."""
    found = []
    if scenario.verdict == "running":
        left = [f.describe() for f in scenario.faults if f.added_at and not f.removed_at]
        found.append(
            "did not finish: the run stopped before this scenario ended"
            + (
                f"; faults it left active (until their lease ran out): {', '.join(left)}"
                if left
                else ""
            )
        )
    for e in scenario.expectations if expectations else []:
        if e.verdict != "passed" and e.reason:
            found.append(f"{e.alert}: {e.reason}")
    if scenario.stopped_by:
        found.append(f"stopped: {scenario.stopped_by} held; rolled back")
    if scenario.detected_early and (phase := scenario.phase("fault")) is not None:
        ran = (phase.end or phase.start) - phase.start
        found.append(
            f"fault ended once every expected alert fired: {ran:.1f} s of its "
            f"{phase.planned_s or 0:g} s (--until-detected)"
        )
    if scenario.interrupted:
        found.append("interrupted; rolled back")
    if scenario.reason:
        found.append(scenario.reason)
    for fault in scenario.faults:
        if fault.effect in ("no_effect", "off_rate"):
            found.append(f"{fault.type}: did not act as asked: {fault.effect_reason}")
        elif fault.effect_reason and (fault.evidence is None or fault.evidence.skipped):
            found.append(f"{fault.type}: {fault.effect_reason}")
        if fault.error and fault.effect != "not_measured":
            found.append(f"{fault.type}: {fault.error}")
    if scenario.load_shortfall:
        found.append(scenario.load_shortfall)
    if scenario.steady_state:
        found.append("already firing when the fault began: " + ", ".join(scenario.steady_state))
    return found


def render_coverage(coverage: Coverage, console: Console) -> None:
    matrix = Table(title=f"Alert coverage ({LEGEND})", title_justify="left", header_style="bold")
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
    for label, items in _findings(coverage):
        if items:
            console.print(f"[bold]{label}:[/bold] {escape(', '.join(items))}", highlight=False)


def _findings(coverage: Coverage) -> list[tuple[str, list[str]]]:
    steady = [
        f"{rule} (in {name})" for name, rules in coverage.steady_state.items() for rule in rules
    ]
    return [
        ("Blind spots (the faults acted and no alert fired)", coverage.blind_spots),
        ("Expected alerts that are not rules of the target", coverage.missing_rules),
        ("Failure modes no rule covers", coverage.uncovered_failure_modes),
        ("Rules no scenario set off", coverage.unexercised_rules),
        ("Noisy rules (fired where not expected)", coverage.noisy_rules),
        ("Already firing when a fault began (a steady-state finding)", steady),
    ]


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
            upto = "up to " if name == "recovery" else ""  # it ends once alerts resolve
            self.console.print(f"  {name} ({upto}{seconds:.1f} s)", highlight=False)
        self._refresh()

    def tick(self, figures: dict[str, Any]) -> None:
        self.figures = figures
        self._refresh()

    def alert(self, event: dict[str, Any]) -> None:
        if "alert" in event:
            labels = ",".join(
                f"{k}={v}" for k, v in event["labels"].items() if k not in NOISE_LABELS
            )
            line = f"  {event['source']}: {event['alert']}{{{labels}}} {event['state']}"
        else:  # a source became unreachable, or reachable again
            line = f"  {event['source']}: {event['state']} ({event['error']})"
        self.alerts.append(line)
        if not self.interactive:
            self.console.print(line, highlight=False, markup=False)
        self._refresh()

    def finished(self, record: ScenarioRecord) -> None:
        if not self.interactive:
            self.console.print(f"  → {record.verdict}", highlight=False)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def write_gameday_junit(report: GamedayReport, path: Path) -> None:
    """One testcase per expectation: a failure only for ``failed``; ``unknown`` is an error when
    a component was unreachable, else skipped, with its reason."""
    suites = []
    for s in report.scenarios:
        classname = f"chaosml.gameday.{s.name}"
        cases = [
            _case(
                classname,
                f"{e.alert} {'fires' if e.fires else 'stays quiet'}",
                _status(e),
                _detail(e),
            )
            for e in s.expectations
        ]
        if not cases or s.cut_short:
            status = "passed" if not s.cut_short and s.verdict == "passed" else "skipped"
            if s.unreachable:
                status = "error"
            detail = s.cut_short or "no expectations"
            cases.append(_case(classname, "scenario", status, detail))
        suites.append((s.name, cases))
    _write(path, *suites)


def _status(e: ExpectationRecord) -> str:
    if e.verdict == "unknown":
        return "error" if e.unreachable else "skipped"
    return e.verdict


def _detail(e: ExpectationRecord) -> str:
    if e.reason:
        return e.reason
    if e.fires:
        return (
            f"detected after {_seconds(e.detected_after_s)}, resolved after "
            f"{_seconds(e.resolved_after_s)} ({e.source})"
        )
    return "stayed quiet"


def timeline(scenario: ScenarioRecord) -> str:
    """The scenario over time as inline SVG: rps, error rate and p95 (from Locust), the fault
    window shaded, and when each alert went pending (dashed) and fired (solid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = scenario.started_at
    ticks = scenario.load
    figure, axes = plt.subplots(3, 1, figsize=(9, 4.8), sharex=True)
    series = (("rps", "req/s", 1), ("error_rate", "errors %", 100), ("p95_ms", "p95 ms", 1))
    xs = [(t.t or start) - start for t in ticks]
    for ax, (key, label, factor) in zip(axes, series, strict=True):
        ax.plot(xs, [(getattr(t, key) or 0) * factor for t in ticks], color="#1f4e79", linewidth=1)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        if scenario.injected_at is not None:
            end = scenario.rolled_back_at or scenario.ended_at or scenario.injected_at
            ax.axvspan(scenario.injected_at - start, end - start, color="#f4b183", alpha=0.35)
    colors = plt.get_cmap("tab10")
    first: dict[str, Episode] = {}  # per alert, the episode its earliest source saw
    for track in sorted(scenario.alerts, key=lambda t: t.pending_at or 0):
        first.setdefault(track.name, track)
    names = sorted(first)
    for name, track in first.items():
        color = colors(names.index(name) % 10)
        for ax in axes:
            for key, style in (("pending_at", "--"), ("firing_at", "-"), ("resolved_at", ":")):
                at = getattr(track, key)
                if at and (key != "resolved_at" or track.firing_at):
                    ax.axvline(at - start, color=color, linestyle=style, linewidth=1)
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


PAGE_STYLE = (
    "<style>.unknown{color:#a66b00;font-weight:600}.steady,.noise{color:#a66b00}"
    ".blind{color:#b00020;font-weight:600}.scroll{overflow-x:auto;max-width:100%}"
    ".scroll th{white-space:nowrap}</style>"
)


def write_gameday_html(report: GamedayReport, path: Path) -> None:
    """The record of the day: what ran where and when, every verdict with its reason, what each
    fault did, a timeline per scenario, and the coverage matrix with its legend."""
    run = report.journal.run
    esc = html.escape
    head = (
        f"<p>{esc(heading(report))}.</p><p><b>{esc(totals(report))}.</b> "
        f"Journal: {esc(str(report.journal.path))}</p>"
    )
    for outage in run.outages:
        head += f"<p class='unknown'>unreachable: {esc(describe_outage(outage))}</p>"
    head += "".join(f"<p class='note'>note: {esc(n)}</p>" for n in run.notes)
    blind = set(report.coverage.blind_spots)
    parts = []
    for s in report.scenarios:
        rows = [
            [
                _td(e.describe()),
                _td(e.verdict, css=e.verdict),
                _td(_seconds(e.detected_after_s), True),
                _td(_seconds(e.resolved_after_s), True),
                _td(e.source or ""),
                _td(e.reason or ""),
            ]
            for e in s.expectations
        ]
        faults = _table(
            ["fault", "effect", "what it did"],
            [
                [_td(f.describe()), _td(f.effect or "", css=_effect_css(f.effect)), _td(_did(f))]
                for f in s.faults
            ],
        )
        mark = " — BLIND SPOT" if s.name in blind else ""
        title = f"{esc(s.name)}: {esc(s.verdict)}{mark}"
        css = "blind" if mark else s.verdict
        extra = "".join(f"<p class='note'>{esc(n)}</p>" for n in notes(s, expectations=False))
        parts.append(
            f"<h2 class='{css}'>{title}</h2><p>{esc(s.description)}</p>{faults}{extra}"
            + timeline(s)
            + _table(["expectation", "verdict", "detected", "resolved", "source", "why"], rows)
        )
    coverage = report.coverage
    matrix = _table(
        ["scenario", "failure mode", *coverage.rules],
        [
            [
                _td(s.name, css="blind" if s.name in blind else ""),
                _td((s.failure_mode or "") + (" BLIND SPOT" if s.name in blind else "")),
            ]
            + [
                _td(CELL[coverage.cell(s, r)][0], css=_cell_css(coverage.cell(s, r)))
                for r in coverage.rules
            ]
            for s in coverage.scenarios
        ],
    )
    summary = "".join(
        f"<p><b>{esc(label)}:</b> {esc(', '.join(items) or 'none')}</p>"
        for label, items in _findings(coverage)
    )
    body = (
        f"{PAGE_STYLE}{head}<h2>Coverage</h2><p class='legend'>{esc(LEGEND)}</p>"
        f"<div class='scroll'>{matrix}</div>{summary}{''.join(parts)}"
    )
    path.write_text(_page(f"Game day {run.run_id}", body), encoding="utf-8")


def _did(fault: FaultRecord) -> str:
    evidence = fault.evidence
    if evidence is None:
        return fault.error or "not measured"
    text = f"hit {evidence.hits} of {evidence.rolls} requests"
    if evidence.changed:
        text += "; changed " + ", ".join(f"{n} {c}" for c, n in evidence.changed.items())
    if fault.effect_reason:
        text += f"; {fault.effect_reason}"
    return text


def _effect_css(effect: str | None) -> str:
    return {"took_effect": "passed", "no_effect": "unknown", "off_rate": "unknown"}.get(
        effect or "", ""
    )


def _cell_css(cell: str) -> str:
    return {"fired": "passed", "missed": "failed"}.get(cell, cell)
