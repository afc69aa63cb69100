"""chaosml's exceptions.

Every error chaosml raises on purpose derives from ``ChaosmlError`` and carries the exit code the CLI
maps it to::

    ChaosmlError                    exit 2 unless a subclass says otherwise
    ├── InputError                  a user's file, argument or data is wrong (exit 2)
    │   ├── ConfigError             project config (chaosml.yaml / [tool.chaosml])
    │   ├── SpecError               a YAML spec failed validation (exit 3 if a component was down)
    │   ├── PredicateError          a predicate does not parse, uses a forbidden construct, ...
    │   ├── DataError               a data file is missing, unreadable, or lacks a column
    │   ├── VersionError            a model version cannot be loaded or its predictions do not fit
    │   │   └── ScenarioFailed      a version could not predict under a scenario's faults: a
    │   │                           result, that scenario's cells are errors (exit 3)
    │   ├── FaultError              a fault kind or its parameters are unknown or invalid
    │   ├── CodecError              a payload is not in its codec's format, or no codec has
    │   │                           that name
    │   └── MissingExtraError       what was asked needs an extra that is not installed
    ├── ApiError                    a control API request was refused, with its HTTP status
    │                               (chaosml.proxy.toxics)
    ├── InjectedError               an ``http_error`` toxic at the in-service fault point: the
    │                               embedding service answers its status and body
    │                               (chaosml.faultpoint)
    └── UnreachableError            the target or a component cannot be reached (exit 3)

The message of an ``InputError`` is one line that names the file, the line, the field and what was
expected, so the CLI can print it as it is.
"""

from __future__ import annotations


class ChaosmlError(Exception):
    """Base of every error chaosml raises on purpose."""

    exit_code: int = 2


class InputError(ChaosmlError):
    """A user's file, argument or data is not what chaosml expects."""


class ConfigError(InputError):
    """The project config is invalid."""


class SpecError(InputError):
    """A YAML spec failed validation; ``problems`` holds every problem found, one line each.

    ``exit_code`` 3 when one of the problems is a component that could not be reached (``validate``
    against a target whose fault point does not answer), else 2."""

    def __init__(self, problems: list[str], *, exit_code: int = 2) -> None:
        self.problems = problems
        self.exit_code = exit_code
        super().__init__("\n".join(problems))


class PredicateError(InputError):
    """A predicate does not parse or uses something outside the predicate language."""


class DataError(InputError):
    """A data file is missing, unreadable, or does not have the expected columns or values."""


class VersionError(InputError):
    """A model version cannot be loaded, or its predictions do not match the data."""


# FaultError and CodecError are also ValueErrors, as they were before the tree had them, so code
# that caught a ValueError from ``make_fault`` or a codec keeps working.


class FaultError(InputError, ValueError):
    """A fault kind is not in the catalogue, or its parameters are invalid (``make_fault``)."""


class CodecError(InputError, ValueError):
    """A payload is not in the codec's format (the proxy then passes it through untouched), or
    ``get_codec`` was given a name no codec has."""


class MissingExtraError(InputError):
    """What was asked needs an extra that is not installed (``pip install 'chaosml[extra]'``)."""

    def __init__(self, message: str, *, extra: str) -> None:
        super().__init__(message)
        self.extra = extra


class UnreachableError(ChaosmlError):
    """The target or a component could not be reached."""

    exit_code = 3


SCENARIO_FAILED = "scenario {scenario!r}: {version} failed to predict on the faulted rows: {reason}"


class ScenarioFailed(VersionError):
    """A version could not predict on the rows a scenario's faults changed (a model that cannot
    take a null, say). A result, not bad input: that scenario's cells are ``error``, the other
    scenarios run, and the command exits 3 (verdicts unknown)."""

    exit_code = 3

    def __init__(self, scenario: str, version: str, reason: str) -> None:
        super().__init__(scenario, version, reason)  # args: so it pickles back from a worker
        self.scenario, self.version, self.reason = scenario, version, reason

    def __str__(self) -> str:
        return SCENARIO_FAILED.format(
            scenario=self.scenario, version=self.version, reason=self.reason
        )
