"""chaosml: chaos game days and slice-based model tests for ML services."""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
    from chaosml.codecs import CODECS, Codec
    from chaosml.config import ProjectConfig, load_config
    from chaosml.errors import (
        ChaosmlError,
        CodecError,
        ConfigError,
        DataError,
        FaultError,
        InputError,
        MissingExtraError,
        PredicateError,
        SpecError,
        UnreachableError,
        VersionError,
    )
    from chaosml.faultpoint import FaultPoint, InjectedError
    from chaosml.faults import FAULTS, Fault, apply_offline, make_fault
    from chaosml.gameday import (
        GamedayReport,
        RunOptions,
        coverage,
        load_journal,
        load_scenarios,
        load_target,
        run_gameday,
    )
    from chaosml.load import LoadPlan
    from chaosml.predicate import Predicate, parse_predicate
    from chaosml.proxy.api import ProxyServer
    from chaosml.proxy.toxics import ApiError
    from chaosml.slices.checks import SliceTestReport, TestOutcome, run_slice_tests
    from chaosml.slices.collect import Evaluation, evaluate
    from chaosml.slices.compare import Comparison, SliceComparison, compare_versions
    from chaosml.slices.engines import DaskEngine, LocalEngine, SparkEngine
    from chaosml.slices.metrics import METRICS
    from chaosml.slices.suite import SliceSuite, load_suite
    from chaosml.versions import (
        ArtifactVersion,
        InMemory,
        PredictionsFile,
        Version,
        resolve_version,
    )

__version__ = "0.1.0"

# Names are imported when first used, so `import chaosml` (and every `chaosml` process, such as a
# load driver) does not pay for the parts it does not touch.
_EXPORTS = {
    "ApiError": "chaosml.proxy.toxics",
    "ArtifactVersion": "chaosml.versions",
    "CODECS": "chaosml.codecs",
    "ChaosmlError": "chaosml.errors",
    "Codec": "chaosml.codecs",
    "CodecError": "chaosml.errors",
    "Comparison": "chaosml.slices.compare",
    "ConfigError": "chaosml.errors",
    "DaskEngine": "chaosml.slices.engines",
    "DataError": "chaosml.errors",
    "Evaluation": "chaosml.slices.collect",
    "FAULTS": "chaosml.faults",
    "Fault": "chaosml.faults",
    "FaultError": "chaosml.errors",
    "FaultPoint": "chaosml.faultpoint",
    "GamedayReport": "chaosml.gameday",
    "InMemory": "chaosml.versions",
    "InjectedError": "chaosml.faultpoint",
    "InputError": "chaosml.errors",
    "LoadPlan": "chaosml.load",
    "LocalEngine": "chaosml.slices.engines",
    "METRICS": "chaosml.slices.metrics",
    "MissingExtraError": "chaosml.errors",
    "Predicate": "chaosml.predicate",
    "PredicateError": "chaosml.errors",
    "PredictionsFile": "chaosml.versions",
    "ProjectConfig": "chaosml.config",
    "ProxyServer": "chaosml.proxy.api",
    "RunOptions": "chaosml.gameday",
    "SliceComparison": "chaosml.slices.compare",
    "SliceSuite": "chaosml.slices.suite",
    "SliceTestReport": "chaosml.slices.checks",
    "SpecError": "chaosml.errors",
    "SparkEngine": "chaosml.slices.engines",
    "TestOutcome": "chaosml.slices.checks",
    "UnreachableError": "chaosml.errors",
    "Version": "chaosml.versions",
    "VersionError": "chaosml.errors",
    "apply_offline": "chaosml.faults",
    "compare_versions": "chaosml.slices.compare",
    "coverage": "chaosml.gameday",
    "evaluate": "chaosml.slices.collect",
    "load_config": "chaosml.config",
    "load_journal": "chaosml.gameday",
    "load_scenarios": "chaosml.gameday",
    "load_suite": "chaosml.slices.suite",
    "load_target": "chaosml.gameday",
    "make_fault": "chaosml.faults",
    "parse_predicate": "chaosml.predicate",
    "resolve_version": "chaosml.versions",
    "run_gameday": "chaosml.gameday",
    "run_slice_tests": "chaosml.slices.checks",
}


def __getattr__(name: str) -> _Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chaosml' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CODECS",
    "FAULTS",
    "METRICS",
    "ApiError",
    "ArtifactVersion",
    "ChaosmlError",
    "Codec",
    "CodecError",
    "Comparison",
    "ConfigError",
    "DaskEngine",
    "DataError",
    "Evaluation",
    "Fault",
    "FaultError",
    "FaultPoint",
    "GamedayReport",
    "InMemory",
    "InjectedError",
    "InputError",
    "LoadPlan",
    "LocalEngine",
    "MissingExtraError",
    "Predicate",
    "PredicateError",
    "PredictionsFile",
    "ProjectConfig",
    "ProxyServer",
    "RunOptions",
    "SliceComparison",
    "SliceSuite",
    "SliceTestReport",
    "SparkEngine",
    "SpecError",
    "TestOutcome",
    "UnreachableError",
    "Version",
    "VersionError",
    "__version__",
    "apply_offline",
    "compare_versions",
    "coverage",
    "evaluate",
    "load_config",
    "load_journal",
    "load_scenarios",
    "load_suite",
    "load_target",
    "make_fault",
    "parse_predicate",
    "resolve_version",
    "run_gameday",
    "run_slice_tests",
]
