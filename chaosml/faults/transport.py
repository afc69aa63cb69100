"""Transport faults, with Toxiproxy's attribute names and meanings (times in milliseconds)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from chaosml.faults.base import TransportFault


class Latency(TransportFault):
    """Delay each request (upstream) or response (downstream) by ``latency`` ± ``jitter`` ms."""

    type: ClassVar[str] = "latency"
    latency: int = Field(default=0, ge=0)
    jitter: int = Field(default=0, ge=0)


class HttpError(TransportFault):
    """Answer with HTTP ``status`` instead of forwarding (a fraction of requests by toxicity)."""

    type: ClassVar[str] = "http_error"
    status: int = Field(default=500, ge=400, le=599)
    body: str = '{"error": "injected by chaosml"}'


class Timeout(TransportFault):
    """Hold the request and send nothing; close after ``timeout`` ms (0: hold until removed)."""

    type: ClassVar[str] = "timeout"
    timeout: int = Field(default=0, ge=0)


class ResetPeer(TransportFault):
    """Reset the connection (TCP RST) after ``timeout`` ms."""

    type: ClassVar[str] = "reset_peer"
    timeout: int = Field(default=0, ge=0)


class Bandwidth(TransportFault):
    """Limit the response (downstream) or request (upstream) to ``rate`` KB/s."""

    type: ClassVar[str] = "bandwidth"
    rate: int = Field(default=0, ge=0)


class SlowClose(TransportFault):
    """Delay closing the connection by ``delay`` ms."""

    type: ClassVar[str] = "slow_close"
    delay: int = Field(default=0, ge=0)


class LimitData(TransportFault):
    """Close the connection after ``bytes`` bytes."""

    type: ClassVar[str] = "limit_data"
    bytes: int = Field(default=0, ge=0)
