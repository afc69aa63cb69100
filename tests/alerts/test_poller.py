"""The poller (pure logic, with a scripted source and an injectable clock) and the metric probe's
rules on real Prometheus text."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from chaosml.alerts import AlertState, Poller, RuleInfo
from chaosml.alerts.probe import MetricProbe, Rule, parse_expr
from chaosml.errors import UnreachableError


@dataclass
class Scripted:
    """A source whose answers are set by the test (pure logic: no server to stand in for)."""

    name: str = "scripted"
    now: list[AlertState] = field(default_factory=list)
    fail: bool = False

    def start(self) -> None:
        return None

    def poll(self) -> list[AlertState]:
        if self.fail:
            raise UnreachableError("down")
        return list(self.now)

    def rules(self) -> list[RuleInfo] | None:
        return None

    def stop(self) -> None:
        return None


def test_tracks_follow_pending_firing_resolved_with_source_times() -> None:
    clock = [100.0]
    source = Scripted()
    poller = Poller(sources=[source], clock=lambda: clock[0])
    source.now = [AlertState("A", {"f": "x"}, "pending", 99.5)]
    poller.poll()
    clock[0] = 103.0
    source.now = [AlertState("A", {"f": "x"}, "firing", 102.5)]
    poller.poll()
    clock[0] = 110.0
    source.now = []
    poller.poll()
    (track,) = poller.tracks
    assert (track.pending_at, track.firing_at, track.firing_seen, track.resolved_at) == (
        99.5,
        102.5,
        103.0,
        110.0,
    )
    assert [e["state"] for e in poller.events] == ["pending", "firing", "resolved"]


def test_a_new_episode_after_resolving_is_a_new_track_and_failures_are_kept() -> None:
    clock = [0.0]
    source = Scripted()
    poller = Poller(sources=[source], clock=lambda: clock[0])
    for t, active in ((1, True), (2, False), (3, True)):
        clock[0] = t
        source.now = [AlertState("A", {}, "firing", None)] if active else []
        poller.poll()
    assert [(t.firing_at, t.resolved_at) for t in poller.tracks] == [(1, 2), (3, None)]
    source.fail = True
    poller.poll()
    assert poller.errors[-1]["error"] == "down" and len(poller.active()) == 1


def test_pending_that_never_fired_is_inactive_not_resolved() -> None:
    clock = [0.0]
    source = Scripted()
    poller = Poller(sources=[source], clock=lambda: clock[0])
    source.now = [AlertState("A", {}, "pending", 0.0)]
    poller.poll()
    source.now = []
    clock[0] = 1.0
    poller.poll()
    assert [e["state"] for e in poller.events] == ["pending", "inactive"]
    assert not poller.tracks[0].fired


METRICS = """# TYPE chaosml_model_feature_missing_rate gauge
chaosml_model_feature_missing_rate{feature="income"} 0.5
chaosml_model_feature_missing_rate{feature="age"} 0.0
# TYPE chaosml_model_requests counter
chaosml_model_requests_total{status="error"} 7.0
"""


def test_probe_rules_hold_per_series_with_for() -> None:
    rule = Rule("Missing", parse_expr("chaosml_model_feature_missing_rate > 0.2"), 5.0, {"s": "w"})
    probe = MetricProbe(url="http://unused", checks=[rule])
    first = probe.evaluate(METRICS, 100.0)
    assert [(a.state, a.labels, a.since) for a in first] == [
        ("pending", {"feature": "income", "s": "w"}, 100.0)
    ]
    later = probe.evaluate(METRICS, 105.0)
    assert [(a.state, a.since) for a in later] == [("firing", 105.0)]
    assert probe.evaluate(METRICS.replace("0.5", "0.1"), 106.0) == []
    assert probe.evaluate(METRICS, 107.0)[0].state == "pending"  # `for` starts over


def test_probe_label_matchers_and_counters() -> None:
    rule = Rule("Errors", parse_expr('chaosml_model_requests_total{status="error"} >= 7'))
    assert [a.name for a in MetricProbe(url="x", checks=[rule]).evaluate(METRICS, 0.0)] == [
        "Errors"
    ]
    rule = Rule("None", parse_expr('chaosml_model_requests_total{status="ok"} > 0'))
    assert MetricProbe(url="x", checks=[rule]).evaluate(METRICS, 0.0) == []


@pytest.mark.parametrize(
    "text",
    ["rate(x[1m]) > 1", "x >", "x > y", "x{a=b} > 1", "x ~ 1", "> 1", 'x{a="b",} > 1e'],
)
def test_probe_refuses_what_it_cannot_evaluate(text: str) -> None:
    with pytest.raises(ValueError, match="expected metric"):
        parse_expr(text)
