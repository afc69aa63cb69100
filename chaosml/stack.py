"""The monitoring stack's configuration, from one source: alert rules, prometheus.yml, alertmanager.yml.

``docker/`` holds these files rendered for the compose stack (``python -m chaosml.stack docker``);
tests render the same rules with short ``for:`` durations and loopback targets. A test checks that
the files in ``docker/`` are what this module renders, so the two cannot drift apart.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Rule:
    """One alert: one failure mode."""

    alert: str
    expr: str
    for_seconds: int
    summary: str
    severity: str = "warning"


RULES = (
    Rule(
        "ModelLatencyHigh",
        "histogram_quantile(0.95, sum by (le) (rate(chaosml_model_request_latency_seconds_bucket[1m]))) > 0.5",
        120,
        "p95 latency of /predict is above 500 ms",
        "critical",
    ),
    Rule(
        "ModelErrorRateHigh",
        'sum(rate(chaosml_model_requests_total{status="error"}[1m])) / sum(rate(chaosml_model_requests_total[1m])) > 0.05',
        120,
        "more than 5% of predictions fail",
        "critical",
    ),
    Rule(
        "FeatureMissingRateHigh",
        "chaosml_model_feature_missing_rate > 0.2",
        60,
        "feature {{ $labels.feature }} is missing in {{ $value | humanizePercentage }} of recent rows",
    ),
    Rule(
        "FeatureDrift",
        "chaosml_model_feature_psi > 0.25",
        300,
        "feature {{ $labels.feature }} drifted from the training data (PSI {{ $value }})",
    ),
    Rule(
        "PredictionDistributionShift",
        "abs(chaosml_model_positive_rate - chaosml_model_reference_positive_rate) > 0.15",
        120,
        "the share of positive predictions moved away from its reference",
    ),
    Rule(
        "FairnessGapHigh",
        "chaosml_model_fairness_gap > 0.1",
        120,
        "selection rates differ by {{ $value }} across {{ $labels.attribute }}",
        "critical",
    ),
    Rule(
        "OnlineAccuracyLow",
        "chaosml_model_online_accuracy < 0.7",
        300,
        "accuracy on feedback labels dropped below 0.7",
        "critical",
    ),
    Rule(
        "ModelVersionChanged",
        "count by (job) (max_over_time(chaosml_model_info[10m])) > 1",
        0,
        "the model version served changed in the last 10 minutes",
        "info",
    ),
)


def rules_file(*, for_scale: float = 1.0) -> dict[str, Any]:
    """The alerting rules; ``for_scale`` shortens every ``for:`` (tests use small values)."""
    rules = []
    for rule in RULES:
        seconds = max(round(rule.for_seconds * for_scale), 0)
        entry: dict[str, Any] = {"alert": rule.alert, "expr": rule.expr}
        if seconds:
            entry["for"] = f"{seconds}s"
        entry["labels"] = {"severity": rule.severity}
        entry["annotations"] = {"summary": rule.summary}
        rules.append(entry)
    return {"groups": [{"name": "chaosml-model", "rules": rules}]}


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
        jobs={"model": ["model:8000"], "chaosml-proxy": ["proxy:8474"]},
        alertmanager="alertmanager:9093",
        rules="/etc/prometheus/rules/chaosml.rules.yml",
    ),
    "alertmanager/alertmanager.yml": lambda: alertmanager_config(
        webhook="http://webhook:9094/alerts"
    ),
}
HEADER = (
    "# Rendered by `python -m chaosml.stack docker` from chaosml/stack.py: edit that, not this.\n"
)


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
