"""How often the reference rules fire on healthy traffic, by seeded simulation (the baseline, in
the same run: the fairness gap over the 500-row window it had before).

What is simulated is what the reference stack does: v2 answers demo applicants (``make_credit``
rows it never saw, and the bundled ``eval.parquet`` replayed in order as the load driver does);
the monitor's statistic is computed over its row window after each request of 10 rows; the load
is the bundled scenarios' (30 requests/s of 10 rows); Prometheus scrapes and evaluates every 1 s,
and a rule fires when its expression holds at consecutive evaluations spanning its ``for:``
(120 s for both rules, times the time scale). Counted as a false alarm: ``for:``/1 s consecutive
evaluations over the threshold, one fewer than Prometheus needs, so the figures err high.

- **traffic stops**: once traffic stops, a full window keeps its last rows, so the rule fires for
  good if that one window is over the threshold: the probability per stop, from independent
  windows of fresh applicants, and the share of the bundled file's window positions over it;
- **continuous traffic**: the share of runs of a given length (the bias scenario's 10 minutes
  and a 30-minute day, time-scaled) in which the rule fires at least once;
- **detection**: the same simulation with the bias scenario's fault (80% of women's approvals
  turned into rejections): time from injection to firing (7 evaluations over the threshold),
  against the scenario's deadline (its fault phase).

Rows of fresh traffic are drawn independently from 200,000 applicants' (sex, prediction) cells, so a
window's counts are multinomial. Zero events are reported with their 95% upper bound.

Run: python benchmarks/false_alarms.py [--runs 20000] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.stats import beta, norm

from chaosml.demo.data import SENSITIVE, make_credit
from chaosml.demo.train import train_demo
from chaosml.monitors import ModelMonitor
from chaosml.versions import load_model

BATCH, REQUESTS_PER_S, FOR_S = 10, 30, 120  # the bundled load; both rules' for:
CELLS = ("F+", "F-", "M+", "M-")
Counts = npt.NDArray[np.int64]  # (..., 4): rows per cell


@dataclass(frozen=True)
class Setting:
    name: str
    window: int  # rows
    threshold: float

    def statistic(self, counts: Counts, reference: float) -> npt.NDArray[np.float64]:
        f, m = counts[..., 0] + counts[..., 1], counts[..., 2] + counts[..., 3]
        if self.name.startswith("positive"):
            return np.abs((counts[..., 0] + counts[..., 2]) / self.window - reference)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.abs(counts[..., 0] / f - counts[..., 2] / m)


SETTINGS = (
    Setting("fairness gap, 500 rows (before)", 500, 0.1),
    Setting("fairness gap, 2000 rows (now)", 2000, 0.1),
    Setting("positive rate, 500 rows", 500, 0.15),
)


def cells(model: object, frame: pd.DataFrame) -> npt.NDArray[np.int64]:
    """Each row's cell: 0 F+, 1 F-, 2 M+, 3 M-."""
    features = list(model.feature_names_in_)  # type: ignore[attr-defined]
    positive = model.predict(frame[features]) == 1  # type: ignore[attr-defined]
    return np.where(frame[SENSITIVE].to_numpy() == "F", 0, 2) + (~positive).astype(np.int64)


def window_sums(requests: Counts, window: int) -> Counts:
    """Counts over the last ``window`` rows after each request (``requests``: runs, requests, cells)."""
    size = window // BATCH
    total = np.cumsum(requests, axis=-2)
    out = total[..., size - 1 :, :].copy()
    out[..., 1:, :] -= total[..., :-size, :]
    return out


def fires(above: npt.NDArray[np.bool_], evaluations: int) -> npt.NDArray[np.bool_]:
    """Per run: ``evaluations`` consecutive evaluations over the threshold, somewhere."""
    run = np.zeros(above.shape[:-1], dtype=np.int64)
    longest = np.zeros_like(run)
    for column in np.moveaxis(above, -1, 0):
        run = np.where(column, run + 1, 0)
        longest = np.maximum(longest, run)
    return longest >= evaluations


def upper(events: int, n: int) -> float:
    return float(beta.ppf(0.975, events + 1, n - events))


def rate(events: int, n: int) -> str:
    if events == 0:
        return f"0 of {n:,} (95% upper bound {upper(0, n):.1e})"
    return f"{events:,} of {n:,} = {events / n:.2e}"


def normal(setting: Setting, p: npt.NDArray[np.float64], ref: float) -> float:
    """P(one window over the threshold), from the normal approximation of its statistic."""
    if setting.name.startswith("positive"):
        rate = p[0] + p[2]
        mean, sd = abs(rate - ref), np.sqrt(rate * (1 - rate) / setting.window)
        return float(norm.sf((setting.threshold - mean) / sd))
    f, m = p[0] + p[1], p[2] + p[3]
    rf, rm = p[0] / f, p[2] / m
    var = rf * (1 - rf) / (f * setting.window) + rm * (1 - rm) / (m * setting.window)
    d, sd = rf - rm, np.sqrt(var)
    return float(norm.sf((setting.threshold - d) / sd) + norm.cdf((-setting.threshold - d) / sd))


def traffic_stops(
    setting: Setting, p: npt.NDArray[np.float64], ref: float, n: int, rng: np.random.Generator
) -> int:
    windows = rng.multinomial(setting.window, p, size=n)
    return int(np.sum(setting.statistic(windows, ref) > setting.threshold))


def continuous(
    setting: Setting,
    p: npt.NDArray[np.float64],
    ref: float,
    *,
    seconds: float,
    scale: float,
    runs: int,
    rng: np.random.Generator,
    per_s: int = REQUESTS_PER_S,
) -> int:
    """Runs of ``seconds`` of steady traffic at ``per_s`` requests/s (the window full from the
    start) that fire."""
    evaluations = round(seconds)
    needed = max(round(FOR_S * scale), 1)
    chunk = max(1, 2_000_000 // (evaluations * per_s))
    hits = 0
    for start in range(0, runs, chunk):
        k = min(chunk, runs - start)
        length = setting.window // BATCH + evaluations * per_s
        requests = rng.multinomial(BATCH, p, size=(k, length)).astype(np.int32)
        sums = window_sums(requests, setting.window)
        phase = rng.integers(per_s)
        scraped = sums[:, phase::per_s][:, :evaluations]
        hits += int(fires(setting.statistic(scraped, ref) > setting.threshold, needed).sum())
    return hits


def replayed(
    setting: Setting, file_cells: npt.NDArray[np.int64], ref: float, scale: float
) -> tuple[int, int, int]:
    """The bundled file replayed in a loop: window positions over the threshold (of all), and
    scrape phases (of 30) in which the rule fires somewhere in the file."""
    onehot = np.eye(4, dtype=np.int64)[file_cells].reshape(-1, BATCH, 4).sum(axis=1)
    size = setting.window // BATCH
    looped = np.concatenate([onehot, onehot[: size + 2 * FOR_S * REQUESTS_PER_S]])
    above = setting.statistic(window_sums(looped, setting.window), ref) > setting.threshold
    positions = len(onehot)
    needed = max(round(FOR_S * scale), 1)
    phases = sum(
        bool(fires(above[phase::REQUESTS_PER_S][np.newaxis], needed)[0])
        for phase in range(REQUESTS_PER_S)
    )
    return int(above[:positions].sum()), positions, phases


def detection(
    setting: Setting,
    p: npt.NDArray[np.float64],
    ref: float,
    *,
    scale: float,
    runs: int,
    rng: np.random.Generator,
) -> npt.NDArray[np.float64]:
    """Seconds from injection to firing under the bias fault (NaN: not within 60 evaluations)."""
    faulty = p.copy()
    faulty[1] += 0.8 * faulty[0]
    faulty[0] *= 0.2
    needed = max(round(FOR_S * scale), 1) + 1  # what Prometheus needs
    horizon = 60
    size = setting.window // BATCH
    healthy = rng.multinomial(BATCH, p, size=(runs, size))
    fault = rng.multinomial(BATCH, faulty, size=(runs, horizon * REQUESTS_PER_S))
    sums = window_sums(np.concatenate([healthy, fault], axis=1), setting.window)[:, 1:]
    offset = rng.integers(REQUESTS_PER_S, size=runs)  # the first evaluation after injection
    times = np.full(runs, np.nan)
    for i in range(runs):
        scraped = sums[i, offset[i] :: REQUESTS_PER_S]
        above = setting.statistic(scraped, ref) > setting.threshold
        run = 0
        for e, hit in enumerate(above):
            run = run + 1 if hit else 0
            if run >= needed:
                times[i] = (offset[i] + 1) / REQUESTS_PER_S + e
                break
    return times


def check_against_the_monitor(model: object, frame: pd.DataFrame, reference: float) -> None:
    """The simulated statistics are the monitor's own, after 300 real requests of 10 rows."""
    features = list(model.feature_names_in_)  # type: ignore[attr-defined]
    rows = frame.head(3000)
    predictions = model.predict(rows[features]).tolist()  # type: ignore[attr-defined]
    monitor = ModelMonitor(
        reference=rows, features=[], model_version="v2", sensitive=SENSITIVE, window=500
    )
    for start in range(0, len(rows), BATCH):
        part = rows.iloc[start : start + BATCH]
        monitor.observe(part, predictions[start : start + BATCH], None, [""] * len(part))
    requests = np.eye(4, dtype=np.int64)[cells(model, rows)].reshape(-1, BATCH, 4).sum(axis=1)
    for setting, gauge in zip(
        SETTINGS[1:], (monitor.fairness.labels(SENSITIVE), monitor.positive_rate), strict=True
    ):
        value = gauge._value.get()
        got = value if gauge is not monitor.positive_rate else abs(value - reference)
        expected = setting.statistic(window_sums(requests, setting.window), reference)[-1]
        assert abs(got - expected) < 1e-9, (setting.name, got, expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000, help="simulated runs per figure")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        demo = train_demo(Path(folder))
        model = load_model(demo.v2)
        reference_rows = pd.read_parquet(demo.reference)
        features = list(model.feature_names_in_)
        reference = float(np.mean(model.predict(reference_rows[features]) == 1))
        bundled = cells(model, pd.read_parquet(demo.data))
        fresh_frame = make_credit(200_000, seed=1000 + args.seed)
        fresh = cells(model, fresh_frame)
        check_against_the_monitor(model, fresh_frame, reference)
    p = np.bincount(fresh, minlength=4) / len(fresh)
    print(
        f"healthy cells {dict(zip(CELLS, p.round(4), strict=True))}; reference positive rate {reference:.3f}"
    )
    print(
        f"load {REQUESTS_PER_S} requests/s x {BATCH} rows; evaluations every 1 s; for: {FOR_S} s x scale\n"
    )
    for setting in SETTINGS:
        print(f"## {setting.name}, threshold {setting.threshold}")
        n = 50 * args.runs
        print(
            f"  traffic stops, normal approximation: {normal(setting, p, reference):.1e} per window"
        )
        print(
            f"  traffic stops, fresh applicants: {rate(traffic_stops(setting, p, reference, n, rng), n)} windows over"
        )
        over, positions, phases = replayed(setting, bundled, reference, 0.05)
        print(f"  traffic stops, bundled file:     {over} of {positions} window positions over")
        print(
            f"  bundled file replayed, scale 0.05: fires in {phases} of {REQUESTS_PER_S} scrape phases"
        )
        for label, seconds, scale, runs, per_s in (
            ("bias scenario (10 min) at scale 0.05", 30, 0.05, args.runs, REQUESTS_PER_S),
            ("30 min at scale 0.05", 90, 0.05, args.runs, REQUESTS_PER_S),
            ("30 min at scale 0.05, a tenth of the load", 90, 0.05, args.runs, 3),
            ("30 min at scale 1", 1800, 1.0, max(args.runs // 20, 100), REQUESTS_PER_S),
        ):
            hits = continuous(
                setting, p, reference, seconds=seconds, scale=scale, runs=runs, rng=rng, per_s=per_s
            )
            print(f"  continuous traffic, {label}: {rate(hits, runs)} runs fire")
        if setting.name.startswith("fairness"):
            times = detection(setting, p, reference, scale=0.05, runs=min(args.runs, 2000), rng=rng)
            missed = int(np.isnan(times).sum())
            late = int(np.sum(~(times <= 12.0)))
            print(
                f"  bias fault at scale 0.05: detected after median {np.nanmedian(times):.1f} s, "
                f"max {np.nanmax(times):.1f} s; after the 12 s deadline: {rate(late, len(times))} "
                f"(never: {missed})"
            )
        print()


if __name__ == "__main__":
    main()
