"""Fault evidence: what a fault point actually did with one toxic, so a game day can tell a fault
that acted (and monitoring that missed it) from a fault that never changed anything.

Each fault point keeps one ``Evidence`` per toxic: how many requests met it while it was active,
how many its toxicity picked, how many rows those carried, which cells it changed (per column),
the requests where a column it needs was absent, the requests it could not act on and why
(``SKIPS``: an unreadable or encoded body, a body over the buffer limit or of a content type no
codec reads, a connection relayed raw or upgraded to another protocol), and the ones on which it
raised.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from chaosml._types import Table

PREDICTION, SCORE = "prediction", "score"  # the columns an answer's changes are counted under
Change = tuple[int, dict[str, int]]  # rows with any change, changed cells per column
SkipKind = Literal["coding", "unreadable", "size", "content type", "raw", "upgrade", "http2"]
# Every reason a payload toxic may not act on a request, as its evidence counts it
SKIPS: dict[SkipKind, str] = {
    "coding": "{detail}-encoded",  # a content coding the proxy does not decode
    "unreadable": "unreadable {detail}",  # the codec could not read the body
    "size": "{detail} over the buffer limit (relayed unread)",  # too large to hold for the fault
    "content type": "content type {detail} (relayed unread)",  # an event stream, bytes, a form
    "raw": "raw TCP connection (not HTTP)",  # a protocol other than HTTP/1
    "upgrade": "protocol upgrade to {detail} (relayed as a stream)",  # WebSocket, h2c
    "http2": "HTTP/2 connection (relayed as a stream)",  # prior knowledge
}


def skip_reason(kind: SkipKind, detail: str = "") -> str:
    """How the evidence words a skip of ``kind`` (``detail``: the body, the coding, ...)."""
    return SKIPS[kind].format(detail=detail)


@dataclass
class Evidence:
    """Counts for one toxic; safe to update from several threads (the in-service point)."""

    rolls: int = 0  # requests (raw TCP: connections) that met the toxic while it was active
    hits: int = 0  # of those, the ones its toxicity picked
    acted: int = 0  # hits on which the fault ran (payload read and changed, effect applied, routed)
    rows: int = 0  # rows of the payloads it ran on
    changed_rows: int = 0  # rows in which it changed at least one value
    changed: dict[str, int] = field(default_factory=dict)  # changed cells per column
    absent: dict[str, int] = field(default_factory=dict)  # hits where a column it needs was missing
    skipped: dict[str, int] = field(default_factory=dict)  # hits it could not act on, by reason
    errors: int = 0  # hits on which the fault raised (the payload passed unchanged)
    expired: bool = False  # its lease ran out: nobody renewed it, so it ended by itself
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def roll(self, hit: bool) -> bool:
        with self._lock:
            self.rolls += 1
            self.hits += hit
        return hit

    def skip(self, reason: str) -> None:
        with self._lock:
            self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def error(self) -> None:
        with self._lock:
            self.errors += 1

    def act(self, rows: int = 0) -> None:
        """The fault ran on a payload of ``rows`` rows (0: no payload, e.g. a delay or a route)."""
        with self._lock:
            self.acted += 1
            self.rows += rows

    def change(self, rows: int, change: Change, absent: Iterable[str] = ()) -> None:
        """The fault ran on ``rows`` rows and made ``change``; ``absent``: columns it needs that
        the payload did not have."""
        changed_rows, cells = change
        with self._lock:
            self.acted += 1
            self.rows += rows
            self.changed_rows += changed_rows
            for name, count in cells.items():
                if count:
                    self.changed[name] = self.changed.get(name, 0) + count
            for name in absent:
                self.absent[name] = self.absent.get(name, 0) + 1

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rolls": self.rolls,
                "hits": self.hits,
                "acted": self.acted,
                "rows": self.rows,
                "changed_rows": self.changed_rows,
                "changed": dict(self.changed),
                "absent": dict(self.absent),
                "skipped": dict(self.skipped),
                "errors": self.errors,
                "expired": self.expired,
            }


def differs(before: npt.NDArray[Any], after: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Which elements changed: a null stays equal to a null; values compare by ``==`` (so 3 and
    3.0 are the same value, "3" and 3 are not)."""
    if before is after:
        return np.zeros(len(before), dtype=bool)
    if len(before) != len(after):
        return np.ones(max(len(before), len(after)), dtype=bool)
    old, new = pd.isna(before), pd.isna(after)
    try:
        with np.errstate(invalid="ignore"):
            same = np.asarray(before == after, dtype=bool)
    except (TypeError, ValueError):
        same = np.array([_same(a, b) for a, b in zip(before, after, strict=True)], dtype=bool)
    if same.shape != old.shape:  # an elementwise comparison numpy could not make
        same = np.array([_same(a, b) for a, b in zip(before, after, strict=True)], dtype=bool)
    return ~((old & new) | (same & ~old & ~new))


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def table_changes(before: Table, after: Table, n: int) -> Change:
    """The rows with any change, and changed cells per column, between two versions of a
    request's ``n`` rows (a column that vanished counts every row)."""
    if n <= SMALL:
        listed = _listed_changes(before, after, n)
        if listed is not None:
            return listed
    any_row = np.zeros(n, dtype=bool)
    cells: dict[str, int] = {}
    for name, old in before.items():
        new = after.get(name)
        diff = np.ones(n, dtype=bool) if new is None else differs(old, new)
        if len(diff) == n:
            any_row |= diff
        cells[name] = int(np.count_nonzero(diff))
    return int(np.count_nonzero(any_row)), cells


SMALL = 64  # rows compared in Python: below this numpy's and pandas' per-call costs dominate
LISTED = (
    np.dtype(object),
    np.dtype(np.float64),
)  # arrays whose values ``tolist`` keeps as they are
JSON_SCALARS = frozenset({type(None), bool, int, float, str})


def _listed_changes(before: Table, after: Table, n: int) -> Change | None:
    """``table_changes`` for a request's few rows of JSON scalars (a proxied request), element
    by element in Python; None if a column holds anything else (then numpy compares them)."""
    any_row = [False] * n
    cells: dict[str, int] = {}
    for name, old in before.items():
        new = after.get(name)
        if new is None:
            diff = [True] * n
        elif old is new:
            diff = [False] * len(old)
        elif len(old) != len(new) or old.dtype not in LISTED or new.dtype not in LISTED:
            return None
        else:
            found = _scalars_differ(old.tolist(), new.tolist())
            if found is None:
                return None
            diff = found
        if len(diff) == n:
            any_row = [a or b for a, b in zip(any_row, diff, strict=True)]
        cells[name] = diff.count(True)
    return any_row.count(True), cells


def _scalars_differ(before: list[Any], after: list[Any]) -> list[bool] | None:
    """``differs`` on lists of JSON scalars; None if a value is of another type. Of these types
    only None and NaN are null, and values that compare equal are both null or neither (a cell a
    fault left as it was is the same object: equal, or both NaN)."""
    types = JSON_SCALARS.issuperset
    if not (types(map(type, before)) and types(map(type, after))):
        return None
    return [
        not (
            old is new
            or old == new
            or ((old is None or old != old) and (new is None or new != new))
        )
        for old, new in zip(before, after, strict=True)
    ]


def answer_changes(
    predictions: npt.NDArray[Any],
    scores: npt.NDArray[np.float64] | None,
    new_predictions: npt.NDArray[Any],
    new_scores: npt.NDArray[np.float64] | None,
) -> Change:
    """Changed predictions and scores (each a column), and the rows with any change."""
    before: Table = {PREDICTION: predictions}
    after: Table = {PREDICTION: new_predictions}
    if scores is not None or new_scores is not None:
        n = len(predictions)
        before[SCORE] = scores if scores is not None else np.full(n, np.nan)
        after[SCORE] = new_scores if new_scores is not None else np.full(n, np.nan)
    return table_changes(before, after, len(predictions))
