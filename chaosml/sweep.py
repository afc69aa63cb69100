"""Detection thresholds: the smallest strength of a fault each expected alert catches within its
deadline, and what the model loses below it.

``sweep`` varies one parameter of a scenario's fault (``faults[0].rate`` by default for a fault
with a rate; see ``DEFAULT_PARAMS``) between ``low`` and ``high``. Every run is a normal scenario
run: the level's scenario is written to the sweep's folder as a scenario file and run by the game
day's runner (rollback, leases, journal; each fault ended once detected, ``--until-detected``), so a sweep is safe to interrupt, and a new sweep with
the same folder reads the journals already there instead of running their levels again.

The search (``search``) is a bisection on a detection probability, not a fixed grid: the high end
first (if it is not detected, there is no threshold to find), then the low end, then midpoints
(geometric when the range spans more than a factor 4) between the highest level not detected and
the lowest detected, at most ``replicates`` runs each (a level stops once its majority is
settled), until the bracket is narrower than ``resolution`` (relative; or ``width``, absolute) or
``max_runs`` is spent. A level counts as detected when at least half its runs detected. Each level reports its runs, its detections with an exact (Clopper-Pearson) interval and
the median time to detect; runs whose verdict is unknown (a source down, a fault that did not
act) are kept apart and count as neither.

With a slice suite, model and data, the same level is applied offline per slice (the fragility
path, same fault code, seeded) and the **undetected-harm band** is the levels where some slice
loses more than the tolerance while the alert does not detect.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chaosml.durations import format_duration
from chaosml.errors import InputError

# The parameter a sweep varies by default, per fault type (toxicity for faults without one).
DEFAULT_PARAMS = {
    "missing_values": "rate",
    "bias": "rate",
    "label_flip": "rate",
    "nan_prediction": "rate",
    "shift": "by",
    "latency": "latency",
}
PARAM = re.compile(r"^faults\[(\d+)\]\.(\w+)$")


@dataclass(kw_only=True)
class Level:
    """The runs at one strength: per expected alert, how many runs detected it within its
    deadline and how fast."""

    value: float
    runs: list[str] = field(default_factory=list)  # run ids
    judged: int = 0  # runs with a verdict (not unknown) for the driving alert
    detected: dict[str, int] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)  # runs judged, per alert
    ttd: dict[str, list[float]] = field(default_factory=dict)
    harm: dict[str, float] = field(default_factory=dict)  # slice -> loss of the metric

    def rate(self, alert: str) -> float | None:
        seen = self.seen.get(alert, 0)
        return None if seen == 0 else self.detected.get(alert, 0) / seen

    def interval(self, alert: str, confidence: float = 0.95) -> tuple[float, float] | None:
        seen = self.seen.get(alert, 0)
        if seen == 0:
            return None
        return clopper_pearson(self.detected.get(alert, 0), seen, confidence)

    def median_ttd(self, alert: str) -> float | None:
        values = self.ttd.get(alert) or []
        return statistics.median(values) if values else None


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact binomial interval for ``k`` successes of ``n``."""
    from scipy.stats import beta

    tail = (1 - confidence) / 2
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - tail, k + 1, n - k))
    return low, high


# One run at a level: per expected alert, whether it detected (None: unknown) and its TTD.
RunResult = dict[str, tuple[bool | None, float | None]]


def search(
    run: Callable[[float], tuple[str, RunResult]],
    low: float,
    high: float,
    *,
    alert: str,
    replicates: int = 3,
    max_runs: int = 20,
    resolution: float = 0.1,
    width: float | None = None,
    say: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[Level]:
    """Bisect ``[low, high]`` for the smallest level at which ``alert`` is detected in at least
    half the runs; ``run(level)`` runs once and returns its id and results.

    A level runs at most ``replicates`` times and stops as soon as its majority is settled (two
    agreeing runs of three decide it: a third could not change it). The search stops when the
    bracket is narrower than ``resolution`` (relative) or, given ``width``, narrower than that
    (absolute; midpoints are then arithmetic)."""
    if not 0 <= low < high:
        raise InputError(f"the range must be low < high with low >= 0, not {low}:{high}")
    levels: dict[float, Level] = {}
    spent = 0
    started = clock()

    def left(run: int) -> str:
        if run == 1:
            return ""
        per_run = (clock() - started) / (run - 1)
        return f" (at most {format_duration(round(per_run * (max_runs - run + 1)))} left)"

    def measure(value: float) -> bool | None:
        nonlocal spent
        level = levels.setdefault(value, Level(value=value))
        for _ in range(replicates):
            if spent >= max_runs or settled(level):
                break
            spent += 1
            if say:
                say(f"run {spent} of at most {max_runs}: level {value:g}{left(spent)}")
            run_id, results = run(value)
            level.runs.append(run_id)
            for name, (hit, ttd) in results.items():
                if hit is None:
                    continue
                level.seen[name] = level.seen.get(name, 0) + 1
                level.detected[name] = level.detected.get(name, 0) + int(hit)
                if hit and ttd is not None:
                    level.ttd.setdefault(name, []).append(ttd)
        if not level.runs:  # the budget was spent before this level ran: it was not tested
            del levels[value]
            return None
        rate = level.rate(alert)
        return None if rate is None else rate >= 0.5

    def settled(level: Level) -> bool:
        # detected when at least half the judged runs detected, of at most ``replicates``: the
        # rest cannot change the verdict once either side holds a majority of the cap
        hits, seen = level.detected.get(alert, 0), level.seen.get(alert, 0)
        return 2 * hits >= replicates or 2 * (seen - hits) > replicates

    def narrow(lo: float, hi: float) -> bool:
        return hi - lo <= width if width is not None else (hi - lo) / hi <= resolution

    if measure(high) is not True:  # not detected at the top, or unknown: nothing to bisect
        return sorted(levels.values(), key=lambda lv: lv.value)
    lo, hi = low, high
    if measure(low) is not False:
        return sorted(levels.values(), key=lambda lv: lv.value)
    while spent < max_runs and not narrow(lo, hi):
        geometric = width is None and lo > 0 and hi / lo > 4
        mid = math.sqrt(lo * hi) if geometric else (lo + hi) / 2
        mid = float(f"{mid:.4g}")
        if mid in levels:
            break
        detected = measure(mid)
        if detected is None:
            break  # every run at this level was unknown: the search cannot go on honestly
        lo, hi = (lo, mid) if detected else (mid, hi)
    return sorted(levels.values(), key=lambda lv: lv.value)


def threshold(levels: Sequence[Level], alert: str) -> tuple[float | None, float | None]:
    """(the highest level below which ``alert`` was not detected, the lowest level from which it
    was at every tested level above): the threshold lies between them. ``(x, None)``: never
    detected up to the highest level tested."""
    ordered = sorted(levels, key=lambda lv: lv.value)
    lowest: float | None = None
    for level in reversed(ordered):
        rate = level.rate(alert)
        if rate is None:
            continue
        if rate >= 0.5:
            lowest = level.value
        else:
            return level.value, lowest
    return None, lowest


# --- the parameter and the level's scenario file ---------------------------------------------------


def parameter(scenario: dict[str, Any], param: str | None) -> tuple[int, str, float]:
    """(fault index, attribute, its value in the file) of ``param`` (default: the first fault's
    usual strength)."""
    faults = scenario.get("faults") or []
    if not faults:
        raise InputError("the scenario has no faults to sweep")
    if param is None:
        kind = faults[0].get("type")
        key = DEFAULT_PARAMS.get(str(kind), "toxicity")
        param = f"faults[0].{key}"
    match = PARAM.match(param)
    if match is None:
        raise InputError(f"--param {param!r}: expected faults[N].attribute, e.g. faults[0].rate")
    index, key = int(match.group(1)), match.group(2)
    if index >= len(faults):
        raise InputError(f"--param {param!r}: the scenario has {len(faults)} fault(s)")
    value = faults[index].get(key, 1.0 if key == "toxicity" else None)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InputError(f"--param {param!r}: the fault has no numeric {key!r} to vary")
    return index, key, float(value)


def write_level(
    scenario: dict[str, Any], source: Path, index: int, key: str, value: float, folder: Path
) -> Path:
    """The scenario at ``value`` as a file of its own (its data path made absolute, only its
    expectations that an alert fires)."""
    level = yaml.safe_load(yaml.safe_dump(scenario))
    level["faults"][index][key] = value
    load = level.get("load") or {}
    if isinstance(load.get("data"), str) and not Path(load["data"]).is_absolute():
        load["data"] = str((source.parent / load["data"]).resolve())
    level["name"] = f"{level['name']}-{key}-{value:g}"
    # a sweep measures detection: alerts expected to stay quiet would hold each fault to its
    # whole phase, and their verdicts are not what it reports
    level["expect"] = [e for e in level.get("expect") or [] if e.get("fires", True)]
    level["description"] = f"{level.get('description', '')} [sweep: {key}={value:g}]".strip()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{source.stem}-{key}-{value:g}.yaml"
    path.write_text(yaml.safe_dump(level, sort_keys=False), encoding="utf-8")
    return path


# --- a sweep against a target -----------------------------------------------------------------


@dataclass(kw_only=True)
class Sweep:
    """What ``chaosml sweep`` reports (schema ``chaosml.sweep/1``)."""

    scenario: str
    param: str
    low: float
    high: float
    alerts: list[str]  # the expected alerts; the first drives the search
    levels: list[Level]
    metric: str | None = None
    tolerance: float | None = None
    interrupted: str | None = None

    def threshold(self, alert: str) -> tuple[float | None, float | None]:
        return threshold(self.levels, alert)

    def undetected_harm(self, alert: str) -> list[tuple[float, str, float]]:
        """(level, slice, loss) where a slice loses more than the tolerance and ``alert`` is not
        detected at that level (worst slice per level)."""
        if self.tolerance is None:
            return []
        band = []
        for level in self.levels:
            rate = level.rate(alert)
            if (rate is not None and rate >= 0.5) or not level.harm:
                continue
            name, loss = max(level.harm.items(), key=lambda item: item[1])
            if loss > self.tolerance:
                band.append((level.value, name, loss))
        return band

    @property
    def passed(self) -> bool:
        return self.interrupted is None

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "chaosml.sweep/1",
            "scenario": self.scenario,
            "param": self.param,
            "range": [self.low, self.high],
            "metric": self.metric,
            "tolerance": self.tolerance,
            "interrupted": self.interrupted,
            "alerts": {
                alert: {
                    "threshold_between": list(self.threshold(alert)),
                    "undetected_harm": [
                        {"level": v, "slice": s, "loss": loss}
                        for v, s, loss in self.undetected_harm(alert)
                    ],
                }
                for alert in self.alerts
            },
            "levels": [
                {
                    "value": lv.value,
                    "runs": lv.runs,
                    "harm": lv.harm,
                    "by_alert": {
                        alert: {
                            "judged": lv.seen.get(alert, 0),
                            "detected": lv.detected.get(alert, 0),
                            "rate": lv.rate(alert),
                            "interval": lv.interval(alert),
                            "median_ttd_s": lv.median_ttd(alert),
                        }
                        for alert in self.alerts
                    },
                }
                for lv in self.levels
            ],
        }


def alert_key(alert: str, labels: dict[str, str]) -> str:
    """An expected alert as the sweep names it: ``Name{label=value,...}``."""
    shown = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return alert + (f"{{{shown}}}" if shown else "")


def run_result(journal: Any) -> RunResult:
    """Per fires-expectation of the journal's one scenario: detected within its deadline (None
    when the verdict is unknown) and the time to detect."""
    out: RunResult = {}
    for e in journal.run.scenarios[0].expectations if journal.run.scenarios else []:
        if not e.fires:
            continue
        key = alert_key(e.alert, e.labels)
        if e.verdict == "unknown":
            out[key] = (None, None)
            continue
        within = e.detected_after_s is not None and e.detected_after_s <= (e.within_s or math.inf)
        out[key] = (within, e.detected_after_s if within else None)
    return out


def run_sweep(
    scenario_path: Path,
    target: Path,
    *,
    folder: Path,
    param: str | None = None,
    low: float | None = None,
    high: float | None = None,
    time_scale: float = 1.0,
    seed: int = 0,
    replicates: int = 3,
    max_runs: int = 20,
    resolution: float = 0.1,
    width: float | None = None,
    harm: Callable[[list[Path]], dict[Path, dict[str, float]]] | None = None,
    metric: str | None = None,
    tolerance: float | None = None,
    say: Callable[[str], None] | None = None,
) -> Sweep:
    """Search ``param`` of the scenario at ``scenario_path`` against ``target`` (see ``search``);
    journals in ``folder`` from an earlier sweep of the same levels are read, not run again."""
    from chaosml.gameday import Interrupted, RunOptions, load_journal, run_files
    from chaosml.scenario import load_scenarios

    files = load_scenarios([scenario_path])  # every problem of the file, before anything runs
    if len(files) != 1:
        raise InputError(f"{scenario_path}: a sweep varies one scenario file, not {len(files)}")
    loaded = files[0]
    raw = yaml.safe_load(scenario_path.read_text(encoding="utf-8"))
    index, key, value = parameter(raw, param)
    name = f"faults[{index}].{key}"
    low = value / 16 if low is None else low
    high = value if high is None else high
    alerts = [alert_key(e.alert, e.labels) for e in loaded.scenario.expect if e.fires]
    if not alerts:
        raise InputError(f"{scenario_path}: expects no alert to fire: there is nothing to sweep")
    runs = folder / "runs"
    earlier: dict[str, list[Any]] = {}
    for journal_path in sorted(runs.glob("*/journal.json")) if runs.is_dir() else []:
        journal = load_journal(journal_path)
        if journal.run.scenarios and not journal.run.interrupted:
            earlier.setdefault(journal.run.scenarios[0].name, []).append(journal)
    paths: dict[float, Path] = {}
    started: dict[float, int] = {}

    def run(level: float) -> tuple[str, RunResult]:
        path = paths.setdefault(level, write_level(raw, scenario_path, index, key, level, folder))
        level_name = f"{raw['name']}-{key}-{level:g}"
        if earlier.get(level_name):
            journal = earlier[level_name].pop(0)
            return journal.run.run_id, run_result(journal)
        started[level] = started.get(level, 0) + 1  # each replicate its own seed
        options = RunOptions(
            time_scale=time_scale, seed=seed + started[level] - 1, runs=runs, until_detected=True
        )
        report = run_files([path], target, options)
        if report.interrupted:
            raise Interrupted(report.interrupted)
        return report.journal.run.run_id, run_result(report.journal)

    sweep = Sweep(
        scenario=str(scenario_path),
        param=name,
        low=low,
        high=high,
        alerts=alerts,
        levels=[],
        metric=metric,
        tolerance=tolerance,
    )
    try:
        sweep.levels = search(
            run,
            low,
            high,
            alert=alerts[0],
            replicates=replicates,
            max_runs=max_runs,
            resolution=resolution,
            width=width,
            say=say,
        )
    except Interrupted as exc:
        sweep.interrupted = str(exc)
        return sweep
    if harm is not None:
        losses = harm([paths[lv.value] for lv in sweep.levels if lv.value in paths])
        for level in sweep.levels:
            level.harm = losses.get(paths.get(level.value, Path()), {})
    return sweep


def offline_harm(
    suite_path: Path, model: str, data: Path | None, config_path: Path | None, *, seed: int = 0
) -> tuple[Callable[[list[Path]], dict[Path, dict[str, float]]], str, float]:
    """The per-slice loss of ``model``'s compare metric under each level's faults, applied
    offline (the fragility path), with the metric's name and the suite's ``max_drop``."""
    from chaosml.config import load_config
    from chaosml.slices.fragility import fragility
    from chaosml.slices.metrics import METRICS
    from chaosml.slices.offline import offline_scenarios
    from chaosml.slices.suite import load_suite
    from chaosml.versions import resolve_version

    suite = load_suite(suite_path)
    config = load_config(config_path)
    version = resolve_version(model, config)
    rows = data if data is not None else (config.resolve(config.data) if config.data else None)
    if rows is None:
        raise InputError("--data is needed (or a config with data:) to measure the harm")
    metric = METRICS[suite.compare.metric]
    sign = -1.0 if metric.direction >= 0 else 1.0  # a loss is positive: worse by that much

    def harm(paths: list[Path]) -> dict[Path, dict[str, float]]:
        scenarios = offline_scenarios(paths)
        result = fragility(suite, [version], rows, scenarios, config=config, seed=seed, n_boot=0)
        by_name = {s.name: path for s, path in zip(scenarios, paths, strict=True)}
        out: dict[Path, dict[str, float]] = {path: {} for path in paths}
        for cell in result.cells:
            change = cell.change(version.name)
            if change is not None and cell.scenario in by_name:
                out[by_name[cell.scenario]][cell.slice] = sign * change
        return out

    return harm, metric.name, suite.compare.max_drop


def render_sweep(sweep: Sweep, console: Any) -> None:
    """Per alert: the threshold's bracket, each level's detections and TTD, and the band where
    the model is harmed and nothing alerts."""
    from rich.table import Table
    from rich.text import Text

    for alert in sweep.alerts:
        table = Table(title=f"{alert}: detection by {sweep.param}", title_justify="left")
        headers = ["level", "runs", "detected", "95% CI", "median TTD"]
        if sweep.tolerance is not None:
            headers.append(f"worst slice loss ({sweep.metric})")
        for header in headers:
            table.add_column(header)
        for level in sweep.levels:
            judged, hits = level.seen.get(alert, 0), level.detected.get(alert, 0)
            ci = level.interval(alert)
            ttd = level.median_ttd(alert)
            row = [
                f"{level.value:g}",
                str(len(level.runs)),
                f"{hits} of {judged}"
                + (f" ({len(level.runs) - judged} unknown)" if judged < len(level.runs) else ""),
                "–" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]",
                "–" if ttd is None else f"{ttd:.1f} s",
            ]
            if sweep.tolerance is not None:
                worst = max(level.harm.items(), key=lambda item: item[1]) if level.harm else None
                row.append("–" if worst is None else f"{worst[1]:+.3f} ({worst[0]})")
            table.add_row(*row)
        console.print(table)
        below, above = sweep.threshold(alert)
        if all(level.rate(alert) is None for level in sweep.levels):
            said = "no run could be judged (every verdict unknown): see the runs' journals"
        elif above is None:
            said = f"not detected at any level tested (up to {sweep.high:g})"
        elif below is None:
            said = f"detected at every level tested, down to {above:g}"
        else:
            said = f"threshold between {below:g} (not detected) and {above:g} (detected)"
        console.print(Text(f"{alert}: {said}", style="bold"))
        band = sweep.undetected_harm(alert)
        if band:
            levels = ", ".join(f"{v:g}" for v, _, _ in band)
            peak = max(band, key=lambda item: item[2])
            console.print(
                Text(
                    f"undetected harm: at {sweep.param} = {levels} some slice loses more than "
                    f"{sweep.tolerance:g} {sweep.metric} and {alert} does not fire (worst: "
                    f"{peak[2]:.3f} on {peak[1]} at {peak[0]:g})",
                    style="bold red",
                )
            )
    if sweep.interrupted:
        console.print(
            Text(f"interrupted: {sweep.interrupted}; run again to resume", style="yellow")
        )


def write_sweep_html(sweep: Sweep, path: Path) -> None:
    """The sweep as a page: per alert, detection rate (with its interval) and time to detect
    against the level, the worst slice loss beside it, and the table of levels."""
    import html

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from chaosml.report._html import _page, _svg, _table, _td

    parts = []
    for alert in sweep.alerts:
        levels = [lv for lv in sweep.levels if lv.rate(alert) is not None]
        figure, (rate_ax, ttd_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
        x = [lv.value for lv in levels]
        rates = [lv.rate(alert) or 0.0 for lv in levels]
        bounds = [lv.interval(alert) or (0.0, 1.0) for lv in levels]
        rate_ax.errorbar(
            x,
            rates,
            yerr=[
                [r - b[0] for r, b in zip(rates, bounds, strict=True)],
                [b[1] - r for r, b in zip(rates, bounds, strict=True)],
            ],
            fmt="o-",
            capsize=3,
        )
        rate_ax.set(xlabel=sweep.param, ylabel="detected (share of runs)", ylim=(-0.05, 1.05))
        if sweep.tolerance is not None:
            harm_ax = rate_ax.twinx()
            harm_ax.plot(
                x, [max(lv.harm.values(), default=0.0) for lv in levels], "s--", color="#b00020"
            )
            harm_ax.axhline(sweep.tolerance, color="#b00020", linewidth=0.8, linestyle=":")
            harm_ax.set_ylabel(f"worst slice loss ({sweep.metric})", color="#b00020")
        timed = [
            (lv.value, lv.median_ttd(alert)) for lv in levels if lv.median_ttd(alert) is not None
        ]
        ttd_ax.plot([v for v, _ in timed], [t for _, t in timed], "o-")
        ttd_ax.set(xlabel=sweep.param, ylabel="median time to detect (s)")
        figure.suptitle(alert)
        below, above = sweep.threshold(alert)
        rows = [
            [
                _td(f"{lv.value:g}", True),
                _td(str(len(lv.runs)), True),
                _td(f"{lv.detected.get(alert, 0)} of {lv.seen.get(alert, 0)}", True),
                _td("–" if (ci := lv.interval(alert)) is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"),
                _td("–" if (t := lv.median_ttd(alert)) is None else f"{t:.1f} s", True),
                _td(", ".join(lv.runs)),
            ]
            for lv in sweep.levels
        ]
        band = sweep.undetected_harm(alert)
        parts.append(
            f"<h2>{html.escape(alert)}</h2><p>threshold between {below} and {above}</p>"
            + (
                f"<p class='failed'>undetected harm at {', '.join(f'{v:g}' for v, _, _ in band)}</p>"
                if band
                else ""
            )
            + _svg(figure)
            + _table(["level", "runs", "detected", "95% CI", "median TTD", "run ids"], rows)
        )
    path.write_text(_page(f"chaosml sweep: {sweep.scenario}", "".join(parts)), encoding="utf-8")
