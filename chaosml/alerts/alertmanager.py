"""Alertmanager as an alert source: ``/api/v2/alerts`` (what it has received and would notify)."""

from __future__ import annotations

from dataclasses import dataclass

from chaosml.alerts.base import AlertState, RuleInfo, get_json, parse_time


@dataclass
class AlertmanagerAlerts:
    url: str
    name: str = "alertmanager"

    def start(self) -> None:
        get_json(f"{self.url}/api/v2/status")

    def rules(self) -> list[RuleInfo] | None:
        return None

    def poll(self) -> list[AlertState]:
        alerts = []
        for alert in get_json(f"{self.url}/api/v2/alerts?active=true&silenced=false"):
            labels = {str(k): str(v) for k, v in alert.get("labels", {}).items()}
            name = labels.pop("alertname", "")
            if (alert.get("status") or {}).get("state", "active") != "active":
                continue
            # startsAt is when Prometheus saw it fire (its FiredAt)
            alerts.append(AlertState(name, labels, "firing", parse_time(alert.get("startsAt"))))
        return alerts

    def stop(self) -> None:
        return None
