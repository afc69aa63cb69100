"""Every command and snippet of the README runs as written, section by section, after the Quickstart.

The README's ``sh`` and ``python`` blocks are grouped by the section (``##`` or ``###`` heading)
they sit in; each section's blocks become one bash script (python blocks as heredocs), run in
order in a fresh folder that holds the repository's ``scenarios/`` and ``slices/`` and what the
Quickstart's ``chaosml demo`` trains first (``.chaosml/demo``: the models, data and config). So a
block may use what earlier blocks of its own section wrote, and sections run independently, in
parallel under pytest-xdist. The Quickstart's ``pip install -e '.[dev]'`` is what CI ran just
before the tests, and the test command itself (``.ci/check``) is not run again from inside the
tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chaosml.demo.harness import ALERTMANAGER, PROMETHEUS
from chaosml.demo.train import DemoArtifacts
from tests.live_servers import require_binaries

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
INSTALL = "pip install -e '.[dev]' && "
BLOCK = re.compile(r"(<!-- test-command -->\n)?```(sh|python)\n(.*?)```", re.S)
HEADING = re.compile(r"^(##|###) (.+)$", re.M)


@dataclass
class Section:
    heading: str
    blocks: list[str] = field(default_factory=list)

    def script(self) -> str:
        # background servers a failed block left running are stopped with the script
        return "\n".join(
            [
                "set -euo pipefail",
                "trap 'status=$?; kill $(jobs -p) 2>/dev/null || true; exit $status' EXIT",
                *self.blocks,
            ]
        )


def sections() -> list[Section]:
    """The README's sections that hold runnable blocks, in order."""
    text = README.read_text(encoding="utf-8")
    headings = [(m.start(), m.group(2).strip()) for m in HEADING.finditer(text)]
    found: dict[str, Section] = {}
    for match in BLOCK.finditer(text):
        marker, language, body = match.groups()
        if marker:
            assert body.strip() == INSTALL + ".ci/check", "the test command changed"
            continue
        heading = max((h for h in headings if h[0] < match.start()), default=(0, "(top)"))[1]
        section = found.setdefault(heading, Section(heading))
        if language == "python":
            section.blocks.append(f"python - <<'PY'\n{body}PY")
        else:
            section.blocks.append(body.removeprefix(INSTALL))
    return list(found.values())


def slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")


def check_quickstart(folder: Path, stdout: str) -> None:
    # the demo: every bundled failure mode noticed, the blind spot shown, the regression found
    assert "9 of 9 scenarios passed" in stdout, stdout[-4000:]
    assert "Blind spots (the faults acted and no alert fired): null-answers" in stdout
    assert "\nregressed: " in stdout
    assert "region=APAC" in stdout.split("\nregressed: ")[1].splitlines()[0]
    assert "v2 more fragile in" in stdout  # under the scenarios' input faults

    # each bundled scenario's time to detect, as Prometheus (activeAt + for) and Alertmanager
    # (startsAt: when Prometheus fired it) each say, and the webhook's delivery after them
    (journal,) = (folder / ".chaosml" / "demo" / "runs").glob("*/journal.json")
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


def check_game_days(folder: Path, stdout: str) -> None:
    # the game day by hand: its JSON, JUnit and HTML reports
    bias = json.loads((folder / "bias.json").read_text())
    assert bias["schema"] == "chaosml.gameday/2"
    (scenario,) = bias["scenarios"]
    assert scenario["verdict"] == "passed" and scenario["expectations"][0]["detected_after_s"] > 0
    junit = ET.parse(folder / "gameday.xml").getroot()
    assert [s.get("name") for s in junit] == ["income-nulls", "null-answers"]
    assert "<svg" in (folder / "gameday.html").read_text()


def check_slice_tests(folder: Path, stdout: str) -> None:
    compare = json.loads((folder / "compare.json").read_text())
    assert compare["schema"] == "chaosml.slices.compare/2"
    assert any("APAC" in name for name in compare["regressed"]), compare["regressed"]


def check_under_scenarios(folder: Path, stdout: str) -> None:
    fragile = json.loads((folder / "fragility.json").read_text())
    assert fragile["schema"].startswith("chaosml.slices.fragility/"), fragile["schema"]


def check_at_scale(folder: Path, stdout: str) -> None:
    assert "same answer on every engine" in stdout  # local, dask and spark: one JSON
    # one family with the fragility cells: region=APAC (p 0.005) is not flagged under it
    local = json.loads((folder / "local.json").read_text())
    assert local["clean"]["regressed"] == ["employment=unemployed"], local["clean"]["regressed"]
    # the Dask snippet: files and a Dask frame find the same regressions
    assert re.search(r"^True \[", stdout, re.M), stdout[-2000:]


def check_sweep(folder: Path, stdout: str) -> None:
    sweep = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))
    assert sweep["schema"] == "chaosml.sweep/1"
    levels = sweep["levels"]
    assert [level["value"] for level in levels] == [0.01, 0.07746, 0.6]
    (alert,) = sweep["alerts"].values()
    low, high = alert["threshold_between"]
    assert high == 0.6 and low is not None  # 60% nulls detected, 1% not
    worst = [max(level["harm"].values()) for level in levels]  # harm grows with the nulls
    assert worst == sorted(worst) and worst[-1] > worst[0]
    journals = list((folder / "sweep" / "runs").glob("*/journal.json"))
    assert len(journals) == 3  # the second sweep ran nothing


def check_shadow(folder: Path, stdout: str) -> None:
    shadow = json.loads((folder / "shadow.json").read_text(encoding="utf-8"))
    assert shadow["counts"]["recorded_rows"] == 2000, shadow["counts"]
    # every answer's labels came back through the proxy's feedback endpoint
    assert shadow["counts"]["feedback"]["labels"] == 2000 == shadow["labelled_rows"]


def check_canary(folder: Path, stdout: str) -> None:
    canary = json.loads((folder / "canary.json").read_text(encoding="utf-8"))
    assert canary["verdict"] == "rolled_back", canary["verdict"]
    # a slice worse on labelled rows, or slower answers (v2's p50 is about 1.5x v1's here)
    assert canary["rollback"]["figure"] in ("error", "slow_requests"), canary["rollback"]
    assert "exit 1: the candidate was rolled back" in stdout
    # chaosml demo release: the shadow's report, then the canary's verdict
    assert "chaosml shadow: v2 answers v1's traffic in its shadow" in stdout
    assert "ROLLED BACK at step" in stdout or "PROMOTED" in stdout, stdout[-2000:]


def check_served(folder: Path, stdout: str) -> None:
    served = json.loads((folder / "served.json").read_text(encoding="utf-8"))
    assert served["equivalence"]["equivalent"] is True
    assert "exit 1: it does not serve v1" in stdout


# What each section's run must show beyond exit 0; every heading here must be in the README.
CHECKS: dict[str, Callable[[Path, str], None]] = {
    "Quickstart": check_quickstart,
    "Game days": check_game_days,
    "Slice tests": check_slice_tests,
    "Slices under failure scenarios": check_under_scenarios,
    "At scale: Dask and Spark": check_at_scale,
    "A served model against its artifact": check_served,
    "Detection thresholds: how small a fault does an alert catch?": check_sweep,
    "Shadow release": check_shadow,
    "Canary release": check_canary,
}
# Started first with --full, so that no worker is left with one of them at the end.
LONGEST = {"Quickstart", "Game days", "Canary release", "At scale: Dask and Spark"}


def test_the_quickstart_installs_what_ci_installs() -> None:
    quickstart = BLOCK.findall(README.read_text(encoding="utf-8"))[0][2]
    assert quickstart.strip() == INSTALL + "chaosml demo"
    assert "README.md" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_every_checked_section_is_in_the_readme() -> None:
    headings = [s.heading for s in sections()]
    assert set(CHECKS) <= set(headings), set(CHECKS) - set(headings)
    assert headings[0] == "Quickstart"


@pytest.mark.slow
@pytest.mark.parametrize(
    "section",
    [
        pytest.param(s, id=slug(s.heading), marks=[pytest.mark.longest] * (s.heading in LONGEST))
        for s in sections()
    ],
)
def test_every_readme_block_runs(section: Section, demo: DemoArtifacts, tmp_path: Path) -> None:
    require_binaries(PROMETHEUS, ALERTMANAGER)
    for name in ("scenarios", "slices"):
        (tmp_path / name).symlink_to(ROOT / name)
    trained = tmp_path / ".chaosml" / "demo"  # what the Quickstart's `chaosml demo` trains first
    trained.mkdir(parents=True)
    for path in demo.folder.iterdir():
        if path.is_file():
            shutil.copy2(path, trained / path.name)
    done = subprocess.run(
        ["bash", "-c", section.script()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    if check := CHECKS.get(section.heading):
        check(tmp_path, done.stdout)
