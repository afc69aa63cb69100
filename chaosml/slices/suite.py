"""Slice suites: the YAML files under ``slices/`` (format in DESIGN.md), validated on load."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from chaosml.errors import PredicateError, SpecError
from chaosml.predicate import Predicate, parse_predicate
from chaosml.slices.metrics import DEFAULT_METRICS, get_metric
from chaosml.spec import FieldError, Loc, line_of, read_yaml, validate_spec

Scalar = str | int | float | bool


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SliceSpec(_Spec):
    """One ``slices:`` entry: a named predicate, or ``by:`` columns expanded per value."""

    name: str | None = None
    where: str | None = None
    by: list[str] | None = None
    min_size: int | None = Field(default=None, ge=1)

    @field_validator("by", mode="before")
    @classmethod
    def _one_column(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _where_or_by(self) -> SliceSpec:
        if (self.where is None) == (self.by is None):
            raise ValueError("a slice needs exactly one of `where` (with `name`) or `by`")
        if self.where is not None:
            if not self.name:
                raise ValueError("a `where` slice needs a `name`")
            try:
                parse_predicate(self.where)
            except PredicateError as exc:
                raise FieldError(("where",), str(exc)) from exc
        if self.by is not None and (not self.by or len(set(self.by)) != len(self.by)):
            raise ValueError("`by` needs one or more distinct column names")
        return self

    @property
    def predicate(self) -> Predicate:
        assert self.where is not None
        return parse_predicate(self.where)


class SliceTest(_Spec):
    """A threshold test on slices (``slice:``) or a fairness test across a ``by:`` group."""

    metric: str
    slice: str | None = None
    by: list[str] | None = None
    min: float | None = None
    max: float | None = None
    max_gap_to_overall: float | None = Field(default=None, ge=0)
    max_difference: float | None = Field(default=None, ge=0)
    min_ratio: float | None = Field(default=None, ge=0, le=1)
    under: str | None = Field(default=None, min_length=1)  # a scenario's name: under its faults
    max_drop: float | None = Field(default=None, ge=0)  # most the metric may lose under it

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        get_metric(value)
        return value

    @field_validator("by", mode="before")
    @classmethod
    def _one_column(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _bounds(self) -> SliceTest:
        if self.max_drop is not None and self.under is None:
            raise ValueError("`max_drop` bounds the loss under a scenario: name it with `under`")
        slice_bounds = (self.min, self.max, self.max_gap_to_overall, self.max_drop)
        group_bounds = (self.max_difference, self.min_ratio)
        if (self.slice is None) == (self.by is None):
            raise ValueError("a test needs exactly one of `slice` (a name or pattern) or `by`")
        if self.slice is not None and (
            all(b is None for b in slice_bounds) or any(b is not None for b in group_bounds)
        ):
            raise ValueError(
                "a `slice` test takes `min`, `max`, `max_gap_to_overall` and/or `max_drop`"
            )
        if self.by is not None and (
            all(b is None for b in group_bounds) or any(b is not None for b in slice_bounds)
        ):
            raise ValueError("a `by` test takes `max_difference` and/or `min_ratio`")
        return self

    def matches(self, slice_name: str) -> bool:
        return self.slice is not None and fnmatch.fnmatchcase(slice_name, self.slice)


class ComparePolicy(_Spec):
    """How ``slices compare`` decides a slice regressed."""

    metric: str = "accuracy"
    max_drop: float = Field(default=0.0, ge=0)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    correction: Literal["holm", "bh"] = "holm"
    confidence: float = Field(default=0.95, gt=0, lt=1)
    # the tolerance on how much more a version may lose under a scenario (default: max_drop)
    max_drop_under_fault: float | None = Field(default=None, ge=0)

    @field_validator("metric")
    @classmethod
    def _comparable(cls, value: str) -> str:
        metric = get_metric(value)
        if metric.direction == 0 or metric.confusion is None:
            raise ValueError(
                f"metric {value!r} cannot be compared: it has no better direction "
                "or no paired test (use accuracy, recall, precision, f1, ...)"
            )
        return value

    @property
    def drop_under_fault(self) -> float:
        """How much more a version may lose under a scenario than the other one did."""
        return self.max_drop if self.max_drop_under_fault is None else self.max_drop_under_fault


def is_pattern(name: str) -> bool:
    """A test's ``slice`` that is a glob, or names a ``by`` slice (``region=EU``), whose values
    only the data knows."""
    return any(c in name for c in "*?[=")


def no_such_slice(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"no slice named {name!r}{hint}"


class SliceSuite(_Spec):
    """A slice suite file."""

    label: str | None = None
    positive: Scalar | None = None
    slices: list[SliceSpec] = Field(default_factory=list, min_length=1)  # absent: overall only
    min_size: int = Field(default=30, ge=1)
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS))
    tests: list[SliceTest] = Field(default_factory=list)
    compare: ComparePolicy = Field(default_factory=ComparePolicy)

    _path: Path | None = PrivateAttr(default=None)
    _lines: dict[Loc, int] = PrivateAttr(default_factory=dict)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        for name in value:
            get_metric(name)
        if len(set(value)) != len(value):
            raise ValueError("metrics are listed twice")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> SliceSuite:
        seen: set[str] = set()
        for index, spec in enumerate(self.slices):
            if spec.name is not None and spec.name in seen:
                raise FieldError(
                    ("slices", index, "name"), f"slice name {spec.name!r} is used twice"
                )
            seen.add(spec.name or "")
        for index, test in enumerate(self.tests):
            if test.slice is not None and not is_pattern(test.slice) and test.slice not in seen:
                raise FieldError(("tests", index, "slice"), no_such_slice(test.slice, seen))
        return self

    @property
    def path(self) -> Path | None:
        return self._path

    def where_line(self, index: int, field: str = "where") -> str:
        """``file:line`` of a slice entry, for messages about it found later (e.g. in the data)."""
        return f"{self._path or '<suite>'}:{line_of(self._lines, ('slices', index, field))}"

    def positive_line(self) -> str:
        """``file:line`` of the suite's ``positive:`` (its first line if it has none)."""
        return f"{self._path or '<suite>'}:{line_of(self._lines, ('positive',))}"

    def test_line(self, index: int) -> str:
        return f"{self._path or '<suite>'}:{line_of(self._lines, ('tests', index))}"

    @property
    def all_metrics(self) -> list[str]:
        """The suite's metrics plus those its tests and comparison need, in a stable order."""
        names = list(self.metrics)
        for extra in [test.metric for test in self.tests] + [self.compare.metric]:
            if extra not in names:
                names.append(extra)
        return names


def load_suite(path: str | Path) -> SliceSuite:
    """Load and validate a slice suite; raise ``SpecError`` listing every problem."""
    path = Path(path)
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError([f"{path}:1: expected a mapping with `slices:` at the top level"])
    suite = validate_spec(data, SliceSuite, path=path, lines=lines)
    suite._path = path
    suite._lines = lines
    return suite
