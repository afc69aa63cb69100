"""Alert sources, behind one interface (``AlertSource``), and the poller that watches them.

Named by the ``type`` a target file gives them (``chaosml.alerts.specs``, one spec model each): ``prometheus``, ``alertmanager``, ``webhook``
(a receiver chaosml runs for Alertmanager's notifications) and ``probe`` (rules evaluated on a
``/metrics`` page).
"""

from __future__ import annotations

from chaosml.alerts.alertmanager import AlertmanagerAlerts
from chaosml.alerts.base import AlertSource, AlertState, RuleInfo
from chaosml.alerts.poller import Poller, Track
from chaosml.alerts.probe import MetricProbe
from chaosml.alerts.prometheus import PrometheusAlerts
from chaosml.alerts.specs import (
    SOURCE_SPECS,
    SOURCE_TYPES,
    AlertSourceSpec,
    SourceSpec,
    make_source,
)
from chaosml.alerts.webhook import WebhookAlerts, WebhookReceiver

__all__ = [
    "SOURCE_SPECS",
    "SOURCE_TYPES",
    "AlertSource",
    "AlertSourceSpec",
    "AlertState",
    "AlertmanagerAlerts",
    "MetricProbe",
    "Poller",
    "PrometheusAlerts",
    "RuleInfo",
    "SourceSpec",
    "Track",
    "WebhookAlerts",
    "WebhookReceiver",
    "make_source",
]
