"""chaosml: chaos game days and slice-based model tests for ML services."""

from chaosml.codecs import CODECS, Codec
from chaosml.config import ProjectConfig, load_config
from chaosml.errors import (
    ChaosmlError,
    ConfigError,
    DataError,
    InputError,
    PredicateError,
    SpecError,
    UnreachableError,
    VersionError,
)
from chaosml.faultpoint import FaultPoint
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
from chaosml.slices.checks import SliceTestReport, TestOutcome, run_slice_tests
from chaosml.slices.collect import Evaluation, evaluate
from chaosml.slices.compare import Comparison, SliceComparison, compare_versions
from chaosml.slices.metrics import METRICS
from chaosml.slices.suite import SliceSuite, load_suite
from chaosml.versions import ArtifactVersion, InMemory, PredictionsFile, Version, resolve_version

__version__ = "0.1.0"

__all__ = [
    "CODECS",
    "FAULTS",
    "METRICS",
    "ArtifactVersion",
    "ChaosmlError",
    "Codec",
    "Comparison",
    "ConfigError",
    "DataError",
    "Evaluation",
    "Fault",
    "FaultPoint",
    "GamedayReport",
    "InMemory",
    "InputError",
    "LoadPlan",
    "Predicate",
    "PredicateError",
    "PredictionsFile",
    "ProjectConfig",
    "ProxyServer",
    "RunOptions",
    "SliceComparison",
    "SliceSuite",
    "SliceTestReport",
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
