"""Scenario and target files: the bundled ones validate; each broken file in the corpus gives its
exact one-line messages (every problem in the file) and exit 2, with no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from chaosml.cli import app
from chaosml.durations import format_duration, parse_duration
from chaosml.gameday import load_scenarios

ROOT = Path(__file__).parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
TARGET = FIXTURES / "targets" / "loopback.yaml"
runner = CliRunner()

BAD_SCENARIOS = {
    "bad_attributes": [
        "{path}:5: faults[0].rate: Input should be less than or equal to 1, got 1.5",
        "{path}:6: faults[0].colums: unknown key for missing_values",
    ],
    "bad_duration": [
        "{path}:4: phases.fault: expected a duration such as 45s, 2m, 1m30s or 500ms, "
        "got '5 minutes'"
    ],
    "bad_name": [
        "{path}:1: name: expected lower-case letters, digits, '-', '_' or '.' (e.g. "
        "income-nulls), got 'Income Nulls'"
    ],
    "bad_where": ["{path}:3: faults[0].where: predicate does not parse: \"sex = 'F'\""],
    "deadline_too_long": [
        "{path}:4: expect[0].within: 10m is longer than the fault phase (2m): expected at most that"
    ],
    "duplicate_key": ["{path}:3: load: duplicate key"],
    "missing_name": ["{path}:1: name: required key is missing"],
    "not_a_mapping": ["{path}:1: (top level): expected a mapping of scenario keys"],
    "quiet_with_deadline": [
        "{path}:5: expect[0].within: a deadline applies only to alerts that must fire"
    ],
    "stop_bad_syntax": ["{path}:3: stop_if[0]: predicate does not parse: 'error_rate >'"],
    "stop_unknown_figure": [
        "{path}:3: stop_if[0]: unknown figure 'errors' (expected rps, error_rate, p50_ms, "
        "p95_ms, p99_ms, requests, failures, users)"
    ],
    "toxicity_range": [
        "{path}:3: faults[0].toxicity: Input should be less than or equal to 1, got 2"
    ],
    "unknown_fault": [
        "{path}:3: faults[0].type: unknown fault type 'missing_value' (expected one of "
        "missing_values, scale, shift, noise, constant, wrong_type, unseen_category, "
        "swap_columns, drop_field, score_noise, label_flip, constant_prediction, nan_prediction, "
        "bias, stale_model, latency, http_error, timeout, reset_peer, bandwidth, slow_close, "
        "limit_data, slicer, noop)"
    ],
    "unknown_key": ["{path}:3: durration: unknown key"],
    "wrong_type": [
        "{path}:3: load.users: Input should be a valid integer, unable to parse string as an "
        "integer, got 'many'"
    ],
    "yaml_syntax": [
        "{path}:3: invalid YAML: expected ',' or '}}', but got '<stream end>' (while parsing a "
        "flow mapping on line 2)"
    ],
}
BAD_TARGETS = {
    "bad_codec": [
        "{path}:2: codec: unknown codec 'grpc' (expected one of records, mlflow, kserve, tfserving)"
    ],
    "bad_fault_point": [
        "{path}:3: fault_points.proxy.api: invalid address 'localhost': expected host:port"
    ],
    "bad_probe_expr": [
        '{path}:6: alerts[0].rules[0].expr: expected metric{{label="value", ...}} followed by > '
        "< >= <= == != and a number, got 'rate(x[1m]) > 2'"
    ],
    "no_alerts": [
        "{path}:2: alerts: expected at least one alert source (prometheus, alertmanager, "
        "webhook, probe)"
    ],
    "unknown_source": [
        "{path}:3: alerts[0]: unknown type 'grafana' (expected one of prometheus, "
        "alertmanager, webhook, probe)"
    ],
    "url_without_scheme": [
        "{path}:1: url: expected an http:// or https:// URL, got '127.0.0.1:9000/predict'"
    ],
}
AGAINST_TARGET = {
    "data_missing": ["{path}:3: load.data: {folder}/nowhere.parquet: file not found"],
    "default_point_missing": [
        "{path}:3: faults[0].type: no fault point 'service' (the default for bias) in {target} "
        "(expected one of proxy, network)"
    ],
    "payload_at_toxiproxy": [
        "{path}:3: faults[0].type: missing_values cannot run at a real Toxiproxy (it runs at: "
        "chaosml's proxy (HTTP), the in-service fault point, offline evaluation data); "
        "'network' is a Toxiproxy"
    ],
    "unknown_point": [
        "{path}:3: faults[0].at: no fault point 'nowhere' in {target} (expected one of proxy, "
        "network)"
    ],
}


def _check(argv: list[str], expected: list[str], **names: Path) -> None:
    result = runner.invoke(app, ["validate", *argv])
    assert result.exit_code == 2, result.output
    lines = [f"chaosml: error: {line.format(**names)}" for line in expected]
    assert result.stderr.strip().splitlines() == lines
    assert result.stdout == ""


def test_every_fixture_has_its_message() -> None:
    for kind, table in (
        ("bad_scenarios", BAD_SCENARIOS),
        ("bad_targets", BAD_TARGETS),
        ("against_target", AGAINST_TARGET),
    ):
        assert {p.stem for p in (FIXTURES / kind).glob("*.yaml")} == set(table), kind


@pytest.mark.parametrize("name", sorted(BAD_SCENARIOS))
def test_bad_scenario(name: str) -> None:
    path = FIXTURES / "bad_scenarios" / f"{name}.yaml"
    _check([str(path)], BAD_SCENARIOS[name], path=path)


@pytest.mark.parametrize("name", sorted(BAD_TARGETS))
def test_bad_target(name: str) -> None:
    path = FIXTURES / "bad_targets" / f"{name}.yaml"
    scenario = ROOT / "scenarios" / "income-nulls.yaml"
    _check([str(scenario), "--target", str(path)], BAD_TARGETS[name], path=path)


@pytest.mark.parametrize("name", sorted(AGAINST_TARGET))
def test_scenario_against_target(name: str) -> None:
    path = FIXTURES / "against_target" / f"{name}.yaml"
    _check(
        [str(path), "--target", str(TARGET)],
        AGAINST_TARGET[name],
        path=path,
        target=TARGET,
        folder=path.parent,
    )


def test_problems_of_several_files_are_reported_together() -> None:
    first = FIXTURES / "bad_scenarios" / "unknown_key.yaml"
    second = FIXTURES / "bad_scenarios" / "bad_name.yaml"
    result = runner.invoke(app, ["validate", str(first), str(second)])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 2


def test_bundled_scenarios_validate_and_cover_every_family() -> None:
    files = load_scenarios([ROOT / "scenarios"])
    faults = {f.type for file in files for f in file.scenario.faults}
    assert {
        "missing_values",
        "scale",
        "shift",
        "stale_model",
        "label_flip",
        "bias",
        "latency",
        "http_error",
    } <= faults
    blind = [file.scenario.name for file in files if not file.scenario.expect]
    assert blind == ["null-answers"]
    result = runner.invoke(app, ["validate", str(ROOT / "scenarios")])
    assert result.exit_code == 0, result.output
    assert "9 scenario(s) valid" in result.stderr


def test_time_scale_shrinks_every_duration_and_deadline() -> None:
    file = load_scenarios([ROOT / "scenarios" / "degraded-model.yaml"])[0]
    scaled = file.scenario.scaled(0.1)
    assert scaled.phases.fault == pytest.approx(file.scenario.phases.fault * 0.1)
    assert scaled.phases.steady == pytest.approx(file.scenario.phases.steady * 0.1)
    assert scaled.load.feedback is not None and scaled.load.feedback.delay == pytest.approx(2.0)
    assert scaled.within(scaled.expect[0]) == pytest.approx(file.scenario.phases.fault * 0.1)
    assert scaled.faults == file.scenario.faults


@given(st.integers(min_value=0, max_value=10**9))
def test_durations_round_trip(millis: int) -> None:
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@given(st.text(max_size=12))
def test_duration_parser_only_raises_value_error(text: str) -> None:
    try:
        value = parse_duration(text)
    except ValueError:
        return
    assert value >= 0
