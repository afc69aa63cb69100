"""chaosml: chaos game days and slice-based model tests for ML services."""

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
from chaosml.predicate import Predicate, parse_predicate
from chaosml.slices.checks import SliceTestReport, TestOutcome, run_slice_tests
from chaosml.slices.collect import Evaluation, evaluate
from chaosml.slices.compare import Comparison, SliceComparison, compare_versions
from chaosml.slices.metrics import METRICS
from chaosml.slices.suite import SliceSuite, load_suite
from chaosml.versions import ArtifactVersion, InMemory, PredictionsFile, Version, resolve_version

__version__ = "0.1.0"

__all__ = [
    "METRICS",
    "ArtifactVersion",
    "ChaosmlError",
    "Comparison",
    "ConfigError",
    "DataError",
    "Evaluation",
    "InMemory",
    "InputError",
    "Predicate",
    "PredicateError",
    "PredictionsFile",
    "ProjectConfig",
    "SliceComparison",
    "SliceSuite",
    "SliceTestReport",
    "SpecError",
    "TestOutcome",
    "UnreachableError",
    "Version",
    "VersionError",
    "__version__",
    "compare_versions",
    "evaluate",
    "load_config",
    "load_suite",
    "parse_predicate",
    "resolve_version",
    "run_slice_tests",
]
