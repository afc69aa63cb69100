"""Transport faults, with Toxiproxy's attribute names and meanings (times in milliseconds).

Each kind says what it changes in an ``Effect``; a fault point (the proxy on a connection, the
in-service point around a predict call) acts the effect out. Adding a kind is one class here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from pydantic import Field

from chaosml.faults.base import Place, TransportFault


@dataclass
class Effect:
    """What the transport toxics of one stream do to one request or response."""

    delay: float = 0.0  # seconds to wait before going on
    status: int | None = None  # answer with this status instead of forwarding
    body: bytes = b""
    hold: float | None = None  # hold the connection this long (inf: until the toxic is gone), close
    reset_after: float | None = None  # reset the connection (TCP RST) after this long
    rate: int = 0  # KB/s, 0: unlimited
    close_delay: float = 0.0
    limit: int | None = None  # close after this many bytes
    slices: tuple[int, int, float] | None = None  # (average size, variation) bytes, delay seconds


class Latency(TransportFault):
    """Delay each request (upstream) or response (downstream) by ``latency`` ± ``jitter`` ms."""

    type: ClassVar[str] = "latency"
    runs_at: ClassVar[frozenset[Place]] = frozenset({"proxy", "tcp", "service", "toxiproxy"})
    latency: int = Field(default=0, ge=0, le=86_400_000)
    jitter: int = Field(default=0, ge=0, le=86_400_000)

    def inert(self) -> str | None:
        return "latency 0 and jitter 0 delay nothing" if not self.latency + self.jitter else None

    def shape(self, effect: Effect, size: int, rng: np.random.Generator) -> None:
        jitter = rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0
        effect.delay += max(self.latency + jitter, 0) / 1000


class HttpError(TransportFault):
    """Answer with HTTP ``status`` instead of forwarding (a fraction of requests by toxicity)."""

    type: ClassVar[str] = "http_error"
    runs_at: ClassVar[frozenset[Place]] = frozenset({"proxy", "service"})  # HTTP only
    status: int = Field(default=500, ge=400, le=599)
    body: str = '{"error": "injected by chaosml"}'

    def shape(self, effect: Effect, size: int, rng: np.random.Generator) -> None:
        if effect.status is None:
            effect.status, effect.body = self.status, self.body.encode()


class Timeout(TransportFault):
    """Hold the request and send nothing; close after ``timeout`` ms (0: hold until removed).

    On a stream, as Toxiproxy: the data is dropped, the connection closes once no data came for
    ``timeout`` ms, and removing the toxic closes it too (dropped data leaves a hole)."""

    type: ClassVar[str] = "timeout"
    timeout: int = Field(default=0, ge=0, le=86_400_000)

    def shape(self, effect: Effect, size: int, rng: np.random.Generator) -> None:
        effect.hold = self.timeout / 1000 if self.timeout else math.inf


class ResetPeer(TransportFault):
    """Reset the connection (TCP RST) after ``timeout`` ms.

    On a stream, as Toxiproxy: the timer starts when data (or the end of the stream) first comes
    in the toxic's direction; that data and what follows is dropped until the reset."""

    type: ClassVar[str] = "reset_peer"
    timeout: int = Field(default=0, ge=0, le=86_400_000)

    def shape(self, effect: Effect, size: int, rng: np.random.Generator) -> None:
        effect.reset_after = self.timeout / 1000


class Bandwidth(TransportFault):
    """Limit the response (downstream) or request (upstream) to ``rate`` KB/s."""

    type: ClassVar[str] = "bandwidth"
    rate: int = Field(default=0, ge=0, le=2**40)

    def inert(self) -> str | None:
        return "rate 0 means no limit" if self.rate == 0 else None

    def shape(self, effect: Effect, size: int, rng: np.random.Generator) -> None:
        if self.rate:  # two in a row: the slower one sets the pace (Toxiproxy's chain)
            effect.rate = min(effect.rate, self.rate) if effect.rate else self.rate


class SlowClose(TransportFault):
    """Delay closing the connection by ``delay`` ms."""

    type: ClassVar[str] = "slow_close"
    delay: int = Field(default=0, ge=0, le=86_400_000)

    def inert(self) -> str | None:
        return "delay 0 delays no close" if self.delay == 0 else None

    def shape(self, effect: Effect, size: int, rng: np.random.Generator) -> None:
        effect.close_delay += self.delay / 1000  # in Toxiproxy's chain each waits in turn


class LimitData(TransportFault):
    """Close the connection after ``bytes`` bytes (on a stream: bytes passed since the toxic
    came, as Toxiproxy counts them)."""

    type: ClassVar[str] = "limit_data"
    bytes: int = Field(default=0, ge=0, le=2**53)

    def shape(self, effect: Effect, size: int, rng: np.random.Generator) -> None:
        effect.limit = self.bytes if effect.limit is None else min(effect.limit, self.bytes)


class Slicer(TransportFault):
    """Slice the data into pieces of ``average_size`` ± ``size_variation`` bytes, sent ``delay``
    microseconds apart."""

    type: ClassVar[str] = "slicer"
    average_size: int = Field(default=0, ge=0, le=2**31)
    size_variation: int = Field(default=0, ge=0, le=2**31)
    delay: int = Field(default=0, ge=0, le=86_400_000_000)

    def inert(self) -> str | None:
        return "average_size 0 slices nothing" if self.average_size == 0 else None

    def shape(self, effect: Effect, size: int, rng: np.random.Generator) -> None:
        if self.average_size > 0:
            effect.slices = (self.average_size, self.size_variation, self.delay / 1e6)


class Noop(TransportFault):
    """Does nothing (Toxiproxy's ``noop``: a placeholder, or a check that toxics apply)."""

    type: ClassVar[str] = "noop"
    runs_at: ClassVar[frozenset[Place]] = frozenset({"proxy", "tcp", "service", "toxiproxy"})

    def inert(self) -> str | None:
        return "noop does nothing, by design"

    def shape(self, effect: Effect, size: int, rng: np.random.Generator) -> None:
        pass


def slices(data: bytes, average: int, variation: int, rng: np.random.Generator) -> list[bytes]:
    """``data`` cut as Toxiproxy's slicer cuts a chunk: a piece more than ``variation`` bytes over
    ``average`` is halved, the cut moved by up to ``variation`` bytes either way, and each half cut
    again; so pieces are at most ``average + variation`` bytes, and a piece of data over that is
    cut at least once (20 KB at an average of 1,000 and no variation: 32 pieces of 625 bytes)."""
    pieces, todo = [], [(0, len(data))] if data else []
    while todo:
        start, end = todo.pop()
        if end - start - average <= variation or end - start <= 1:
            pieces.append(data[start:end])
            continue
        middle = start + (end - start) // 2
        if variation:
            middle += int(rng.integers(-variation, variation))
        middle = min(max(middle, start + 1), end - 1)
        todo += [(middle, end), (start, middle)]  # the first half next: pieces in order
    return pieces
