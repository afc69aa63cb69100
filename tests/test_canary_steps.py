"""The canary's inputs: steps, keys, and the families fixed before the first request."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from chaosml.errors import InputError
from chaosml.release.canary import Step, declare_families, parse_key, parse_steps, slice_names
from chaosml.slices.suite import load_suite

SUITE = Path(__file__).parents[1] / "slices" / "credit.yaml"


def test_steps_rise_and_only_the_last_may_go_without_a_duration() -> None:
    assert parse_steps("5%:2m,25%:5m, 50%:5m,100%") == [
        Step(0.05, 120.0),
        Step(0.25, 300.0),
        Step(0.5, 300.0),
        Step(1.0, None),
    ]
    assert parse_steps("10%:30s") == [Step(0.1, 30.0)]
    for bad, said in [
        ("5%,25%:1m", "needs a duration"),
        ("25%:1m,5%:1m", "must rise"),
        ("0%:1m", r"in \(0%, 100%\]"),
        ("150%:1m", r"in \(0%, 100%\]"),
        ("5:1m", "is not WEIGHT%"),
        ("5%:soon", "5%:soon"),
        ("100%", "at least one step with a duration"),
        ("", "is not WEIGHT%"),
    ]:
        with pytest.raises(InputError, match=said):
            parse_steps(bad)


def test_keys() -> None:
    assert parse_key(None) is None
    assert parse_key("header:x-user-id") == {"header": "x-user-id"}
    assert parse_key("column:user_id") == {"column": "user_id"}
    for bad in ("header", "cookie:a", "column:"):
        with pytest.raises(InputError, match="expected header:NAME or column:NAME"):
            parse_key(bad)


def test_by_slices_are_judged_only_when_rows_name_their_groups(tmp_path: Path) -> None:
    suite = load_suite(SUITE)
    names, unjudged = slice_names(suite, None)
    assert names[0] == "overall" and "young" in names
    assert unjudged == ["region", "employment", "sex × region"]
    rows = pd.DataFrame(
        {
            "region": ["EU", "APAC", "EU", None],
            "employment": ["salaried"] * 4,
            "sex": ["F", "M", "M", "F"],
        }
    )
    rows.to_parquet(tmp_path / "rows.parquet")
    names, unjudged = slice_names(suite, tmp_path / "rows.parquet")
    assert unjudged == []
    assert {"region=APAC", "region=EU", "region=<missing>", "sex=F & region=EU"} <= set(names)
    families = declare_families(names, labelled=True)
    assert len(families) == len(names) + 1  # the error rate per slice, HTTP errors overall
    assert {f.figure for f in declare_families(names, labelled=False)} == {"score", "http_errors"}
    assert len({f.name for f in families}) == len(families)
    with pytest.raises(InputError, match="cannot read the columns"):
        slice_names(suite, tmp_path / "missing.parquet")
