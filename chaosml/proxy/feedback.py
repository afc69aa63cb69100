"""Labels that pass the proxy as feedback, recorded by a shadow or a split beside their rows.

A model service's feedback endpoint takes the true labels of rows it answered, by the ids it
answered with: ``POST /feedback`` with ``{"labels": [{"id": ..., "label": ...}, ...]}`` (or one
``{"id": ..., "label": ...}``), the shape the load driver sends to a target's ``feedback:`` URL.
When that URL passes the proxy, a shadow or a split given its path (``"feedback": "/feedback"``)
reads each such request's labels as it relays it, on the recorder's thread, and writes them as
Parquet part files ``_labels/part-000001.parquet`` and on (``id`` as text, ``label``, ``time``), so
a shadow's or a canary's labels join its recorded rows by id with no labels file.

The request still goes to the service (the split routes it by its key, like any other: a header
or the client's address; a feedback body has no rows, so with a column key it goes to the
primary), and it
is neither copied to a shadow's candidate nor counted in a split's figures: it is not a prediction.
A body that is not labels is a drop, counted by its reason.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from chaosml.proxy.recording import QUEUE, Recording, frame_of, loads, write_part
from chaosml.proxy.toxics import ApiError

FOLDER = "_labels"  # under the recording's folder: "_", so dataset readers of its rows skip it
BAD_PATH = "invalid attribute 'feedback': expected a path starting with / (the feedback endpoint's)"


def feedback_path(body: dict[str, Any]) -> str | None:
    """The ``feedback`` field of a shadow's or a split's body: a path, or None."""
    value = body.get("feedback")
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or "?" in value:
        raise ApiError(BAD_PATH, 400)
    return value


def pairs_of(body: Any) -> list[tuple[str, Any]]:
    """The ``(id, label)`` pairs of a feedback body (``ValueError`` if it holds none)."""
    items = body.get("labels") if isinstance(body, dict) and "labels" in body else [body]
    if not isinstance(items, list):
        raise ValueError("labels is not a list")
    pairs = []
    for item in items:
        if not isinstance(item, dict) or "id" not in item or "label" not in item:
            raise ValueError("a label without id or label")
        if item["id"] is None or item["label"] is None:
            continue
        pairs.append((str(item["id"]), item["label"]))
    return pairs


class Labels(Recording):
    """The feedback labels a shadow or a split met, as part files under ``folder``."""

    def __init__(self, folder: Path, path: str, flush: float) -> None:
        self.folder, self.path = folder, path
        self.target = path.encode()
        self.requests = 0  # feedback requests read
        self.parts = 0
        self._pending: list[tuple[int, dict[str, Any]]] = []
        super().__init__(Counter(), flush, size=QUEUE * 4, name="chaosml-feedback")

    def matches(self, method: bytes, url: bytes) -> bool:
        """Whether a request is feedback: a POST to the path (with any query)."""
        return method == b"POST" and url.split(b"?", 1)[0] == self.target

    def counts(self) -> dict[str, Any]:
        drops, rows = self.counted()
        with self._lock:
            requests, parts = self.requests, self.parts
        return {
            "path": self.path,
            "folder": str(self.folder),
            "requests": requests,
            "labels": rows,
            "parts": parts,
            "dropped": sum(drops.values()),
            "drops": drops,
            "error": self.error,
        }

    def decode(self, item: tuple[bytes, float]) -> None:
        body, when = item
        try:
            pairs = pairs_of(loads(body))
        except (ValueError, TypeError):
            self.drop("feedback unreadable")
            return
        with self._lock:
            self.requests += 1
        if pairs:
            ids, labels = zip(*pairs, strict=True)
            n = len(ids)
            self._pending.append((n, {"id": list(ids), "label": list(labels), "time": [when] * n}))

    def write(self) -> None:
        import pyarrow as pa

        if not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            frame = frame_of(pending)
            try:
                table = pa.Table.from_pandas(frame, preserve_index=False)
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # labels of mixed types: as text
                frame["label"] = [None if v is None else str(v) for v in frame["label"]]
                table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            self.drop(f"labels unwritable: {type(exc).__name__}", len(pending))
            return
        error = write_part(self.folder, self.parts + 1, table)
        if error is not None:
            self.error = error
            self.drop("not written", len(pending))
            return
        with self._lock:
            self.parts += 1
        self.count_rows(table.num_rows)
