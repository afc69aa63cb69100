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
    assert len(families) == len(names) + 2  # the error rate per slice; HTTP errors, slow requests
    assert {f.figure for f in declare_families(names, labelled=False)} == {
        "score",
        "http_errors",
        "slow_requests",
    }
    assert len({f.name for f in families}) == len(families)
    with pytest.raises(InputError, match="cannot read the columns"):
        slice_names(suite, tmp_path / "missing.parquet")


def test_slow_requests_are_those_above_the_primary_p95_bucket() -> None:
    import numpy as np

    from chaosml.proxy.canary import BOUNDS, Latency
    from chaosml.release.canary import MIN_LATENCY, figures, p95_bucket, slow_bucket

    rng = np.random.default_rng(3)
    primary, candidate = Latency(), Latency()
    fast, slow = rng.lognormal(-4, 0.5, 400), rng.lognormal(-3, 0.5, 300)
    for seconds in fast:
        primary.add(float(seconds))
    for seconds in slow:
        candidate.add(float(seconds))
    arms = {
        "primary": {"latency": primary.to_json()},
        "candidate": {"latency": candidate.to_json()},
    }
    p95 = p95_bucket(arms["primary"])
    assert p95 is not None
    # the bucket's bound is at or above the primary's 95th percentile, the one before below it
    assert BOUNDS[p95 - 1] < np.quantile(fast, 0.95, method="inverted_cdf") <= BOUNDS[p95]
    index = slow_bucket(arms["primary"])
    assert index is not None and 1.4 < BOUNDS[index] / BOUNDS[p95] < 1.5  # 1.5x, on the grid
    stats = figures(None, [], __import__("pandas").DataFrame(), None, {"arms": arms}, index)
    one, two = stats[("overall", "slow_requests")]
    assert (one.n, one.successes) == (300, int((slow > BOUNDS[index]).sum()))
    assert (two.n, two.successes) == (400, int((fast > BOUNDS[index]).sum()))
    assert slow_bucket({"latency": {"count": MIN_LATENCY - 1, "counts": [1]}}) is None


def test_split_figures_are_only_the_split_s_own(tmp_path: Path) -> None:
    from chaosml.release.canary import figures

    (tmp_path / "suite.yaml").write_text(
        "label: y\nslices:\n  - {name: scored, where: 'score > 0'}\nmetrics: [accuracy]\n"
    )
    suite = load_suite(tmp_path / "suite.yaml")
    families = declare_families(["overall"], labelled=True)
    rows = pd.DataFrame(
        {"arm": ["primary", "candidate"] * 3, "score": [0.1] * 6, "prediction": [1] * 6}
        | {"id": [str(i) for i in range(6)]}
    )
    labels = pd.Series([1, 0, 1, 0, 1, 0], index=[str(i) for i in range(6)])
    stats = figures(suite, families, rows, labels, {"arms": {}}, None)
    # before the primary fixed the slow-request threshold there is no such figure at all
    assert set(stats) == {("overall", "error"), ("overall", "http_errors")}
    one, two = stats[("overall", "error")]
    assert (one.n, one.successes, two.n, two.successes) == (3, 3, 3, 0)


def test_labels_of_mixed_sources_and_types_join_as_one_type() -> None:
    from chaosml.release.labels import known_labels

    fed = pd.DataFrame({"id": ["a", "b"], "label": [1, True]})
    given = pd.Series(["0", "1"], index=["b", "c"], dtype=object)
    labels = known_labels(fed, given)
    assert labels is not None
    assert labels.to_dict() == {"a": 1.0, "b": 0.0, "c": 1.0}  # the file has the last word
    words = known_labels(pd.DataFrame({"id": ["a"], "label": ["yes"]}), given)
    assert words is not None and set(map(type, words)) == {str}
    # no feedback yet and a labels file of its header only: no labels, no error
    empty = pd.DataFrame({"id": pd.Series(dtype=object), "label": pd.Series(dtype=object)})
    assert known_labels(empty, pd.Series([], dtype=object)) is None


def test_a_stopped_canary_removes_its_own_split_and_no_other(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from chaosml.proxy.api import ProxyServer, running
    from chaosml.proxy.client import ControlClient, ControlRefused
    from chaosml.release.canary import Controller

    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    controller = SimpleNamespace(point=SimpleNamespace(proxy="model"))
    with running(ProxyServer(api="127.0.0.1:0")) as server:
        client = ControlClient(address=server.api)
        client.create_proxy("model", "127.0.0.1:9", "127.0.0.1:0")
        client.set_split("model", "127.0.0.1:9", 0.5, folder=str(theirs), codec="records")
        Controller._unsplit(controller, client, mine)  # type: ignore[arg-type]
        assert client.split("model")["folder"] == str(theirs)  # another run's: it stays
        client.remove_split("model")
        client.set_split("model", "127.0.0.1:9", 0.5, folder=str(mine), codec="records")
        Controller._unsplit(controller, client, mine)  # type: ignore[arg-type]
        with pytest.raises(ControlRefused):
            client.split("model")
        Controller._unsplit(controller, client, mine)  # type: ignore[arg-type]  # gone: fine
