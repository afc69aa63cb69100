"""The bad-input corpus: every broken suite gives exactly one line, exit code 2, no traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chaosml.cli import app
from chaosml.demo.train import DemoArtifacts

BAD = Path(__file__).parent / "fixtures" / "bad_suites"
runner = CliRunner()


def expected(path: Path, demo: DemoArtifacts) -> str:
    header = path.read_text(encoding="utf-8").splitlines()[0]
    message = re.sub(r"^# expect: ", "", header)
    return "chaosml: error: " + message.format(path=path, data=demo.data)


@pytest.mark.parametrize("path", sorted(BAD.glob("*.yaml")), ids=lambda p: p.stem)
@pytest.mark.parametrize("command", ["test", "compare"])
def test_bad_suite(path: Path, command: str, demo: DemoArtifacts, in_tmp: Path) -> None:
    args = ["--config", str(demo.config)]
    if command == "test":
        argv = ["slices", "test", str(path), "--model", "v2", *args]
    else:
        argv = ["slices", "compare", "v1", "v2", "--suite", str(path), *args]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == expected(path, demo)
    assert result.stdout == ""
    assert not Path("/tmp/chaosml-pwned").exists()
