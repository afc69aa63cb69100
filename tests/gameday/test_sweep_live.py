"""A sweep against the reference stack: normal runs with journals, a threshold bracket for the
missing-rate alert, the loss per slice at each level offline, and a second sweep with the same
folder resuming from the journals instead of running again."""

from __future__ import annotations

from pathlib import Path

from chaosml.demo.train import DemoArtifacts
from chaosml.sweep import offline_harm, run_sweep
from tests.gameday.conftest import SCALE, scenario

SUITE = Path(__file__).parents[2] / "slices" / "credit.yaml"
ALERT = "FeatureMissingRateHigh{feature=income}"


def test_a_sweep_brackets_the_threshold_and_resumes(
    target: Path, demo: DemoArtifacts, tmp_path: Path
) -> None:
    nulls = scenario(
        tmp_path,
        name="nulls",
        faults=[{"type": "missing_values", "columns": ["income"], "rate": 0.6, "at": "proxy"}],
        phases={"steady": "20s", "fault": "3m", "recovery": "5m"},
        expect=[{"alert": "FeatureMissingRateHigh", "labels": {"feature": "income"}}],
    )
    harm, metric, max_drop = offline_harm(SUITE, "v2", None, demo.config)
    folder = tmp_path / "sweep"
    options = {"folder": folder, "low": 0.01, "high": 0.6, "time_scale": SCALE, "replicates": 1}
    sweep = run_sweep(
        nulls, target, max_runs=3, harm=harm, metric=metric, tolerance=max_drop, **options
    )
    assert [lv.value for lv in sweep.levels] == [0.01, 0.07746, 0.6]
    top = sweep.levels[-1]
    assert top.rate(ALERT) == 1.0 and top.median_ttd(ALERT) is not None
    assert sweep.levels[0].rate(ALERT) == 0.0  # 1% nulls: under the rule's threshold
    below, above = sweep.threshold(ALERT)
    assert above == 0.6 and below is not None and below < 0.6
    # harm grows with the rate of nulls, and is measured at every level tested
    worst = [max(lv.harm.values()) for lv in sweep.levels]
    assert worst == sorted(worst) and worst[-1] > worst[0]
    journals = sorted(folder.glob("runs/*/journal.json"))
    assert len(journals) == 3
    again = run_sweep(nulls, target, max_runs=3, **options)
    assert sorted(folder.glob("runs/*/journal.json")) == journals  # nothing ran again
    assert [lv.runs for lv in again.levels] == [lv.runs for lv in sweep.levels]
