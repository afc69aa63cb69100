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
from chaosml.faults import FAULTS, Fault, apply_offline, make_fault
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
    "InMemory",
    "InputError",
    "Predicate",
    "PredicateError",
    "PredictionsFile",
    "ProjectConfig",
    "ProxyServer",
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
    "evaluate",
    "load_config",
    "load_suite",
    "make_fault",
    "parse_predicate",
    "resolve_version",
    "run_slice_tests",
]
