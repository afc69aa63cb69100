"""A metric probe: alert rules evaluated by chaosml on a service's ``/metrics`` page, for teams with
no Prometheus. A rule is ``metric{label="value", ...} op number`` with an optional ``for:``, as
Prometheus would evaluate it on every matching series."""

from __future__ import annotations

import math
import operator
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from chaosml.alerts.base import AlertState, RuleInfo
from chaosml.errors import UnreachableError

_EXPR = re.compile(
    r"\s*(?P<metric>[a-zA-Z_:][\w:]*)\s*(?:\{(?P<labels>[^}]*)\})?\s*"
    r"(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*"
)
_LABEL = re.compile(r'\s*([a-zA-Z_]\w*)\s*=\s*"([^"]*)"\s*')
OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
EXPECTED = 'expected metric{label="value", ...} followed by > < >= <= == != and a number'


@dataclass(frozen=True)
class Expr:
    metric: str
    labels: dict[str, str]
    op: str
    value: float

    def holds(self, sample: float) -> bool:
        return not math.isnan(sample) and OPS[self.op](sample, self.value)


def parse_expr(text: str) -> Expr:
    """``ValueError`` (with the expected form) unless ``text`` is a probe expression."""
    found = _EXPR.fullmatch(text)
    if found is None:
        raise ValueError(f"{EXPECTED}, got {text!r}")
    labels: dict[str, str] = {}
    for part in filter(str.strip, (found["labels"] or "").split(",")):
        pair = _LABEL.fullmatch(part)
        if pair is None:
            raise ValueError(f"{EXPECTED}, got {text!r}")
        labels[pair[1]] = pair[2]
    return Expr(found["metric"], labels, found["op"], float(found["value"]))


@dataclass(frozen=True)
class Rule:
    alert: str
    expr: Expr
    for_seconds: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(kw_only=True)
class MetricProbe:
    url: str
    checks: list[Rule]
    name: str = "probe"
    clock: Callable[[], float] = time.time
    _pending: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def start(self) -> None:
        self._scrape()

    def rules(self) -> list[RuleInfo] | None:
        """The rules, with the label keys their alerts can carry: those of the metric's series on
        the page (when the page can be read and has the metric), the expression's and the rule's."""
        try:
            page = self._label_keys(self._scrape())
        except (UnreachableError, ValueError):
            page = {}
        return [
            RuleInfo(
                name=r.alert,
                labels=dict(r.labels),
                for_seconds=r.for_seconds,
                label_keys=None
                if r.expr.metric not in page
                else page[r.expr.metric] | set(r.expr.labels) | set(r.labels) | {"alertname"},
            )
            for r in self.checks
        ]

    @staticmethod
    def _label_keys(text: str) -> dict[str, frozenset[str]]:
        keys: dict[str, set[str]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                keys.setdefault(sample.name, set()).update(sample.labels)
        return {name: frozenset(found) for name, found in keys.items()}

    def _scrape(self) -> str:
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                return str(response.read().decode("utf-8", errors="replace"))
        except (urllib.error.URLError, OSError) as exc:
            raise UnreachableError(f"{self.url}: {getattr(exc, 'reason', exc)}") from exc

    def poll(self) -> list[AlertState]:
        return self.evaluate(self._scrape(), self.clock())

    def evaluate(self, text: str, now: float) -> list[AlertState]:
        """The rules' alerts on the metrics page ``text`` at time ``now``."""
        samples = [
            (sample.name, sample.labels, float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
        alerts, active = [], set()
        for rule in self.checks:
            for name, labels, value in samples:
                if name != rule.expr.metric or not rule.expr.holds(value):
                    continue
                if any(labels.get(k) != v for k, v in rule.expr.labels.items()):
                    continue
                series = {**labels, **rule.labels}
                key = (rule.alert, tuple(sorted(series.items())))
                active.add(key)
                since = self._pending.setdefault(key, now)
                if now - since >= rule.for_seconds:
                    alerts.append(
                        AlertState(rule.alert, series, "firing", since + rule.for_seconds)
                    )
                else:
                    alerts.append(AlertState(rule.alert, series, "pending", since))
        for key in set(self._pending) - active:
            del self._pending[key]
        return alerts

    def stop(self) -> None:
        return None
