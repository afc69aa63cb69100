"""Prometheus as an alert source: ``/api/v1/alerts`` (pending and firing, with ``activeAt``) and
``/api/v1/rules`` (the rules, their ``for:``, labels and queries).

What a rule can produce is read from Prometheus too: the label keys of the series its query selects
(``/api/v1/labels?match[]=<metric>``), its group's evaluation interval, and the scrape interval and
external labels of the configuration (``/api/v1/status/config``).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import yaml

from chaosml.alerts.base import AlertState, RuleInfo, get_json, parse_time
from chaosml.alerts.promql import duration_seconds, label_keys
from chaosml.errors import UnreachableError


@dataclass(frozen=True)
class _Config:
    scrape_seconds: float = 0.0  # the shortest scrape interval of any job (0: not known)
    evaluation_seconds: float = 0.0
    external_labels: frozenset[str] = frozenset()


@dataclass
class PrometheusAlerts:
    url: str
    name: str = "prometheus"
    _for: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self._listed()

    def _listed(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Each alerting rule with its group, as Prometheus lists them."""
        payload = get_json(f"{self.url}/api/v1/rules?type=alert")
        try:
            listed = [
                (group, rule)
                for group in payload["data"]["groups"]
                for rule in group["rules"]
                if rule.get("type", "alerting") == "alerting"
            ]
            self._for = {str(r["name"]): float(r.get("duration") or 0) for _, r in listed}
        except (KeyError, TypeError, ValueError) as exc:
            raise UnreachableError(f"{self.url}/api/v1/rules: unexpected answer: {exc}") from exc
        return listed

    def rules(self) -> list[RuleInfo]:
        listed = self._listed()
        config = self._config()
        series: dict[str, frozenset[str] | None] = {}

        def labels_of(metric: str) -> frozenset[str] | None:
            if metric not in series:
                series[metric] = self._series_labels(metric)
            return series[metric]

        rules = []
        for group, rule in listed:
            labels = {str(k): str(v) for k, v in (rule.get("labels") or {}).items()}
            query = str(rule.get("query") or "") or None
            keys = None if query is None else label_keys(query, labels_of)
            if keys is not None:
                keys = keys | set(labels) | config.external_labels | {"alertname"}
            rules.append(
                RuleInfo(
                    name=str(rule["name"]),
                    labels=labels,
                    for_seconds=float(rule.get("duration") or 0),
                    query=query,
                    label_keys=keys,
                    evaluation_seconds=float(group.get("interval") or config.evaluation_seconds),
                    scrape_seconds=config.scrape_seconds,
                )
            )
        return rules

    def _series_labels(self, metric: str) -> frozenset[str] | None:
        """The label keys of ``metric``'s series; None if Prometheus has none (yet) or says
        nothing."""
        match = urllib.parse.urlencode({"match[]": metric})
        try:
            names = get_json(f"{self.url}/api/v1/labels?{match}")["data"]
        except (UnreachableError, KeyError, TypeError):
            return None
        if not isinstance(names, list) or not names:
            return None
        return frozenset(map(str, names))

    def _config(self) -> _Config:
        """Intervals and external labels of the running configuration (unknown: zeros)."""
        try:
            text = get_json(f"{self.url}/api/v1/status/config")["data"]["yaml"]
            config = yaml.safe_load(text) or {}
            settings = config.get("global") or {}
            scrape = [
                duration_seconds(str(job["scrape_interval"]))
                for job in config.get("scrape_configs") or []
                if job.get("scrape_interval")
            ]
            if settings.get("scrape_interval"):
                scrape.append(duration_seconds(str(settings["scrape_interval"])))
            return _Config(
                min(scrape, default=0.0),
                duration_seconds(str(settings.get("evaluation_interval") or "")),
                frozenset(map(str, settings.get("external_labels") or {})),
            )
        except (UnreachableError, KeyError, TypeError, AttributeError, yaml.YAMLError):
            return _Config()

    def poll(self) -> list[AlertState]:
        payload = get_json(f"{self.url}/api/v1/alerts")
        alerts = []
        for alert in payload.get("data", {}).get("alerts", []):
            labels = {str(k): str(v) for k, v in alert.get("labels", {}).items()}
            name = labels.pop("alertname", "")
            active = parse_time(alert.get("activeAt"))
            state = alert.get("state")
            if state not in ("pending", "firing"):
                continue
            # Prometheus gives when the alert became pending; it fires `for:` later (at the
            # first evaluation from then on).
            since = active
            if state == "firing" and active is not None:
                since = active + self._for.get(name, 0.0)
            alerts.append(AlertState(name, labels, state, since))
        return alerts

    def stop(self) -> None:
        return None
