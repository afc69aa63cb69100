"""``chaosml canary``: a candidate model given a growing share of the target's traffic, judged per
slice at every look, rolled back the moment a figure shows harm.

The target's proxy fault point (``fault_points.proxy``) splits its traffic by weight, sticky by a
key (``chaosml.proxy.canary``), and records each answered request's rows with its arm and answer
under ``.chaosml/canary/<run-id>/`` as Parquet part files. The controller walks the steps
(``5%:2m,25%:5m,50%:5m,100%``): at each look (``--look``) it renews the split's lease, polls the
target's alert sources, reads the new parts and the labels known so far, and asks the gate
(``chaosml.release.sequential``) whether any figure of any slice shows the candidate worse than the
primary, with a test that stays valid however often it is looked at.

The families, fixed before the first request: per slice (``overall``, the suite's ``where``
slices, and the ``by`` groups of the rows in ``--data``, default the target's ``data``), with
``--labels`` the error rate on the labelled rows (worse if higher: harm), without them the mean
score (two-sided: the prediction distribution moved, which is change, not necessarily harm);
overall, the HTTP error rate and the share of requests slower than 1.5 times the primary's p95 (fixed
from its first ``MIN_LATENCY`` requests), both worse if higher. Guards that are rules, not
tests: an alert named in ``--quiet`` fires, an alert source cannot be read (the step cannot show
its alerts stayed quiet).

A rollback sets the weight to 0 at once and removes the split (in a ``finally``, on any error or
signal too; a controller killed outright leaves a lease that runs out, and the proxy then sends
everything to the primary). Passing the last step is ``promoted``: the split is removed, and
with ``--switch`` the proxy's upstream becomes the candidate.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chaosml._signals import holding, keyboard_interrupts
from chaosml.errors import InputError, UnreachableError
from chaosml.release.labels import feedback_labels, feedback_route, known_labels, read_labels
from chaosml.release.sequential import (
    Counts,
    Family,
    Gate,
    Mean,
    Proportion,
    clustered_means,
    clustered_proportions,
)

SCHEMA = "chaosml.release/1"
METHOD = "mSPRT (normal mixture), always-valid p-values, Bonferroni over the families"
ROOT = Path(".chaosml/canary")
_STEP = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s*(?::\s*(\S+))?\s*$")


@dataclass(frozen=True)
class Step:
    weight: float  # the candidate's share, in (0, 1]
    seconds: float | None  # None: the last step, reached means promoted

    def label(self) -> str:
        share = f"{self.weight * 100:g}%"
        return share if self.seconds is None else f"{share} for {self.seconds:g} s"


def parse_steps(text: str) -> list[Step]:
    """``5%:2m,25%:5m,50%:5m,100%``: weights rising in (0, 100%], each with how long it is judged;
    the last may have no duration (reaching it promotes)."""
    from chaosml.durations import parse_duration

    steps: list[Step] = []
    parts = text.split(",")
    for index, part in enumerate(parts):
        found = _STEP.match(part)
        if found is None:
            raise InputError(
                f"--steps {text!r}: {part.strip()!r} is not WEIGHT% or WEIGHT%:DURATION"
            )
        weight = float(found.group(1)) / 100
        if not 0 < weight <= 1:
            raise InputError(f"--steps {text!r}: {part.strip()!r}: a weight in (0%, 100%]")
        if steps and weight <= steps[-1].weight:
            raise InputError(f"--steps {text!r}: weights must rise, {part.strip()!r} does not")
        seconds = None
        if found.group(2) is not None:
            try:
                seconds = parse_duration(found.group(2))
            except ValueError as exc:
                raise InputError(f"--steps {text!r}: {part.strip()!r}: {exc}") from None
            if seconds <= 0:
                raise InputError(f"--steps {text!r}: {part.strip()!r}: a duration above 0")
        elif index < len(parts) - 1:
            raise InputError(
                f"--steps {text!r}: {part.strip()!r} needs a duration (only the last may go without)"
            )
        steps.append(Step(weight, seconds))
    if not steps or all(s.seconds is None for s in steps):
        raise InputError(f"--steps {text!r}: at least one step with a duration to judge it")
    return steps


def parse_key(text: str | None) -> dict[str, str] | None:
    """``header:x-user-id`` or ``column:user_id``; None: the client's address."""
    if text is None:
        return None
    kind, _, name = text.partition(":")
    if kind not in ("header", "column") or not name:
        raise InputError(f"--key {text!r}: expected header:NAME or column:NAME")
    return {kind: name}


FIGURES = {  # figure: (kind, direction, what it says)
    "score": ("mean", "two_sided", "mean score (the prediction distribution)"),
    "error": ("proportion", "worse_if_higher", "error rate on labelled rows"),
    "http_errors": ("proportion", "worse_if_higher", "HTTP error rate (5xx, unreachable)"),
    "slow_requests": (
        "proportion",
        "worse_if_higher",
        "share of requests slower than 1.5× the primary's p95",
    ),
}
MIN_LATENCY = 100  # primary requests before the slow-request threshold is fixed
REASONS = {  # a rollback's reason by the figure that decided it
    "error": "quality",  # harm on labelled rows
    "score": "change",  # the prediction distribution moved: change, not necessarily harm
    "http_errors": "service",
    "slow_requests": "service",
}
SLOW_FACTOR = 1.5  # a request slower than this times the primary's p95 is slow


def declare_families(slice_names: list[str], *, labelled: bool) -> list[Family]:
    """Per slice its error rate when labels are to come (harm), else its mean score (change);
    overall, the HTTP error rate."""
    figure = "error" if labelled else "score"
    kind, direction, _ = FIGURES[figure]
    families = [Family(name, figure, kind, direction) for name in slice_names]  # type: ignore[arg-type]
    families.append(Family("overall", "http_errors", "proportion", "worse_if_higher"))
    families.append(Family("overall", "slow_requests", "proportion", "worse_if_higher"))
    return families


def slice_names(suite: Any, data: Path | None) -> tuple[list[str], list[str]]:
    """The slices judged (``overall``, the ``where`` slices, and the ``by`` groups found in
    ``data``), and the ``by`` slices left out because no data names their groups."""
    from types import SimpleNamespace

    from chaosml.release.shadow import slice_masks

    names = ["overall"] + [s.name for s in suite.slices if s.where is not None]
    by = [s for s in suite.slices if s.where is None]
    if not by:
        return names, []
    if data is None:
        return names, [" × ".join(s.by) for s in by]
    columns = sorted({c for s in by for c in s.by})
    try:
        if data.suffix == ".parquet" or data.is_dir():
            rows = pd.read_parquet(data, columns=columns)
        else:
            rows = pd.read_csv(data, usecols=columns)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"--data {data}: cannot read the columns {columns}: {exc}") from None
    named = [n for n, _ in slice_masks(SimpleNamespace(slices=by), rows)][1:]  # not overall
    return names + named, []


@dataclass(kw_only=True)
class Look:
    at: float  # seconds since the canary began
    step: int
    weight: float
    requests: dict[str, int]
    rows: dict[str, int]
    labelled: dict[str, int]
    worst: str | None  # the family closest to rejection
    worst_p: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": round(self.at, 3),
            "step": self.step,
            "weight": self.weight,
            "requests": self.requests,
            "rows": self.rows,
            "labelled": self.labelled,
            "worst": self.worst,
            "worst_p": self.worst_p,
        }


@dataclass(kw_only=True)
class StepRecord:
    step: Step
    started: float
    ended: float | None = None
    verdict: str = "running"  # "passed", "rolled_back", "interrupted", "reached" (the last)
    figures: list[dict[str, Any]] = field(default_factory=list)  # per family at its end
    service: dict[str, Any] = field(default_factory=dict)  # per arm, since the split was set
    alerts: list[dict[str, Any]] = field(default_factory=list)
    at_start: dict[str, int] = field(default_factory=dict)  # requests per arm when it began
    during: dict[str, int] = field(default_factory=dict)  # requests per arm during the step

    def to_dict(self) -> dict[str, Any]:
        return {
            "weight": self.step.weight,
            "requests": self.during,
            "seconds": self.step.seconds,
            "started": round(self.started, 3),
            "ended": None if self.ended is None else round(self.ended, 3),
            "verdict": self.verdict,
            "figures": self.figures,
            "service": self.service,
            "alerts": self.alerts,
        }


@dataclass(kw_only=True)
class Rollback:
    step: int  # index into the steps
    reason: str  # "quality", "alert", "unobservable", "service"
    detail: str
    slice: str | None = None
    figure: str | None = None
    p: float | None = None
    estimate: float | None = None
    weight_zero_after: float | None = None  # seconds from the decision to weight 0 at the proxy
    decided_at: float | None = None  # epoch seconds of the decision (the parts' ``time``)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step + 1,  # numbered as the terminal numbers steps
            "reason": self.reason,
            "detail": self.detail,
            "slice": self.slice,
            "figure": self.figure,
            "p": self.p,
            "estimate": self.estimate,
            "weight_zero_after": self.weight_zero_after,
            "decided_at": self.decided_at,
        }


@dataclass(kw_only=True)
class CanaryResult:
    folder: Path
    target: str
    candidate: str
    steps: list[StepRecord]
    families: list[Family]
    unjudged: list[str]
    alpha: float
    method: str
    looks: list[Look] = field(default_factory=list)
    rollback: Rollback | None = None
    interrupted: bool = False
    switched: bool = False
    seconds: float = 0.0
    state: dict[str, Any] = field(default_factory=dict)  # the split's final state
    plan: dict[str, Any] = field(default_factory=dict)  # what was asked: steps, key, look, ...
    notes: list[str] = field(default_factory=list)  # what the report should not hide

    @property
    def verdict(self) -> str:
        if self.rollback is not None:
            return "rolled_back"
        if self.interrupted:
            return "interrupted"
        return "promoted"

    @property
    def passed(self) -> bool:
        return self.verdict == "promoted"

    def never_judged(self) -> list[str]:
        """Families that had too few observations to be tested at the last look."""
        judged = [s for s in self.steps if s.figures]
        if not judged:
            return [f.name for f in self.families]
        return [f"{f['slice']}/{f['figure']}" for f in judged[-1].figures if not f["testable"]]

    @property
    def exit_code(self) -> int:
        return {"promoted": 0, "rolled_back": 1, "interrupted": 130}[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "verdict": self.verdict,
            "folder": str(self.folder),
            "target": self.target,
            "candidate": self.candidate,
            "seconds": round(self.seconds, 3),
            "alpha": self.alpha,
            "method": self.method,
            "families": [f.name for f in self.families],
            "unjudged_slices": self.unjudged,
            "never_judged": self.never_judged(),
            "plan": self.plan,
            "notes": self.notes,
            "steps": [s.to_dict() for s in self.steps],
            "rollback": None if self.rollback is None else self.rollback.to_dict(),
            "switched": self.switched,
            "looks": [look.to_dict() for look in self.looks],
            "split": self.state,
        }


# --- figures from the recorded rows -----------------------------------------------------------


@dataclass
class Recorded:
    """The rows the proxy recorded so far, read part by part as they appear."""

    folder: Path
    frames: list[pd.DataFrame] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def read_new(self) -> int:
        added = 0
        for part in sorted(self.folder.glob("part-*.parquet")):
            if part.name in self.seen:
                continue
            frame = pd.read_parquet(part)
            self.seen.add(part.name)
            self.frames.append(frame)
            added += len(frame)
        return added

    def rows(self) -> pd.DataFrame:
        if not self.frames:
            return pd.DataFrame()
        return pd.concat(self.frames, ignore_index=True)


def same(predicted: pd.Series, truth: pd.Series) -> np.ndarray:
    """Whether each prediction is its label: as numbers where both read as numbers (a served
    ``1.0`` is the label ``1``, and ``True`` is 1), else as text."""

    def numbers(values: pd.Series) -> pd.Series:
        if values.dtype == bool or values.dtype == object:
            values = values.replace(
                {True: 1, False: 0, "true": 1, "false": 0, "True": 1, "False": 0}
            )
        return pd.to_numeric(values, errors="coerce")

    a, b = numbers(predicted).to_numpy(dtype=float), numbers(truth).to_numpy(dtype=float)
    numeric = ~np.isnan(a) & ~np.isnan(b)
    text = predicted.astype(str).to_numpy() == truth.astype(str).to_numpy()
    return np.asarray(np.where(numeric, a == b, text), dtype=bool)


def users_of(keys: np.ndarray | None, n: int) -> np.ndarray:
    """Each row's cluster: its user (the recorded key's digest); a row without a key is a
    cluster of its own, as is every row when no key was recorded."""
    if keys is None:
        return np.arange(n)
    codes, _ = pd.factorize(pd.Series(keys, dtype=object), use_na_sentinel=True)
    alone = codes < 0
    codes[alone] = codes.max(initial=-1) + 1 + np.arange(int(alone.sum()))
    return codes


def _per_user(values: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per user with any value: rows, sum and sum of squares of ``values`` (NaN: no value)."""
    ok = ~np.isnan(values)
    values, users = values[ok], users[ok]
    _, codes = np.unique(users, return_inverse=True)
    rows = np.bincount(codes)
    return rows, np.bincount(codes, weights=values), np.bincount(codes, weights=values * values)


def _means(values: np.ndarray, users: np.ndarray, *arms: np.ndarray) -> tuple[Mean, Mean]:
    """The arms' (masks of the rows) means over their users, with one design effect."""
    sums = [_per_user(values[arm], users[arm]) for arm in arms]
    one, two = clustered_means([(n.tolist(), t.tolist(), q.tolist()) for n, t, q in sums])
    return one, two


def _proportions(
    values: np.ndarray, users: np.ndarray, *arms: np.ndarray
) -> tuple[Proportion, Proportion]:
    """The arms' (masks of the rows) rates over their users, with one design effect."""
    sums = [_per_user(values[arm], users[arm]) for arm in arms]
    counts = [(n.tolist(), np.rint(hits).astype(int).tolist()) for n, hits, _ in sums]
    one, two = clustered_proportions(counts)
    return one, two


def figures(
    suite: Any,
    families: list[Family],
    rows: pd.DataFrame,
    labels: pd.Series | None,
    state: dict[str, Any],
    slow: int | None = None,
) -> dict[tuple[str, str], tuple[Counts, Counts]]:
    """Per family, (candidate, primary) statistics of its figure on the rows recorded so far
    (score: the mean; error: the share of labelled rows predicted wrong), and the HTTP errors
    from the split's figures per arm."""
    from chaosml.release.shadow import slice_masks

    out: dict[tuple[str, str], tuple[Counts, Counts]] = {}
    if len(rows):
        rows = rows.reset_index(drop=True)
        arm = rows["arm"].astype(str).to_numpy()
        score = pd.to_numeric(rows["score"], errors="coerce").to_numpy(dtype=float)
        error = np.full(len(rows), np.nan)
        if labels is not None and "id" in rows.columns:
            known = rows["id"].astype(str).map(labels)
            has = known.notna().to_numpy()
            error[has] = ~same(rows["prediction"][has], known[has])
        users = users_of(rows["key"].to_numpy() if "key" in rows.columns else None, len(rows))
        masks = dict(slice_masks(suite, rows))
        for family in families:
            mask = masks.get(family.slice)
            if family.figure not in ("score", "error"):  # from the split's figures, below
                continue
            if mask is None:  # a group the rows so far do not hold
                continue
            one, two = mask & (arm == "candidate"), mask & (arm == "primary")
            if family.figure == "score":
                out[family.key] = _means(score, users, one, two)
            else:
                out[family.key] = _proportions(error, users, one, two)
    arms = state.get("arms", {})
    out[("overall", "http_errors")] = (
        _errors_of(arms.get("candidate", {})),
        _errors_of(arms.get("primary", {})),
    )
    if slow is not None:
        out[("overall", "slow_requests")] = (
            _slow_of(arms.get("candidate", {}), slow),
            _slow_of(arms.get("primary", {}), slow),
        )
    return out


def p95_bucket(arm: dict[str, Any]) -> int | None:
    """The latency bucket holding the arm's p95, once it has answered ``MIN_LATENCY`` requests."""
    counts = arm.get("latency", {}).get("counts")
    total = arm.get("latency", {}).get("count", 0)
    if not counts or total < MIN_LATENCY:
        return None
    seen = 0
    for index, n in enumerate(counts):
        seen += n
        if seen >= 0.95 * total:
            return index
    return len(counts) - 1


def slow_bucket(arm: dict[str, Any]) -> int | None:
    """The bucket above which a request is slow: ``SLOW_FACTOR`` times the arm's p95 (the
    histogram has 24 buckets per decade, so 1.5 times is 4 buckets up: 1.47 times)."""
    index = p95_bucket(arm)
    if index is None:
        return None
    steps = round(24 * math.log10(SLOW_FACTOR))
    return min(index + steps, len(arm["latency"]["counts"]) - 1)


def _slow_of(arm: dict[str, Any], slow: int) -> Proportion:
    counts = arm.get("latency", {}).get("counts") or []
    return Proportion(n=int(sum(counts)), successes=int(sum(counts[slow + 1 :])))


def _requests(state: dict[str, Any]) -> dict[str, int]:
    arms = state.get("arms", {})
    return {a: int(arms.get(a, {}).get("requests", 0)) for a in ("primary", "candidate")}


def _errors_of(arm: dict[str, Any]) -> Proportion:
    return Proportion(n=int(arm.get("requests", 0)), successes=int(arm.get("errors", 0)))


# --- the controller ---------------------------------------------------------------------------


@dataclass(kw_only=True)
class CanaryOptions:
    steps: list[Step]
    look: float = 5.0  # seconds between looks
    lease: float = 15.0  # seconds the split outlives a silent controller
    alpha: float = 0.05
    key: dict[str, str] | None = None
    quiet: list[str] = field(default_factory=list)  # alerts that must not fire ("*": any new)
    labels: Path | None = None
    data: Path | None = None
    switch: bool = False
    root: Path = ROOT


class Controller:
    """One canary run: the split at the proxy, the looks, the verdict."""

    def __init__(
        self,
        target_path: Path,
        candidate_url: str,
        suite_path: Path,
        options: CanaryOptions,
        *,
        say: Callable[[str], None] = lambda line: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from chaosml.gameday.target import load_target
        from chaosml.release.shadow import _reachable, candidate_address
        from chaosml.slices.suite import load_suite

        self.options, self.say, self.clock, self.sleep = options, say, clock, sleep
        if options.look <= 0:
            raise InputError(f"--look {options.look:g} s: a duration above 0")
        if options.lease <= 2 * options.look:
            raise InputError(
                f"--lease {options.lease:g} s must exceed twice --look {options.look:g} s "
                "(the lease is renewed at every look)"
            )
        if not 0 < options.alpha < 1:
            raise InputError(f"--alpha {options.alpha:g}: expected a level in (0, 1)")
        loaded = load_target(target_path)
        self.target, self.target_path = loaded.target, target_path
        point = self.target.fault_points.get("proxy")
        if point is None:
            raise InputError(f"{target_path}: no fault_points.proxy to split traffic at")
        if point.kind != "chaosml":
            raise InputError(f"{target_path}: fault_points.proxy is a Toxiproxy: it cannot split")
        self.point = point
        self.suite, self.suite_path = load_suite(suite_path), suite_path
        self.candidate_url = candidate_url
        self.address, route = candidate_address(candidate_url)
        served = candidate_address(self.target.url)[1]
        if route != served:
            raise InputError(
                f"--candidate {candidate_url}: the split sends each request to the same path, "
                f"and the target is served at {served}, not {route}"
            )
        _reachable(self.address, "candidate")
        names, self.unjudged = slice_names(self.suite, options.data or loaded.data)
        if options.labels is not None and options.labels.is_file():
            read_labels(options.labels, self.suite.label or "label")  # its columns, up front
        # labels from the feedback that passes the proxy, where the target's does
        self.feedback, self.no_feedback = feedback_route(self.target)
        self.labelled = options.labels is not None or self.feedback is not None
        self.families = declare_families(names, labelled=self.labelled)
        self.slow: int | None = None  # the latency bucket of the primary's p95

    def run(self) -> CanaryResult:
        from chaosml.proxy.client import ControlClient, ControlFailed, ControlRefused

        options = self.options
        run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        folder = (options.root / run_id).resolve()  # the proxy writes there: absolute
        folder.mkdir(parents=True, exist_ok=True)
        token = os.environ.get(self.point.token_env) if self.point.token_env else None
        client = ControlClient(address=self.point.api, token=token)
        gate = Gate(options.alpha, self.families)
        result = CanaryResult(
            folder=folder,
            target=str(Path(self.target_path).resolve()),
            candidate=self.candidate_url,
            steps=[],
            families=self.families,
            unjudged=self.unjudged,
            alpha=options.alpha,
            method=METHOD,
            plan={
                "run_id": run_id,
                "suite": str(Path(self.suite_path).resolve()),
                "steps": [{"weight": s.weight, "seconds": s.seconds} for s in options.steps],
                "key": options.key,
                "look": options.look,
                "lease": options.lease,
                "labels": None if options.labels is None else str(options.labels.resolve()),
                "feedback": self.feedback,
                "quiet": options.quiet,
            },
        )
        poller = self._poller()
        recorded = Recorded(folder)
        journal = (folder / "looks.jsonl").open("a")
        first = options.steps[0]
        try:
            try:
                client.set_split(
                    self.point.proxy,
                    self.address,
                    first.weight,
                    key=options.key,
                    lease=options.lease,
                    folder=str(folder),
                    codec=self.target.codec,
                    feedback=self.feedback,
                )
            except ControlFailed as exc:
                self._unsplit(client, folder)  # it may have been made before the answer failed
                raise UnreachableError(
                    f"fault_points.proxy: the control API {self.point.api} is unreachable or failed: {exc}"
                ) from None
            except ControlRefused as exc:
                raise InputError(
                    f"fault_points.proxy: {self.point.api} refused the split: {exc}"
                ) from None
            except BaseException:  # Ctrl-C while the proxy answered: the split may exist already
                self._unsplit(client, folder)
                raise
        except BaseException:
            for source in poller.sources:
                source.stop()
            journal.close()
            raise
        began = self.clock()
        try:  # from here on, whatever happens, the split is ended in the ``finally``
            self.say(
                f"canary of {self.candidate_url} on {self.point.proxy} at {self.point.api}: "
                f"{', '.join(s.label() for s in options.steps)}; recording into {folder}"
            )
            if self.no_feedback is not None:
                self.say(self.no_feedback)
            elif self.feedback is not None:
                self.say(
                    f"labels: recorded from the feedback POSTed through the proxy to "
                    f"{self.feedback}"
                )
            baseline = self._active(poller)
            for index, step in enumerate(options.steps):
                if index:
                    client.change_split(self.point.proxy, weight=step.weight, lease=options.lease)
                record = StepRecord(step=step, started=self.clock() - began)
                result.steps.append(record)
                record.at_start = _requests(client.split(self.point.proxy))
                self.say(f"step {index + 1}/{len(options.steps)}: {step.label()}")
                if step.seconds is None:
                    record.verdict, record.ended = "reached", record.started
                    break
                ends = self.clock() + step.seconds
                while True:
                    self.sleep(max(0.0, min(options.look, ends - self.clock())))
                    client.change_split(self.point.proxy, lease=options.lease)  # renew
                    rollback = self._look(
                        client, gate, poller, baseline, recorded, result, record, index, began
                    )
                    journal.write(json.dumps(result.looks[-1].to_dict()) + "\n")
                    journal.flush()
                    over = self.clock() >= ends
                    if rollback is None and over:  # the step passes on evidence only
                        rollback = self._unobserved(record, index, gate)
                    if rollback is not None:
                        decided, rollback.decided_at = self.clock(), time.time()
                        client.change_split(self.point.proxy, weight=0.0, lease=options.lease)
                        rollback.weight_zero_after = round(self.clock() - decided, 3)
                        result.rollback = rollback
                        record.verdict, record.ended = "rolled_back", self.clock() - began
                        self.say(f"rolled back at {step.label()}: {rollback.detail}")
                        break
                    if over:
                        record.verdict, record.ended = "passed", self.clock() - began
                        break
                if result.rollback is not None:
                    break
        except KeyboardInterrupt:
            result.interrupted = True
            if result.steps and result.steps[-1].verdict == "running":
                result.steps[-1].verdict = "interrupted"
                result.steps[-1].ended = self.clock() - began
        except (ControlFailed, ControlRefused) as exc:  # the split is lost or out of reach
            expired = isinstance(exc, ControlRefused) and exc.status == 409
            why = (
                "the split's lease ran out before it was renewed (the controller stalled): the "
                "proxy sent everything back to the primary"
                if expired
                else f"the control API {self.point.api} failed: {exc}"
            )
            index = max(len(result.steps) - 1, 0)
            result.rollback = Rollback(
                step=index, reason="unobservable", detail=f"{why}; the canary cannot go on"
            )
            if result.steps and result.steps[-1].verdict == "running":
                result.steps[-1].verdict = "rolled_back"
                result.steps[-1].ended = self.clock() - began
            self.say(f"rolled back: {result.rollback.detail}")
        finally:
            journal.close()
            try:
                with holding():  # a Ctrl-C now waits until the split is ended
                    self._end_split(client, result)
            except KeyboardInterrupt:
                result.interrupted = True
            for source in poller.sources:
                source.stop()
        result.seconds = self.clock() - began
        (folder / "release.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        return result

    def _end_split(self, client: Any, result: CanaryResult) -> None:
        """The split removed (all traffic back on the primary), or, for a promoted candidate
        with ``--switch``, promoted: the candidate becomes the proxy's upstream at once, with
        no client's request failing. Its final state goes into the result."""
        from chaosml.proxy.client import ControlFailed, ControlRefused

        proxy = self.point.proxy
        if result.verdict == "promoted" and self.options.switch:
            try:
                result.state = client.promote_split(proxy)
                result.switched = True
                return
            except (ControlFailed, ControlRefused) as exc:  # promoted, but not switched: say so
                result.notes.append(f"--switch: the proxy's upstream was not changed: {exc}")
        try:
            result.state = client.remove_split(proxy)
        except (ControlFailed, ControlRefused) as exc:
            self.say(f"could not remove the split: {exc}; its lease ends it")

    def _unsplit(self, client: Any, folder: Path) -> None:
        """Remove the split this run may or may not have made (gone or never made is fine);
        a split recording elsewhere is another run's, and stays."""
        from chaosml.proxy.client import ControlFailed, ControlRefused

        with contextlib.suppress(ControlFailed, ControlRefused):  # else its lease ends it
            if client.split(self.point.proxy).get("folder") == str(folder):
                client.remove_split(self.point.proxy)

    def _poller(self) -> Any:
        from chaosml.alerts.poller import Poller
        from chaosml.alerts.specs import make_source

        sources = [make_source(s) for s in self.target.alerts]
        for source in sources:
            source.start()
        return Poller(sources=sources)

    def _active(self, poller: Any) -> set[str]:
        """Alerts already pending or firing before the canary: ``--quiet '*'`` spares them."""
        poller.poll()
        return {t.name for t in poller.active()}

    def _look(
        self,
        client: Any,
        gate: Any,
        poller: Any,
        baseline: set[str],
        recorded: Recorded,
        result: CanaryResult,
        record: StepRecord,
        index: int,
        began: float,
    ) -> Rollback | None:
        options = self.options
        state = client.split(self.point.proxy)
        recorded.read_new()
        rows = recorded.rows()
        labels = known_labels(
            feedback_labels(recorded.folder),
            read_labels(options.labels, self.suite.label or "label"),
        )
        if options.labels is not None and not options.labels.is_file():
            missing = f"--labels {options.labels}: no such file (yet): no row is labelled"
            if missing not in result.notes:
                result.notes.append(missing)
                self.say(missing)
        if self.slow is None:  # fixed once, from the primary's first requests
            self.slow = slow_bucket(state.get("arms", {}).get("primary", {}))
        stats = figures(self.suite, self.families, rows, labels, state, self.slow)
        decision = gate.look(stats)
        arms = state.get("arms", {})
        per_arm = rows["arm"].value_counts().to_dict() if len(rows) else {}
        labelled = {}
        if labels is not None and len(rows) and "id" in rows.columns:
            has = rows["id"].astype(str).isin(labels.index)
            labelled = rows[has]["arm"].value_counts().to_dict()
        worst = min(decision.results, key=lambda r: r.p_value, default=None)
        result.looks.append(
            Look(
                at=self.clock() - began,
                step=index,
                weight=record.step.weight,
                requests={
                    a: int(arms.get(a, {}).get("requests", 0)) for a in ("primary", "candidate")
                },
                rows={a: int(per_arm.get(a, 0)) for a in ("primary", "candidate")},
                labelled={a: int(labelled.get(a, 0)) for a in ("primary", "candidate")},
                worst=None if worst is None else worst.name,
                worst_p=None if worst is None else worst.p_value,
            )
        )
        record.figures = [r.to_dict() for r in decision.results]
        record.service = {a: dict(arms.get(a, {})) for a in ("primary", "candidate")}
        record.during = {a: n - record.at_start.get(a, 0) for a, n in _requests(state).items()}
        poller.poll()
        record.alerts = [
            {"alert": t.name, "source": t.source, "state": "firing" if t.fired else "pending"}
            for t in poller.active()
        ]
        if decision.rolled_back and decision.family is not None:
            family = decision.family
            what = FIGURES[family.figure][2]
            if family.candidate is None or family.primary is None:
                moved = "differs from the primary's"
            else:
                how = "differs from" if family.direction == "two_sided" else "is worse than"
                moved = (
                    f"{how} the primary's: {family.candidate:.4g} against "
                    f"{family.primary:.4g} ({family.difference:+.4g})"
                )
            return Rollback(
                step=index,
                reason=REASONS[family.figure],
                detail=(
                    f"{family.slice}: the candidate's {what} {moved} "
                    f"(always-valid p = {family.p_value:.3g}, at most {gate.threshold:.3g} "
                    f"allowed for each of {len(self.families)} figures)"
                ),
                slice=family.slice,
                figure=family.figure,
                p=family.p_value,
                estimate=family.difference,
            )
        down = [o for o in poller.outages if o.end is None]
        if down:
            return Rollback(
                step=index,
                reason="unobservable",
                detail=f"alert source {down[0].source} cannot be read ({down[0].error}): "
                "the step cannot show its alerts stayed quiet",
            )
        for track in poller.active():
            if not track.fired:
                continue
            named = track.name in options.quiet
            new = "*" in options.quiet and track.name not in baseline
            if named or new:
                return Rollback(
                    step=index,
                    reason="alert",
                    detail=f"alert {track.name} fired at {track.source}",
                )
        return None

    def _unobserved(self, record: StepRecord, index: int, gate: Any) -> Rollback | None:
        """A step passes on evidence only: the candidate must have answered requests during it,
        and by the last judged step the overall quality figure must have had the counts to reject."""
        if record.during.get("candidate", 0) == 0:
            return Rollback(
                step=index,
                reason="unobservable",
                detail=f"the candidate answered no request during {record.step.label()}: "
                "nothing shows it is fit (is traffic reaching the proxy?)",
            )
        last = index == max(i for i, s in enumerate(self.options.steps) if s.seconds is not None)
        quality = "error" if self.labelled else "score"
        unjudged = [
            f"{f['slice']}/{f['figure']}"
            for f in record.figures
            if (f["slice"], f["figure"]) == ("overall", quality) and not f["testable"]
        ]
        if last and unjudged:
            return Rollback(
                step=index,
                reason="unobservable",
                detail=f"{', '.join(unjudged)} never reached the counts to be judged "
                f"({gate.min_count} per arm, and for a rate {gate.min_events} expected events of "
                "each kind): the canary saw too little to promote",
            )
        return None


def run_canary(
    target_path: Path,
    candidate_url: str,
    suite_path: Path,
    options: CanaryOptions,
    *,
    say: Callable[[str], None] = lambda line: None,
) -> CanaryResult:
    controller = Controller(target_path, candidate_url, suite_path, options, say=say)
    with keyboard_interrupts():
        return controller.run()


# --- reports ------------------------------------------------------------------------------------


def _ms(seconds: Any) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.0f}"


def _p(value: Any) -> str:
    return "–" if value is None else f"{value:.3g}"


def headline(result: CanaryResult) -> str:
    if result.rollback is not None:
        r = result.rollback
        step = result.steps[r.step].step if r.step < len(result.steps) else result.steps[-1].step
        zero = "" if r.weight_zero_after is None else f"; weight 0 after {r.weight_zero_after:g} s"
        return f"ROLLED BACK at step {r.step + 1} ({step.label()}): {r.detail}{zero}"
    if result.interrupted:
        done = sum(s.verdict == "passed" for s in result.steps)
        return f"INTERRUPTED after {done} of {len(result.steps)} steps passed: no verdict"
    switched = "; the proxy now sends everything to the candidate" if result.switched else ""
    never = result.never_judged()
    unseen = f" (never judged, too few observations: {', '.join(never)})" if never else ""
    return f"PROMOTED: every step passed{switched}{unseen}"


def render_canary(result: CanaryResult, console: Any) -> None:
    from rich.table import Table

    console.print(
        f"canary of {result.candidate} for {result.seconds:.1f} s, {len(result.families)} "
        f"figures judged at family-wise alpha {result.alpha:g} ({result.method}); "
        f"recorded in {result.folder}",
        highlight=False,
    )
    if result.unjudged:
        console.print(
            f"not judged (no --data to name their groups): {', '.join(result.unjudged)}",
            highlight=False,
        )
    table = Table(title="steps")
    for name in (
        "step",
        "verdict",
        "requests in step (primary/candidate)",
        "errors so far",
        "p95 ms so far",
        "worst figure",
    ):
        table.add_column(name)
    for index, record in enumerate(result.steps):
        service = record.service
        primary, candidate = service.get("primary", {}), service.get("candidate", {})
        worst = min(record.figures, key=lambda f: f["p_value"], default=None)
        during = record.during
        table.add_row(
            f"{index + 1}: {record.step.label()}",
            record.verdict,
            f"{during.get('primary', 0)}/{during.get('candidate', 0)}" if during else "–",
            f"{primary.get('errors', 0)}/{candidate.get('errors', 0)}" if service else "–",
            "/".join(_ms(a.get("latency", {}).get("p95")) for a in (primary, candidate))
            if service
            else "–",
            "–"
            if worst is None
            else f"{worst['slice']}/{worst['figure']} (p {_p(worst['p_value'])})",
        )
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(headline(result), highlight=False)


def write_canary_junit(result: CanaryResult, path: Path) -> None:
    from chaosml.report._junit import _case, _write

    cases = []
    for index, record in enumerate(result.steps):
        status = {"rolled_back": "failed", "interrupted": "skipped"}.get(record.verdict, "passed")
        detail = headline(result) if record.verdict == "rolled_back" else record.verdict
        cases.append(
            _case("chaosml.canary", f"step {index + 1}: {record.step.label()}", status, detail)
        )
    for index in range(len(result.steps), len(result.plan.get("steps", []))):
        planned = result.plan["steps"][index]
        step = Step(planned["weight"], planned["seconds"])
        cases.append(
            _case("chaosml.canary", f"step {index + 1}: {step.label()}", "skipped", "not reached")
        )
    _write(path, ("chaosml canary", cases))


def write_canary_html(result: CanaryResult, path: Path) -> None:
    import html

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from chaosml.report._html import _page, _svg, _table, _td

    figure, axis = plt.subplots(figsize=(7, 2.6))
    times = [look.at for look in result.looks]
    axis.step(
        [0.0, *times],
        [result.steps[0].step.weight if result.steps else 0]
        + [look.weight for look in result.looks],
        where="post",
    )
    if result.rollback is not None and times:
        axis.axvline(times[-1], color="#b00020", linestyle="--", label="rolled back")
        axis.legend()
    axis.set_xlabel("seconds")
    axis.set_ylabel("candidate weight")
    axis.set_ylim(0, 1.05)
    body = f"<p>{html.escape(headline(result))}</p>" + _svg(figure)
    for index, record in enumerate(result.steps):
        rows = [
            [
                _td(f"{f['slice']}/{f['figure']}"),
                _td(str(f["n_primary"]), True),
                _td(str(f["n_candidate"]), True),
                _td("–" if f["difference"] is None else f"{f['difference']:+.4g}", True),
                _td(_p(f["p_value"]), True),
                _td(
                    "rejected" if f.get("rejected") else "",
                    css="failed" if f.get("rejected") else "",
                ),
            ]
            for f in record.figures
        ]
        body += f"<h2>step {index + 1}: {html.escape(record.step.label())} — {record.verdict}</h2>"
        body += _table(
            ["figure", "n primary", "n candidate", "difference", "always-valid p", ""], rows
        )
        if record.alerts:
            body += (
                "<p>alerts active: "
                + ", ".join(
                    html.escape(f"{a['alert']} ({a['state']}, {a['source']})")
                    for a in record.alerts
                )
                + "</p>"
            )
    path.write_text(_page(f"chaosml canary: {result.verdict}", body))
