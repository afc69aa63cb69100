"""The CLI end to end on the demo models and data: outputs, exit codes, bad input."""

from __future__ import annotations

import io
import json
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

import chaosml
from chaosml.cli import app
from chaosml.config import load_config
from chaosml.demo.train import DemoArtifacts
from chaosml.slices.checks import run_slice_tests
from chaosml.slices.compare import compare_versions
from chaosml.slices.suite import load_suite
from chaosml.versions import load_model, resolve_version

runner = CliRunner()
SUITE = Path(__file__).parents[1] / "slices" / "credit.yaml"
SLICE_KEYS = {
    "name",
    "where",
    "n",
    "discordant",
    "v1",
    "v2",
    "delta",
    "ci",
    "p_value",
    "p_adjusted",
    "verdict",
    "metrics",
}


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def compare(
    demo: DemoArtifacts, *args: str | Path, versions: tuple[str, str] = ("v1", "v2")
) -> tuple[int, str, str]:
    """`chaosml slices compare` of the demo versions with the demo suite and config."""
    return invoke("slices", "compare", *versions, "--suite", SUITE, "--config", demo.config, *args)


def test_compare_outputs(demo: DemoArtifacts, in_tmp: Path) -> None:
    code, out, err = compare(
        demo, "--json", "--junit", "c.xml", "--html", "c.html", "--n-boot", "200", "--seed", "3"
    )
    assert code == 1, err  # the demo's v2 regresses in APAC
    report = json.loads(out)
    assert report["schema"] == "chaosml.slices.compare/2"
    assert "region=APAC" in report["regressed"]
    assert set(report["overall"]) >= SLICE_KEYS
    for entry in report["slices"]:
        assert set(entry) >= SLICE_KEYS
        assert set(entry["metrics"]) == {"v1", "v2"}
        assert "roc_auc" in entry["metrics"]["v2"]
    apac = next(s for s in report["slices"] if s["name"] == "region=APAC")
    assert apac["where"] == "region == 'APAC'"
    assert apac["verdict"] == "regressed" and apac["ci"][1] < 0 and apac["p_adjusted"] < 0.05

    cases = ET.parse("c.xml").getroot().findall(".//testcase")
    assert len(cases) == 1 + len(report["slices"])
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert sorted(failed) == sorted(report["regressed"])
    message = next(c for c in cases if c.get("name") == "region=APAC").find("failure")
    assert message is not None and f"delta {apac['delta']:+.4f}, ci [" in message.get("message", "")
    assert f"{apac['v1']:.4f} -> {apac['v2']:.4f}" in message.get("message", "")
    page = Path("c.html").read_text(encoding="utf-8")
    assert "<svg" in page and "region=APAC" in page and "<script" not in page
    assert "class='legend'" in page and "Verdict rule" in page and "−max_drop" in page
    assert "e-254<" in page and "0.0000<" not in page  # p-values as the console shows them
    assert f"{apac['delta']:+.4f}" in page  # signed deltas
    regressed = sum(s["verdict"] == "regressed" for s in report["slices"])
    assert f"{len(report['slices'])} slices: {regressed} regressed" in page


def test_compare_is_reproducible_and_table_lists_worst_first(
    demo: DemoArtifacts, in_tmp: Path
) -> None:
    first = compare(demo, "--n-boot", "100", "--json")
    second = compare(demo, "--n-boot", "100", "--json")
    assert first[1] == second[1]
    code, table, _ = compare(demo, "--n-boot", "100")
    assert code == 1
    lines = [line for line in table.splitlines() if "│" in line]
    assert "overall" in lines[0] and "regressed" in lines[1]
    assert "regressed: region=APAC" in table
    assert "significant for that slice alone, not after the correction" in table


def test_identical_versions_do_not_regress(demo: DemoArtifacts, in_tmp: Path) -> None:
    code, out, err = compare(demo, "--json", "--n-boot", "50", versions=("v2", "v2"))
    assert code == 0, err
    assert "warning: v2 and v2 are the same content" in err
    report = json.loads(out)
    assert (report["v1"], report["v2"]) == ("v2 (v1)", "v2 (v2)")  # labels stay distinct
    # no discordant row: no test can reach alpha, so inconclusive (with Newcombe's interval)
    assert {s["verdict"] for s in report["slices"]} <= {"inconclusive", "too_small"}
    assert all(s["delta"] == 0 and s["discordant"] == 0 for s in report["slices"])


def test_colliding_labels_are_told_apart(demo: DemoArtifacts, in_tmp: Path) -> None:
    for folder, model in (("a", demo.v1), ("b", demo.v2)):
        Path(folder).mkdir()
        shutil.copy(model, Path(folder) / "model.skops")
    code, out, err = compare(
        demo, "--json", "--n-boot", "50", versions=("a/model.skops", "b/model.skops")
    )
    assert code == 1 and "warning" not in err
    report = json.loads(out)
    assert (report["v1"], report["v2"]) == ("a/model.skops", "b/model.skops")


def test_the_suite_is_given_the_same_way_to_both_commands(
    demo: DemoArtifacts, in_tmp: Path
) -> None:
    by_option = invoke("slices", "test", "--suite", SUITE, "-m", "v2", "-c", demo.config, "--json")
    by_argument = invoke("slices", "test", SUITE, "-m", "v2", "-c", demo.config, "--json")
    assert by_option == by_argument and by_option[0] == 1
    args = ("-c", demo.config, "--json", "--n-boot", "20")
    assert invoke("slices", "compare", "v1", "v2", SUITE, *args) == compare(demo, *args[2:])
    code, _, err = invoke("slices", "compare", "v1", "v2", *args)
    assert (code, err.strip()) == (
        2,
        "chaosml: error: no slice suite: give it as an argument or --suite, e.g. "
        "slices/credit.yaml",
    )
    code, _, err = invoke("slices", "compare", "v1", "v2", "other.yaml", "--suite", SUITE, *args)
    assert code == 2 and "two suites given" in err


def test_slices_test_outputs(demo: DemoArtifacts, in_tmp: Path) -> None:
    code, out, _ = invoke(
        "slices",
        "test",
        SUITE,
        "--model",
        "v2",
        "--config",
        demo.config,
        "--json",
        "--junit",
        "t.xml",
        "--html",
        "t.html",
    )
    assert code == 1  # the demo suite's recall floor on `young` fails
    report = json.loads(out)
    failed = {(t["slice"], t["metric"]) for t in report["tests"] if t["status"] == "failed"}
    assert ("young", "recall") in failed
    cases = ET.parse("t.xml").getroot().findall(".//testcase")
    assert len(cases) == len(report["tests"])
    page = Path("t.html").read_text(encoding="utf-8")
    assert "young" in page
    failures = sum(t["status"] == "failed" for t in report["tests"])
    assert f"<h2 class='failed'>v2: failed ({len(report['tests'])} tests: {failures} failed" in page


def test_slices_test_passes_with_loose_thresholds(demo: DemoArtifacts, in_tmp: Path) -> None:
    Path("loose.yaml").write_text(
        "label: approved\nslices:\n  - {by: [region]}\n"
        "tests:\n  - {slice: 'region=*', metric: accuracy, min: 0.5}\n"
        "  - {by: [sex], metric: selection_rate, min_ratio: 0.8}\n",
        encoding="utf-8",
    )
    code, out, err = invoke(
        "slices", "test", "loose.yaml", "--model", "v1", "--config", demo.config
    )
    assert code == 0, out + err
    assert "5 passed, 0 failed" in out


def test_predictions_files_and_csv_give_the_same_comparison(
    demo: DemoArtifacts, in_tmp: Path
) -> None:
    """A user's CSV and precomputed predictions: the same numbers as artifacts on Parquet."""
    data = pd.read_parquet(demo.data)
    data.to_csv("eval.csv", index=False)
    for name, path in (("v1", demo.v1), ("v2", demo.v2)):
        model = load_model(path)
        features = data[list(model.feature_names_in_)]
        pd.DataFrame(
            {"prediction": model.predict(features), "score": model.predict_proba(features)[:, 1]}
        ).to_parquet(f"{name}.parquet")
    args = ("--suite", SUITE, "--json", "--n-boot", "100")
    _, from_files, _ = invoke(
        "slices", "compare", "v1.parquet", "v2.parquet", "--data", "eval.csv", *args
    )
    _, from_models, _ = invoke("slices", "compare", "v1", "v2", "--config", demo.config, *args)
    files, models = json.loads(from_files), json.loads(from_models)
    assert files["slices"] == models["slices"]
    assert files["overall"] == models["overall"]


def test_predictions_are_cached_per_version_and_data(
    demo: DemoArtifacts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "project"
    shutil.copytree(demo.folder, folder)
    monkeypatch.chdir(folder)
    args = ("slices", "compare", "v1", "v2", "--suite", SUITE, "--json", "--n-boot", "50")
    code, first, _ = invoke(*args)
    assert len(list((folder / ".chaosml" / "cache" / "predictions").glob("*.parquet"))) == 2

    def refuse(path: Path) -> None:
        raise AssertionError("the model was loaded although its predictions are cached")

    monkeypatch.setattr("chaosml.versions.load_model", refuse)
    code_again, second, err = invoke(*args)
    assert (code_again, second) == (code, first), err


def test_help_explains_every_command() -> None:
    for command in (
        [],
        ["slices"],
        ["slices", "test"],
        ["slices", "compare"],
        ["demo"],
        ["demo", "train"],
    ):
        for flag in ("--help", "-h"):
            result = runner.invoke(app, [*command, flag])
            assert result.exit_code == 0
            assert "Usage" in result.stdout
            assert "<bool>" not in result.stdout  # an on/off flag takes no value
    top = runner.invoke(app, ["--help"]).stdout
    assert "3 a target or component unreachable" in " ".join(top.split())
    compare = runner.invoke(app, ["slices", "compare", "--help"], env={"COLUMNS": "100"}).stdout
    words = " ".join(compare.replace("│", " ").split())
    assert "need chaosml[dask] / chaosml[spark]" in words  # extras' names survive rich markup
    version = runner.invoke(app, ["--version"])
    assert (version.exit_code, version.stdout.strip()) == (0, f"chaosml {chaosml.__version__}")


@pytest.fixture
def broken_inputs(demo: DemoArtifacts, in_tmp: Path) -> Path:
    Path("broken.joblib").write_text("not a model", encoding="utf-8")
    Path("bad.parquet").write_text("garbage", encoding="utf-8")
    rows = len(pd.read_parquet(demo.data))
    pd.DataFrame({"prediction": [1, 0] * 10}).to_csv("short.csv", index=False)
    pd.DataFrame({"prediction": [1] * (rows + 3)}).to_parquet("long.parquet")
    pd.DataFrame({"pred": [1] * rows}).to_csv("nocol.csv", index=False)
    pd.DataFrame({"prediction": [1] * rows, "score": [1.5] * rows}).to_csv("score.csv", index=False)
    Path("cfg.yaml").write_text("versions: {v1: x.skops}\nlabels: y\n", encoding="utf-8")
    return in_tmp


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model", "broken.joblib"],
            "broken.joblib: not a model chaosml can load (KeyError: 110); expected a "
            "scikit-learn-style model saved with skops (.skops) or joblib (.joblib, .pkl), or a "
            "predictions file (.parquet, .csv with a `prediction` column)",
        ),
        (
            ["--model", "short.csv"],
            "short.csv: 20 prediction rows for 20000 data rows (they must be row-aligned)",
        ),
        (
            ["--model", "long.parquet"],
            "long.parquet: 20003 prediction rows for 20000 data rows (they must be row-aligned)",
        ),
        (
            ["--model", "nocol.csv"],
            "nocol.csv: no 'prediction' column (a predictions file needs "
            "`prediction` and optionally `score`)",
        ),
        (
            ["--model", "score.csv"],
            "score.csv: score: row 0: expected a probability in [0, 1], got 1.5",
        ),
        (["--model", "v2", "--data", "missing.parquet"], "missing.parquet: file not found"),
        (
            ["--model", "v2", "--data", "bad.parquet"],
            "bad.parquet: cannot read as parquet: Parquet file size is 7 bytes, smaller than the "
            "minimum file footer (8 bytes)",
        ),
        (
            ["--model", "v9"],
            "v9: not a version name nor an existing file: the config names v1, v2; a version is "
            "a config name, a model artifact (.skops, .joblib, .pkl), a predictions file "
            "(.parquet, .csv) or the URL of a served model (http://host:port/predict)",
        ),
        (
            ["--model", "v2", "--junit", "no/such/dir/t.xml"],
            "no/such/dir/t.xml: cannot write: folder no/such/dir does not exist",
        ),
    ],
)
def test_bad_arguments(
    args: list[str], message: str, demo: DemoArtifacts, broken_inputs: Path
) -> None:
    code, out, err = invoke("slices", "test", SUITE, "--config", demo.config, *args)
    assert (code, out, err.strip()) == (2, "", f"chaosml: error: {message}")


def test_bad_config(broken_inputs: Path) -> None:
    code, _, err = invoke("slices", "test", SUITE, "--model", "v1", "--config", "cfg.yaml")
    assert (code, err.strip()) == (2, "chaosml: error: cfg.yaml:2: labels: unknown key")


def test_missing_suite_and_no_data(demo: DemoArtifacts, in_tmp: Path) -> None:
    code, _, err = invoke("slices", "test", "nope.yaml", "--model", demo.v1)
    assert (code, err.strip()) == (2, "chaosml: error: nope.yaml: file not found")
    code, _, err = invoke("slices", "test", SUITE, "--model", demo.v1)
    assert (code, err.strip()) == (
        2,
        "chaosml: error: no data: pass --data FILE or set `data:` in chaosml.yaml",
    )


def test_an_unconfigured_version_name_says_where_versions_come_from(in_tmp: Path) -> None:
    code, _, err = invoke("slices", "test", SUITE, "--model", "v2", "--data", "x.parquet")
    assert code == 2
    assert "no versions are configured (pass --config FILE" in err
    assert "chaosml demo train" in err


@pytest.mark.parametrize("width", [50, 80, 120])
def test_narrow_terminals_drop_columns_not_digits(demo: DemoArtifacts, width: int) -> None:
    """Every number shown is whole at any width: lower-priority columns go first."""
    from chaosml.report.console import render_comparison, render_test_report

    config = load_config(demo.config)
    suite = load_suite(SUITE)
    v1, v2 = resolve_version("v1", config), resolve_version("v2", config)
    comparison = compare_versions(suite, v1, v2, demo.data, config=config, n_boot=50)
    report = run_slice_tests(suite, v2, demo.data, config=config)
    console = Console(file=io.StringIO(), width=width)
    render_comparison(comparison, console)
    render_test_report(report, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "…" not in text
    for row in [comparison.overall, *comparison.slices]:
        assert row.delta is not None and f"{row.delta:+.4f}" in text
    assert f"{report.table['accuracy'].iloc[0]:.4f}" in text  # the first metric is kept
    if width < 100:
        assert "not shown, the terminal is too narrow" in text


def test_compare_under_the_bundled_scenarios(demo: DemoArtifacts, in_tmp: Path) -> None:
    scenarios = Path(__file__).parents[1] / "scenarios"
    code, out, err = compare(
        demo, "--scenarios", scenarios, "--json", "--n-boot", "50", "--junit", "f.xml"
    )
    assert code == 1, err
    report = json.loads(out)
    assert report["schema"] == "chaosml.slices.fragility/1"
    assert report["clean"]["schema"] == "chaosml.slices.compare/2"
    skipped = {s["name"] for s in report["scenarios"] if not s["applicable"]}
    assert skipped == {"error-burst", "latency"}  # transport faults: nothing to do offline
    fragile = {(c["slice"], c["scenario"]) for c in report["fragile"]}
    assert ("region=APAC", "income-units") in fragile  # v2 leans on income, and APAC is new
    judged = {c["scenario"] for c in report["cells"] if c["verdict"] is not None}
    assert judged == {"age-drift", "income-nulls", "income-units"}  # the input faults
    suites = ET.parse("f.xml").getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == [
        "chaosml slices compare v1 v2",
        "chaosml slices fragility v1 v2",
    ]
    code, table, _ = compare(demo, "--scenarios", scenarios, "--n-boot", "50", "--html", "f.html")
    assert code == 1 and "v2 more fragile in" in table and "income-units" in table
    page = Path("f.html").read_text(encoding="utf-8")
    assert "Under the scenarios' faults" in page and page.count("<svg") == 4  # forest + 3 maps
    assert "region=APAC under income-units" in page


def test_slices_test_under_the_bundled_scenarios(demo: DemoArtifacts, in_tmp: Path) -> None:
    scenarios = Path(__file__).parents[1] / "scenarios"
    args = ("slices", "test", SUITE, "-m", "v2", "-c", demo.config, "--scenarios", scenarios)
    code, out, err = invoke(*args, "--json", "--html", "t.html")
    assert code == 1, err  # the clean recall floor on `young` still fails
    report = json.loads(out)
    listed = {s["name"]: s for s in report["scenarios"]}
    assert not listed["latency"]["applicable"] and "slices" not in listed["latency"]
    young = next(s for s in listed["income-nulls"]["slices"] if s["name"] == "young")
    assert young["change"]["recall"] < 0  # fewer incomes: fewer approvals found
    (under,) = [t for t in report["tests"] if t["test"].endswith("under income-nulls")]
    assert under["status"] == "passed" and under["slice"] == "young"
    assert "Under the scenarios' faults" in Path("t.html").read_text(encoding="utf-8")
    code, table, _ = invoke(*args)
    assert "under each scenario's faults" in table and "income-units" in table
    _, plain, _ = invoke("slices", "test", SUITE, "-m", "v2", "-c", demo.config, "--json")
    (skipped,) = [t for t in json.loads(plain)["tests"] if "under" in t["test"]]
    assert skipped["status"] == "skipped" and "needs --scenarios" in skipped["detail"]


@pytest.mark.parametrize("group", [[], ["slices"], ["alerts"]])
def test_a_group_without_a_command_prints_its_help_and_exits_0(group: list[str]) -> None:
    result = runner.invoke(app, group)
    assert result.exit_code == 0
    assert "Usage" in result.stdout and "Commands" in result.stdout


@pytest.mark.parametrize(
    "command", [["alerts", "webhook"], ["demo", "serve", "--out", "never-written"]]
)
@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_ports_out_of_range_are_bad_input(command: list[str], port: str, in_tmp: Path) -> None:
    result = runner.invoke(app, [*command, "--port", port])
    assert result.exit_code == 2
    assert "Invalid value for '--port'" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not Path("never-written").exists()  # refused before any work


def test_alerts_webhook_on_port_0_announces_the_port_it_listens_on() -> None:
    command = [sys.executable, "-m", "chaosml", "alerts", "webhook", "--port", "0"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            port = int(line.rsplit(":", 1)[1].split("/")[0])
            assert line.startswith("receiving Alertmanager webhooks on http://127.0.0.1:")
            assert port != 0, line
            with socket.create_connection(("127.0.0.1", port)):
                pass  # it listens there
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)


@pytest.mark.parametrize(
    ("command", "args", "extra", "module"),
    [
        ("run", ["s.yaml", "--target", "t.yaml"], "gameday", "locust"),
        ("gameday", ["s.yaml", "--target", "t.yaml"], "gameday", "locust"),
        ("validate", ["s.yaml"], "gameday", "locust"),
        ("coverage", ["runs/x"], "gameday", "locust"),
        ("slices compare", ["a.csv", "b.csv", "s.yaml"], "slices", "sklearn"),
        ("slices test", ["s.yaml", "--model", "a.csv", "--html", "r.html"], "report", "matplotlib"),
        ("demo train", [], "demo", "fastapi"),
        ("demo serve", [], "demo", "uvicorn"),
    ],
)
def test_a_command_whose_extra_is_missing_names_it_in_one_line(
    command: str,
    args: list[str],
    extra: str,
    module: str,
    monkeypatch: pytest.MonkeyPatch,
    in_tmp: Path,
) -> None:
    """As if the extra were not installed (a module set to None in sys.modules cannot be found
    nor imported): one line naming the extra, exit 2, and `--help` still works."""
    monkeypatch.setitem(sys.modules, module, None)
    result = runner.invoke(app, [*command.split(), *args])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"chaosml {command}: needs chaosml[{extra}]: pip install 'chaosml[{extra}]' "
        f"({module} not found)\n"
    )
    assert runner.invoke(app, [*command.split(), "--help"]).exit_code == 0


def test_demo_serve_on_port_0_announces_the_port_it_listens_on(demo: DemoArtifacts) -> None:
    command = [sys.executable, "-m", "chaosml", "demo", "serve", "--out", str(demo.folder)]
    with subprocess.Popen([*command, "--port", "0"], stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            assert line.startswith("serving demo model v2 on http://127.0.0.1:"), line
            url = line.split(" on ", 1)[1].strip().removesuffix("/predict")
            assert not url.endswith(":0"), line
            with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
                assert response.status == 200
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)
