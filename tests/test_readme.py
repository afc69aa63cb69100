"""Every command and snippet of the README runs as written, in order, after the Quickstart.

The README's ``sh`` and ``python`` blocks become one bash script (python blocks as heredocs),
run in a fresh folder that holds the repository's ``scenarios/`` and ``slices/``; so the
Quickstart's ``chaosml demo`` runs first and later blocks use what it wrote. The Quickstart's
``pip install -e '.[dev]'`` is what CI ran just before the tests, and the test command itself
(``.ci/check``) is not run again from inside the tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from chaosml.demo.harness import ALERTMANAGER, PROMETHEUS
from tests.live_servers import require_binaries

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
INSTALL = "pip install -e '.[dev]' && "
BLOCK = re.compile(r"(<!-- test-command -->\n)?```(sh|python)\n(.*?)```", re.S)


def script() -> str:
    parts = ["set -euo pipefail"]
    for marker, language, body in BLOCK.findall(README.read_text(encoding="utf-8")):
        if marker:
            assert body.strip() == INSTALL + ".ci/check", "the test command changed"
            continue
        if language == "python":
            parts.append(f"python - <<'PY'\n{body}PY")
        else:
            parts.append(body.removeprefix(INSTALL))
    return "\n".join(parts)


def test_the_quickstart_installs_what_ci_installs() -> None:
    quickstart = BLOCK.findall(README.read_text(encoding="utf-8"))[0][2]
    assert quickstart.strip() == INSTALL + "chaosml demo"
    assert "README.md" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_every_readme_block_runs_in_order(tmp_path: Path) -> None:
    require_binaries(PROMETHEUS, ALERTMANAGER)
    for name in ("scenarios", "slices"):
        (tmp_path / name).symlink_to(ROOT / name)
    done = subprocess.run(
        ["bash", "-c", script()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]

    # the demo: every bundled failure mode noticed, the blind spot shown, the regression found
    assert "9 of 9 scenarios passed" in done.stdout, done.stdout[-4000:]
    assert "Blind spots (it broke something and no alert fired): null-answers" in done.stdout
    assert "\nregressed: " in done.stdout
    assert "region=APAC" in done.stdout.split("\nregressed: ")[1].splitlines()[0]
    assert "v2 more fragile in" in done.stdout  # under the scenarios' input faults
    assert "same answer on every engine" in done.stdout  # local, dask and spark: one JSON

    # each bundled scenario's time to detect, as Prometheus (activeAt + for) and Alertmanager
    # (startsAt: when Prometheus fired it) each say, and the webhook's delivery after them
    (journal,) = (tmp_path / ".chaosml" / "demo" / "runs").glob("*/journal.json")
    checked = 0
    for record in json.loads(journal.read_text())["scenarios"]:
        for expectation in record["expectations"]:
            if not expectation["fires"]:
                continue
            by = {k: v["detected_after_s"] for k, v in expectation["by_source"].items()}
            assert abs(by["prometheus"] - by["alertmanager"]) <= 1.0, (record["name"], by)
            assert 0 <= by["webhook"] - min(by.values()) <= 3.0, (record["name"], by)
            checked += 1
    assert checked == 8

    # the game day by hand: its JSON, JUnit and HTML reports
    bias = json.loads((tmp_path / "bias.json").read_text())
    assert bias["schema"] == "chaosml.gameday/2"
    (scenario,) = bias["scenarios"]
    assert scenario["verdict"] == "passed" and scenario["expectations"][0]["detected_after_s"] > 0
    junit = ET.parse(tmp_path / "gameday.xml").getroot()
    assert [s.get("name") for s in junit] == ["income-nulls", "null-answers"]
    assert "<svg" in (tmp_path / "gameday.html").read_text()
    compare = json.loads((tmp_path / "compare.json").read_text())
    assert compare["schema"] == "chaosml.slices.compare/2"
