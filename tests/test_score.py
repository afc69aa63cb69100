"""chaosml score: the ML Test Score from journals and slice reports, by the rubric's rules
(½ held once, 1 held in two runs, 0 for no evidence kept apart from 0 for a gap; the final score
the minimum over sections), on journals written with the journal's own models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chaosml.cli import app
from chaosml.errors import InputError
from chaosml.gameday.journal import (
    Episode,
    ExpectationRecord,
    FaultRecord,
    Journal,
    PhaseRecord,
    RunRecord,
    ScenarioRecord,
)
from chaosml.report.score import scorecard


def _fault(kind: str) -> FaultRecord:
    return FaultRecord(
        type=kind,
        point="proxy",
        proxy="model",
        toxic=kind,
        stream="upstream",
        toxicity=1.0,
        effect="took_effect",
    )


def _scenario(name: str, mode: str, expect: list[ExpectationRecord], t0: float) -> ScenarioRecord:
    return ScenarioRecord(
        name=name,
        failure_mode=mode,
        faults=[_fault("missing_values")],
        expectations=expect,
        verdict="passed" if all(e.verdict == "passed" for e in expect) else "failed",
        started_at=t0,
        injected_at=t0 + 3,
        rolled_back_at=t0 + 15,
        ended_at=t0 + 20,
        phases=[PhaseRecord(name="fault", start=t0 + 3, end=t0 + 15, planned_s=12)],
        alerts=[
            Episode(
                source="prometheus",
                name=e.alert,
                firing_at=t0 + 3 + e.detected_after_s,
                resolved_at=t0 + 15 + (e.resolved_after_s or 0),
            )
            for e in expect
            if e.detected_after_s is not None
        ],
    )


def _run(folder: Path, run_id: str, t0: float, *, nulls_fire: bool) -> Path:
    fired = ExpectationRecord(
        alert="FeatureMissingRateHigh",
        verdict="passed",
        detected_after_s=4.6,
        resolved_after_s=1.6,
        within_s=12,
        resolves_within_s=15,
    )
    missed = ExpectationRecord(
        alert="FeatureMissingRateHigh",
        verdict="failed",
        reason="not fired within its 12 s deadline",
        within_s=12,
    )
    run = RunRecord(
        run_id=run_id,
        started_at=t0,
        ended_at=t0 + 60,
        scenarios=[
            _scenario("income-nulls", "feature_nulls", [fired if nulls_fire else missed], t0),
            _scenario("null-answers", "null_predictions", [], t0 + 20),  # a blind spot
        ],
    )
    folder.mkdir(parents=True)
    Journal(folder, run).save()
    return folder


def _report(path: Path, payload: dict[str, object]) -> Path:
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def test_points_follow_the_rubric_and_a_gap_is_not_no_evidence(tmp_path: Path) -> None:
    one = _run(tmp_path / "runs" / "a", "a", 1000.0, nulls_fire=True)
    card = scorecard([one])
    by = {t.test: t for t in card.tests}
    assert (by["monitoring.2"].points, by["monitoring.2"].status) == (0.5, "once")
    assert (by["infrastructure.7"].points, by["infrastructure.7"].status) == (0.5, "once")
    assert (by["monitoring.5"].points, by["monitoring.5"].status) == (0.0, "gap")
    # the gap names its scenario and its run
    assert (by["monitoring.5"].note or "").endswith(
        "null-answers: blind spot: the fault acted and no alert fired"
    )
    assert [e.source for e in by["monitoring.5"].evidence] == ["a"]
    assert (by["data.1"].points, by["data.1"].status) == (0.0, "no evidence")
    assert card.score == 0.0  # the data section has no evidence at all
    assert card.section_score("monitoring") == 1.0  # monitoring.1 and .2 at ½ each

    two = _run(tmp_path / "runs" / "b", "b", 2000.0, nulls_fire=True)
    by = {t.test: t for t in scorecard([one, two]).tests}
    assert (by["monitoring.2"].points, by["monitoring.2"].status) == (1.0, "automated")

    # the latest run decides: an alert that stopped firing is a gap, whatever held before
    three = _run(tmp_path / "runs" / "c", "c", 3000.0, nulls_fire=False)
    by = {t.test: t for t in scorecard([one, two, three]).tests}
    assert (by["monitoring.2"].points, by["monitoring.2"].status) == (0.0, "gap")


def test_slice_reports_and_manual_evidence_count_and_the_minimum_is_the_score(
    tmp_path: Path,
) -> None:
    compare = _report(
        tmp_path / "compare.json",
        {
            "schema": "chaosml.slices.compare/2",
            "v1": "v1",
            "v2": "served",
            "passed": False,
            "regressed": ["region=APAC"],
            "equivalence": {"equivalent": False, "tolerance": 1e-6},
        },
    )
    tests = _report(
        tmp_path / "test.json",
        {
            "schema": "chaosml.slices.test/1",
            "version": "v2",
            "tests": [
                {"test": "selection_rate by sex: max_difference 0.05", "status": "failed"},
                {"test": "recall on young >= 0.6", "status": "passed"},
            ],
        },
    )
    manual = tmp_path / "manual.yaml"
    manual.write_text(
        "manual:\n"
        + "".join(
            f"  {section}.{i}: {{points: 1, evidence: reviewed}}\n"
            for section in ("data", "model", "infrastructure", "monitoring")
            for i in range(1, 8)
        ),
        encoding="utf-8",
    )
    card = scorecard([compare, tests], manual)
    by = {t.test: t for t in card.tests}
    assert (
        by["monitoring.3"].status == "once"
        and "not equivalent" in by["monitoring.3"].evidence[0].what
    )
    assert by["infrastructure.4"].points == 0.5
    assert by["model.6"].points == 0.5 and by["model.7"].points == 0.5
    assert by["data.1"].status == "manual" and by["data.1"].points == 1.0
    # every section: 6 manual points, one ½ from evidence at most; the lowest is data (7)
    assert card.score == min(card.section_score(s) for s in card.sections)
    assert card.to_dict()["schema"] == "chaosml.score/1"


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    wrong = _report(tmp_path / "other.json", {"schema": "something/1"})
    with pytest.raises(InputError, match=r"other.json: schema 'something/1' is not"):
        scorecard([wrong])
    typo = tmp_path / "typo.yaml"
    typo.write_text("failure_modes: {feature_nulls: [monitoring.9]}\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"unknown rubric test 'monitoring.9'"):
        scorecard([], typo)
    damaged = tmp_path / "runs" / "damaged"
    damaged.mkdir(parents=True)
    (damaged / "journal.json").write_text(
        json.dumps({"schema": "chaosml.journal/2", "run_id": 3}), encoding="utf-8"
    )
    truncated = tmp_path / "truncated.json"
    truncated.write_text('{"schema": "chaosml.journal/2", "run', encoding="utf-8")
    for bad in (tmp_path / "missing", wrong, damaged, truncated):
        result = CliRunner().invoke(app, ["score", str(bad)])
        assert result.exit_code == 2, (bad, result.output)
        assert result.output.strip().count("\n") == 0, result.output
        assert bad.name in result.output, result.output


def test_the_html_page_has_every_section(tmp_path: Path) -> None:
    from chaosml.report.score import write_score_html

    card = scorecard([_run(tmp_path / "runs" / "a", "a", 1000.0, nulls_fire=True)])
    write_score_html(card, tmp_path / "score.html")
    page = (tmp_path / "score.html").read_text(encoding="utf-8")
    assert page.count("<table>") == 4 and "blind spot" in page
