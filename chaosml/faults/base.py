"""The fault catalogue's base: one pydantic class per fault kind, registered by its ``type`` name.

A fault's fields are its parameters (for a toxic, its ``attributes``), validated once when it is
created. Payload faults apply to columns of features (``RequestFault.apply``, a ``Table``: column name to
array) or to predictions (``ResponseFault.apply``); the proxy calls the same methods on each
request's decoded payload that ``apply_offline`` calls on the columns of a whole DataFrame of
evaluation rows. Transport faults only carry
parameters; the proxy acts them out on the connection.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chaosml._types import BoolArray, Table
from chaosml.errors import FaultError, PredicateError
from chaosml.predicate import Predicate, parse_predicate

if TYPE_CHECKING:
    from chaosml.faults.transport import Effect

Side = Literal["request", "response", "transport"]
Rows = Table | pd.DataFrame | None
# Where a fault can be acted out: chaosml's proxy on HTTP, chaosml's proxy relaying raw TCP, the
# in-service fault point around a predict call, a real Toxiproxy, the offline path on a DataFrame.
Place = Literal["proxy", "tcp", "service", "toxiproxy", "offline"]
PLACES: tuple[Place, ...] = ("proxy", "tcp", "service", "toxiproxy", "offline")
PLACE_NAMES: dict[Place, str] = {
    "proxy": "chaosml's proxy (HTTP)",
    "tcp": "chaosml's proxy relaying raw TCP",
    "service": "the in-service fault point",
    "toxiproxy": "a real Toxiproxy",
    "offline": "offline evaluation data",
}

FAULTS: dict[str, type[Fault]] = {}
INVALID_TYPE = "invalid toxic type"


@dataclass(frozen=True)
class Route:
    """Where a routing fault sends a request instead of the primary model: another ``upstream``
    (``host:port``, at a proxy) or another ``version`` (an alternate the service loaded; offline,
    that version's predictions)."""

    upstream: str | None = None
    version: str | None = None


class Fault(BaseModel):
    """Base of every fault kind. Subclasses set ``type`` and ``side`` and are registered."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    type: ClassVar[str]
    side: ClassVar[Side]
    # Where this kind can run: the one table validate, the runner, the fault points and the
    # offline path consult (``places`` narrows it per instance where attributes decide).
    runs_at: ClassVar[frozenset[Place]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type" in cls.__dict__:
            FAULTS[cls.type] = cls

    def places(self) -> frozenset[Place]:
        """Where this fault (with these attributes) can be acted out."""
        return self.runs_at

    routes: ClassVar[bool] = False  # it answers from elsewhere (``route``) instead of changing

    def route(self) -> Route | None:
        """Where this fault sends the requests it hits, for a routing fault (a stale model);
        None for every other fault. Every applier (the proxy, the in-service point, the offline
        path) honours it."""
        return None

    def inert(self) -> str | None:
        """Why this fault changes nothing with these attributes (a zero latency, a factor of 1),
        else None: a scenario built on it can test nothing."""
        return None

    def runs_where(self, place: Place) -> str | None:
        """None if this fault can run at ``place``, else why not, in one phrase."""
        if place in self.places():
            return None
        where = ", ".join(PLACE_NAMES[p] for p in PLACES if p in self.places()) or "nowhere"
        return f"{self.type} cannot run at {PLACE_NAMES[place]} (it runs at: {where})"

    @property
    def stream(self) -> Literal["upstream", "downstream"] | None:
        """The Toxiproxy stream a payload fault belongs to (None: either, for transport)."""
        return {"request": "upstream", "response": "downstream"}.get(self.side)  # type: ignore[return-value]


class PayloadFault(Fault):
    """A fault on the payload, optionally limited to rows where a predicate holds."""

    where: str | None = None
    runs_at: ClassVar[frozenset[Place]] = frozenset({"proxy", "service", "offline"})

    @field_validator("where")
    @classmethod
    def _predicate(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_predicate(value)
            except PredicateError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @functools.cached_property
    def predicate(self) -> Predicate | None:
        return None if self.where is None else parse_predicate(self.where)

    def reads(self) -> set[str] | None:
        """The columns this fault reads or changes (None: any, it needs the whole table)."""
        columns = getattr(self, "columns", None)
        if columns is None and self.side == "request":
            return None
        found = set(columns or ())
        if self.predicate is not None:
            found |= self.predicate.columns
        return found

    def rows(self, data: Rows, n: int, rng: np.random.Generator, rate: float = 1.0) -> BoolArray:
        """Rows this fault hits: those matching ``where`` (none if its columns are absent),
        each with probability ``rate``."""
        hit = rng.random(n) < rate if rate < 1 else np.ones(n, dtype=bool)
        predicate = self.predicate
        if predicate is None:
            return hit
        if data is None or not predicate.columns <= set(data.keys()):
            return np.zeros(n, dtype=bool)
        if isinstance(data, pd.DataFrame):
            frame = data
        else:  # only the predicate's columns: a request's other fields need no conversion
            frame = pd.DataFrame({c: data[c] for c in predicate.columns}).infer_objects()
        return hit & predicate.evaluate(frame)


class RequestFault(PayloadFault):
    side: ClassVar[Side] = "request"

    def apply(self, table: Table, rng: np.random.Generator) -> Table:
        """The rows' columns with the fault applied (new arrays; ``table`` is left as it is)."""
        raise NotImplementedError


Predictions = npt.NDArray[Any]
Scores = npt.NDArray[np.float64] | None


class ResponseFault(PayloadFault):
    side: ClassVar[Side] = "response"

    def apply(
        self, frame: Rows, predictions: Predictions, scores: Scores, rng: np.random.Generator
    ) -> tuple[Predictions, Scores]:
        """Predictions and scores with the fault applied to the rows it hits (of ``frame``, the
        request's rows, for ``where``; at the fault's ``rate`` if it has one)."""
        rate = float(getattr(self, "rate", 1.0))
        return self.change(predictions, scores, self.rows(frame, len(predictions), rng, rate), rng)

    def change(
        self, predictions: Predictions, scores: Scores, rows: BoolArray, rng: np.random.Generator
    ) -> tuple[Predictions, Scores]:
        raise NotImplementedError


class TransportFault(Fault):
    """A fault on the connection; it says what it changes in an ``Effect`` and a fault point acts
    the effect out."""

    side: ClassVar[Side] = "transport"
    runs_at: ClassVar[frozenset[Place]] = frozenset({"proxy", "tcp", "toxiproxy"})

    def shape(self, effect: Effect, size: int, rng: np.random.Generator) -> None:
        """Record this fault in ``effect`` (``size``: bytes of the message it applies to)."""
        raise NotImplementedError


Rate = Field(default=1.0, ge=0, le=1, description="fraction of (matching) rows affected")


def make_fault(type_name: str, attributes: dict[str, Any]) -> Fault:
    """Validate ``attributes`` as fault ``type_name``; ``FaultError`` names the bad field."""
    cls = FAULTS.get(type_name)
    if cls is None:
        raise FaultError(INVALID_TYPE)
    try:
        return cls.model_validate(attributes)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "attributes"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown attribute for {type_name}"
        raise FaultError(f"invalid attribute {field!r}: {message}") from exc
