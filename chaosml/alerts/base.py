"""The one interface every alert source implements, and what it reports."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from chaosml.errors import UnreachableError

State = Literal["pending", "firing"]


@dataclass(frozen=True)
class AlertState:
    """An alert active at a source now. ``since``: when it entered ``state``, by the source's own
    clock (Unix seconds), or None when the source does not say."""

    name: str
    labels: dict[str, str]
    state: State
    since: float | None = None

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.name, tuple(sorted(self.labels.items()))


@dataclass(kw_only=True, frozen=True)
class RuleInfo:
    """An alerting rule a source knows, with the failure mode it says it covers.

    ``query``: its PromQL, when the source has one; ``label_keys``: every label key its alerts can
    carry (None: the source cannot tell); ``evaluation_seconds`` and ``scrape_seconds``: how often
    it is evaluated and the data it reads is scraped (0 when not known)."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    for_seconds: float = 0.0
    query: str | None = None
    label_keys: frozenset[str] | None = None
    evaluation_seconds: float = 0.0
    scrape_seconds: float = 0.0

    @property
    def failure_mode(self) -> str | None:
        return self.labels.get("failure_mode")

    @property
    def window_seconds(self) -> float | None:
        """The longest range its query looks back over (None: no range, or no query)."""
        from chaosml.alerts.promql import window_seconds

        return None if self.query is None else window_seconds(self.query)

    @property
    def fires_after(self) -> float:
        """The least time from a condition starting to hold to this rule firing: ``for:``, plus
        a scrape to see it and an evaluation to notice it."""
        return self.for_seconds + self.scrape_seconds + self.evaluation_seconds


class AlertSource(Protocol):
    """Where chaosml reads which alerts are active."""

    name: str  # the source's type: prometheus, alertmanager, webhook, probe

    def start(self) -> None:
        """Connect (or bind); ``UnreachableError`` if the source cannot be reached."""

    def poll(self) -> list[AlertState]:
        """The alerts active now (pending or firing)."""

    def rules(self) -> list[RuleInfo] | None:
        """The alerting rules, if this source can list them."""

    def stop(self) -> None: ...


# Labels that say where and how an alert was evaluated, left out when an alert is shown.
NOISE_LABELS = ("job", "instance", "severity", "failure_mode")


def get_json(url: str, timeout: float = 5.0) -> Any:
    """GET ``url`` and parse JSON; ``UnreachableError`` naming the URL on any failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UnreachableError(f"{url}: {getattr(exc, 'reason', exc)}") from exc


def parse_time(text: str | None) -> float | None:
    """An RFC 3339 time (as Prometheus and Alertmanager write it) in Unix seconds."""
    if not text or text.startswith("0001-"):
        return None
    text = text.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Go writes up to 9 fractional digits; Python reads 6
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(text).timestamp()
