"""The public API: every name in ``chaosml.__all__`` imports, is the object its defining module
holds, and is what type checkers see; ``import chaosml`` alone imports none of them."""

import ast
import importlib
import inspect
import json
import subprocess
import sys
import types
from pathlib import Path

import chaosml

INIT = Path(chaosml.__file__)


def test_star_import_gives_every_name_from_its_defining_module() -> None:
    """In a fresh interpreter (the exports are lazy): ``from chaosml import *`` binds every name,
    and a class or function is the one its own module defines, under its own name."""
    script = (
        "import json, sys; from chaosml import *; import chaosml;"
        "print(json.dumps({n: getattr(getattr(chaosml, n), '__module__', None)"
        " for n in chaosml.__all__}))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    defined_in = json.loads(done.stdout)
    assert set(defined_in) == set(chaosml.__all__)
    for name, module in defined_in.items():
        value = getattr(chaosml, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert module.startswith("chaosml."), (name, module)
            assert value.__name__ == name
            assert getattr(importlib.import_module(module), name) is value, name


def test_every_export_is_lazy_and_points_at_a_module_that_has_it() -> None:
    assert len(set(chaosml.__all__)) == len(chaosml.__all__)
    assert set(chaosml._EXPORTS) == set(chaosml.__all__) - {"__version__"}
    for name, module in chaosml._EXPORTS.items():
        assert getattr(chaosml, name) is getattr(importlib.import_module(module), name), name
    script = "import sys, chaosml; print(sorted(m for m in sys.modules if m.startswith('chaosml')))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split() == ["['chaosml']"], done.stdout  # nothing else until first use


def test_type_checkers_see_the_same_names_as_the_runtime() -> None:
    """The ``TYPE_CHECKING`` imports of ``__init__`` are ``_EXPORTS``, name for name and module
    for module, so what mypy checks is what a user gets."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    block = next(
        node for node in tree.body if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node)
    )
    seen = {
        alias.asname or alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert seen == chaosml._EXPORTS


def test_no_public_name_outside_all() -> None:
    public = {
        name
        for name, value in vars(chaosml).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= set(chaosml.__all__)
