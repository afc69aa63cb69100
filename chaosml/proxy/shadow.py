"""A proxy's shadow: each HTTP request with a body that the primary answered 2xx is sent again to
a candidate upstream, off the client's path, and both answers are recorded with the request's rows.

The client's exchange only offers a copy (``Mirror.offer``, never waiting): it goes into a bounded
queue, and a few worker tasks send it to the candidate with a timeout. A copy that finds the queue
full, a candidate that fails, answers late, answers non-2xx or answers what the codec cannot read
is a drop, counted by its reason (``Mirror.counts``), never silent. Decoding and writing Parquet run
on one recorder thread, behind a bounded queue of its own.

Recorded under ``folder``, row-aligned, decoded and checked every ``flush`` seconds and written
in row groups of ``ROW_GROUP`` rows (the rest when the shadow stops):
``rows.parquet`` (the request's rows as the codec decodes them, with an ``id`` column when the
primary's answer carries ``ids``), ``primary.parquet`` and ``candidate.parquet`` (``prediction``
and ``score``): a valid ``--data`` and two predictions files for ``slices compare``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaosml.codecs import CODECS, Codec, CodecError
from chaosml.proxy.feedback import FOLDER, Labels
from chaosml.proxy.http import Head, serialize_head
from chaosml.proxy.recording import (
    QUEUE,
    Recording,
    frame_of,
    loads,
    nullable_floats,
    numbers_as_float,
    rows_with_ids,
    write_part,
)
from chaosml.proxy.upstream import Pool, Upstream

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

FILES = ("rows", "primary", "candidate")
CONCURRENCY = 4  # calls to the candidate at once
TIMEOUT = 1.0  # seconds the candidate has to answer a copy
FLUSH = 2.0  # seconds between flushes: the rows decoded, checked and held as Arrow tables
REFUSALS = 3  # refused connections in a row before the candidate is left alone for a while
BACKOFF = 5.0  # seconds, the longest such pause
LIVE = "_live"  # the live view's parts, under the folder
ROW_GROUP = 65_536  # rows held before they are written out as one row group (and at close)


class Recorder(Recording):
    """The recorded pairs: decoded and written to Parquet on a thread of its own. Rows count
    as recorded once a flush has checked them against the files' schema; a write that then fails
    takes them off again."""

    def __init__(
        self, folder: Path, codec: Codec, drops: Counter[str], flush: float, *, live: bool = False
    ) -> None:
        self.folder, self.codec, self.live = folder, codec, live
        self.live_parts = 0
        self.live_error: str | None = None
        self._pending: dict[str, list[tuple[int, dict[str, Any]]]] = {n: [] for n in FILES}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._held: dict[str, list[pa.Table]] = {n: [] for n in FILES}  # written, not yet out
        self._held_exchanges = self._held_rows = 0
        super().__init__(drops, flush, size=QUEUE * 4, name="chaosml-shadow")

    def decode(self, item: tuple[bytes, bytes, bytes]) -> None:
        self._decode(*item)

    def finish(self) -> None:
        self._spill()
        for writer in self._writers.values():
            writer.close()

    def _decode(self, request: bytes, primary: bytes, candidate: bytes) -> None:

        try:
            batch = self.codec.decode_request(loads(request))
            first = self.codec.decode_response(loads(primary))
        except (CodecError, ValueError, TypeError, KeyError):
            self.drop("primary exchange unreadable")
            return
        try:
            second = self.codec.decode_response(loads(candidate))
        except (CodecError, ValueError, TypeError, KeyError):
            self.drop("candidate answer unreadable")
            return
        n = len(batch)
        if len(first.predictions) != n:
            self.drop("primary answer misaligned")
            return
        if len(second.predictions) != n or (second.scores is not None and len(second.scores) != n):
            self.drop("candidate answer misaligned")
            return
        columns = rows_with_ids(batch, first)
        self._pending["rows"].append((n, columns))  # frames are built once per flush: cheaper
        for name, outputs in (("primary", first), ("candidate", second)):
            scores = outputs.scores if outputs.scores is not None else [None] * n
            pair = {"prediction": list(outputs.predictions), "score": list(scores)}
            self._pending[name].append((n, pair))

    def write(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._pending["rows"]:
            return
        # taken before anything can fail: what one flush could not write is never tried again
        pending, self._pending = self._pending, {name: [] for name in FILES}
        try:
            frames = {name: frame_of(parts) for name, parts in pending.items()}
            numbers_as_float(frames["rows"])
            for name in ("primary", "candidate"):
                frames[name]["score"] = nullable_floats(frames[name]["score"].tolist())
        except (TypeError, ValueError) as exc:
            self.drop(f"rows unwritable: {type(exc).__name__}", len(pending["rows"]))
            return
        tables = {}
        try:
            for name, frame in frames.items():
                table = pa.Table.from_pandas(frame, preserve_index=False)
                writer = self._writers.get(name)
                if writer is not None:
                    table = table.select(writer.schema.names).cast(writer.schema)
                tables[name] = table
        except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError, ValueError):
            self.drop("rows of another schema")
            return
        try:
            for name, table in tables.items():
                if name not in self._writers:  # opened at once: a folder's error shows early
                    self.folder.mkdir(parents=True, exist_ok=True)
                    self._writers[name] = pq.ParquetWriter(
                        self.folder / f"{name}.parquet", table.schema
                    )
        except OSError as exc:
            self.error = f"cannot write {self.folder}: {exc}"
            self.drop("not written", len(pending["rows"]))
            return
        if self.live:
            self._live_part(tables)
        for name, table in tables.items():
            self._held[name].append(table)
        self._held_exchanges += len(pending["rows"])
        self._held_rows += len(frames["rows"])
        self.count_rows(len(frames["rows"]))
        if self._held_rows >= ROW_GROUP:
            self._spill()

    def _live_part(self, tables: dict[str, pa.Table]) -> None:
        """This flush's rows with both answers (``primary.prediction``, ``candidate.score``, ...)
        as one more part under ``_live/``, for a running shadow's live view (the files above are
        readable only once closed); its reader removes each part once read."""
        try:  # the live view never costs the recording
            table = tables["rows"]
            for name in ("primary", "candidate"):
                for column in ("prediction", "score"):
                    table = table.append_column(f"{name}.{column}", tables[name].column(column))
            error = write_part(self.folder / LIVE, self.live_parts + 1, table)
        except Exception as exc:  # e.g. a column Arrow cannot append
            error = f"{type(exc).__name__}: {exc}"
        if error is None:
            self.live_parts += 1
        else:
            self.live_error = error

    def _spill(self) -> None:
        """The flushes held so far, written as one row group per file. A ``ParquetWriter``
        keeps every row group's metadata in memory until it closes (some KB per row group and
        file), so a row group every flush would grow by megabytes an hour; held as Arrow tables
        (compact) up to ``ROW_GROUP`` rows, it grows by that much in a day."""
        import pyarrow as pa

        exchanges, rows = self._held_exchanges, self._held_rows
        if not rows:
            return
        held, self._held = self._held, {name: [] for name in FILES}
        self._held_exchanges = self._held_rows = 0
        try:
            for name, tables in held.items():
                table = pa.concat_tables(tables)
                self._writers[name].write_table(table, row_group_size=table.num_rows)
        except OSError as exc:
            self.error = f"cannot write {self.folder}: {exc}"
            self.drop("not written", exchanges)
            self.count_rows(-rows)


class Unconnected(OSError):
    """The candidate could not be connected to (what the back-off counts)."""


class Mirror:
    """A proxy's copies to ``candidate`` (``host:port``), recorded under ``folder``."""

    def __init__(
        self,
        candidate: str,
        codec: str,
        folder: Path,
        *,
        timeout: float = TIMEOUT,
        size: int = QUEUE,
        concurrency: int = CONCURRENCY,
        flush: float = FLUSH,
        path: str | None = None,
        feedback: str | None = None,
        live: bool = False,
        lease: float | None = None,
    ) -> None:
        self.candidate, self.codec, self.folder, self.timeout = candidate, codec, folder, timeout
        self.lease, self.expires_at = lease, None if lease is None else time.monotonic() + lease
        self.path = path  # the candidate's path for every copy (None: the request's own)
        self.mirrored = 0  # copies offered
        self.answered = 0  # copies the candidate answered 2xx
        self.drops: Counter[str] = Counter()
        self._queue: asyncio.Queue[tuple[Head, bytes, bytes]] = asyncio.Queue(size)
        self._pool = Pool(candidate)
        self._concurrency = concurrency
        self._refusals = 0  # connections the candidate refused in a row
        self._down_until = 0.0  # monotonic time until which copies are not tried
        self._workers: list[asyncio.Task[None]] = []
        self.recorder = Recorder(folder, CODECS[codec], self.drops, flush, live=live)
        # the feedback labels met on their way to the service (``chaosml.proxy.feedback``)
        self.labels = None if feedback is None else Labels(folder / FOLDER, feedback, flush)

    def renew(self, lease: float | None) -> None:
        """The lease renewed (for ``lease`` seconds, if given; else for the one it had)."""
        if lease is not None:
            self.lease = lease
        self.expires_at = None if self.lease is None else time.monotonic() + self.lease

    def lapsed(self, now: float) -> bool:
        """Whether the lease ran out by ``now`` (monotonic): the shadow is then removed."""
        return self.expires_at is not None and now >= self.expires_at

    def start(self) -> None:
        self._workers = [asyncio.ensure_future(self._work()) for _ in range(self._concurrency)]

    def drop(self, reason: str) -> None:
        self.recorder.drop(reason)

    def offer(self, head: Head, request: bytes, status: int, answer: bytes) -> None:
        """A copy of an exchange the client was answered: queued, or counted as dropped."""
        self.mirrored += 1
        if not 200 <= status < 300:
            self.drop("primary answered non-2xx")
            return
        if self._down_until and time.monotonic() < self._down_until:
            self.drop("candidate down")
            return
        try:
            self._queue.put_nowait((head, request, answer))
        except asyncio.QueueFull:
            self.drop("queue full")

    def counts(self) -> dict[str, Any]:
        drops, rows = self.recorder.counted()
        return {
            "candidate": self.candidate,
            "codec": self.codec,
            "path": self.path,
            "folder": str(self.folder),
            "mirrored": self.mirrored,
            "answered": self.answered,
            "recorded_rows": rows,
            "dropped": sum(drops.values()),
            "drops": drops,
            "error": self.recorder.error,
            "feedback": None if self.labels is None else self.labels.counts(),
            "lease": self.lease,
            "live": None
            if not self.recorder.live
            else {
                "folder": str(self.folder / LIVE),
                "parts": self.recorder.live_parts,
                "error": self.recorder.live_error,
            },
        }

    async def close(self) -> dict[str, Any]:
        """Stop: copies still queued get ``timeout`` to be answered, then the rest are dropped;
        the files are closed whole. The final counts."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), self.timeout + 0.5)
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        left = self._queue.qsize()
        if left:
            self.recorder.drop("unsent at stop", left)
        self._pool.close()
        await asyncio.to_thread(self.recorder.close)
        if self.labels is not None:
            await asyncio.to_thread(self.labels.close)
        return self.counts()

    async def _work(self) -> None:
        while True:
            head, request, primary = await self._queue.get()
            try:
                status, answer = await asyncio.wait_for(self._call(head, request), self.timeout)
            except TimeoutError:
                self.drop("candidate timeout")
            except Unconnected:
                self.drop("candidate error")
                self._refused()
            except (OSError, ValueError, asyncio.IncompleteReadError):
                self.drop("candidate error")
            else:
                self._refusals = 0
                if 200 <= status < 300:
                    self.answered += 1
                    self.recorder.put((request, primary, answer))
                else:
                    self.drop("candidate answered non-2xx")
            finally:
                self._queue.task_done()

    def _refused(self) -> None:
        """A candidate that refuses ``REFUSALS`` connections in a row is left alone for a while
        (0.1 s, doubling up to ``BACKOFF`` s): copies offered meanwhile are dropped at once as
        "candidate down", so a dead candidate costs the primary's loop no connect per request.
        The next copy after the pause tries again; an answer ends the pause."""
        self._refusals += 1
        if self._refusals >= REFUSALS:
            pause = min(0.1 * 2 ** min(self._refusals - REFUSALS, 8), BACKOFF)
            self._down_until = time.monotonic() + pause

    async def _call(self, head: Head, request: bytes) -> tuple[int, bytes]:
        conn: Upstream | None = self._pool.take()
        for attempt in (0, 1):
            if conn is None:
                try:
                    conn = await self._pool.open()
                except OSError as exc:  # refused, or no address of the name answered
                    raise Unconnected(str(exc)) from exc
            try:
                sent = head
                if self.path is not None:
                    sent = copy.copy(head)
                    sent.url = self.path.encode()
                conn.writer.write(serialize_head(sent, length=len(request)) + request)
                await conn.writer.drain()
                answer = await conn.parser.head()
                if answer is None:
                    raise ConnectionError("the candidate closed the connection")
                pieces = []
                while (piece := await conn.parser.piece()) is not None:
                    pieces.append(piece)
            except (OSError, ValueError):
                conn.close()
                if attempt or not conn.reused:
                    raise
                conn = None  # a stale keep-alive connection: once more on a fresh one
                continue
            except BaseException:
                conn.close()
                raise
            self._pool.give(conn, answer.keep_alive)
            return answer.status, b"".join(pieces)
        raise AssertionError("unreachable")
