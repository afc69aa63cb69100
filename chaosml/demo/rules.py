"""The reference stack's monitoring configuration, from one source: alert rules, prometheus.yml,
alertmanager.yml.

Each rule names the failure mode it covers (its ``failure_mode`` label), so game-day coverage joins
rules and scenarios by failure mode, not only by alert name.

``docker/`` holds these files rendered for the compose stack (``python -m chaosml.demo.rules docker``);
tests render the same rules with short ``for:`` durations and loopback targets. A test checks that
the files in ``docker/`` are what this module renders, so the two cannot drift apart.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from chaosml.durations import format_duration


@dataclass(kw_only=True, frozen=True)
class Rule:
    """One alert: one failure mode."""

    alert: str
    expr: str
    for_seconds: int
    summary: str
    failure_mode: str
    severity: str = "warning"
    window_seconds: int = 60  # the range of ``{window}`` in ``expr``, scaled like ``for:``

    def render(self, time_scale: float = 1.0) -> dict[str, Any]:
        """The rule as Prometheus reads it, with ``for:`` and ranges shortened by ``time_scale``."""
        window = format_duration(max(round(self.window_seconds * time_scale), MIN_WINDOW))
        seconds = max(round(self.for_seconds * time_scale), 0)
        entry: dict[str, Any] = {"alert": self.alert, "expr": self.expr.replace("{window}", window)}
        if seconds:
            entry["for"] = f"{seconds}s"
        entry["labels"] = {"severity": self.severity, "failure_mode": self.failure_mode}
        entry["annotations"] = {"summary": self.summary.replace("{window}", window)}
        return entry

    def probe_rule(self) -> dict[str, Any] | None:
        """The rule for a metric probe (``metric{labels} op number``), if it is that simple."""
        if not PROBE_FORM.fullmatch(self.expr):
            return None
        rule: dict[str, Any] = {"alert": self.alert, "expr": self.expr}
        if self.for_seconds:
            rule["for"] = f"{self.for_seconds}s"
        rule["labels"] = {"severity": self.severity, "failure_mode": self.failure_mode}
        return rule


MIN_WINDOW = 5  # seconds: a range must hold a few 1 s scrapes
PROBE_FORM = re.compile(r"[a-zA-Z_:][\w:]*(\{[^}]*\})?\s*(>|<|>=|<=|==|!=)\s*-?[\d.]+")


RULES = (
    Rule(
        alert="ModelLatencyHigh",
        expr="histogram_quantile(0.95, sum by (le) (rate(chaosml_model_request_latency_seconds_bucket[{window}]))) > 0.5",
        for_seconds=120,
        summary="p95 latency of /predict is above 500 ms",
        failure_mode="latency",
        severity="critical",
    ),
    Rule(
        alert="ModelErrorRateHigh",
        expr='sum(rate(chaosml_model_requests_total{status="error"}[{window}])) / sum(rate(chaosml_model_requests_total[{window}])) > 0.05',
        for_seconds=120,
        summary="more than 5% of predictions fail",
        failure_mode="error_burst",
        severity="critical",
    ),
    Rule(
        alert="FeatureMissingRateHigh",
        expr="chaosml_model_feature_missing_rate > 0.2",
        for_seconds=60,
        summary="feature {{ $labels.feature }} is missing in {{ $value | humanizePercentage }} of recent rows",
        failure_mode="feature_nulls",
    ),
    Rule(
        alert="FeatureDrift",
        expr="chaosml_model_feature_psi > 0.25",
        for_seconds=300,
        summary="feature {{ $labels.feature }} drifted from the training data (PSI {{ $value }})",
        failure_mode="feature_drift",
    ),
    Rule(
        alert="PredictionDistributionShift",
        expr="abs(chaosml_model_positive_rate - chaosml_model_reference_positive_rate) > 0.15",
        for_seconds=120,
        summary="the share of positive predictions moved away from its reference",
        failure_mode="prediction_shift",
    ),
    Rule(
        alert="FairnessGapHigh",
        expr="chaosml_model_fairness_gap > 0.1",
        for_seconds=120,
        summary="selection rates differ by {{ $value }} across {{ $labels.attribute }}",
        failure_mode="bias",
        severity="critical",
    ),
    Rule(
        alert="OnlineAccuracyLow",
        expr="chaosml_model_online_accuracy < 0.7",
        for_seconds=300,
        summary="accuracy on feedback labels dropped below 0.7",
        failure_mode="degraded_model",
        severity="critical",
    ),
    Rule(
        alert="ModelVersionChanged",
        expr="count by (job) (increase(chaosml_model_answers_total[{window}]) > 0) > 1",
        for_seconds=0,
        summary="more than one model version answered in the last {window}",
        failure_mode="stale_model",
        severity="info",
        window_seconds=120,
    ),
)


def rules_file(*, time_scale: float = 1.0, rules: tuple[Rule, ...] = RULES) -> dict[str, Any]:
    """The alerting rules; ``time_scale`` shortens every ``for:`` and range (tests, the demo)."""
    return {"groups": [{"name": "chaosml-model", "rules": [r.render(time_scale) for r in rules]}]}


def prometheus_config(
    *, jobs: dict[str, list[str]], alertmanager: str, rules: str, interval: str = "15s"
) -> dict[str, Any]:
    """Scrape ``jobs`` (job name: targets) and send alerts to ``alertmanager``."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [rules],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": targets}]}
            for name, targets in jobs.items()
        ],
    }


def alertmanager_config(
    *, webhook: str, group_wait: str = "10s", repeat_interval: str = "1h"
) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "chaosml",
            "group_by": ["alertname", "feature", "attribute"],
            "group_wait": group_wait,
            "group_interval": group_wait,
            "repeat_interval": repeat_interval,
        },
        "receivers": [
            {"name": "chaosml", "webhook_configs": [{"url": webhook, "send_resolved": True}]}
        ],
    }


def dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, width=120)


DOCKER_FILES: dict[str, Callable[[], dict[str, Any]]] = {
    "prometheus/rules/chaosml.rules.yml": lambda: rules_file(),
    "prometheus/prometheus.yml": lambda: prometheus_config(
        jobs={"model": ["model:8000"], "chaosml-proxy": ["proxy:8474", "model:8476"]},
        alertmanager="alertmanager:9093",
        rules="/etc/prometheus/rules/chaosml.rules.yml",
    ),
    "alertmanager/alertmanager.yml": lambda: alertmanager_config(
        webhook="http://webhook:9094/alerts"
    ),
}
HEADER = "# Rendered by `python -m chaosml.demo.rules docker` from chaosml/demo/rules.py: edit that, not this.\n"


def render_docker() -> dict[str, str]:
    return {path: HEADER + dump(make()) for path, make in DOCKER_FILES.items()}


def main(argv: list[str]) -> None:
    folder = Path(argv[0] if argv else "docker")
    for path, text in render_docker().items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv[1:])
