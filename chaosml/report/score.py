"""The ML Test Score, filled in from what game days and slice runs proved.

Each of the rubric's 28 tests (``rubric.yaml``, with which chaosml evidence counts for which test)
gets 0, ½ or 1 by the rubric's own rule: ½ for a test done by hand and documented, 1 for one that is
automated and repeated. chaosml's evidence is automated (a command produced it), so a test scores 1
when its evidence holds in at least two runs, ½ when in one. A test scores 0 in two distinct ways:
*no evidence* (nothing chaosml read speaks to it) and *evidence of a gap* (the latest evidence
shows the test's check missing: a blind spot, an expected alert that did not fire or did not
resolve). A section's score is the sum of its tests; the final score is the minimum over the four
sections, read against the paper's bands.

Evidence is read from game-day journals (a run folder or its ``journal.json``) and slice reports
(``--json`` output of ``slices test`` and ``slices compare``). A game-day verdict of ``unknown``
is not evidence either way. For the slice half, having run the check is the evidence (the rubric
scores whether the test is in place); what it found is shown beside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from chaosml.errors import InputError

RUBRIC = Path(__file__).with_name("rubric.yaml")
Outcome = Literal["held", "gap"]
# The paper's interpretation of the final score (its Table V)
BANDS = (
    (0.0, "More of a research project than a productionized system."),
    (1.0, "Not totally untested, but it is worth considering the possibility of serious holes."),
    (2.0, "There's been first pass at basic productionization, but more investment may be needed."),
    (3.0, "Reasonably tested, but more of those tests and procedures may be automated."),
    (5.0, "Strong levels of automated testing and monitoring, for mission-critical systems."),
    (float("inf"), "Exceptional levels of automated testing and monitoring."),
)


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """One finding that speaks to a rubric test: what held (or showed a gap), where, when."""

    test: str
    outcome: Outcome
    source: str  # the run id or report file
    what: str  # e.g. "income-nulls: FeatureMissingRateHigh fired after 4.6 s"
    at: float  # when (the run's start, the report file's time)
    run: str  # what counts as one run, for "repeated"


@dataclass(kw_only=True)
class TestScore:
    test: str
    title: str
    points: float
    status: Literal["automated", "once", "manual", "gap", "no evidence"]
    evidence: list[Evidence] = field(default_factory=list)
    note: str | None = None


@dataclass(kw_only=True)
class Scorecard:
    sections: dict[str, str]
    tests: list[TestScore]
    sources: list[str]

    def section_score(self, section: str) -> float:
        return sum(t.points for t in self.tests if t.test.split(".")[0] == section)

    @property
    def score(self) -> float:
        return min(self.section_score(s) for s in self.sections)

    @property
    def band(self) -> str:
        return next(text for bound, text in BANDS if self.score <= bound)

    @property
    def passed(self) -> bool:
        return True  # a score is a reading, not a gate

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "chaosml.score/1",
            "score": self.score,
            "band": self.band,
            "sections": {
                name: {"title": title, "score": self.section_score(name)}
                for name, title in self.sections.items()
            },
            "tests": [
                {
                    "test": t.test,
                    "title": t.title,
                    "points": t.points,
                    "status": t.status,
                    "note": t.note,
                    "evidence": [e.__dict__ for e in t.evidence],
                }
                for t in self.tests
            ],
            "sources": self.sources,
        }


def load_rubric(mapping: Path | None = None) -> dict[str, Any]:
    """The packaged rubric and mapping, with the keys of ``mapping`` (a YAML file) replacing
    theirs."""
    rubric = dict(yaml.safe_load(RUBRIC.read_text(encoding="utf-8")))
    if mapping is None:
        return rubric
    try:
        override = yaml.safe_load(mapping.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{mapping}: cannot read the mapping: {exc}") from exc
    if not isinstance(override, dict):
        raise InputError(f"{mapping}: expected a mapping of rubric keys (failure_modes, ...)")
    unknown = set(override) - {*rubric, "manual"}
    if unknown:
        raise InputError(
            f"{mapping}: unknown key(s) {', '.join(sorted(unknown))} "
            f"(expected: {', '.join([*rubric, 'manual'])})"
        )
    rubric.update(override)
    for name, tests in _listed(rubric).items():
        for test in tests:
            if test not in rubric["tests"]:
                raise InputError(f"{mapping}: {name}: unknown rubric test {test!r}")
    return rubric


def _listed(rubric: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key in ("failure_modes", "slices"):
        for name, tests in (rubric.get(key) or {}).items():
            out[f"{key}.{name}"] = list(tests)
    out["rollback"] = list(rubric.get("rollback") or [])
    out.update({f"manual.{k}": [k] for k in rubric.get("manual") or {}})
    return out


def read_evidence(paths: list[Path], rubric: dict[str, Any]) -> tuple[list[Evidence], list[str]]:
    """Every finding in ``paths`` (run folders, journals, slice JSON reports), and the sources."""
    found: list[Evidence] = []
    sources: list[str] = []
    for path in paths:
        kind, data = _read(path)
        sources.append(f"{path} ({kind})")
        if kind == "journal":
            found += _game_day(data, rubric)
        else:
            found += _slices(kind, data, path, rubric)
    return found, sources


def _read(path: Path) -> tuple[str, Any]:
    from chaosml.gameday.journal import load_journal  # the game-day half only when read

    file = path / "journal.json" if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"{path}: not a run folder, a journal or a slice report (no such file)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{file}: not JSON: {exc}") from exc
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema == "chaosml.journal/2":
        return "journal", load_journal(file)
    if schema in ("chaosml.slices.compare/2", "chaosml.slices.test/1"):
        data["_at"] = file.stat().st_mtime
        return schema.split(".")[2].split("/")[0], data
    raise InputError(
        f"{file}: schema {schema!r} is not a game-day journal (chaosml.journal/2) nor a slice "
        "report (chaosml.slices.compare/2, chaosml.slices.test/1)"
    )


def _game_day(journal: Any, rubric: dict[str, Any]) -> list[Evidence]:
    from chaosml.gameday.coverage import coverage

    run = journal.run
    modes = rubric.get("failure_modes") or {}
    covered = {c.name: c for c in coverage(journal).scenarios}
    found = []
    for record in run.scenarios:
        tests = modes.get(record.failure_mode or "", [])
        cell = covered.get(record.name)

        def add(test: str, outcome: Outcome, what: str, record: Any = record) -> None:
            found.append(
                Evidence(
                    test=test,
                    outcome=outcome,
                    source=run.run_id,
                    what=f"{record.name}: {what}",
                    at=run.started_at,
                    run=run.run_id,
                )
            )

        if cell is not None and cell.blind_spot:
            for test in tests:
                add(test, "gap", "blind spot: the fault acted and no alert fired")
            continue
        for e in record.expectations:
            if not e.fires or e.verdict == "unknown":
                continue
            if e.verdict == "passed" or e.detected_after_s is not None:
                seen = f"{e.describe()} fired after {e.detected_after_s:.1f} s"
                for test in tests:
                    add(test, "held", seen)
            else:
                for test in tests:
                    add(test, "gap", f"{e.describe()} did not fire ({e.reason})")
            if e.detected_after_s is None:
                continue
            for test in rubric.get("rollback") or []:
                if e.resolved_after_s is not None and e.verdict == "passed":
                    add(
                        test,
                        "held",
                        f"{e.describe()} resolved {e.resolved_after_s:.1f} s after rollback",
                    )
                elif e.verdict == "failed":
                    add(test, "gap", f"{e.describe()}: {e.reason}")
    return found


def _slices(kind: str, data: dict[str, Any], path: Path, rubric: dict[str, Any]) -> list[Evidence]:
    mapping = rubric.get("slices") or {}
    at, name = float(data["_at"]), path.name

    def evidence(key: str, what: str) -> list[Evidence]:
        return [
            Evidence(test=test, outcome="held", source=name, what=what, at=at, run=f"{name}@{at}")
            for test in mapping.get(key, [])
        ]

    if kind == "test":
        tests = data.get("tests") or []
        failed = sum(t.get("status") == "failed" for t in tests)
        found = evidence("test", f"{len(tests)} slice tests of {data['version']}, {failed} failed")
        fairness = [
            t
            for t in tests
            if "max_difference" in t.get("test", "") or "min_ratio" in t.get("test", "")
        ]
        if fairness:
            unfair = sum(t.get("status") == "failed" for t in fairness)
            found += evidence("fairness", f"{len(fairness)} tests across groups, {unfair} failed")
        return found
    verdict = (
        "no slice regressed"
        if data.get("passed")
        else f"regressed: {', '.join(data.get('regressed') or [])}"
    )
    found = evidence("compare", f"{data['v2']} against {data['v1']}: {verdict}")
    if (eq := data.get("equivalence")) is not None:
        said = "equivalent" if eq["equivalent"] else "not equivalent"
        found += evidence(
            "equivalence",
            f"{data['v2']} against {data['v1']}: {said} (tolerance {eq['tolerance']:g})",
        )
    return found


def scorecard(paths: list[Path], mapping: Path | None = None) -> Scorecard:
    rubric = load_rubric(mapping)
    found, sources = read_evidence(paths, rubric)
    manual = rubric.get("manual") or {}
    tests = []
    for test, title in rubric["tests"].items():
        items = sorted((e for e in found if e.test == test), key=lambda e: e.at)
        tests.append(_score(test, title, items, manual.get(test)))
    return Scorecard(sections=dict(rubric["sections"]), tests=tests, sources=sources)


def _score(test: str, title: str, items: list[Evidence], manual: Any) -> TestScore:
    if items:
        latest_run = items[-1].run
        latest = [e for e in items if e.run == latest_run]
        gaps = [e for e in latest if e.outcome == "gap"]
        if gaps:
            return TestScore(
                test=test,
                title=title,
                points=0.0,
                status="gap",
                evidence=items,
                note=f"the latest evidence shows a gap: {gaps[0].what}",
            )
        runs = {e.run for e in items if e.outcome == "held"}
        if len(runs) >= 2:
            return TestScore(test=test, title=title, points=1.0, status="automated", evidence=items)
        return TestScore(
            test=test,
            title=title,
            points=0.5,
            status="once",
            evidence=items,
            note="held in one run: repeat it (in CI, on a schedule) for the full point",
        )
    if manual is not None:
        points = float(manual.get("points", 0.5)) if isinstance(manual, dict) else 0.5
        text = manual.get("evidence") if isinstance(manual, dict) else str(manual)
        return TestScore(
            test=test,
            title=title,
            points=min(max(points, 0.0), 1.0),
            status="manual",
            note=f"declared: {text}",
        )
    return TestScore(test=test, title=title, points=0.0, status="no evidence")


def render_score(card: Scorecard, console: Any) -> None:
    """Per section, each test with its points, status and first piece of evidence."""
    from rich.table import Table
    from rich.text import Text

    styles = {"automated": "green", "once": "yellow", "manual": "cyan", "gap": "bold red"}
    for section, title in card.sections.items():
        table = Table(title=f"{title}: {card.section_score(section):g} of 7", title_justify="left")
        for header in ("test", "points", "status", "evidence"):
            table.add_column(header, overflow="fold")
        for t in (t for t in card.tests if t.test.startswith(section + ".")):
            said = t.note or ""
            if t.evidence:
                last = t.evidence[-1]
                said = f"{last.what} [{last.source}]"
                if t.note and last.what not in t.note:  # a gap's note is its latest evidence
                    said += f"; {t.note}"
            table.add_row(
                Text(f"{t.test} {t.title}"),
                f"{t.points:g}",
                Text(t.status, style=styles.get(t.status, "dim")),
                Text(said),
            )
        console.print(table)
    console.print(
        Text(f"ML Test Score: {card.score:g} (the lowest section). {card.band}", style="bold")
    )


def write_score_html(card: Scorecard, path: Path) -> None:
    """The score card as a page: per section its tests, points, status and evidence."""
    import html

    from chaosml.report._html import _page, _table, _td

    css = {"gap": "failed", "automated": "passed", "once": "skipped", "no evidence": "unchanged"}
    parts = [
        f"<p><b>ML Test Score: {card.score:g}</b> (the lowest section). {html.escape(card.band)}</p>"
    ]
    for section, title in card.sections.items():
        rows = [
            [
                _td(f"{t.test} {t.title}"),
                _td(f"{t.points:g}", True),
                _td(t.status, css=css.get(t.status, "")),
                _td("; ".join(f"{e.what} [{e.source}]" for e in t.evidence) or (t.note or "")),
            ]
            for t in card.tests
            if t.test.startswith(section + ".")
        ]
        parts.append(
            f"<h2>{html.escape(title)}: {card.section_score(section):g} of 7</h2>"
            + _table(["test", "points", "status", "evidence"], rows)
        )
    path.write_text(_page("chaosml score: the ML Test Score", "".join(parts)), encoding="utf-8")
