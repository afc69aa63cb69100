"""Prometheus as an alert source: ``/api/v1/alerts`` (pending and firing, with ``activeAt``) and
``/api/v1/rules`` (the rules, their ``for:`` and labels)."""

from __future__ import annotations

from dataclasses import dataclass, field

from chaosml.alerts.base import AlertState, RuleInfo, get_json, parse_time
from chaosml.errors import UnreachableError


@dataclass
class PrometheusAlerts:
    url: str
    name: str = "prometheus"
    _for: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self.rules()

    def rules(self) -> list[RuleInfo]:
        payload = get_json(f"{self.url}/api/v1/rules?type=alert")
        try:
            rules = [
                RuleInfo(
                    rule["name"],
                    {str(k): str(v) for k, v in (rule.get("labels") or {}).items()},
                    float(rule.get("duration") or 0),
                )
                for group in payload["data"]["groups"]
                for rule in group["rules"]
                if rule.get("type", "alerting") == "alerting"
            ]
        except (KeyError, TypeError) as exc:
            raise UnreachableError(f"{self.url}/api/v1/rules: unexpected answer: {exc}") from exc
        self._for = {rule.name: rule.for_seconds for rule in rules}
        return rules

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
