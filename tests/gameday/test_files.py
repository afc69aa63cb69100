"""Scenario and target files: the bundled ones validate; each broken file in the corpus gives its
exact one-line messages (every problem in the file) and exit 2 (3 for a fault point that does not
answer), with no traceback.

Checks against a live target run against real servers on loopback: the chaosml proxy (an HTTP
proxy and a raw TCP relay), a second proxy standing in for a real Toxiproxy (it speaks the same
API), the in-service fault point with a token, and a /metrics page read by a metric probe."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from typer.testing import CliRunner

from chaosml._net import free_port
from chaosml.cli import app
from chaosml.demo.service import serving_app
from chaosml.durations import format_duration, parse_duration
from chaosml.errors import SpecError
from chaosml.faultpoint import FaultPoint
from chaosml.gameday import load_scenarios, validate
from chaosml.proxy.api import ProxyServer, running

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
    "unknown_point": [
        "{path}:3: faults[0].at: no fault point 'nowhere' in {target} (expected one of proxy, "
        "network)"
    ],
}
# Against the live target (``live_target``): fault points that answer, a probe that lists rules.
POINTS = "proxy, raw, wrong, service, locked, network, down"
AGAINST_LIVE = {
    "schema_and_target": [
        "{path}:2: durration: unknown key",
        "{path}:4: load.data: {folder}/nowhere.parquet: file not found",
        f"{{path}}:6: faults[0].at: no fault point 'servce' in {{target}} (expected one of {POINTS})",
        "{path}:9: expect[1].alert: no rule 'FeatureMissingRate' in the target's rules "
        "(expected one of FeatureMissingRateHigh)",
    ],
    "point_unreachable": [
        "{target}:12: fault_points.down.api: fault point 'down' ({down}) unreachable: "
        "[Errno 111] Connection refused"
    ],
    "wrong_proxy": [
        "{target}:8: fault_points.wrong.proxy: fault point 'wrong' ({proxy}) has no proxy "
        "'modle' (did you mean 'model'?)"
    ],
    "token_refused": [
        "{target}:10: fault_points.locked.api: fault point 'locked' ({service}): GET /proxies: "
        "HTTP 401: missing or wrong token"
    ],
    "timeout_at_service": [
        "{path}:3: faults[0].type: timeout cannot run at the in-service fault point (it runs "
        "at: chaosml's proxy (HTTP), chaosml's proxy relaying raw TCP, a real Toxiproxy); "
        "'service' is the in-service fault point"
    ],
    "http_error_at_tcp": [
        "{path}:3: faults[0].type: http_error cannot run at chaosml's proxy relaying raw TCP "
        "(it runs at: chaosml's proxy (HTTP), the in-service fault point); 'raw' is a raw TCP "
        "relay"
    ],
    "payload_at_toxiproxy": [
        "{path}:3: faults[0].type: missing_values cannot run at a real Toxiproxy (it runs at: "
        "chaosml's proxy (HTTP), the in-service fault point, offline evaluation data); "
        "'network' is a Toxiproxy"
    ],
    "unknown_column": [
        "{path}:3: faults[0].columns[1]: unknown column 'incom' in {data} (did you mean 'income'?)"
    ],
    "column_in_bad_fault": [
        "{path}:3: faults[0].colour: unknown key for missing_values",
        "{path}:3: faults[0].columns[0]: unknown column 'incme' in {data} (did you mean 'income'?)",
    ],
    "numeric_on_text": [
        "{path}:4: faults[0].columns[1]: scale works on numbers, and 'employment' holds text in "
        "{folder}/text.csv: its values would all become null (for text, use wrong_type, "
        "unseen_category or missing_values)"
    ],
    "where_unknown_column": [
        "{path}:3: faults[0].where: unknown column 'agee' in {data} (did you mean 'age'?)"
    ],
    "label_column": [
        "{path}:3: faults[0].columns[0]: 'region' is the label column: it is not sent to the "
        "service"
    ],
    "label_key_typo": [
        "{path}:3: expect[0].labels.featur: unknown label 'featur' for FeatureMissingRateHigh "
        "(did you mean 'feature'?)"
    ],
    "deadline_before_for": [
        "{path}:3: expect[0].within: 5s is shorter than FeatureMissingRateHigh needs to fire "
        "(for: 10s)"
    ],
}
UNREACHABLE = {"point_unreachable"}  # exit 3: a component did not answer
TOKEN_ENV = "CHAOSML_TEST_POINT_TOKEN"
PAGE = 'model_feature_missing_rate{feature="income"} 0.0\nmodel_feature_missing_rate{feature="age"} 0.0\n'
LIVE_TARGET = """name: live
url: http://127.0.0.1:9/predict
data: {data}
label: region
fault_points:
  proxy: {{api: {proxy}, proxy: model}}
  raw: {{api: {proxy}, proxy: raw}}
  wrong: {{api: {proxy}, proxy: modle}}
  service: {{api: {service}, proxy: service, token_env: {token_env}}}
  locked: {{api: {service}, proxy: service}}
  network: {{api: {toxiproxy}, proxy: model, kind: toxiproxy}}
  down: {{api: {down}, proxy: model}}
alerts:
  - type: probe
    url: http://{page}/metrics
    rules:
      - {{alert: FeatureMissingRateHigh, expr: 'model_feature_missing_rate > 0.2', for: 10s, labels: {{severity: warning}}}}
"""


async def _page(request: Request) -> PlainTextResponse:
    return PlainTextResponse(PAGE)


@pytest.fixture(scope="module")
def live_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path | str]]:
    """The live target file and the addresses its messages name."""
    with ExitStack() as stack:
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.setenv(TOKEN_ENV, "s3cret")
        page = stack.enter_context(serving_app(Starlette(routes=[Route("/metrics", _page)])))
        proxy = stack.enter_context(running(ProxyServer(api="127.0.0.1:0")))
        toxiproxy = stack.enter_context(running(ProxyServer(api="127.0.0.1:0")))
        point = stack.enter_context(FaultPoint({}))
        point.enable("127.0.0.1:0", token="s3cret")
        for api, name, codec in (
            (proxy.api, "model", "auto"),
            (proxy.api, "raw", "tcp"),
            (toxiproxy.api, "model", "auto"),
        ):
            body = {
                "name": name,
                "upstream": "127.0.0.1:9",
                "listen": "127.0.0.1:0",
                "codec": codec,
            }
            requests.post(f"http://{api}/proxies", json=body, timeout=5).raise_for_status()
        names: dict[str, Path | str] = {
            "data": FIXTURES / "requests.csv",
            "proxy": proxy.api,
            "service": str(point.api),
            "toxiproxy": toxiproxy.api,
            "down": f"127.0.0.1:{free_port()}",
            "page": page,
        }
        target = tmp_path_factory.mktemp("live") / "live.yaml"
        target.write_text(LIVE_TARGET.format(token_env=TOKEN_ENV, **names), encoding="utf-8")
        yield {**names, "target": target}


def _check(argv: list[str], expected: list[str], exit_code: int = 2, **names: Path | str) -> None:
    result = runner.invoke(app, ["validate", *argv])
    assert result.exit_code == exit_code, result.output
    lines = [f"chaosml: error: {line.format(**names)}" for line in expected]
    assert result.stderr.strip().splitlines() == lines
    assert result.stdout == ""


def test_every_fixture_has_its_message() -> None:
    for kind, table in (
        ("bad_scenarios", BAD_SCENARIOS),
        ("bad_targets", BAD_TARGETS),
        ("against_target", AGAINST_TARGET | AGAINST_LIVE),
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


@pytest.mark.parametrize("name", sorted(AGAINST_LIVE))
def test_scenario_against_live_target(name: str, live_target: dict[str, Path | str]) -> None:
    path = FIXTURES / "against_target" / f"{name}.yaml"
    _check(
        [str(path), "--target", str(live_target["target"])],
        AGAINST_LIVE[name],
        3 if name in UNREACHABLE else 2,
        path=path,
        folder=path.parent,
        **live_target,
    )


def _scenario(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\n{text}", encoding="utf-8")
    return path


def test_an_unreachable_point_is_reported_once(
    live_target: dict[str, Path | str], tmp_path: Path
) -> None:
    fault = "faults:\n  - {type: latency, latency: 100, at: down}\n"
    paths = [_scenario(tmp_path, name, fault) for name in ("one", "two")]
    with pytest.raises(SpecError) as caught:
        validate(paths, Path(live_target["target"]))
    assert caught.value.exit_code == 3
    assert caught.value.problems == [AGAINST_LIVE["point_unreachable"][0].format(**live_target)]


def test_what_each_point_can_act_out_is_accepted(
    live_target: dict[str, Path | str], tmp_path: Path
) -> None:
    text = """faults:
  - {type: slicer, average_size: 64, at: network}
  - {type: noop, at: network}
  - {type: latency, latency: 100, at: raw}
  - {type: http_error, at: service}
  - {type: missing_values, columns: [income], where: "age > 30", at: proxy}
  - {type: label_flip, where: "age > 30", at: service}
expect:
  - {alert: FeatureMissingRateHigh, labels: {feature: income, severity: warning}, within: 10s}
"""
    checked = validate([_scenario(tmp_path, "fine", text)], Path(live_target["target"]))
    assert checked.places == {
        "network": "toxiproxy",
        "raw": "tcp",
        "service": "service",
        "proxy": "proxy",
    }
    assert checked.notes == []


def test_before_a_run_rule_findings_are_notes_and_fault_findings_stop_it(
    live_target: dict[str, Path | str], tmp_path: Path
) -> None:
    target = Path(live_target["target"])
    typo = FIXTURES / "against_target" / "label_key_typo.yaml"
    checked = validate([typo], target, strict_rules=False)
    assert checked.notes == [AGAINST_LIVE["label_key_typo"][0].format(path=typo)]
    both = _scenario(
        tmp_path,
        "both",
        "faults:\n  - {type: timeout, at: service}\n"
        "expect:\n  - {alert: FeatureMissingRateHigh, labels: {featur: income}}\n",
    )
    with pytest.raises(SpecError) as caught:
        validate([both], target, strict_rules=False)
    assert caught.value.problems == [
        f"{both}:3: faults[0].type: timeout cannot run at the in-service fault point (it runs "
        "at: chaosml's proxy (HTTP), chaosml's proxy relaying raw TCP, a real Toxiproxy); "
        "'service' is the in-service fault point"
    ]


def test_a_probe_rule_is_judged_on_the_scaled_deadline(
    live_target: dict[str, Path | str], tmp_path: Path
) -> None:
    """A probe's for: is scaled at run time like the scenario, so a deadline that fits at one
    scale fits at every scale."""
    path = _scenario(
        tmp_path, "scaled", "expect:\n  - {alert: FeatureMissingRateHigh, within: 20s}\n"
    )
    for scale in (1.0, 0.05):
        validate([path], Path(live_target["target"]), time_scale=scale)


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


def test_a_target_whose_data_is_missing_is_blamed_once_on_the_target(tmp_path: Path) -> None:
    target = tmp_path / "target.yaml"
    text = (FIXTURES / "targets" / "loopback.yaml").read_text(encoding="utf-8")
    target.write_text(text.replace("data: ../requests.csv", "data: gone.parquet"), encoding="utf-8")
    scenario = "faults: [{type: latency, latency: 5, at: network}]\nphases: {steady: 1s}\n"
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"name: {name}\n{scenario}", encoding="utf-8")
        paths.append(path)
    with pytest.raises(SpecError) as caught:
        validate(paths, target)
    assert [p for p in caught.value.problems if "gone.parquet" in p] == [
        f"{target}:3: data: {tmp_path / 'gone.parquet'}: file not found (a relative data: is "
        "read from the target file's folder)"
    ]
