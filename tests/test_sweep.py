"""The sweep's search, on a simulated detector whose true threshold is known (pure logic): the
bracket it reports holds the truth, the budget holds, unknown runs count as neither; and the
undetected-harm band, against a direct pandas computation at the same seeds."""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from chaosml.demo.data import make_credit
from chaosml.demo.harness import ReferenceStack
from chaosml.demo.train import DemoArtifacts
from chaosml.errors import InputError
from chaosml.sweep import Level, clopper_pearson, parameter, search, threshold, write_level

ALERT = "FeatureMissingRateHigh{feature=income}"


def detector(truth: float, rng: np.random.Generator, width: float = 0.01):  # type: ignore[no-untyped-def]
    """Detects with probability rising steeply through 0.5 at ``truth``."""
    count = iter(range(10**6))

    def run(level: float) -> tuple[str, dict[str, tuple[bool | None, float | None]]]:
        p = 1 / (1 + math.exp(-(level - truth) / width))
        hit = bool(rng.random() < p)
        return f"run-{next(count)}", {ALERT: (hit, 5.0 if hit else None)}

    return run


def test_the_bracket_holds_the_true_threshold_in_seeded_simulations() -> None:
    held, runs = 0, []
    trials = 200
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        truth = float(rng.uniform(0.05, 0.5))
        levels = search(detector(truth, rng), 0.01, 0.6, alert=ALERT, replicates=3, max_runs=30)
        below, above = threshold(levels, ALERT)
        runs.append(sum(len(lv.runs) for lv in levels))
        # the truth within the bracket, allowing the detector's own edge (a few widths)
        if below is not None and above is not None and below - 0.03 <= truth <= above + 0.03:
            held += 1
    assert held / trials >= 0.9, held
    assert max(runs) <= 30


def test_no_detection_at_the_top_stops_at_once_and_unknowns_count_as_neither() -> None:
    never = search(
        lambda level: ("r", {ALERT: (False, None)}), 0.01, 0.6, alert=ALERT, replicates=2
    )
    assert [lv.value for lv in never] == [0.6]
    assert threshold(never, ALERT) == (0.6, None)
    unknown = search(lambda level: ("r", {ALERT: (None, None)}), 0.01, 0.6, alert=ALERT)
    assert [lv.value for lv in unknown] == [0.6] and unknown[0].rate(ALERT) is None
    assert threshold(unknown, ALERT) == (None, None)
    always = search(lambda level: ("r", {ALERT: (True, 1.0)}), 0.01, 0.6, alert=ALERT)
    assert threshold(always, ALERT) == (None, 0.01)


def test_levels_carry_exact_intervals() -> None:
    level = Level(value=0.2, runs=["a", "b", "c"], seen={ALERT: 3}, detected={ALERT: 2})
    low, high = level.interval(ALERT) or (0.0, 0.0)
    assert (low, high) == pytest.approx(clopper_pearson(2, 3))
    # the textbook Clopper-Pearson interval for 2 of 3 at 95%
    assert low == pytest.approx(0.0943, abs=1e-4) and high == pytest.approx(0.9916, abs=1e-4)


def test_the_parameter_and_the_level_file(tmp_path: Path) -> None:
    source = tmp_path / "s.yaml"
    raw = {
        "name": "nulls",
        "load": {"data": "eval.parquet"},
        "faults": [{"type": "missing_values", "columns": ["income"], "rate": 0.6}],
    }
    assert parameter(raw, None) == (0, "rate", 0.6)
    assert parameter(raw, "faults[0].toxicity") == (0, "toxicity", 1.0)
    with pytest.raises(InputError, match=r"expected faults\[N\].attribute"):
        parameter(raw, "rate")
    with pytest.raises(InputError, match=r"has 1 fault"):
        parameter(raw, "faults[3].rate")
    with pytest.raises(InputError, match=r"no numeric 'columns'"):
        parameter(raw, "faults[0].columns")
    path = write_level(raw, source, 0, "rate", 0.15, tmp_path / "levels")
    written = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert written["faults"][0]["rate"] == 0.15 and written["name"] == "nulls-rate-0.15"
    assert written["load"]["data"] == str((tmp_path / "eval.parquet").resolve())
    assert raw["faults"][0]["rate"] == 0.6  # the file's own scenario is unchanged


def test_the_html_page_plots_detection_and_harm(tmp_path: Path) -> None:
    from chaosml.sweep import Sweep, write_sweep_html

    levels = [
        Level(value=0.05, runs=["a"], seen={ALERT: 1}, detected={ALERT: 0}, harm={"young": 0.03}),
        Level(
            value=0.3,
            runs=["b"],
            seen={ALERT: 1},
            detected={ALERT: 1},
            ttd={ALERT: [4.0]},
            harm={"young": 0.12},
        ),
    ]
    sweep = Sweep(
        scenario="s.yaml",
        param="faults[0].rate",
        low=0.05,
        high=0.3,
        alerts=[ALERT],
        levels=levels,
        metric="accuracy",
        tolerance=0.01,
    )
    assert sweep.undetected_harm(ALERT) == [(0.05, "young", 0.03)]
    write_sweep_html(sweep, tmp_path / "sweep.html")
    page = (tmp_path / "sweep.html").read_text(encoding="utf-8")
    assert "<svg" in page and "undetected harm at 0.05" in page and "threshold between 0.05" in page


def test_a_level_stops_once_its_majority_is_settled_and_width_is_absolute() -> None:
    calls: list[float] = []

    def steep(level: float) -> tuple[str, dict[str, tuple[bool | None, float | None]]]:
        calls.append(level)
        hit = level >= 0.3
        return f"run-{len(calls)}", {ALERT: (hit, 1.0 if hit else None)}

    levels = search(steep, 0.02, 0.6, alert=ALERT, replicates=3, max_runs=100, width=0.04)
    # two agreeing runs of three decide a level: a third could not change its majority
    assert all(len(level.runs) == 2 for level in levels)
    values = [level.value for level in levels]
    assert values == sorted(set(calls))
    below, above = threshold(levels, ALERT)
    assert below is not None and above is not None
    assert below < 0.3 <= above and above - below <= 0.04
    # arithmetic midpoints under an absolute width: 0.31 is the first, halfway
    assert calls[4] == 0.31
    # a split level runs its third replicate
    flips = iter([True, False, True] * 50)
    split = search(
        lambda level: ("r", {ALERT: (next(flips), None)}), 0.1, 0.2, alert=ALERT, max_runs=3
    )
    assert [len(level.runs) for level in split] == [3]


HARM_SUITE = """label: approved
min_size: 30
slices:
  - {name: young, where: "age < 25"}
  - {by: [employment]}
compare: {metric: accuracy, max_drop: 0.01}
"""


def pandas_losses(
    model: object, frame: pd.DataFrame, rate: float, index: int, seed: int
) -> dict[str, float]:
    """Accuracy lost per slice when ``income`` is nulled in a ``rate`` of rows, drawn as the
    offline path documents: one generator per block of 10,000 rows, seeded by (seed, the
    scenario's index, the block's first row); its first draw picks the rows the toxicity
    reaches (all of them at toxicity 1), its second those the rate nulls."""
    faulted = frame.copy()
    income = faulted["income"].to_numpy(copy=True)
    for lo in range(0, len(frame), 10_000):
        rng = np.random.default_rng([seed, index, lo])
        n = min(10_000, len(frame) - lo)
        rng.random(n)  # toxicity 1: every row
        income[lo : lo + n][rng.random(n) < rate] = np.nan
    faulted["income"] = income
    features = [c for c in frame.columns if c != "approved"]
    right_clean = model.predict(frame[features]) == frame["approved"]  # type: ignore[attr-defined]
    right_faulted = model.predict(faulted[features]) == frame["approved"]  # type: ignore[attr-defined]
    everyone = pd.Series(True, index=frame.index)
    slices = {"overall": everyone, "young": frame["age"] < 25} | {
        f"employment={value}": frame["employment"] == value
        for value in frame["employment"].unique()
    }
    return {
        name: float(right_clean[rows].mean() - right_faulted[rows].mean())
        for name, rows in slices.items()
    }


def test_the_harm_band_equals_a_direct_pandas_computation(
    demo: DemoArtifacts, tmp_path: Path
) -> None:
    from chaosml.sweep import Sweep, offline_harm
    from chaosml.versions import load_model

    frame = make_credit(12_000, seed=5)  # two blocks of fault draws, the second one short
    data = tmp_path / "eval.parquet"
    frame.to_parquet(data, index=False)
    (tmp_path / "suite.yaml").write_text(HARM_SUITE, encoding="utf-8")
    source = Path(__file__).parents[1] / "scenarios" / "income-nulls.yaml"
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    rates = [0.05, 0.15, 0.3, 0.6]
    paths = [write_level(raw, source, 0, "rate", r, tmp_path / "levels") for r in rates]
    harm, metric, max_drop = offline_harm(tmp_path / "suite.yaml", "v2", data, demo.config, seed=7)
    losses = harm(paths)
    model = load_model(demo.v2)
    for index, (rate, path) in enumerate(zip(rates, paths, strict=True)):
        expected = pandas_losses(model, frame, rate, index, seed=7)
        assert losses[path] == pytest.approx(expected, abs=1e-12), rate
    # detected from 0.3 up: the band is the levels below it where some slice loses > max_drop
    levels = [
        Level(
            value=rate,
            runs=["r"],
            seen={ALERT: 1},
            detected={ALERT: int(rate >= 0.3)},
            harm=losses[path],
        )
        for rate, path in zip(rates, paths, strict=True)
    ]
    sweep = Sweep(
        scenario=str(source),
        param="faults[0].rate",
        low=rates[0],
        high=rates[-1],
        alerts=[ALERT],
        levels=levels,
        metric=metric,
        tolerance=max_drop,
    )
    band = []
    for index, rate in enumerate(rates[:2]):
        worst = max(pandas_losses(model, frame, rate, index, seed=7).items(), key=lambda kv: kv[1])
        if worst[1] > max_drop:
            band.append((rate, worst[0], pytest.approx(worst[1], abs=1e-12)))
    assert sweep.undetected_harm(ALERT) == band
    assert band, "at 15% nulls some slice loses more than 0.01 accuracy: the band is not empty"


# --- against the reference stack ----------------------------------------------------------------

SCALE = 0.05  # the rules' for: and the scenario's phases, shortened 20 times
WINDOW = 500  # rows in the service's monitoring windows (the missing-rate gauge's)
# A deliberately insensitive copy of FeatureMissingRateHigh: the same gauge against 0.45.
INSENSITIVE = "FeatureMissingRateVeryHigh"


@pytest.fixture
def sweep_stack(demo: DemoArtifacts, tmp_path: Path) -> Iterator[tuple[ReferenceStack, Path]]:
    """A reference stack of its own (its own copy of the demo, so no other stack's monitoring
    data is touched) whose rules are FeatureMissingRateHigh and an insensitive copy of it."""
    from chaosml.demo.harness import ALERTMANAGER, PROMETHEUS, reference_stack
    from chaosml.demo.rules import RULES, Rule, rules_file
    from chaosml.demo.run import write_target
    from tests.live_servers import require_binaries

    require_binaries(PROMETHEUS, ALERTMANAGER)
    folder = tmp_path / "demo"
    folder.mkdir()
    for path in demo.folder.iterdir():
        if path.is_file():
            shutil.copy2(path, folder / path.name)
    normal = next(r for r in RULES if r.alert == "FeatureMissingRateHigh")
    insensitive = Rule(
        alert=INSENSITIVE,
        expr=normal.expr.replace("> 0.2", "> 0.45"),
        for_seconds=normal.for_seconds,
        summary=normal.summary,
        failure_mode=normal.failure_mode,
    )
    rules = tmp_path / "rules.yml"  # for: unscaled here: the harness scales it
    rules.write_text(yaml.safe_dump(rules_file(rules=(normal, insensitive))), encoding="utf-8")
    with reference_stack(folder, time_scale=SCALE, rules=rules, window=WINDOW) as stack:
        yield stack, write_target(stack, tmp_path / "target.yaml")


def implied_band(expr: str, clean_nulls: float) -> tuple[float, float]:
    """The fault rates at which ``gauge > threshold`` sits within three standard deviations of
    its edge: the gauge reads the clean nulls plus the fault's share of the other rows,
    ``q + (1 - q) r``, over a window of ``WINDOW`` rows (binomial noise)."""
    match = re.fullmatch(r"chaosml_model_feature_missing_rate > ([\d.]+)", expr)
    assert match is not None, expr
    edge = float(match.group(1))
    centre = (edge - clean_nulls) / (1 - clean_nulls)
    spread = 3 * math.sqrt(edge * (1 - edge) / WINDOW) / (1 - clean_nulls)
    return centre - spread, centre + spread


@pytest.mark.slow
def test_a_live_sweep_finds_each_alert_where_its_rule_implies(
    sweep_stack: tuple[ReferenceStack, Path], tmp_path: Path
) -> None:
    from chaosml.demo.rules import RULES
    from chaosml.sweep import run_sweep

    stack, target = sweep_stack
    source = Path(__file__).parents[1] / "scenarios" / "income-nulls.yaml"
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    raw["expect"].insert(1, {"alert": INSENSITIVE, "labels": {"feature": "income"}, "within": "4m"})
    scenario = tmp_path / "income-nulls.yaml"
    scenario.write_text(yaml.safe_dump(raw), encoding="utf-8")
    # one run per level: far from the edge detection is certain either way, and the bracket is
    # checked against a band three standard deviations wide; until detected ends each fault early
    sweep = run_sweep(
        scenario,
        target,
        folder=tmp_path / "sweep",
        low=0.02,
        high=0.6,
        time_scale=SCALE,
        replicates=1,
        max_runs=6,
        width=0.08,
    )
    assert sweep.interrupted is None
    normal, insensitive = (
        "FeatureMissingRateHigh{feature=income}",
        f"{INSENSITIVE}{{feature=income}}",
    )
    assert sweep.alerts == [normal, insensitive]
    clean_nulls = float(pd.read_parquet(stack.data, columns=["income"])["income"].isna().mean())
    rule = next(r for r in RULES if r.alert == "FeatureMissingRateHigh")
    low, high = implied_band(rule.expr, clean_nulls)
    below, above = sweep.threshold(normal)
    assert below is not None and above is not None, sweep.to_dict()
    assert below <= high and above >= low, (below, above, low, high)  # the bracket meets the band
    assert above - below <= 0.08
    # the insensitive rule, from the same runs: its bracket sits above the normal one's, and
    # meets its own band
    ins_low, ins_high = implied_band(rule.expr.replace("> 0.2", "> 0.45"), clean_nulls)
    ins_below, ins_above = sweep.threshold(insensitive)
    assert ins_below is not None and ins_above is not None, sweep.to_dict()
    assert ins_below >= above
    assert ins_below <= ins_high and ins_above >= ins_low, (ins_below, ins_above, ins_low, ins_high)
    assert len(list((tmp_path / "sweep" / "runs").glob("*/journal.json"))) == sum(
        len(level.runs) for level in sweep.levels
    )


def test_progress_says_the_run_of_the_budget_and_the_time_left() -> None:
    said: list[str] = []
    ticks = iter(range(0, 10_000, 20))  # every run takes 20 s on this clock

    def clock() -> float:
        return float(next(ticks))

    search(
        lambda level: ("r", {ALERT: (level >= 0.3, None)}),
        0.02,
        0.6,
        alert=ALERT,
        replicates=1,
        max_runs=4,
        say=said.append,
        clock=clock,
    )
    assert said[0] == "run 1 of at most 4: level 0.6"
    # the second run: 20 s for one run so far, three runs of the budget left
    assert said[1] == "run 2 of at most 4: level 0.02 (at most 1m left)"
    assert len(said) == 4
