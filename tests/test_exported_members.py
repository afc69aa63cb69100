import importlib
import types

import chaosml


def test_all_exports_exist_once() -> None:
    exported = chaosml.__all__
    assert len(set(exported)) == len(exported)
    for name in exported:
        assert hasattr(chaosml, name), name


def test_public_names_are_exported() -> None:
    public = {
        name
        for name, value in vars(chaosml).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= set(chaosml.__all__)


def test_every_export_imports_lazily_from_its_module() -> None:
    assert set(chaosml._EXPORTS) == set(chaosml.__all__) - {"__version__"}
    for name, module in chaosml._EXPORTS.items():
        assert getattr(chaosml, name) is getattr(importlib.import_module(module), name)
