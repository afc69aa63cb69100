"""The layers of DESIGN.md, checked on every import statement of the package (lazy ones inside
functions included): the two halves never import each other, the foundation imports neither,
and nothing imports the CLI or the demo but the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "chaosml"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every chaosml module ``path`` imports, anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "chaosml" or name.startswith("chaosml.")}


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def offenders(source: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if under(module, source)
        for target in targets
        if any(under(target, f) for f in forbidden)
    )


def test_the_graph_was_read() -> None:
    assert len(GRAPH) > 50
    assert "chaosml.scenario" in GRAPH["chaosml.gameday.runner"]
    assert "chaosml.scenario" in GRAPH["chaosml.slices.offline"]


@pytest.mark.parametrize(
    ("source", "forbidden"),
    [
        ("chaosml.slices", ("chaosml.gameday", "chaosml.demo", "chaosml.cli")),
        ("chaosml.gameday", ("chaosml.slices", "chaosml.demo", "chaosml.cli")),
        (
            "chaosml.faults",
            ("chaosml.gameday", "chaosml.slices", "chaosml.proxy", "chaosml.report"),
        ),
        ("chaosml.scenario", ("chaosml.gameday", "chaosml.slices", "chaosml.report")),
        ("chaosml.proxy", ("chaosml.gameday", "chaosml.slices", "chaosml.report", "chaosml.load")),
        ("chaosml.alerts", ("chaosml.gameday", "chaosml.slices", "chaosml.report")),
        ("chaosml.load", ("chaosml.gameday", "chaosml.slices", "chaosml.report")),
        (
            "chaosml.faultpoint",
            ("chaosml.gameday", "chaosml.slices", "chaosml.load", "chaosml.report"),
        ),
        (
            "chaosml.monitors",
            ("chaosml.gameday", "chaosml.slices", "chaosml.load", "chaosml.report"),
        ),
        ("chaosml.report", ("chaosml.demo", "chaosml.cli")),
        ("chaosml.sweep", ("chaosml.demo", "chaosml.cli")),
        ("chaosml.endpoint", ("chaosml.gameday", "chaosml.slices", "chaosml.report")),
        ("chaosml.report.gameday", ("chaosml.slices",)),
        ("chaosml.report._html", ("chaosml.slices", "chaosml.gameday")),
        ("chaosml.report._junit", ("chaosml.slices", "chaosml.gameday")),
    ],
)
def test_imports_point_downwards(source: str, forbidden: tuple[str, ...]) -> None:
    assert offenders(source, forbidden) == []


@pytest.mark.parametrize(
    "foundation",
    [
        "chaosml.errors",
        "chaosml.predicate",
        "chaosml.codecs",
        "chaosml.config",
        "chaosml.data",
        "chaosml.durations",
        "chaosml.extras",
        "chaosml._wait",
        "chaosml.spec",
        "chaosml._types",
        "chaosml._net",
    ],
)
def test_the_foundation_imports_no_layer_above_it(foundation: str) -> None:
    above = (
        "chaosml.gameday",
        "chaosml.slices",
        "chaosml.report",
        "chaosml.cli",
        "chaosml.demo",
        "chaosml.load",
        "chaosml.alerts",
        "chaosml.proxy",
        "chaosml.faults",
    )
    assert offenders(foundation, above) == []
