"""One poller over every alert source, with an injectable clock.

Each poll asks every source which alerts are active and turns what changed into tracks: one track
per episode of one alert (name + labels) at one source, from pending through firing to resolved.
Times are the source's own where it gives them (``since``), else when the poll saw the change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from chaosml.alerts.base import AlertSource, AlertState
from chaosml.errors import UnreachableError


@dataclass(kw_only=True)
class Track:
    source: str
    name: str
    labels: dict[str, str]
    pending_at: float | None = None  # when it became pending (source time, or seen)
    firing_at: float | None = None  # when it fired (source time, or seen)
    firing_seen: float | None = None  # when a poll first saw it firing
    resolved_at: float | None = None  # when a poll first saw it gone

    @property
    def fired(self) -> bool:
        return self.firing_at is not None

    @property
    def open(self) -> bool:
        return self.resolved_at is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True)
class Outage:
    """A span during which a source could not be read: from the first poll that failed to the
    next one that worked (``end`` None while it lasts)."""

    source: str
    start: float
    error: str
    end: float | None = None
    polls: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True)
class Poller:
    sources: Sequence[AlertSource]
    clock: Callable[[], float] = time.time
    tracks: list[Track] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    on_event: Callable[[dict[str, Any]], None] | None = None
    outages: list[Outage] = field(default_factory=list)
    _open: dict[tuple[str, Any], Track] = field(default_factory=dict)
    _down: dict[str, Outage] = field(default_factory=dict)

    def poll(self) -> None:
        """Ask every source once; a source that fails is recorded (an outage, until a poll of it
        works again) and polled again next time."""
        for source in self.sources:
            try:
                states = source.poll()
            except UnreachableError as exc:
                now = self.clock()
                self.errors.append({"t": now, "source": source.name, "error": str(exc)})
                outage = self._down.get(source.name)
                if outage is None:
                    outage = self._down[source.name] = Outage(
                        source=source.name, start=now, error=str(exc)
                    )
                    self.outages.append(outage)
                    self._event_outage(outage, "unreachable", now)
                else:
                    outage.polls += 1
                continue
            now = self.clock()
            outage = self._down.pop(source.name, None)
            if outage is not None:
                outage.end = now
                self._event_outage(outage, "reachable", now)
            self._update(source.name, states, now)

    def _event_outage(self, outage: Outage, state: str, at: float) -> None:
        event = {"t": at, "source": outage.source, "state": state, "error": outage.error}
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def _update(self, source: str, states: list[AlertState], now: float) -> None:
        seen = set()
        for state in states:
            key = (source, state.key)
            seen.add(key)
            track = self._open.get(key)
            if track is None:
                track = Track(source=source, name=state.name, labels=dict(state.labels))
                self._open[key] = track
                self.tracks.append(track)
            if state.state == "pending" and track.pending_at is None:
                track.pending_at = state.since or now
                self._event(track, "pending", track.pending_at)
            if state.state == "firing" and track.firing_at is None:
                track.firing_at, track.firing_seen = state.since or now, now
                if track.pending_at is None:
                    track.pending_at = track.firing_at
                self._event(track, "firing", track.firing_at)
        for key in [k for k in self._open if k[0] == source and k not in seen]:
            track = self._open.pop(key)
            track.resolved_at = now
            self._event(track, "resolved" if track.fired else "inactive", now)

    def _event(self, track: Track, state: str, at: float) -> None:
        event = {
            "t": at,
            "source": track.source,
            "alert": track.name,
            "labels": track.labels,
            "state": state,
        }
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def active(self) -> list[Track]:
        """Tracks pending or firing now."""
        return list(self._open.values())

    def between(self, start: float, end: float | None = None) -> list[Track]:
        """Tracks that were active at some moment in [start, end]."""
        return [
            t
            for t in self.tracks
            if (t.resolved_at is None or t.resolved_at >= start)
            and (end is None or (t.pending_at or t.firing_at or 0) <= end)
        ]
