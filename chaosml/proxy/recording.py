"""What a shadow and a split record, written on a thread of their own: the bodies read as
``json.loads`` reads them, the batches' columns as one frame, and Parquet part files written whole.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from chaosml.codecs import Batch, Outputs

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

QUEUE = 256  # copies waiting for a shadow's candidate (a recorder holds four times as many)
IDLE = object()  # nothing arrived before the next flush was due
PART = "part-{:06d}.parquet"
# A run of 20 digits (after every digit is made a "9"): an integer orjson might read as a float.
# ``translate`` and ``find`` cost a tenth of a regular expression's search here.
DIGITS_AS_NINES = bytes.maketrans(b"0123456789", b"9" * 10)
LONG_DIGITS = b"9" * 20


def loads(body: bytes) -> Any:
    """``json.loads(body)``, parsed by orjson where it can (several times faster on the
    recorder's thread). ``json`` reads what orjson refuses (NaN, Infinity, UTF-16) and what it
    would read otherwise (an integer beyond 64 bits becomes a float there: any run of 20 digits
    is left to ``json``), so a body is recorded as ``json.loads`` would have read it."""
    if body.translate(DIGITS_AS_NINES).find(LONG_DIGITS) < 0:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(body)


def _piece(n: int, values: Any) -> np.ndarray:
    """A batch's column as an object array of ``n`` cells (``values`` None: all null)."""
    if isinstance(values, np.ndarray) and values.dtype == object and values.shape == (n,):
        return values  # the codec's own column: copied once, by the concatenation
    piece = np.empty(n, dtype=object)
    if values is not None:
        piece[:] = list(values)
    return piece


def frame_of(parts: list[tuple[int, dict[str, Any]]]) -> pd.DataFrame:
    """One frame of many batches' columns (a column a batch lacks is null there)."""
    import pandas as pd

    names = list(dict.fromkeys(name for _, columns in parts for name in columns))
    joined = {
        name: np.concatenate([_piece(n, columns.get(name)) for n, columns in parts])
        for name in names
    }
    return pd.DataFrame(joined).infer_objects()


def numbers_as_float(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its numeric columns as float64: one schema whatever a batch held."""
    import pandas as pd

    for name in frame.columns:
        kind = frame[name].dtype
        if pd.api.types.is_numeric_dtype(kind) and not pd.api.types.is_bool_dtype(kind):
            frame[name] = frame[name].astype("float64")
    return frame


def nullable_floats(values: list[Any]) -> Any:
    """Scores (None where missing) as float64 with NaN."""
    import pandas as pd

    return pd.array(values, dtype="Float64").astype("float64")


def write_part(folder: Path, index: int, table: pa.Table) -> str | None:
    """``table`` written as part ``index`` of ``folder``: under a hidden name, then renamed whole,
    so a reader never sees half a part. None, or why it could not be written."""
    import pyarrow.parquet as pq

    name = PART.format(index)
    temporary = folder / f".{name}.tmp"  # dot-named: dataset readers skip it
    try:
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, temporary)
        os.replace(temporary, folder / name)
    except OSError as exc:
        return f"cannot write {folder}: {exc}"
    return None


def rows_with_ids(batch: Batch, outputs: Outputs) -> dict[str, Any]:
    """The request's columns, with an ``id`` column first when the answer carries ``ids``."""
    ids = outputs.layout.get("extra", {}).get("ids")
    columns = dict(batch.columns)
    n = len(batch)
    if isinstance(ids, list) and len(ids) == n and "id" not in columns:
        columns = {"id": np.asarray([str(i) for i in ids], dtype=object), **columns}
    return columns


class Recording:
    """Items decoded and written on a thread of its own, behind a bounded queue: ``put`` never
    waits (a full queue is a drop, counted), ``decode`` runs per item and ``write`` every
    ``flush`` seconds and once more at ``close``. Subclasses say what an item is and where it goes.
    """

    def __init__(self, drops: Counter[str], flush: float, *, size: int, name: str) -> None:
        self.drops, self.flush = drops, flush
        self.queue: queue.Queue[Any] = queue.Queue(size)
        self.rows = 0
        self.error: str | None = None
        self.closed = False
        self._lock = threading.Lock()  # the counters, shared with the loop's thread
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: Any) -> None:
        if self.closed:
            self.drop("after stop")
            return
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.drop("recorder behind")

    def drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.drops[reason] += n

    def counted(self) -> tuple[dict[str, int], int]:
        """The drops by reason and the rows written, read together."""
        with self._lock:
            return dict(sorted(self.drops.items())), self.rows

    def close(self) -> None:
        """Write what is pending and stop the thread (blocks: call it off the loop)."""
        self.closed = True
        while self._thread.is_alive():
            try:
                self.queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join()

    def decode(self, item: Any) -> None:
        raise NotImplementedError

    def write(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """After the last ``write``: close what is open."""

    def _run(self) -> None:
        last = time.monotonic()
        while True:
            try:
                item = self.queue.get(timeout=max(self.flush - (time.monotonic() - last), 0.01))
            except queue.Empty:
                item = IDLE
            if item is None:
                break
            if item is not IDLE:
                try:
                    self.decode(item)
                except Exception as exc:  # the thread must outlive any one odd exchange
                    self.drop(f"not recorded: {type(exc).__name__}")
            if time.monotonic() - last >= self.flush:
                self._write()
                last = time.monotonic()
        self._write()
        self.finish()

    def _write(self) -> None:
        try:
            self.write()
        except Exception as exc:  # as in decode: counted, the thread goes on
            self.drop(f"not written: {type(exc).__name__}")

    def count_rows(self, n: int) -> None:
        with self._lock:
            self.rows += n
