"""What a load run does, as plain data that crosses process boundaries (JSON)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# The load's own figures over a sliding window, as stop conditions and the live display see them.
FIGURES = ("rps", "error_rate", "p50_ms", "p95_ms", "p99_ms", "requests", "failures", "users")
# A phase delivered less than its load when its rate is more than this fraction under the plan.
SHORTFALL_LIMIT = 0.1


@dataclass(frozen=True, kw_only=True)
class LoadPlan:
    """Replay ``data`` rows against ``url`` through ``codec``.

    ``rate`` (requests/s over all users) paces users with Locust's ``constant_throughput``; without
    it each user waits ``think`` seconds between requests. ``feedback_url`` gets the true label of
    each answered row (``{"labels": [{"id", "label"}]}``) ``feedback_delay`` seconds later, using
    the ids the service answered with (``ids``, ``id`` or KServe's ``parameters.ids``).
    """

    url: str
    data: str
    codec: str = "records"
    label: str | None = None
    batch: int = 1
    users: int = 1
    spawn_rate: float | None = None  # users started per second (None: all at once)
    rate: float | None = None
    think: float = 0.0
    feedback_url: str | None = None
    feedback_delay: float = 0.0
    timeout: float = 10.0
    window: float = 2.0  # seconds over which the figures of a tick are computed
    tick: float = 0.25
    seed: int = 0
    workers: int = 0  # Locust worker processes (0: the load runs in the driver itself)
    drop: list[str] = field(default_factory=list)  # columns not sent (besides the label)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoadPlan:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)


def shortfall(figures: Mapping[str, Any]) -> float | None:
    """The fraction by which a phase's delivered ``rps`` fell short of its ``planned_rps``
    (0.0 at or above the plan), or None when the phase had no planned rate or no figures.
    A phase ran at less than its load when this is more than ``SHORTFALL_LIMIT``."""
    planned, delivered = figures.get("planned_rps"), figures.get("rps")
    if not planned or delivered is None:
        return None
    return max(0.0, 1.0 - float(delivered) / float(planned))
