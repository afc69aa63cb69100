"""Project config: chaosml.yaml or [tool.chaosml] in pyproject.toml; paths relative to the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaosml.config import load_config
from chaosml.errors import ConfigError, SpecError
from chaosml.slices.suite import load_suite
from chaosml.versions import ArtifactVersion, PredictionsFile, resolve_version


def test_yaml_config_in_the_working_folder(in_tmp: Path) -> None:
    Path("chaosml.yaml").write_text(
        "versions:\n  v1: models/v1.skops\n  v2: {predictions: preds/v2.csv}\n"
        "data: data/eval.parquet\nlabel: approved\n",
        encoding="utf-8",
    )
    config = load_config()
    assert config.label == "approved"
    assert config.resolve(config.data or Path()) == in_tmp / "data/eval.parquet"
    v1, v2 = resolve_version("v1", config), resolve_version("v2", config)
    assert isinstance(v1, ArtifactVersion) and v1.path == in_tmp / "models/v1.skops"
    assert isinstance(v2, PredictionsFile) and v2.path == in_tmp / "preds/v2.csv"


def test_pyproject_section(in_tmp: Path) -> None:
    Path("pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.chaosml]\nlabel = "y"\ndata = "eval.csv"\n'
        '[tool.chaosml.versions]\nbase = "base.joblib"\n',
        encoding="utf-8",
    )
    config = load_config()
    assert (config.label, config.data) == ("y", Path("eval.csv"))
    assert config.version("base") is not None


def test_pyproject_errors_name_the_section(in_tmp: Path) -> None:
    Path("pyproject.toml").write_text('[tool.chaosml]\nlabell = "y"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"pyproject.toml: \[tool.chaosml\] labell: unknown key"):
        load_config()


def test_no_config_is_an_empty_config(in_tmp: Path) -> None:
    config = load_config()
    assert (config.versions, config.data, config.label) == ({}, None, None)


def test_every_problem_in_a_suite_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(
        "label: y\nslices:\n  - {name: a, where: 'x <'}\n  - {by: [g], colour: red}\n"
        "metrics: [nope]\n",
        encoding="utf-8",
    )
    with pytest.raises(SpecError) as info:
        load_suite(path)
    assert info.value.problems == [
        f"{path}:3: slices[0].where: predicate does not parse: 'x <'",
        f"{path}:4: slices[1].colour: unknown key",
        f"{path}:5: metrics: unknown metric 'nope' (expected one of: accuracy, precision, recall, "
        "f1, false_positive_rate, false_negative_rate, true_negative_rate, balanced_accuracy, "
        "selection_rate, roc_auc)",
    ]
