"""Packaging by what people install: the bare core embeds the fault point and the monitors, and
what a service embeds imports none of the extras' packages.

``test_the_bare_core_embeds_the_fault_point`` installs this checkout without extras into a fresh
venv (``pip install .``, dependencies from PyPI: about 35 s here, with pip's cache warm or cold).
It is in the full tier (``slow``): ``.ci/check`` and CI run it, as does naming this file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICE = Path(__file__).with_name("embedded_service.py")
# What an embedding service must not be made to install or import: load generation, plotting,
# web frameworks, ML libraries, distributed engines, the real-Toxiproxy client.
HEAVY = (
    "locust",
    "gevent",
    "matplotlib",
    "fastapi",
    "uvicorn",
    "starlette",
    "sklearn",
    "fairlearn",
    "skops",
    "joblib",
    "scipy",
    "toxiproxy",
    "requests",
    "dask",
    "distributed",
    "pyspark",
)


def imported_modules(code: str) -> set[str]:
    """The modules a fresh interpreter has imported after running ``code``."""
    script = f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def imported_by(code: str) -> set[str]:
    """Top-level packages a fresh interpreter has imported after running ``code``."""
    return {name.split(".")[0] for name in imported_modules(code)}


def test_the_embed_path_imports_no_extra() -> None:
    """In this (dev) environment, where every extra is installed: a service importing the fault
    point and the monitors pays for none of them."""
    imported = imported_by("import chaosml, chaosml.faultpoint, chaosml.monitors")
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))
    assert {"typer", "rich", "click"}.isdisjoint(imported)  # the CLI's, not a service's


def test_the_cli_starts_on_the_core_alone() -> None:
    """``chaosml --help`` (any command's help) imports only the CLI's own packages."""
    imported = imported_by(
        "import sys; sys.argv = ['chaosml', '--help']\n"
        "from chaosml.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))
    assert "pandas" not in imported and "numpy" not in imported


@pytest.mark.slow
def test_the_bare_core_embeds_the_fault_point(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)  # this pip installs into it: no ensurepip
    python = str(env_dir / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    def run(*argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, capture_output=True, text=True, env={**env, **extra}, cwd=tmp_path, timeout=900
        )

    # A copy of the checkout, so the build does not write into the shared working tree.
    source = tmp_path / "src"
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, archive.decode().split("\0")):
        path = ROOT / name
        if path.is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes(path.read_bytes())
    installed = run(sys.executable, "-m", "pip", "--python", python, "install", "-q", str(source))
    assert installed.returncode == 0, installed.stderr

    probe = f"import importlib.util as u; print([m for m in {HEAVY!r} if u.find_spec(m)])"
    assert run(python, "-c", probe).stdout.strip() == "[]"

    service = run(python, str(SERVICE), CHAOSML_FAULT_POINT="127.0.0.1:0")
    assert (service.returncode, service.stdout.strip()) == (0, "embedded fault point: ok"), (
        service.stderr
    )

    chaosml = str(env_dir / "bin" / "chaosml")
    assert run(chaosml).returncode == 0  # no command: the help, exit 0
    needs = run(chaosml, "run", "s.yaml", "--target", "t.yaml")
    assert (needs.returncode, needs.stderr) == (
        2,
        "chaosml run: needs chaosml[gameday]: pip install 'chaosml[gameday]' (locust not found)\n",
    )
    needs = run(chaosml, "slices", "compare", "a.csv", "b.csv", "s.yaml")
    assert needs.returncode == 2
    assert needs.stderr.startswith("chaosml slices compare: needs chaosml[slices]: pip install")


def test_each_half_of_the_reports_imports_only_its_half() -> None:
    """The game-day report and the slice reports share their HTML and JUnit building blocks from
    a module of their own, so printing one half's report does not import the other half."""
    gameday = imported_modules("import chaosml.report.gameday")
    assert not any(m.startswith("chaosml.slices") for m in gameday)
    slices = imported_modules(
        "import chaosml.report.console, chaosml.report.html, chaosml.report.junit"
    )
    assert not any(m.startswith(("chaosml.gameday", "chaosml.load")) for m in slices)
    assert "locust" not in {m.split(".")[0] for m in slices}
