"""The in-service fault point: the fault catalogue applied inside a Python model service, around its
predict call, *before* the service's own monitors record the answer.

The fault proxy sits in front of a service, so a response fault applied there (a degraded or stale
model, injected bias) changes only what the client receives; the service's monitors still see
healthy predictions. A game day about the service's own monitoring applies those faults here::

    point = FaultPoint.from_env(alternates={"v1": predict_v1})   # inert unless enabled
    answer = point(predict, columns)    # answer.predictions, .scores, .columns, .version

It is driven through the same Toxiproxy-style control API as the proxy (one fixed proxy named
``service``; leases, seeds and the token rules), so a game-day runner treats it like any other
fault point. It is inert unless enabled: ``FaultPoint.from_env`` reads ``CHAOSML_FAULT_POINT``
(``host:port`` of its control API), ``CHAOSML_FAULT_POINT_TOKEN`` (required beyond loopback) and
``CHAOSML_FAULT_POINT_SEED``. With no toxic active, a call costs one dictionary check.

What it acts out: request faults (on the features the model sees), response faults (on its
answers), ``stale_model`` with a ``version`` the service registered in ``alternates``, and the
transport faults ``latency`` (sleeps before predicting) and ``http_error`` (raises
``InjectedError``, which the service turns into that status so its error monitors count it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import numpy as np
import numpy.typing as npt

from chaosml._types import Table
from chaosml.errors import ChaosmlError
from chaosml.faults import RequestFault, TransportFault
from chaosml.faults.base import Route
from chaosml.proxy.api import ProxyServer, running
from chaosml.proxy.metrics import ProxyMetrics
from chaosml.proxy.pipeline import Pipeline, record
from chaosml.proxy.server import Proxy
from chaosml.proxy.toxics import ApiError, OwnsToxics, Toxic, ToxicStore, effect_of

PROXY_NAME = "service"
ENV_ADDRESS, ENV_TOKEN, ENV_SEED = (
    "CHAOSML_FAULT_POINT",
    "CHAOSML_FAULT_POINT_TOKEN",
    "CHAOSML_FAULT_POINT_SEED",
)
Scores = npt.NDArray[np.float64] | None


class Answer(NamedTuple):
    predictions: npt.NDArray[Any]
    scores: Scores
    columns: Table  # what the model saw (request faults applied)
    version: str | None  # the alternate version that answered (stale_model), else None


Predict = Callable[[Table], tuple[npt.NDArray[Any], Scores]]


class InjectedError(ChaosmlError):
    """An ``http_error`` toxic: the service should answer ``status`` with ``body`` (the toxic's
    text, by default ``{"error": "injected by chaosml"}``), so its error monitors count it."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"injected HTTP {status}")
        self.status, self.body = status, body


@dataclass(kw_only=True)
class _InService(OwnsToxics):
    """The fault point's one entry in its control API, a peer of the proxy's listeners: it owns
    a toxic store and acts its toxics out through the payload pipeline they share, around a
    predict call instead of on HTTP bodies. The control API lists, resets, starts and stops every
    entry alike; this one has no listener, so there is nothing to start or stop."""

    metrics: ProxyMetrics
    alternates: tuple[str, ...] = ()
    name: str = PROXY_NAME
    listen: str = "in-service"
    upstream: str = "in-service"
    codec: str = "auto"
    enabled: bool = True
    mirror: None = None  # no traffic of its own to copy to a candidate (shadow)
    store: ToxicStore = field(default_factory=ToxicStore)
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    pipeline: Pipeline = field(init=False)

    def __post_init__(self) -> None:
        self.pipeline = Pipeline(metrics=self.metrics, point=self.name)

    def same_route(self, listen: str, upstream: str) -> bool:
        return (listen, upstream) == (self.listen, self.upstream)

    async def start(self) -> None:
        """Nothing listens: the service's own calls come through ``FaultPoint.__call__``."""

    async def stop(self) -> None:
        """Nothing listens (see ``start``)."""

    def check(self, toxic: Toxic) -> None:
        fault = toxic.fault
        refused = fault.runs_where("service")
        if refused is not None:
            raise ApiError(refused, 400)
        route = fault.route()
        if route is not None and route.version not in self.alternates:
            known = ", ".join(self.alternates) or "none"
            raise ApiError(
                f"invalid attribute 'version': expected a version this service has loaded "
                f"({known})",
                400,
            )

    def current(self) -> list[Toxic]:
        """Active toxics, without removing expired ones (other threads may be reading)."""
        return self.store.current()


@dataclass
class FaultPoint:
    """Applies the active toxics of its control API around a predict function."""

    alternates: Mapping[str, Predict]
    _point: _InService | None = None
    _server: ProxyServer | None = None
    _stack: ExitStack | None = None

    @classmethod
    def from_env(
        cls, alternates: Mapping[str, Predict] | None = None, env: Mapping[str, str] | None = None
    ) -> FaultPoint:
        """Enabled only when ``CHAOSML_FAULT_POINT`` is set; otherwise a pass-through."""
        env = os.environ if env is None else env
        address = env.get(ENV_ADDRESS)
        point = cls(dict(alternates or {}))
        if address:
            seed = env.get(ENV_SEED)
            point.enable(
                address, token=env.get(ENV_TOKEN) or None, seed=int(seed) if seed else None
            )
        return point

    @property
    def enabled(self) -> bool:
        return self._point is not None

    @property
    def api(self) -> str | None:
        return self._server.api if self._server is not None else None

    def enable(self, api: str, *, token: str | None = None, seed: int | None = None) -> None:
        """Start the control API on ``api`` (``host:0``: a free port) in a background thread."""
        self._server = ProxyServer(api=api, token=token, seed=seed, fixed=True)
        point = _InService(metrics=self._server.metrics, alternates=tuple(self.alternates))
        # the control API's table is typed by its listening entries; this peer answers the same
        # calls (``OwnsToxics`` and the lifecycle above)
        self._server.add(cast(Proxy, point))
        self._stack = ExitStack()
        self._stack.enter_context(running(self._server))
        self._point = point

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._point, self._server, self._stack = None, None, None

    def __enter__(self) -> FaultPoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, predict: Predict, columns: Table) -> Answer:
        """``predict(columns)`` with the active toxics applied; raises ``InjectedError`` for an
        ``http_error`` toxic."""
        point = self._point
        if point is None or not point.toxics:
            return Answer(*predict(columns), columns, None)
        toxics = [t for t in point.current() if t.hits()]
        if not toxics:
            return Answer(*predict(columns), columns, None)
        return self._faulty(point, toxics, predict, columns)

    def _faulty(
        self, point: _InService, toxics: list[Toxic], predict: Predict, columns: Table
    ) -> Answer:
        for toxic in toxics:
            point.metrics.series(point.metrics.toxics, point.name, toxic.type).inc()
        transport = [t for t in toxics if isinstance(t.fault, TransportFault)]
        for toxic in transport:
            toxic.evidence.act()
        effect = effect_of(transport, 0)
        if effect.delay:
            time.sleep(effect.delay)
        if effect.status is not None:
            raise InjectedError(effect.status, effect.body.decode())
        pipeline = point.pipeline
        requests = [t for t in toxics if isinstance(t.fault, RequestFault)]
        columns, pending = pipeline.columns(requests, columns)
        routed = next((t for t in toxics if t.fault.routes), None)
        version = None
        if routed is not None:
            version = cast(Route, routed.fault.route()).version
            routed.evidence.act(len(next(iter(columns.values()))) if columns else 0)
        predictions, scores = (self.alternates[version] if version else predict)(columns)
        predictions, scores, answered = pipeline.answers(
            toxics, columns, np.asarray(predictions), scores
        )
        record(pending + answered)
        return Answer(predictions, scores, columns, version)
