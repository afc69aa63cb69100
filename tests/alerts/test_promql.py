"""Reading a rule's PromQL: the label keys its alerts can carry and its longest range, against
answers worked out by hand from Prometheus's semantics; anything it cannot follow is None."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaosml.alerts.promql import label_keys, window_seconds

SERIES = {
    "x": frozenset({"__name__", "a", "job", "instance"}),
    "y": frozenset({"__name__", "b", "job"}),
    "bucket": frozenset({"__name__", "le", "job"}),
}


def _series(metric: str) -> frozenset[str] | None:
    return SERIES.get(metric)


@pytest.mark.parametrize(
    ("query", "keys"),
    [
        ("x > 0.2", {"a", "job", "instance"}),
        ('x{a="1", c=~"z.*"} > 0', {"a", "c", "job", "instance"}),
        ("sum by (a) (rate(x[5m])) > 1", {"a"}),
        ("sum(rate(x[5m])) by (a, job) > 1", {"a", "job"}),
        ('sum(rate(x{a="e"}[1m])) / sum(rate(x[1m])) > 0.05', set()),
        ("histogram_quantile(0.95, sum by (le) (rate(bucket[5m]))) > 0.5", set()),
        ("histogram_quantile(0.95, sum by (le, job) (rate(bucket[5m]))) > 0.5", {"job"}),
        ("abs(x - y) > 0.15", {"a", "b", "job", "instance"}),
        ("count by (job) (increase(x[2m]) > 0) > 1", {"job"}),
        ("sum without (instance) (x) > 1", {"a", "job", "instance"}),  # a superset
        ("topk by (a) (3, x)", {"a", "job", "instance"}),
        ('label_replace(x, "dst", "$1", "a", "(.*)") > 0', {"a", "dst", "job", "instance"}),
        ("x / on (a) group_left (c) y", {"a", "b", "c", "job", "instance"}),
        ('count_values("v", x)', {"v"}),
        ("max_over_time(x[10m:1m] offset 5m) > bool 1", {"a", "job", "instance"}),
        ('{__name__="y"} > 0', {"b", "job"}),
        ("vector(1) > 0", set()),
    ],
)
def test_label_keys(query: str, keys: set[str]) -> None:
    assert label_keys(query, _series) == frozenset(keys)


@pytest.mark.parametrize(
    "query",
    [
        "unknown_metric > 1",  # no series to read
        'absent(x{job="a"})',
        '{__name__=~"x|y"} > 0',
        "sum by (a (x)",  # does not parse
        "x >",
    ],
)
def test_label_keys_cannot_tell(query: str) -> None:
    assert label_keys(query, _series) is None


@pytest.mark.parametrize(
    ("query", "seconds"),
    [
        ("x > 1", None),
        ("rate(x[5m]) > 1", 300),
        ("rate(x[30s]) / rate(y[1h30m]) > 1", 5400),
        ("max_over_time(rate(x[1m])[10m:30s]) > 1", 600),
        ('x{a="[1d]"} > 1', None),  # a range in a string is not a range
    ],
)
def test_window_seconds(query: str, seconds: float | None) -> None:
    assert window_seconds(query) == seconds


@given(st.text(max_size=40))
def test_reading_any_text_never_raises(text: str) -> None:
    keys = label_keys(text, _series)
    assert keys is None or isinstance(keys, frozenset)
    window = window_seconds(text)
    assert window is None or window >= 0
