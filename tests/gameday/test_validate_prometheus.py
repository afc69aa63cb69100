"""``validate`` against a real Prometheus on loopback: expected label keys checked against what each
rule can produce (its ``by`` labels, or its series' labels as Prometheus has them) with "did you
mean", and deadlines and recoveries checked against the rule's ``for:``, the scrape and evaluation
intervals and its range window, on the durations the run's time scale gives the scenario.

The rules here are a user's rules file as ``chaosml demo up --rules`` runs it: ``for:`` shortened by
the time scale, ranges kept as written."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from chaosml.demo.harness import ALERTMANAGER, PROMETHEUS, monitoring_stack
from chaosml.demo.rules import rules_file
from chaosml.demo.service import serving_app
from chaosml.demo.train import DemoArtifacts
from chaosml.errors import SpecError
from chaosml.faultpoint import FaultPoint
from chaosml.gameday import validate
from chaosml.proxy.api import ProxyServer, running
from tests.live_servers import require_binaries, wait_for

SCALE = 0.05
ROOT = Path(__file__).parents[2]
DATA = ROOT / "tests" / "fixtures" / "requests.csv"
PAGE = (
    'model_feature_missing_rate{feature="income"} 0.0\nmodel_errors_total{route="/predict"} 0.0\n'
)
RULES = {
    "groups": [
        {
            "name": "user",
            "rules": [
                {
                    "alert": "FeatureMissingRateHigh",
                    "expr": "model_feature_missing_rate > 0.2",
                    "for": "200s",  # 10 s at the time scale
                    "labels": {"failure_mode": "feature_nulls"},
                },
                {
                    "alert": "ErrorRateHigh",
                    "expr": "sum by (route) (rate(model_errors_total[1m])) > 1",
                    "for": "40s",
                },
                {"alert": "NeverScraped", "expr": "model_not_there_total > 0"},
            ],
        }
    ]
}
FIRES = (
    "is shorter than FeatureMissingRateHigh needs to fire (for: 10s + a scrape (1s) + an "
    "evaluation interval (1s) = 12s)"
)


async def _page(request: Request) -> PlainTextResponse:
    return PlainTextResponse(PAGE)


def _has_series(prometheus: str, metric: str) -> bool:
    answer = requests.get(
        f"http://{prometheus}/api/v1/labels", params={"match[]": metric}, timeout=5
    ).json()
    return bool(answer["data"])


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    require_binaries(PROMETHEUS, ALERTMANAGER)
    folder = tmp_path_factory.mktemp("prometheus")
    rules = folder / "user-rules.yml"
    rules.write_text(yaml.safe_dump(RULES), encoding="utf-8")
    with ExitStack() as stack:
        page = stack.enter_context(serving_app(Starlette(routes=[Route("/metrics", _page)])))
        running_stack = stack.enter_context(
            monitoring_stack(
                targets=[page],
                webhook="http://127.0.0.1:9/alerts",
                time_scale=SCALE,
                rules=rules,
                folder=folder / "stack",
            )
        )
        prometheus = running_stack.prometheus
        assert wait_for(lambda: _has_series(prometheus, "model_errors_total"), 60)
        assert wait_for(lambda: _has_series(prometheus, "model_feature_missing_rate"), 60)
        path = folder / "target.yaml"
        target = {
            "name": "prometheus",
            "url": "http://127.0.0.1:9/predict",
            "data": str(DATA),
            "alerts": [{"type": "prometheus", "url": f"http://{prometheus}"}],
        }
        path.write_text(yaml.safe_dump(target), encoding="utf-8")
        yield path


def _scenario(folder: Path, expect: list[dict[str, Any]], **fields: Any) -> Path:
    """A scenario file whose expectation ``i`` is on line ``3 + i``."""
    lines = ["name: probe", "expect:"] + [
        f"  - {yaml.safe_dump(e, default_flow_style=True).strip()}" for e in expect
    ]
    lines += [
        f"{key}: {yaml.safe_dump(value, default_flow_style=True).strip()}"
        for key, value in fields.items()
    ]
    path = folder / "probe.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _problems(path: Path, target: Path, **options: Any) -> list[str]:
    with pytest.raises(SpecError) as caught:
        validate([path], target, **options)
    assert caught.value.exit_code == 2
    return caught.value.problems


def test_a_label_key_the_series_do_not_have_is_a_typo(target: Path, tmp_path: Path) -> None:
    path = _scenario(
        tmp_path, [{"alert": "FeatureMissingRateHigh", "labels": {"featur": "income"}}]
    )
    assert _problems(path, target) == [
        f"{path}:3: expect[0].labels.featur: unknown label 'featur' for FeatureMissingRateHigh "
        "(did you mean 'feature'?)"
    ]


def test_a_label_key_outside_the_by_clause_is_a_typo(target: Path, tmp_path: Path) -> None:
    path = _scenario(tmp_path, [{"alert": "ErrorRateHigh", "labels": {"rout": "/predict"}}])
    assert _problems(path, target) == [
        f"{path}:3: expect[0].labels.rout: unknown label 'rout' for ErrorRateHigh (did you mean "
        "'route'?)"
    ]


def test_a_label_value_the_rule_sets_otherwise_can_never_match(
    target: Path, tmp_path: Path
) -> None:
    labels = {"feature": "income", "failure_mode": "feature_drift"}
    path = _scenario(tmp_path, [{"alert": "FeatureMissingRateHigh", "labels": labels}])
    assert _problems(path, target) == [
        f"{path}:3: expect[0].labels.failure_mode: FeatureMissingRateHigh always has "
        "failure_mode='feature_nulls' (its rule sets it), not 'feature_drift': it can never match"
    ]


def test_labels_the_rule_can_produce_pass_and_unknown_ones_say_nothing(
    target: Path, tmp_path: Path
) -> None:
    path = _scenario(
        tmp_path,
        [
            {
                "alert": "FeatureMissingRateHigh",
                "labels": {"feature": "income", "job": "model", "failure_mode": "feature_nulls"},
            },
            {"alert": "ErrorRateHigh", "labels": {"route": "/predict"}},
            {"alert": "NeverScraped", "labels": {"anything": "x"}},  # no series: cannot tell
        ],
    )
    checked = validate([path], target)
    assert checked.notes == []


def test_a_deadline_shorter_than_for_plus_intervals_cannot_be_met(
    target: Path, tmp_path: Path
) -> None:
    path = _scenario(tmp_path, [{"alert": "FeatureMissingRateHigh", "within": "10s"}])
    assert _problems(path, target) == [f"{path}:3: expect[0].within: 10s {FIRES}"]
    validate([_scenario(tmp_path, [{"alert": "FeatureMissingRateHigh", "within": "12s"}])], target)


def test_the_time_scale_shortens_the_fault_phase_but_not_the_rule(
    target: Path, tmp_path: Path
) -> None:
    path = _scenario(
        tmp_path, [{"alert": "FeatureMissingRateHigh"}], phases={"fault": "3m", "recovery": "1m"}
    )
    validate([path], target)
    assert _problems(path, target, time_scale=SCALE) == [
        f"{path}:3: expect[0]: the fault phase (9s at time scale 0.05), its deadline, {FIRES}"
    ]


def test_a_recovery_shorter_than_the_range_window_cannot_be_met(
    target: Path, tmp_path: Path
) -> None:
    """The item-8 case: user rules keep their [1m] window when the run is time-scaled."""
    path = _scenario(
        tmp_path, [{"alert": "ErrorRateHigh"}], phases={"fault": "2m", "recovery": "5m"}
    )
    validate([path], target)
    assert _problems(path, target, time_scale=SCALE) == [
        f"{path}:3: expect[0]: the recovery phase (15s at time scale 0.05), its deadline, is "
        "shorter than the range ErrorRateHigh's query looks back over (1m): it cannot resolve "
        "sooner"
    ]
    given = _scenario(tmp_path, [{"alert": "ErrorRateHigh", "resolves_within": "30s"}])
    assert _problems(given, target) == [
        f"{given}:3: expect[0].resolves_within: 30s is shorter than the range ErrorRateHigh's "
        "query looks back over (1m): it cannot resolve sooner"
    ]


def test_before_a_run_rule_findings_are_notes(target: Path, tmp_path: Path) -> None:
    path = _scenario(
        tmp_path,
        [
            {"alert": "FeatureMissingRateHigh", "labels": {"featur": "income"}},
            {"alert": "FeatureMissingRateHigh", "within": "10s"},
        ],
    )
    checked = validate([path], target, strict_rules=False)
    assert checked.notes == [
        f"{path}:3: expect[0].labels.featur: unknown label 'featur' for FeatureMissingRateHigh "
        "(did you mean 'feature'?)",
        f"{path}:4: expect[1].within: 10s {FIRES}",
    ]


@pytest.fixture(scope="module")
def demo_points() -> Iterator[dict[str, dict[str, str]]]:
    """A fault proxy and an in-service fault point, as the reference stack has them."""
    with running(ProxyServer(api="127.0.0.1:0")) as proxy, FaultPoint({}) as point:
        point.enable("127.0.0.1:0")
        body = {"name": "model", "upstream": "127.0.0.1:9", "listen": "127.0.0.1:0"}
        requests.post(f"http://{proxy.api}/proxies", json=body, timeout=5).raise_for_status()
        yield {
            "proxy": {"api": proxy.api, "proxy": "model"},
            "service": {"api": str(point.api), "proxy": "service"},
        }


def _demo_target(
    folder: Path, demo: DemoArtifacts, points: dict[str, dict[str, str]], rules: Path | None
) -> Iterator[Path]:
    with monitoring_stack(
        targets=["127.0.0.1:9"],
        webhook="http://127.0.0.1:9/alerts",
        time_scale=SCALE,
        rules=rules,
        folder=folder / "stack",
    ) as stack:
        target = {
            "name": "demo",
            "url": "http://127.0.0.1:9/predict",
            "data": str(demo.data),
            "label": "approved",
            "fault_points": points,
            "alerts": [{"type": "prometheus", "url": f"http://{stack.prometheus}"}],
        }
        path = folder / "target.yaml"
        path.write_text(yaml.safe_dump(target), encoding="utf-8")
        yield path


def test_the_bundled_scenarios_are_feasible_against_the_demo_rules_at_its_time_scale(
    demo: DemoArtifacts, demo_points: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    require_binaries(PROMETHEUS, ALERTMANAGER)
    for target in _demo_target(tmp_path, demo, demo_points, None):
        checked = validate([ROOT / "scenarios"], target, time_scale=SCALE)
        assert len(checked.scenarios) == 9
        assert checked.notes == []


def test_user_rules_that_keep_their_windows_are_caught_at_the_demo_time_scale(
    demo: DemoArtifacts, demo_points: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    """``demo up --rules`` at ``--time-scale 0.05``: ``for:`` is scaled, ``[1m]`` is not."""
    require_binaries(PROMETHEUS, ALERTMANAGER)
    rules = tmp_path / "user-rules.yml"
    rules.write_text(yaml.safe_dump(rules_file(time_scale=1.0)), encoding="utf-8")
    scenarios = ROOT / "scenarios"
    for target in _demo_target(tmp_path, demo, demo_points, rules):
        with pytest.raises(SpecError) as caught:
            validate([scenarios], target, time_scale=SCALE)
    recovery = (
        "expect[0]: the recovery phase (15s at time scale 0.05), its deadline, is shorter than "
        "the range {alert}'s query looks back over ({window}): it cannot resolve sooner"
    )
    assert caught.value.problems == [
        f"{scenarios / 'error-burst.yaml'}:11: "
        + recovery.format(alert="ModelErrorRateHigh", window="1m"),
        f"{scenarios / 'latency.yaml'}:11: "
        + recovery.format(alert="ModelLatencyHigh", window="1m"),
        f"{scenarios / 'stale-model.yaml'}:12: "
        + recovery.format(alert="ModelVersionChanged", window="2m"),
    ]
