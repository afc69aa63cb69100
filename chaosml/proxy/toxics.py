"""Toxics: faults attached to a fault point, in Toxiproxy's JSON shape, with leases and seeds.

Two attributes are chaosml's own, and any Toxiproxy client can set them: ``lease`` (seconds: the
toxic disappears unless re-POSTed within it) and ``seed`` (the toxic's random generator, for its
toxicity rolls and row choices, so a game day's faults can be replayed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chaosml.errors import ChaosmlError, FaultError
from chaosml.faults import Fault, TransportFault, make_fault
from chaosml.faults.evidence import Evidence
from chaosml.faults.transport import Effect

STREAMS = ("upstream", "downstream")
RETIRED = 256  # removed toxics whose evidence a fault point keeps
OWN = ("lease", "seed")  # chaosml's own attributes, not the fault's
INVALID_STREAM = "stream was invalid, can be either upstream or downstream"


class ApiError(ChaosmlError):
    """A refused control API request: Toxiproxy's JSON body ``{"error": ..., "status": ...}``
    with the HTTP ``status``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message, self.status = message, status


@dataclass(kw_only=True)
class Toxic:
    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, Any]
    fault: Fault
    lease: float | None = None  # seconds; the toxic disappears unless renewed within it
    expires_at: float | None = field(default=None)
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    evidence: Evidence = field(default_factory=Evidence)

    def hits(self) -> bool:
        """Roll the toxicity for one request (counted in the evidence)."""
        hit = self.toxicity >= 1 or (self.toxicity > 0 and self.rng.random() < self.toxicity)
        return self.evidence.roll(hit)

    def renew(self) -> None:
        self.expires_at = None if self.lease is None else time.monotonic() + self.lease

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def to_json(self) -> dict[str, Any]:
        """Toxiproxy's shape, every attribute with its value (defaults included)."""
        attributes = self.fault.model_dump(mode="json", exclude_none=True)
        attributes.update({k: v for k, v in self.attributes.items() if k in OWN})
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": attributes,
        }


@dataclass
class ToxicStore:
    """One fault point's toxics: the active ones by name, and the evidence of the last
    ``RETIRED`` removed ones (so a game day can still read what a toxic did after its end)."""

    toxics: dict[str, Toxic] = field(default_factory=dict)
    retired: dict[str, Evidence] = field(default_factory=dict)

    def active(self) -> list[Toxic]:
        """The active toxics; those whose lease ran out are removed first."""
        now = time.monotonic()
        for name in [n for n, t in self.toxics.items() if t.expired(now)]:
            self.remove(name, expired=True)
        return list(self.toxics.values())

    def current(self) -> list[Toxic]:
        """The active toxics, without removing expired ones (other threads may be reading)."""
        now = time.monotonic()
        return [t for t in list(self.toxics.values()) if not t.expired(now)]

    def remove(self, name: str, *, expired: bool = False) -> None:
        """Take toxic ``name`` off; its evidence stays readable."""
        toxic = self.toxics.pop(name)
        toxic.evidence.expired = expired
        self.retired.pop(name, None)
        self.retired[name] = toxic.evidence
        while len(self.retired) > RETIRED:
            del self.retired[next(iter(self.retired))]

    def holds(self, toxic: Toxic) -> bool:
        """Whether ``toxic`` (or its update) is still on: a ``timeout`` 0 holds until removed."""
        now = self.toxics.get(toxic.name)
        return now is not None and now.type == toxic.type and not now.expired(time.monotonic())

    def evidence(self, name: str) -> dict[str, Any] | None:
        """What toxic ``name`` did (active or removed), None if this point never had it."""
        toxic = self.toxics.get(name)
        found = toxic.evidence if toxic is not None else self.retired.get(name)
        return None if found is None else {"active": toxic is not None, **found.to_json()}


class OwnsToxics:
    """A fault point's side of the control API's toxic routes, over the ``store`` it owns (the
    proxy and the in-service point alike)."""

    store: ToxicStore
    name: str
    listen: str
    upstream: str
    enabled: bool
    codec: str

    @property
    def toxics(self) -> dict[str, Toxic]:
        return self.store.toxics

    def to_json(self) -> dict[str, Any]:
        """The entry as the control API lists it (Toxiproxy's proxy JSON, with its codec)."""
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "codec": self.codec,
            "toxics": [t.to_json() for t in self.toxics.values()],
        }

    def active(self) -> list[Toxic]:
        return self.store.active()

    def remove(self, name: str, *, expired: bool = False) -> None:
        self.store.remove(name, expired=expired)

    def evidence(self, name: str) -> dict[str, Any] | None:
        return self.store.evidence(name)


def effect_of(toxics: list[Toxic], size: int) -> Effect:
    """What the transport toxics among ``toxics`` do to ``size`` bytes, together."""
    effect = Effect()
    for toxic in toxics:
        if isinstance(toxic.fault, TransportFault):
            toxic.fault.shape(effect, size, toxic.rng)
    return effect


def typed(body: dict[str, Any], key: str, kinds: type | tuple[type, ...], what: str) -> Any:
    """``body[key]`` if present and not null, checked against ``kinds`` (bools are not numbers)."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise ApiError(f"invalid attribute '{key}': expected {what}", 400)
    if not isinstance(value, kinds):
        raise ApiError(f"invalid attribute '{key}': expected {what}", 400)
    return value


def build_toxic(
    body: Any, existing: Toxic | None = None, rng: np.random.Generator | None = None
) -> Toxic:
    """A toxic from a create (or, with ``existing``, update) body; ``ApiError`` 400 if invalid.

    As Toxiproxy: a null or empty name, stream or attributes takes its default (``<type>_<stream>``,
    downstream, none), and an update changes only the attributes it names."""
    if not isinstance(body, dict):
        raise ApiError("bad request body: expected a JSON object", 400)
    kind = typed(body, "type", str, "a toxic type name")
    if existing is not None:
        if kind not in (None, existing.type):
            raise ApiError("invalid attribute 'type': a toxic's type cannot change", 400)
        kind = existing.type
    if not kind:
        raise ApiError("invalid toxic type", 400)
    stream = typed(body, "stream", str, "upstream or downstream") or (
        existing.stream if existing else "downstream"
    )
    if existing is not None and stream != existing.stream:
        raise ApiError("invalid attribute 'stream': a toxic's stream cannot change", 400)
    if stream not in STREAMS:
        raise ApiError(INVALID_STREAM, 400)
    toxicity = typed(body, "toxicity", (int, float), "a number in [0, 1]")
    toxicity = (existing.toxicity if existing else 1.0) if toxicity is None else toxicity
    if not 0 <= toxicity <= 1:
        raise ApiError("invalid attribute 'toxicity': expected a number in [0, 1]", 400)
    attributes = typed(body, "attributes", dict, "an object") or {}
    if existing is not None:
        attributes = {**existing.attributes, **attributes}
    lease = attributes.get("lease")
    if lease is not None and (
        isinstance(lease, bool) or not isinstance(lease, int | float) or lease <= 0
    ):
        raise ApiError("invalid attribute 'lease': expected seconds > 0", 400)
    seed = attributes.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ApiError("invalid attribute 'seed': expected an integer >= 0", 400)
    try:
        fault = make_fault(kind, {k: v for k, v in attributes.items() if k not in OWN})
    except FaultError as exc:
        raise ApiError(str(exc), 400) from exc
    if fault.stream is not None and fault.stream != stream:
        raise ApiError(
            f"invalid attribute 'stream': {kind} applies to {fault.stream} "
            f"({'the request' if fault.stream == 'upstream' else 'the response'})",
            400,
        )
    name = typed(body, "name", str, "a string") or (
        existing.name if existing else f"{kind}_{stream}"
    )
    toxic = Toxic(
        name=name,
        type=kind,
        stream=stream,
        toxicity=float(toxicity),
        attributes=attributes,
        fault=fault,
        lease=None if lease is None else float(lease),
    )
    if existing is not None:
        # An update (a lease renewal re-POSTs the toxic) goes on with the same draws and counts:
        # re-seeding would replay the seed's first draws every renewal. Only a new seed restarts.
        toxic.evidence = existing.evidence
        reseed = seed is not None and seed != existing.attributes.get("seed")
        toxic.rng = np.random.default_rng(seed) if reseed else existing.rng
    elif seed is not None:
        toxic.rng = np.random.default_rng(seed)
    elif rng is not None:
        toxic.rng = np.random.default_rng(rng.integers(2**63))
    toxic.renew()
    return toxic
