"""Verdicts: what a scenario's journal shows about each expectation, and about each fault.

A verdict says only what was observed. ``failed`` needs the whole window observed: the fault ran
to the deadline, it took effect, and every alert source answered throughout; then an alert that
is absent (or present, for ``fires: false``) is a failure. Anything less is ``unknown``, with the
reason: the run was cut short (stopped, interrupted, an error), a source was unreachable during
the window, the fault never took effect, or the alert was already firing when the fault began.
An alert seen firing is an observation whatever else happened.

Time to detect = when the alert fired (Prometheus: ``activeAt`` + the rule's ``for:``;
Alertmanager: ``startsAt``; webhook: delivery; probe: its own evaluation) minus injection start.
Time to resolve = when it was first seen gone minus rollback. The verdict uses the source that saw
it fire first; every source's figure is kept (``by_source``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from chaosml.alerts.base import NOISE_LABELS
from chaosml.faults import FAULTS, PayloadFault
from chaosml.gameday.journal import (
    Episode,
    ExpectationRecord,
    FaultRecord,
    Outage,
    ScenarioRecord,
    SourceFigures,
)
from chaosml.load.plan import SHORTFALL_LIMIT, shortfall
from chaosml.scenario import Expectation, Scenario

UNREAD = "evidence not read"  # a chaosml fault point that did not answer after the fault
OFF_RATE_P = 0.001
LOST_SHARE = 0.1  # a fault skipped or failing on more of the requests it picked did not act  # a hit rate this unlikely under the file's toxicity is not the fault asked for


@dataclass(frozen=True)
class Window:
    """What the judge needs besides the record: every source's outages over the run, and the
    target's rules when a source listed them."""

    outages: Sequence[Outage] = ()
    rules: frozenset[str] | None = None

    def down(self, start: float, end: float) -> list[Outage]:
        return [o for o in self.outages if o.overlaps(start, end)]


# --- faults ----------------------------------------------------------------------------------


def judge_fault(fault: FaultRecord) -> tuple[str, str | None]:
    """Whether a fault took effect, from its evidence: ``took_effect``, ``no_effect``,
    ``off_rate`` (hit far more or less often than its toxicity), or ``not_measured``."""
    kind = FAULTS.get(fault.type)
    if fault.toxicity == 0:
        return "no_effect", "toxicity 0 picks no request"
    if kind is not None:
        attributes = {k: v for k, v in fault.attributes.items() if k not in ("lease", "seed")}
        try:
            inert = kind.model_validate(attributes).inert()
        except ValueError:
            inert = None
        if inert is not None:
            return "no_effect", f"the fault changes nothing with these attributes: {inert}"
    evidence = fault.evidence
    if evidence is None:
        if fault.error and fault.error.startswith(UNREAD):
            return "no_effect", f"its fault point could not be read: {fault.error}"
        why = fault.error or "this fault point does not report what its toxics did"
        return "not_measured", why
    if evidence.expired:
        return "no_effect", (
            "its lease ran out before rollback: the runner could not renew it, so the fault "
            "stopped early" + (f" ({fault.error})" if fault.error else "")
        )
    if evidence.rolls == 0:
        return "no_effect", f"no request reached {fault.point!r} while the fault was on"
    skipped = sum(evidence.skipped.values())
    if evidence.acted == 0 and (skipped or evidence.errors):
        parts = [f"{n} {reason}" for reason, n in sorted(evidence.skipped.items())]
        if evidence.errors:
            parts.append(f"{evidence.errors} on which the fault raised")
        return "no_effect", "the fault never acted on a request: " + "; ".join(parts)
    p = _binomial_p(evidence.hits, evidence.rolls, fault.toxicity)
    if p < OFF_RATE_P:
        return "off_rate", (
            f"picked {evidence.hits} of {evidence.rolls} requests "
            f"({evidence.hits / evidence.rolls:.1%}); the file asked toxicity {fault.toxicity:g} "
            f"(binomial p = {p:.2g})"
        )
    # of the requests it picked and finished with (some may still be in flight when read),
    # skips and errors count against it: it must have acted on nearly all
    lost = skipped + evidence.errors
    if lost > LOST_SHARE * (evidence.acted + lost):
        parts = [f"{reason}: {n}" for reason, n in sorted(evidence.skipped.items())]
        parts += [f"raised: {evidence.errors}"] if evidence.errors else []
        why = ", ".join(parts)
        return "off_rate", (
            f"acted on {evidence.acted} of the {evidence.acted + lost} requests it picked ({why})"
        )
    if evidence.acted == 0:
        return "no_effect", f"its toxicity picked none of the {evidence.rolls} requests"
    # a routing fault (stale model) answers from elsewhere: the point cannot see what it changed
    measured = kind is not None and issubclass(kind, PayloadFault) and not kind.routes
    if measured and evidence.changed_rows == 0:
        absent = [
            f"column {c!r} was in none of the {evidence.acted} requests"
            for c, n in sorted(evidence.absent.items())
            if n >= evidence.acted
        ]
        why = "; ".join(absent) or f"no value changed in {evidence.rows} rows"
        return "no_effect", f"the fault changed nothing: {why}"
    notes = []
    if skipped:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(evidence.skipped.items()))
        notes.append(f"skipped on {skipped} of {evidence.hits} requests ({reasons})")
    if evidence.errors:
        notes.append(f"raised on {evidence.errors} of {evidence.hits} requests")
    if measured:
        notes.append(f"changed {evidence.changed_rows} of {evidence.rows} rows")
    return "took_effect", "; ".join(notes) or None


def _binomial_p(hits: int, n: int, p: float) -> float:
    """Two-sided exact binomial p-value of ``hits`` in ``n`` at rate ``p``."""
    if p >= 1:
        return 1.0 if hits == n else 0.0
    if p <= 0:
        return 1.0 if hits == 0 else 0.0
    from scipy.stats import binomtest

    return float(binomtest(hits, n, p).pvalue)


def ineffective(record: ScenarioRecord) -> str | None:
    """Why the scenario's faults did not act as the file asked, if one did not."""
    for fault in record.faults:
        if fault.effect in ("no_effect", "off_rate"):
            return f"{fault.describe()}: {fault.effect_reason}"
    return None


# --- load --------------------------------------------------------------------------------------


def load_shortfall(record: ScenarioRecord) -> str | None:
    """The steady and fault phases whose delivered rate was more than ``SHORTFALL_LIMIT`` under the
    plan (the recovery ends when alerts resolve: its load says nothing about the fault)."""
    found = []
    for phase in record.phases:
        if phase.name == "recovery":
            continue
        figures = phase.load
        if figures is None or figures.rps is None or not figures.planned_rps:
            continue
        short = shortfall(figures.model_dump())
        if short is not None and short > SHORTFALL_LIMIT:
            found.append(
                f"{phase.name} {figures.rps:.1f} of {figures.planned_rps:g} req/s "
                f"({figures.rps / figures.planned_rps:.0%})"
            )
    return "the load ran under its plan: " + ", ".join(found) if found else None


# --- expectations -----------------------------------------------------------------------------


def judge_expectations(
    scenario: Scenario, record: ScenarioRecord, window: Window
) -> list[ExpectationRecord]:
    return [_judge(scenario, e, record, window) for e in scenario.expect]


NOT_JUDGED = "not judged: the run stopped before this scenario ended (its runner was killed?)"
NOT_RUN = "not run: the game day was interrupted before this scenario"


def unjudged(scenario: Scenario, reason: str = NOT_JUDGED) -> list[ExpectationRecord]:
    """The expectations as ``unknown`` with ``reason``: what a journal holds until they are
    judged (so a run killed meanwhile still says what it was to check), or for a scenario an
    interrupted game day never reached."""
    found = [_base(scenario, e) for e in scenario.expect]
    for e in found:
        e.reason = reason
    return found


def _base(scenario: Scenario, expectation: Expectation) -> ExpectationRecord:
    return ExpectationRecord(
        alert=expectation.alert,
        labels=dict(expectation.labels),
        fires=expectation.fires,
        within_s=scenario.within(expectation) if expectation.fires else None,
        resolves_within_s=scenario.resolves_within(expectation) if expectation.fires else None,
    )


def _judge(
    scenario: Scenario, expectation: Expectation, record: ScenarioRecord, window: Window
) -> ExpectationRecord:
    result = _base(scenario, expectation)
    injected = record.injected_at
    if injected is None:
        result.reason = "not run: " + (record.cut_short or "the fault was never injected")
        result.unreachable = record.unreachable
        return result
    episodes = [t for t in record.alerts if expectation.matches(t.name, t.labels)]
    if not expectation.fires:
        return _quiet(result, episodes, record, window)
    return _fires(result, scenario, expectation, episodes, record, window)


def _unknown(result: ExpectationRecord, reason: str, *, unreachable: bool = False) -> None:
    result.verdict, result.reason, result.unreachable = "unknown", reason, unreachable


def _outage_reason(outages: list[Outage], start: float, end: float, what: str) -> str:
    first = outages[0]
    stop = end if first.end is None else min(first.end, end)
    gone = max(stop - max(first.start, start), 0.0)
    names = ", ".join(sorted({o.source for o in outages}))
    return (
        f"{names} unreachable for {gone:.1f} s of the {end - start:.1f} s window "
        f"({first.error}): cannot tell whether it {what}"
    )


def _quiet(
    result: ExpectationRecord, episodes: list[Episode], record: ScenarioRecord, window: Window
) -> ExpectationRecord:
    injected = record.injected_at
    assert injected is not None
    end = record.ended_at or record.rolled_back_at or injected
    during = [
        t
        for t in episodes
        if t.firing_at is not None
        and t.firing_at <= end
        and (t.resolved_at is None or t.resolved_at >= injected)
    ]
    if during:
        first = min(during, key=lambda t: t.firing_at or 0.0)
        assert first.firing_at is not None
        result.source = first.source
        result.detected_after_s = round(first.firing_at - injected, 3)
        if first.firing_at < injected:
            why = f"already firing {injected - first.firing_at:.1f} s before injection"
        else:
            why = f"fired {first.firing_at - injected:.1f} s after injection"
        result.verdict, result.reason = "failed", f"{why} (at {first.source}); expected quiet"
        return result
    planned_end = injected + _planned(record, "fault") + _planned(record, "recovery")
    if record.cut_short is not None and end < planned_end:
        _unknown(result, f"quiet for the {end - injected:.1f} s observed; {record.cut_short}")
    elif (down := window.down(injected, end)) != []:
        _unknown(result, _outage_reason(down, injected, end, "fired"), unreachable=True)
    elif (effect := ineffective(record)) is not None:
        _unknown(result, f"quiet, but the fault did not act as asked: {effect}")
    else:
        result.verdict = "passed"
    return result


def _planned(record: ScenarioRecord, name: str) -> float:
    phase = record.phase(name)
    return phase.planned_s or 0.0 if phase is not None else 0.0


def _fires(
    result: ExpectationRecord,
    scenario: Scenario,
    expectation: Expectation,
    episodes: list[Episode],
    record: ScenarioRecord,
    window: Window,
) -> ExpectationRecord:
    injected, rolled_back = record.injected_at, record.rolled_back_at
    assert injected is not None
    end = record.ended_at or rolled_back or injected
    within, resolves_within = scenario.within(expectation), scenario.resolves_within(expectation)
    fired = [t for t in episodes if t.firing_at is not None]
    before = [t for t in fired if _at(t.firing_at) < injected < (t.resolved_at or math.inf)]
    if before:
        first = before[0]
        result.source = first.source
        _unknown(
            result,
            f"already firing at injection (at {first.source}, since "
            f"{injected - (first.firing_at or injected):.1f} s before): cannot tell whether "
            "this fault would set it off",
        )
        return result
    after = sorted((t for t in fired if injected <= (t.firing_at or 0) <= end), key=_firing)
    for track in after:
        result.by_source.setdefault(
            track.source,
            SourceFigures(
                detected_after_s=round((track.firing_at or 0) - injected, 3),
                resolved_after_s=_resolved(track, rolled_back),
            ),
        )
    effect = ineffective(record)
    if not after or (after[0].firing_at or 0) - injected > within:
        return _not_detected(result, expectation, after, record, window, within, effect)
    first = after[0]
    detected = (first.firing_at or 0) - injected
    resolved = _resolved(first, rolled_back)
    result.source, result.detected_after_s = first.source, round(detected, 3)
    result.resolved_after_s = resolved
    if effect is not None:
        _unknown(result, f"fired, but the fault did not act as asked, so not by it: {effect}")
        return result
    assert rolled_back is not None
    deadline = rolled_back + resolves_within
    if resolved is not None and resolved <= resolves_within:
        result.verdict = "passed"
    elif resolved is not None:
        why = f"resolved {resolved:.1f} s after rollback; deadline {resolves_within:g} s"
        if down := window.down(rolled_back, rolled_back + resolved):
            _unknown(result, _outage_reason(down, rolled_back, deadline, "resolved in time"))
            result.unreachable = True
        else:
            result.verdict, result.reason = "failed", why
    elif end < deadline:
        why = record.cut_short or "the recovery phase ended early"
        _unknown(
            result,
            f"still firing {end - rolled_back:.1f} s after rollback, when the run ended before "
            f"the {resolves_within:g} s deadline ({why})",
        )
    elif down := window.down(rolled_back, deadline):
        _unknown(result, _outage_reason(down, rolled_back, deadline, "resolved"), unreachable=True)
    else:
        result.verdict = "failed"
        result.reason = f"still firing {resolves_within:g} s after rollback (did not resolve)"
    return result


def _not_detected(
    result: ExpectationRecord,
    expectation: Expectation,
    late: list[Episode],
    record: ScenarioRecord,
    window: Window,
    within: float,
    effect: str | None,
) -> ExpectationRecord:
    injected = record.injected_at
    assert injected is not None
    deadline = injected + within
    ran = (record.rolled_back_at or record.ended_at or injected) - injected
    if late:
        first = late[0]
        result.source = first.source
        result.detected_after_s = round((first.firing_at or 0) - injected, 3)
        result.verdict = "failed"
        result.reason = (
            f"fired {result.detected_after_s:.1f} s after injection; deadline {within:g} s"
        )
        return result
    if record.cut_short is not None and ran < within:
        _unknown(
            result,
            f"not fired in the {ran:.1f} s the fault ran of its {within:g} s deadline "
            f"({record.cut_short})",
        )
    elif down := window.down(injected, deadline):
        _unknown(result, _outage_reason(down, injected, deadline, "fired"), unreachable=True)
    elif effect is not None:
        _unknown(result, f"not fired, but the fault did not act as asked: {effect}")
    else:
        result.verdict = "failed"
        result.reason = f"did not fire within {within:g} s of injection"
        if window.rules is not None and expectation.alert not in window.rules:
            result.reason += f": the target has no rule {expectation.alert!r}"
        others = _other_labels(expectation, record, injected, deadline)
        if others:
            result.reason += (
                f"; {expectation.alert} fired with {others}, not {_labels(expectation.labels)}"
            )
        if record.load_shortfall:
            result.reason += f" ({record.load_shortfall})"
    return result


def _other_labels(
    expectation: Expectation, record: ScenarioRecord, start: float, end: float
) -> str | None:
    """The label sets the expected alert fired with in the window, when none matched."""
    seen = []
    for track in record.alerts:
        if track.name != expectation.alert or track.firing_at is None:
            continue
        if not start <= track.firing_at <= end:
            continue
        shown = {
            k: v
            for k, v in track.labels.items()
            if k not in NOISE_LABELS or k in expectation.labels
        }
        text = _labels(shown)
        if text not in seen:
            seen.append(text)
    return ", ".join(seen) or None


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


def _firing(track: Episode) -> float:
    return _at(track.firing_at)


def _at(when: float | None) -> float:
    return 0.0 if when is None else when


def _resolved(track: Episode, rolled_back: float | None) -> float | None:
    if track.resolved_at is None or rolled_back is None:
        return None
    return round(max(track.resolved_at - rolled_back, 0.0), 3)


def scenario_verdict(record: ScenarioRecord) -> str:
    """``failed`` if an expectation failed; ``unknown`` if one is unknown or the scenario did not
    run its course; else ``passed``."""
    verdicts = {e.verdict for e in record.expectations}
    if "failed" in verdicts:
        return "failed"
    if "unknown" in verdicts or record.cut_short or record.injected_at is None:
        return "unknown"
    if ineffective(record):
        return "unknown"
    return "passed"
