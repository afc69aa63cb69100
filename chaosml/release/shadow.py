"""``chaosml shadow``: a candidate model run in the shadow of the target's, judged per slice.

The target's proxy fault point (``fault_points.proxy``) copies each request it answers to the
candidate and records both answers with the rows (``chaosml.proxy.shadow``) under
``.chaosml/shadow/<run-id>/``. While it runs, every ``PROGRESS`` seconds, it prints its counts
and each slice's disagreement so far (``LiveView``, from the parts the proxy writes under
``_live/``). After the duration (or Ctrl-C) the copy is removed, always, and the recorded pairs
are read back: per slice of the suite, the share of rows on which the two versions disagree with
a Wilson interval (simultaneous: Bonferroni over the judged slices), and the mean score shift
(candidate minus primary). With labels (recorded by the proxy from the feedback POSTed to the
target's feedback URL, when it passes the proxy, and ``--labels``, a CSV or Parquet file of
``id`` and the label, which has the last word; joined by id into ``rows.parquet``), also the
paired comparison of ``slices compare`` on the labelled rows.

Verdict: no rows recorded fails (nothing shows the candidate agrees); without labels, the
candidate fails when some slice (of at least the suite's ``min_size`` rows) disagrees with the
primary on more than ``compare.max_drop`` of its rows, at the suite's confidence (the interval's
lower bound above it): a version that changes at most that share of a slice's answers cannot
lose more than that share of its accuracy, so passing bounds the loss; failing says the change
is too large to accept unlabelled. With labels, the paired comparison decides (it measures the
loss instead of bounding it).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from chaosml._signals import holding, keyboard_interrupts
from chaosml.errors import InputError, UnreachableError

SCHEMA = "chaosml.shadow/1"
ROOT = Path(".chaosml/shadow")
MISSING = "<missing>"
PROGRESS = 10.0  # seconds between the progress lines of a running shadow (each renews the lease)
# the proxy removes a shadow not renewed for this long: a `chaosml shadow` killed with SIGKILL
# leaves nothing copying once it runs out
LEASE = 60.0


@dataclass
class SliceShadow:
    name: str
    n: int
    disagree: int
    rate: float | None
    ci: tuple[float, float] | None
    score_shift: float | None  # mean of candidate minus primary score
    verdict: str  # "agrees", "disagrees" or "too small"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": self.n,
            "disagree": self.disagree,
            "rate": self.rate,
            "ci": None if self.ci is None else list(self.ci),
            "score_shift": self.score_shift,
            "verdict": self.verdict,
        }


@dataclass
class ShadowResult:
    folder: Path
    target: str
    candidate: str
    seconds: float
    counts: dict[str, Any]
    max_drop: float
    confidence: float
    slices: list[SliceShadow] = field(default_factory=list)
    comparison: Any = None  # a slices ``Comparison`` when labels exist
    labelled: int = 0
    interrupted: bool = False

    @property
    def passed(self) -> bool:
        if not self.slices:  # nothing recorded: nothing shows the candidate agrees
            return False
        if self.comparison is not None:
            return bool(self.comparison.passed)
        return not any(s.verdict == "disagrees" for s in self.slices)

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (0 if self.passed else 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "folder": str(self.folder),
            "target": self.target,
            "candidate": self.candidate,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "passed": self.passed,
            "counts": self.counts,
            "rule": {"max_disagreement": self.max_drop, "confidence": self.confidence},
            "slices": [s.to_dict() for s in self.slices],
            "labelled_rows": self.labelled,
            "comparison": None if self.comparison is None else self.comparison.to_dict(),
        }


def candidate_address(url: str) -> tuple[str, str]:
    """``host:port`` and path of an ``http://HOST:PORT/path`` URL (``InputError`` if not one)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise InputError(f"--candidate {url!r}: expected http://HOST:PORT/PATH")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}", parts.path or "/"


def _reachable(address: str, what: str) -> None:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=3).close()
    except OSError as exc:
        raise UnreachableError(f"{what} {address} unreachable: {exc.strerror or exc}") from None


def slice_masks(suite: Any, rows: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """Each slice of the suite on ``rows``: ``overall`` first, then the suite's, ``by`` groups
    named as the slice engines name them (``region=APAC``, ``sex=F & region=APAC``)."""
    masks: list[tuple[str, np.ndarray]] = [("overall", np.ones(len(rows), dtype=bool))]
    for spec in suite.slices:
        if spec.where is not None:
            masks.append((spec.name, np.asarray(spec.predicate.evaluate(rows), dtype=bool)))
            continue
        missing = [c for c in spec.by if c not in rows.columns]
        if missing:
            raise InputError(f"the recorded rows have no column {missing[0]!r} (slices `by`)")
        keys = rows[spec.by].astype(object).where(rows[spec.by].notna(), MISSING)
        for values, group in keys.groupby(spec.by, sort=True):
            index = group.index
            values = values if isinstance(values, tuple) else (values,)
            name = " & ".join(f"{c}={v}" for c, v in zip(spec.by, values, strict=True))
            mask = np.zeros(len(rows), dtype=bool)
            mask[rows.index.get_indexer(index)] = True
            masks.append((name, mask))
    return masks


@dataclass
class Tally:
    """A slice's counts: rows, rows the versions disagree on, and the score shifts' sum."""

    n: int = 0
    disagree: int = 0
    shift: float = 0.0
    shifted: int = 0  # rows with both scores

    def add(self, other: Tally) -> None:
        self.n += other.n
        self.disagree += other.disagree
        self.shift += other.shift
        self.shifted += other.shifted


def tallies(
    suite: Any, rows: pd.DataFrame, primary: pd.DataFrame, candidate: pd.DataFrame
) -> dict[str, Tally]:
    """Each slice's counts on ``rows`` and the two versions' answers (``prediction``, ``score``)."""
    differ = (primary["prediction"].astype(str) != candidate["prediction"].astype(str)).to_numpy()
    shift = (candidate["score"] - primary["score"]).to_numpy(dtype=float)
    known = ~np.isnan(shift)
    out = {}
    for name, mask in slice_masks(suite, rows.reset_index(drop=True)):
        scored = mask & known
        out[name] = Tally(
            int(mask.sum()), int(differ[mask].sum()), float(shift[scored].sum()), int(scored.sum())
        )
    return out


def judge_tallies(suite: Any, counts: dict[str, Tally]) -> list[SliceShadow]:
    """Each slice's disagreement rate with its interval, simultaneous over the judged slices
    (Bonferroni: any slice's "disagrees" fails the command, so the chance of any false one stays
    within 1 - confidence), its mean score shift and its verdict."""
    from scipy.stats import norm

    from chaosml.slices.stats.paired import wilson

    policy = suite.compare
    judged = sum(t.n >= suite.min_size or name == "overall" for name, t in counts.items())
    z = float(norm.ppf(1 - (1 - policy.confidence) / (2 * max(judged, 1))))
    out = []
    for name, t in counts.items():
        if t.n == 0:
            out.append(SliceShadow(name, 0, 0, None, None, None, "too small"))
            continue
        low, high = wilson(t.disagree, t.n, z)
        small = t.n < suite.min_size and name != "overall"
        verdict = "too small" if small else ("disagrees" if low > policy.max_drop else "agrees")
        shift = t.shift / t.shifted if t.shifted else None
        ci = (float(low), float(high))
        out.append(SliceShadow(name, t.n, t.disagree, t.disagree / t.n, ci, shift, verdict))
    return out


def disagreement(
    suite: Any, rows: pd.DataFrame, primary: pd.DataFrame, candidate: pd.DataFrame
) -> list[SliceShadow]:
    return judge_tallies(suite, tallies(suite, rows, primary, candidate))


class LiveView:
    """A running shadow's figures per slice, from the parts the proxy writes under ``_live/``
    at each flush: each part is read once, added to the slices' counts, and removed."""

    def __init__(self, suite: Any, folder: Path) -> None:
        from chaosml.proxy.shadow import LIVE

        self.suite, self.folder = suite, folder / LIVE
        self.counts: dict[str, Tally] = {}

    def read(self) -> int:
        """The rows of the parts written since the last read, counted (its number)."""
        added = 0
        for part in sorted(self.folder.glob("part-*.parquet")):
            try:
                frame = pd.read_parquet(part)
            except (OSError, ValueError):  # a part is whole once named: this one is damaged
                continue
            answers = {
                name: frame[[f"{name}.prediction", f"{name}.score"]].set_axis(
                    ["prediction", "score"], axis=1
                )
                for name in ("primary", "candidate")
            }
            rows = frame.drop(columns=[c for c in frame.columns if c.split(".")[0] in answers])
            try:
                found = tallies(self.suite, rows, answers["primary"], answers["candidate"])
            except InputError:  # a by-column absent from this part: the final report says so
                continue
            for name, tally in found.items():
                self.counts.setdefault(name, Tally()).add(tally)
            added += len(frame)
            part.unlink()
        return added

    def lines(self, top: int = 3) -> list[str]:
        """The overall disagreement and the ``top`` slices whose interval lies highest."""
        slices = judge_tallies(self.suite, self.counts) if self.counts else []
        if not slices or slices[0].rate is None:
            return []
        judged = [s for s in slices[1:] if s.verdict != "too small" and s.ci is not None]
        worst = sorted(judged, key=lambda s: s.ci[0] if s.ci else 0.0, reverse=True)[:top]
        return [f"live: {_live(s)}" for s in [slices[0], *worst]]

    def close(self) -> None:
        """The live parts left are removed: the final files hold every row."""
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def _live(s: SliceShadow) -> str:
    assert s.rate is not None and s.ci is not None
    shift = "" if s.score_shift is None else f", score shift {s.score_shift:+.4f}"
    return (
        f"{s.name} disagrees on {s.rate:.4f} [{s.ci[0]:.4f}, {s.ci[1]:.4f}] of {s.n} rows"
        f"{shift}: {s.verdict}"
    )


def analyse(
    folder: Path, suite_path: Path, labels: Path | None = None, *, config_path: Path | None = None
) -> tuple[list[SliceShadow], Any, int]:
    """The per-slice disagreement of the recorded pairs, and with labels the paired comparison
    (and how many rows were labelled)."""
    from chaosml.release.labels import feedback_labels, known_labels, read_labels
    from chaosml.slices.compare import compare_versions
    from chaosml.slices.suite import load_suite
    from chaosml.versions import PredictionsFile

    suite = load_suite(suite_path)
    label = suite.label or "label"
    if labels is not None and not labels.is_file():
        raise InputError(f"--labels {labels}: no such file")
    given = read_labels(labels, label)
    if not (folder / "rows.parquet").is_file():
        return [], None, 0
    rows = pd.read_parquet(folder / "rows.parquet")
    primary = pd.read_parquet(folder / "primary.parquet")
    candidate = pd.read_parquet(folder / "candidate.parquet")
    slices = disagreement(suite, rows, primary, candidate)
    found = known_labels(feedback_labels(folder), given)  # a labels file has the last word
    if found is None:
        return slices, None, 0
    if "id" not in rows.columns:
        raise InputError("labels: the recorded answers carry no ids to join labels by")
    rows[label] = rows["id"].astype(str).map(found).infer_objects()
    rows.to_parquet(folder / "rows.parquet", index=False)
    known = rows[label].notna().to_numpy()
    if not known.any():
        return slices, None, 0
    sub = folder / "labelled"
    sub.mkdir(exist_ok=True)
    rows[known].to_parquet(sub / "rows.parquet", index=False)
    for name, frame in (("primary", primary), ("candidate", candidate)):
        frame[known].to_parquet(sub / f"{name}.parquet", index=False)
    comparison = compare_versions(
        suite,
        PredictionsFile("primary", sub / "primary.parquet"),
        PredictionsFile("candidate", sub / "candidate.parquet"),
        str(sub / "rows.parquet"),
    )
    return slices, comparison, int(known.sum())


def run_shadow(
    target_path: Path,
    candidate_url: str,
    suite_path: Path,
    *,
    duration: float,
    labels: Path | None = None,
    root: Path = ROOT,
    say: Callable[[str], None] = lambda line: None,
    wait: Callable[[float], None] = time.sleep,
) -> ShadowResult:
    """Shadow the target's proxy with the candidate for ``duration`` seconds (Ctrl-C ends it
    early; the copy is removed in any case), then judge the recorded pairs per slice."""
    from chaosml.gameday.target import load_target
    from chaosml.proxy.client import ControlClient, ControlFailed, ControlRefused
    from chaosml.slices.suite import load_suite

    target = load_target(target_path).target
    point = target.fault_points.get("proxy")
    if point is None:
        raise InputError(f"{target_path}: no fault_points.proxy to shadow through")
    if point.kind != "chaosml":
        raise InputError(f"{target_path}: fault_points.proxy is a Toxiproxy: it cannot shadow")
    suite = load_suite(suite_path)
    address, path = candidate_address(candidate_url)
    _reachable(address, "candidate")
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    folder = (root / run_id).resolve()  # the proxy writes there: an absolute path
    folder.mkdir(parents=True, exist_ok=True)
    token = os.environ.get(point.token_env) if point.token_env else None
    client = ControlClient(address=point.api, token=token)
    from chaosml.release.labels import feedback_route

    feedback, why_not = feedback_route(target)
    if why_not is not None:
        say(why_not)
    live = LiveView(suite, folder)
    with keyboard_interrupts():
        try:
            first = client.set_shadow(
                point.proxy,
                address,
                target.codec,
                str(folder),
                path,
                feedback=feedback,
                live=True,
                lease=LEASE,
            )
        except ControlFailed as exc:
            _unshadow(client, point.proxy)  # it may have been made before the answer failed
            raise UnreachableError(
                f"fault_points.proxy: the control API {point.api} is unreachable or failed: {exc}"
            ) from None
        except ControlRefused as exc:
            raise InputError(f"fault_points.proxy: {point.api} refused the shadow: {exc}") from None
        except BaseException:  # Ctrl-C while the proxy answered: the shadow may exist already
            _unshadow(client, point.proxy)
            raise
        counts, seconds, interrupted = _shadowing(
            client,
            point,
            folder=folder,
            counts=first,
            live=live,
            duration=duration,
            say=say,
            wait=wait,
            announce=[
                f"shadowing {point.proxy} at {point.api} with {candidate_url}; "
                f"recording into {folder}",
                *(
                    [f"labels: recorded from the feedback POSTed through the proxy to {feedback}"]
                    if feedback is not None
                    else []
                ),
            ],
        )
    say(
        f"{counts['mirrored']} requests copied, {counts['recorded_rows']} rows recorded, "
        f"{counts['dropped']} copies dropped"
    )
    slices, comparison, labelled = analyse(folder, suite_path, labels)
    return ShadowResult(
        folder=folder,
        target=str(target_path),
        candidate=candidate_url,
        seconds=seconds,
        counts=counts,
        max_drop=suite.compare.max_drop,
        confidence=suite.compare.confidence,
        slices=slices,
        comparison=comparison,
        labelled=labelled,
        interrupted=interrupted,
    )


def _unshadow(client: Any, proxy: str) -> None:
    """Remove a shadow that may or may not have been made (gone or never made is fine)."""
    from chaosml.proxy.client import ControlFailed, ControlRefused

    with contextlib.suppress(ControlFailed, ControlRefused):
        client.remove_shadow(proxy)


class _Lost(Exception):
    """The proxy no longer has this run's shadow (its lease ran out, and maybe another run's
    shadow is set there now): the run ends, and removes nothing."""


def _shadowing(
    client: Any,
    point: Any,
    *,
    folder: Path,
    counts: dict[str, Any],
    live: LiveView,
    duration: float,
    say: Callable[[str], None],
    wait: Callable[[float], None],
    announce: list[str],
) -> tuple[dict[str, Any], float, bool]:
    """The shadow's run once it is set: the ``announce`` lines, then progress and the live view
    every 10 s until ``duration`` or Ctrl-C, then the shadow removed (in any case, if it is
    still this run's); its final counts, the seconds it ran and whether it was interrupted."""
    started, interrupted, ours = time.monotonic(), False, True
    try:
        for line in announce:
            say(line)
        ends = time.monotonic() + duration
        while (left := ends - time.monotonic()) > 0:  # progress every PROGRESS seconds
            wait(min(PROGRESS, left))
            if time.monotonic() < ends:
                at = f"{duration - max(ends - time.monotonic(), 0):.0f} s of {duration:g}"
                counts = _progress(client, point.proxy, live, say, at, folder) or counts
    except KeyboardInterrupt:
        interrupted = True
    except _Lost as lost:
        say(f"{lost}: the shadow ends here; the counts are those of the last progress line")
        ours = False
    finally:
        try:
            with holding():  # a Ctrl-C now waits until the shadow is removed
                if ours:
                    counts = _removed(client, point.proxy, say, folder) or counts
                live.close()
        except KeyboardInterrupt:
            interrupted = True
    return counts, time.monotonic() - started, interrupted


def _ours(state: dict[str, Any], folder: Path) -> None:
    """``_Lost`` unless ``state`` is the shadow this run set (the one recording into ``folder``)."""
    if state.get("folder") != str(folder):
        raise _Lost(
            f"the proxy's shadow is another run's now (recording into {state.get('folder')})"
        )


def _removed(
    client: Any, proxy: str, say: Callable[[str], None], folder: Path
) -> dict[str, Any] | None:
    """Remove the shadow if it is still this run's: its final counts, or None (and a line
    saying why) if the proxy had removed it already, its lease having run out unrenewed."""
    from chaosml.proxy.client import ControlRefused

    try:
        _ours(client.shadow(proxy), folder)
        return dict(client.remove_shadow(proxy))
    except _Lost as lost:
        say(f"{lost}: left as it is; the counts are those of the last progress line")
        return None
    except ControlRefused as exc:
        if exc.status != 404:
            raise
        say(
            "the proxy had removed the shadow (its lease ran out unrenewed): "
            "the counts are those of the last progress line"
        )
        return None


def _progress(
    client: Any, proxy: str, live: LiveView, say: Callable[[str], None], at: str, folder: Path
) -> dict[str, Any] | None:
    """A running shadow's lease renewed, its progress line and its live figures per slice so
    far; its counts (None if the proxy could not be read). ``_Lost`` if the proxy no longer has
    it: a renewal cannot bring a removed shadow back, and another run's is not renewed."""
    from chaosml.proxy.client import ControlFailed, ControlRefused

    try:
        now = dict(client.shadow(proxy))
        _ours(now, folder)
        now = dict(client.renew_shadow(proxy))
    except ControlRefused as exc:
        if exc.status == 404:
            raise _Lost("the proxy removed the shadow (its lease ran out unrenewed)") from None
        return None
    except ControlFailed:  # progress only: the end decides
        return None
    labels = now.get("feedback") or {}
    fed = f", {labels['labels']} labels from feedback" if labels else ""
    say(
        f"{at}: {now['mirrored']} requests copied, {now['recorded_rows']} rows recorded, "
        f"{now['dropped']} dropped{fed}"
    )
    live.read()
    for line in live.lines():
        say(line)
    return now


def render_shadow(result: ShadowResult, console: Any) -> None:
    from rich.table import Table

    counts = result.counts
    drops = ", ".join(f"{k} {v}" for k, v in counts.get("drops", {}).items()) or "none"
    labels = counts.get("feedback") or {}
    fed = f"; {labels['labels']} labels from feedback" if labels else ""
    console.print(
        f"shadow of {result.candidate} for {result.seconds:.1f} s: {counts['mirrored']} requests "
        f"copied, {counts['recorded_rows']} rows recorded in {result.folder}; dropped: {drops}"
        f"{fed}",
        highlight=False,
    )
    table = Table(title=f"disagreement per slice (fails above {result.max_drop:g})")
    for name in ("slice", "n", "disagree", f"{result.confidence:.0%} CI", "score shift", "verdict"):
        table.add_column(name)
    for s in result.slices:
        ci = "–" if s.ci is None else f"[{s.ci[0]:.4f}, {s.ci[1]:.4f}]"
        rate = "–" if s.rate is None else f"{s.rate:.4f}"
        shift = "–" if s.score_shift is None else f"{s.score_shift:+.4f}"
        table.add_row(s.name, str(s.n), rate, ci, shift, s.verdict)
    if result.slices:
        console.print(table)
    else:
        console.print("no rows recorded: nothing to judge the candidate by", highlight=False)
    if result.comparison is not None:
        from chaosml.report.console import render_comparison

        console.print(f"paired comparison on {result.labelled} labelled rows:", highlight=False)
        render_comparison(result.comparison, console)
    console.print("PASS" if result.passed else "FAIL", highlight=False)
