"""Alert sources, behind one interface (``AlertSource``), and the poller that watches them.

Registered by the ``type`` a target file gives them: ``prometheus``, ``alertmanager``, ``webhook``
(a receiver chaosml runs for Alertmanager's notifications) and ``probe`` (rules evaluated on a
``/metrics`` page).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chaosml.alerts.alertmanager import AlertmanagerAlerts
from chaosml.alerts.base import AlertSource, AlertState, RuleInfo
from chaosml.alerts.poller import Poller, Track
from chaosml.alerts.probe import MetricProbe, Rule, parse_expr
from chaosml.alerts.prometheus import PrometheusAlerts
from chaosml.alerts.webhook import WebhookAlerts, WebhookReceiver


def _probe(spec: Any, time_scale: float) -> AlertSource:
    checks = [
        Rule(r.alert, parse_expr(r.expr), r.for_ * time_scale, dict(r.labels)) for r in spec.rules
    ]
    return MetricProbe(spec.url, checks)


# type name -> factory(source spec from the target file, time scale)
SOURCES: dict[str, Callable[[Any, float], AlertSource]] = {
    "prometheus": lambda spec, scale: PrometheusAlerts(spec.url),
    "alertmanager": lambda spec, scale: AlertmanagerAlerts(spec.url),
    "webhook": lambda spec, scale: WebhookAlerts(spec.listen, spec.path),
    "probe": _probe,
}


def make_source(spec: Any, time_scale: float = 1.0) -> AlertSource:
    return SOURCES[spec.type](spec, time_scale)


__all__ = [
    "SOURCES",
    "AlertSource",
    "AlertState",
    "AlertmanagerAlerts",
    "MetricProbe",
    "Poller",
    "PrometheusAlerts",
    "RuleInfo",
    "Track",
    "WebhookAlerts",
    "WebhookReceiver",
    "make_source",
]
