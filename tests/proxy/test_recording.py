"""The recorders behind a shadow and a split, driven directly: what one bad flush costs, and how
a body is read."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from chaosml.codecs import CODECS
from chaosml.proxy import shadow
from chaosml.proxy.canary import Parts
from chaosml.proxy.recording import loads
from chaosml.proxy.shadow import Recorder

NEVER = 3600.0  # a flush interval the test never reaches: it calls ``write`` itself


def exchange(first: int, n: int, scores: list[object] | None = None) -> tuple[bytes, bytes]:
    rows = [{"id": str(first + i), "age": first + i, "region": "EU"} for i in range(n)]
    answer = {
        "predictions": [i % 2 for i in range(n)],
        "scores": scores if scores is not None else [i / n for i in range(n)],
        "ids": [r["id"] for r in rows],
    }
    return json.dumps({"instances": rows}).encode(), json.dumps(answer).encode()


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1.5, "b": [1, "x", null], "c": true}',
        b'{"a": NaN, "b": Infinity}',  # json reads these; orjson does not
        b'{"big": 123456789012345678901234567890}',  # beyond 64 bits
        '{"a": "é"}'.encode("utf-16"),  # json detects the encoding
    ],
)
def test_a_body_is_read_as_json_reads_it(body: bytes) -> None:
    got, want = loads(body), json.loads(body)
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)
    if "a" in want and isinstance(want["a"], float) and math.isnan(want["a"]):
        assert math.isnan(got["a"])


def test_a_shadow_flush_that_cannot_be_written_is_counted_and_not_carried_over(
    tmp_path: Path,
) -> None:
    drops: Counter[str] = Counter()
    recorder = Recorder(tmp_path, CODECS["records"], drops, NEVER)
    try:
        request, primary = exchange(0, 3)
        _, garbage = exchange(0, 3, scores=["high", "low", "none"])
        recorder.decode((request, primary, garbage))  # the candidate's scores are not numbers
        recorder.decode((request, primary, garbage))
        recorder.write()
        good = [exchange(first, 4) for first in (10, 20)]
        for request, answer in good:
            recorder.decode((request, answer, answer))
        recorder.write()
    finally:
        recorder.close()
    counted, rows = recorder.counted()
    assert counted == {"rows unwritable: ValueError": 2}  # both exchanges of the bad flush
    assert rows == 8
    recorded = pd.read_parquet(tmp_path / "rows.parquet")
    assert recorded["id"].tolist() == [str(i) for i in (*range(10, 14), *range(20, 24))]
    assert len(pd.read_parquet(tmp_path / "candidate.parquet")) == 8


def test_a_split_flush_that_cannot_be_written_is_counted_and_not_carried_over(
    tmp_path: Path,
) -> None:
    parts = Parts(tmp_path, CODECS["records"], NEVER)
    try:
        request, garbage = exchange(0, 3, scores=["high", "low", "none"])
        parts.decode(("candidate", 200, request, garbage, 1.0, None))
        parts.write()
        request, answer = exchange(10, 4)
        parts.decode(("primary", 200, request, answer, 2.0, b"u"))
        parts.write()
    finally:
        parts.close()
    counts = parts.counts()
    assert counts["drops"] == {"rows unwritable: ValueError": 1}  # the one request of that flush
    assert counts["rows"] == 4 and counts["parts"] == 1
    recorded = pd.read_parquet(tmp_path / "part-000001.parquet")
    assert recorded["id"].tolist() == [str(i) for i in range(10, 14)]
    assert recorded["arm"].tolist() == ["primary"] * 4


def test_flushes_are_held_and_written_in_row_groups_of_the_bound_s_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shadow, "ROW_GROUP", 8)
    recorder = Recorder(tmp_path, CODECS["records"], Counter(), NEVER)
    live = []
    try:
        for first in (0, 10, 20):
            request, answer = exchange(first, 4)
            recorder.decode((request, answer, answer))
            recorder.write()
            live.append(recorder.counted()[1])
    finally:
        recorder.close()
    assert live == [4, 8, 12]  # counted at each flush, before the row group is out
    for name in ("rows", "primary", "candidate"):
        file = pq.ParquetFile(tmp_path / f"{name}.parquet")
        sizes = [file.metadata.row_group(i).num_rows for i in range(file.num_row_groups)]
        assert sizes == [8, 4]  # two flushes' rows, then the rest at close
    recorded = pd.read_parquet(tmp_path / "rows.parquet")
    assert recorded["id"].tolist() == [str(i) for i in (*range(4), *range(10, 14), *range(20, 24))]
    assert recorded["age"].tolist() == [float(i) for i in recorded["id"].astype(int)]


def test_feedback_labels_of_mixed_types_in_one_flush_are_written_as_text(tmp_path: Path) -> None:
    from chaosml.proxy.feedback import Labels

    labels = Labels(tmp_path, "/feedback", NEVER)
    try:
        labels.decode((b'{"labels": [{"id": "a", "label": 1}, {"id": "b", "label": "1"}]}', 1.0))
        labels.decode((b'{"id": 7, "label": true}', 2.0))
        labels.decode((b'{"nothing": "here"}', 3.0))
        labels.write()
    finally:
        labels.close()
    counts = labels.counts()
    assert counts["labels"] == 3 and counts["requests"] == 2
    assert counts["drops"] == {"feedback unreadable": 1}
    written = pd.read_parquet(tmp_path / "part-000001.parquet")
    assert written["id"].tolist() == ["a", "b", "7"]
    assert written["label"].tolist() == ["1", "1", "True"]


def test_a_candidate_down_for_hours_pauses_at_most_the_longest_pause(tmp_path: Path) -> None:
    import asyncio

    from chaosml.proxy.shadow import BACKOFF, Mirror

    async def refused_often() -> float:
        mirror = Mirror("127.0.0.1:9", "records", tmp_path)
        try:
            for _ in range(5000):  # an hour of a dead candidate under traffic
                mirror._refused()
            return mirror._down_until - time.monotonic()
        finally:
            await mirror.close()

    assert 0 < asyncio.run(refused_often()) <= BACKOFF
