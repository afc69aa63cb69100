"""A proxy's split (a canary release): each HTTP request goes to the primary (the proxy's upstream)
or to a candidate, by a sticky key, so one user keeps one version while the weight rises.

Routing: the request's key (a header, a feature column of its first row as the codec decodes it,
or else the client's address) is hashed (BLAKE2b, the same in every process) to a bucket in
``[0, 10000)``; the candidate takes the request iff its bucket is below ``weight * 10000``. So a
key keeps its arm at a given weight, and a key on the candidate at 5% is still on it at 25%. A
request whose key cannot be read (no such header, a body that does not decode or lacks the column)
goes to the primary and is counted by its reason.

Lease: unless renewed (``PATCH``) within ``lease`` seconds, the split's effective weight is 0 and
stays 0 (``expired``), checked on every request and by the control API's reaper: a canary
controller that dies leaves all traffic on the primary.

Figures per arm (requests, answers by status class, unreachable upstreams, a latency histogram)
are kept on the event loop's thread with a few additions per request. With a ``folder``, each
answered request with rows is recorded by a thread of its own (``chaosml.proxy.recording.Recording``)
as Parquet part files, ``part-000001.parquet`` and on, one per flush, each written under a
temporary name and renamed whole: a reader never sees half a part.
"""

from __future__ import annotations

import bisect
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from hashlib import blake2b
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from chaosml.codecs import CODECS, Codec, CodecError
from chaosml.proxy.feedback import FOLDER, Labels, feedback_path
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
from chaosml.proxy.shadow import FLUSH
from chaosml.proxy.toxics import ApiError, typed

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pyarrow as pa

BUCKETS = 10_000  # the weight's resolution: 0.01%
ARMS = ("primary", "candidate")
# Latency bucket bounds in seconds: 24 per decade from 100 µs to 100 s (each 10% wider than the
# last), so a quantile read from the histogram is within ~10% of the exact one.
BOUNDS = tuple(10 ** (k / 24) for k in range(-96, 49))
PROMETHEUS_BOUNDS = BOUNDS[::8]  # a coarser subset for /metrics (cumulative counts stay exact)
# the proxy's own part columns; ``key``: the request's key as 16 hex digits of its BLAKE2b-64
# digest (one user's rows share it, and the user's own value is not written down)
RECORDED = ("arm", "status", "prediction", "score", "time", "key")
KEY_KINDS = ("header", "column")
FIELDS = ("candidate", "weight", "key", "lease", "folder", "codec", "feedback")
CHANGES = ("weight", "lease")

BAD_KEY = (
    'invalid attribute \'key\': expected {"header": NAME}, {"column": NAME} or null '
    "(null: the client's address)"
)
BAD_WEIGHT = "invalid attribute '{name}': expected a number from 0 to 1"
BAD_LEASE = "invalid attribute 'lease': expected seconds > 0 (or null: no lease)"
BAD_FOLDER = "invalid attribute 'folder': expected an absolute path"
USED_FOLDER = "invalid attribute 'folder': {folder} already holds recorded parts; give a new folder"
NEEDS_CODEC = "'codec' is needed for a column key and for recording: one of {codecs}"
UNKNOWN_FIELD = "unknown field '{name}': expected {expected}"
EXPIRED = "the split's lease ran out (all traffic is on the primary): delete it and set a new one"


def bucket(key: bytes) -> int:
    """The key's bucket in ``[0, BUCKETS)``: the same in every process and on every machine."""
    return int.from_bytes(blake2b(key, digest_size=8).digest(), "big") % BUCKETS


def key_digest(key: bytes) -> str:
    """The key as recorded: its BLAKE2b-64 digest in hex."""
    return blake2b(key, digest_size=8).hexdigest()


def key_bytes(value: Any) -> bytes | None:
    """A decoded cell as key bytes: ``17``, ``17.0`` and ``"17"`` are one user; None if null."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).encode()


@dataclass(frozen=True)
class Key:
    """Where a request's key comes from: a header, a column, or (``kind`` None) the address."""

    kind: Literal["header", "column"] | None = None
    name: str = ""

    @property
    def header(self) -> bytes:
        return self.name.lower().encode("latin-1")

    def to_json(self) -> dict[str, str] | None:
        return None if self.kind is None else {self.kind: self.name}


class Latency:
    """A fixed-bucket histogram of seconds: one ``bisect`` per observation."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)  # the last: beyond the largest bound
        self.count = 0
        self.sum = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BOUNDS, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile, interpolated within its bucket (None before any observation)."""
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for index, n in enumerate(self.counts):
            if n and seen + n >= rank:
                low = BOUNDS[index - 1] if index else 0.0
                high = BOUNDS[index] if index < len(BOUNDS) else BOUNDS[-1]
                return low + (high - low) * max(rank - seen, 0) / n
            seen += n
        return BOUNDS[-1]

    def cumulative(self, bounds: tuple[float, ...]) -> list[tuple[str, int]]:
        """Prometheus buckets: the count at or below each of ``bounds`` (among ``BOUNDS``)."""
        out, seen, index = [], 0, 0
        for bound in bounds:
            while index < len(BOUNDS) and BOUNDS[index] <= bound:
                seen += self.counts[index]
                index += 1
            out.append((repr(bound), seen))
        out.append(("+Inf", self.count))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sum": self.sum,
            "p50": self.quantile(0.5),
            "p95": self.quantile(0.95),
            "counts": list(self.counts),  # per bucket: above the one before, up to BOUNDS[i]
        }


@dataclass
class Arm:
    """One side of a split and its figures since the split was set."""

    name: str
    address: str | None  # None: the proxy's upstream, whatever it is now
    requests: int = 0
    classes: list[int] = field(default_factory=lambda: [0] * 6)  # answers by status // 100
    unreachable: int = 0  # requests answered 502 by the proxy: the upstream could not be reached
    latency: Latency = field(default_factory=Latency)

    def answered(self, status: int, seconds: float) -> None:
        self.classes[min(status // 100, 5)] += 1
        self.latency.add(seconds)

    @property
    def answers(self) -> dict[str, int]:
        """Answers by status class (``1xx`` only if there were any)."""
        shown = {f"{k}xx": n for k, n in enumerate(self.classes) if k >= 2 or (k == 1 and n)}
        return shown

    def failed(self, seconds: float) -> None:
        self.unreachable += 1
        self.latency.add(seconds)

    def to_json(self, upstream: str) -> dict[str, Any]:
        answers = self.answers
        return {
            "address": self.address or upstream,
            "requests": self.requests,
            "answers": answers,
            "unreachable": self.unreachable,
            "errors": answers["5xx"] + self.unreachable,
            "latency": self.latency.to_json(),
        }


@dataclass(kw_only=True)
class Split:
    """A proxy's traffic split between its upstream (the primary) and ``candidate``."""

    candidate: str
    weight: float
    key: Key = field(default_factory=Key)
    lease: float | None = None
    codec: str | None = None
    folder: Path | None = None
    flush: float = FLUSH
    feedback: str | None = None  # the feedback endpoint's path, whose labels are recorded
    since: float = field(default_factory=time.time)
    expires_at: float | None = field(default=None, init=False)
    expired: bool = field(default=False, init=False)
    threshold: int = field(init=False)  # buckets below it go to the candidate
    primary: Arm = field(init=False)
    second: Arm = field(init=False)
    keyed: Counter[str] = field(default_factory=Counter, init=False)  # by where the key came from
    unkeyed: Counter[str] = field(default_factory=Counter, init=False)  # by why none was read
    recorder: Parts | None = field(default=None, init=False)
    labels: Labels | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.primary, self.second = Arm("primary", None), Arm("candidate", self.candidate)
        self.change(self.weight, self.lease)
        if self.folder is not None:
            assert self.codec is not None
            self.recorder = Parts(self.folder, CODECS[self.codec], self.flush)
            if self.feedback is not None:
                self.labels = Labels(self.folder / FOLDER, self.feedback, self.flush)

    @property
    def holds(self) -> bool:
        """Whether a request's body is held whole (to read its key, or to record it)."""
        return self.key.kind == "column" or self.recorder is not None

    def change(self, weight: float | None, lease: float | None) -> None:
        """A new weight (if given), and the lease renewed (for ``lease`` seconds, if given)."""
        if weight is not None:
            self.weight = weight
            self.threshold = round(weight * BUCKETS)
        if lease is not None:
            self.lease = lease
        self.expires_at = None if self.lease is None else time.monotonic() + self.lease

    def live(self, now: float) -> bool:
        """Whether the lease still holds at ``now`` (monotonic); once run out, it stays out."""
        if not self.expired and self.expires_at is not None and now >= self.expires_at:
            self.expired = True
        return not self.expired

    def arm_of(self, key: bytes | None) -> Arm:
        """The arm a key goes to now (no key: the primary's)."""
        if key is None:
            return self.primary
        live = self.expires_at is None or self.live(time.monotonic())
        return self.second if live and bucket(key) < self.threshold else self.primary

    def route(self, key: bytes | None, source: str) -> Arm:
        """The arm for a request whose key is ``key`` (None: unread, ``source`` says why),
        counted."""
        (self.unkeyed if key is None else self.keyed)[source] += 1
        arm = self.arm_of(key)
        arm.requests += 1
        return arm

    def record(
        self, arm: Arm, status: int, request: bytes, answer: bytes, key: bytes | None = None
    ) -> None:
        if self.recorder is not None:
            self.recorder.put((arm.name, status, request, answer, time.time(), key))

    def unrecorded(self, reason: str) -> None:
        if self.recorder is not None:
            self.recorder.drop(reason)

    def to_json(self, upstream: str) -> dict[str, Any]:
        """The split's state: its settings, the lease, and the figures per arm."""
        now = time.monotonic()
        live = self.live(now)
        left = None if self.expires_at is None else max(self.expires_at - now, 0.0)
        return {
            "candidate": self.candidate,
            "primary": upstream,
            "weight": self.weight,
            "effective_weight": self.weight if live else 0.0,
            "key": self.key.to_json(),
            "codec": self.codec,
            "lease": self.lease,
            "expires_in": left,
            "expired": not live,
            "since": self.since,
            "folder": None if self.folder is None else str(self.folder),
            "arms": {arm.name: arm.to_json(upstream) for arm in (self.primary, self.second)},
            "keys": {
                "keyed": dict(sorted(self.keyed.items())),
                "unkeyed": dict(sorted(self.unkeyed.items())),
            },
            "recording": None if self.recorder is None else self.recorder.counts(),
            "feedback": None if self.labels is None else self.labels.counts(),
        }

    def close(self) -> None:
        """Stop recording: what is pending is written (blocks: call it off the loop)."""
        if self.recorder is not None:
            self.recorder.close()
        if self.labels is not None:
            self.labels.close()


class Parts(Recording):
    """The split's recording: each answered request's rows with its arm, status, predictions and
    scores, written every ``flush`` seconds as one more whole part file under ``folder``."""

    def __init__(self, folder: Path, codec: Codec, flush: float) -> None:
        self.folder, self.codec = folder, codec
        self.parts = 0
        self.requests = 0  # requests recorded
        self.unpredicted: Counter[str] = Counter()  # rows recorded without a prediction, by why
        self._pending: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
        self._schema: pa.Schema | None = None
        super().__init__(Counter(), flush, size=QUEUE * 4, name="chaosml-split")

    def counts(self) -> dict[str, Any]:
        drops, rows = self.counted()
        with self._lock:
            unpredicted = dict(sorted(self.unpredicted.items()))
            parts, requests = self.parts, self.requests
        return {
            "folder": str(self.folder),
            "requests": requests,
            "rows": rows,
            "parts": parts,
            "dropped": sum(drops.values()),
            "drops": drops,
            "unpredicted": unpredicted,
            "error": self.error,
        }

    def decode(self, item: tuple[str, int, bytes, bytes, float, bytes | None]) -> None:
        arm, status, request, answer, when, key = item
        try:
            batch = self.codec.decode_request(loads(request))
        except (CodecError, ValueError, TypeError, KeyError):
            self.drop("request unreadable")
            return
        n = len(batch)
        if not n:
            self.drop("request without rows")
            return
        predictions: list[Any] = [None] * n
        scores: list[Any] = [None] * n
        columns = dict(batch.columns)
        why = None
        if not 200 <= status < 300:
            why = "non-2xx answer"
        else:
            try:
                outputs = self.codec.decode_response(loads(answer))
            except (CodecError, ValueError, TypeError, KeyError):
                why = "answer unreadable"
            else:
                if len(outputs.predictions) != n or (
                    outputs.scores is not None and len(outputs.scores) != n
                ):
                    why = "answer misaligned"
                else:
                    predictions = list(outputs.predictions)
                    if outputs.scores is not None:
                        scores = list(outputs.scores)
                    columns = rows_with_ids(batch, outputs)
        # a feature named like one of the proxy's columns is kept, renamed
        columns = {(f"request_{k}" if k in RECORDED else k): v for k, v in columns.items()}
        recorded: dict[str, list[Any]] = {
            "arm": [arm] * n,
            "status": [status] * n,
            "prediction": predictions,
            "score": scores,
            "time": [when] * n,
            "key": [None if key is None else key_digest(key)] * n,
        }
        self._pending.append((n, columns, recorded))
        with self._lock:
            self.requests += 1
            if why is not None:
                self.unpredicted[why] += n

    def write(self) -> None:
        import pyarrow as pa

        if not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            rows = numbers_as_float(frame_of([(n, columns) for n, columns, _ in pending]))
            outputs = frame_of([(n, recorded) for n, _, recorded in pending])
            numbers_as_float(outputs)
            outputs["score"] = nullable_floats(outputs["score"].tolist())
        except (TypeError, ValueError) as exc:  # e.g. scores that are not numbers
            self.drop(f"rows unwritable: {type(exc).__name__}", len(pending))
            return
        outputs["status"] = outputs["status"].astype("int64")
        if outputs["prediction"].isna().all():  # none answered: typed as numbers would be
            outputs["prediction"] = outputs["prediction"].astype("float64")
        try:
            table = pa.Table.from_pandas(rows, preserve_index=False)
            for name in RECORDED:
                kind = pa.string() if name == "key" else None  # all null is still text
                column = pa.array(outputs[name], type=kind, from_pandas=True)
                table = table.append_column(name, column)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            self.drop(f"rows unwritable: {type(exc).__name__}", len(pending))
            return
        table = self._conformed(table)
        if not self._part(table):
            self.drop("not written", len(pending))
            return
        self.count_rows(table.num_rows)

    def _conformed(self, table: pa.Table) -> pa.Table:
        """``table`` in the first part's schema where it casts to it (so the folder reads as one
        dataset); as it is otherwise (each part stays readable by itself)."""
        import pyarrow as pa

        if self._schema is None:
            self._schema = table.schema
            return table
        if set(table.schema.names) != set(self._schema.names):
            return table
        try:
            return table.select(self._schema.names).cast(self._schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            return table

    def _part(self, table: pa.Table) -> bool:
        """Write ``table`` as the next part, whole."""
        error = write_part(self.folder, self.parts + 1, table)
        if error is not None:
            self.error = error
            return False
        with self._lock:
            self.parts += 1
        return True


# --- the control API's bodies -----------------------------------------------------------------


def unknown_fields(body: dict[str, Any], known: tuple[str, ...]) -> None:
    for name in body:
        if name not in known:
            raise ApiError(UNKNOWN_FIELD.format(name=name, expected=", ".join(known)), 400)


def _weight(body: dict[str, Any], name: str = "weight") -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ApiError(BAD_WEIGHT.format(name=name), 400)
    return float(value)


def lease_from(body: dict[str, Any]) -> float | None:
    """A body's ``lease``: seconds > 0, or None (absent or null: no lease)."""
    value = body.get("lease")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ApiError(BAD_LEASE, 400)
    return float(value)


def _key(value: Any) -> Key:
    if value is None:
        return Key()
    if not isinstance(value, dict) or len(value) != 1:
        raise ApiError(BAD_KEY, 400)
    ((kind, name),) = value.items()
    if kind not in KEY_KINDS or not isinstance(name, str) or not name:
        raise ApiError(BAD_KEY, 400)
    if kind == "header":
        try:
            name.encode("latin-1")
        except UnicodeEncodeError:
            raise ApiError(BAD_KEY, 400) from None
    return Key(kind, name)


def _folder(folder: Path) -> Path:
    """The recording's folder, made if missing; refused if it holds parts of another run."""
    if folder.is_dir() and any(folder.glob("part-*.parquet")):
        raise ApiError(USED_FOLDER.format(folder=folder), 400)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ApiError(f"invalid attribute 'folder': cannot create {folder}: {exc}", 400) from exc
    return folder


def split_from(body: Any, *, proxy_codec: str, check_address: Any) -> Split:
    """A split from a ``POST /proxies/{name}/split`` body; ``ApiError`` 400 naming what is wrong.
    ``proxy_codec`` is the codec used when the body names none; ``check_address`` checks
    ``candidate``."""
    if not isinstance(body, dict):
        raise ApiError("bad request body: expected a JSON object", 400)
    unknown_fields(body, FIELDS)
    candidate = typed(body, "candidate", str, "a string")
    if not candidate:
        raise ApiError("missing required field: candidate", 400)
    check_address(candidate)
    weight = _weight(body)
    if weight is None:
        raise ApiError("missing required field: weight", 400)
    key, lease = _key(body.get("key")), lease_from(body)
    codec = typed(body, "codec", str, "a string")
    if codec is not None and codec not in CODECS:
        raise ApiError(f"invalid attribute 'codec': expected one of {', '.join(CODECS)}", 400)
    if codec is None and proxy_codec in CODECS:
        codec = proxy_codec
    folder = body.get("folder")
    if folder is not None and (not isinstance(folder, str) or not os.path.isabs(folder)):
        raise ApiError(BAD_FOLDER, 400)
    if (key.kind == "column" or folder is not None) and codec is None:
        raise ApiError(NEEDS_CODEC.format(codecs=", ".join(CODECS)), 400)
    feedback = feedback_path(body)
    if feedback is not None and folder is None:
        raise ApiError("'feedback' needs a 'folder' to record the labels in", 400)
    return Split(
        candidate=candidate,
        weight=weight,
        key=key,
        lease=lease,
        codec=codec,
        folder=None if folder is None else _folder(Path(folder)),
        feedback=feedback,
    )


def change_from(body: Any) -> tuple[float | None, float | None]:
    """The weight and lease of a ``PATCH /proxies/{name}/split`` body (each None if absent)."""
    if body is None:
        return None, None
    if not isinstance(body, dict):
        raise ApiError("bad request body: expected a JSON object", 400)
    unknown_fields(body, CHANGES)
    return _weight(body), lease_from(body)


# --- /metrics -----------------------------------------------------------------------------------


class SplitCollector:
    """The splits' figures as Prometheus series, read when scraped (nothing on the hot path)."""

    def __init__(self, proxies: dict[str, Any]) -> None:
        self.proxies = proxies

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        weight = GaugeMetricFamily(
            "chaosml_proxy_split_weight",
            "The share of keys routed to the candidate (0 once the lease ran out)",
            labels=["proxy"],
        )
        requests = CounterMetricFamily(
            "chaosml_proxy_split_requests", "Requests routed to each arm", labels=["proxy", "arm"]
        )
        answers = CounterMetricFamily(
            "chaosml_proxy_split_answers",
            "Answers per arm by status class (unreachable: the proxy answered 502)",
            labels=["proxy", "arm", "status"],
        )
        latency = HistogramMetricFamily(
            "chaosml_proxy_split_latency_seconds",
            "Time from a request's head to the end of its answer, per arm",
            labels=["proxy", "arm"],
        )
        for name, proxy in list(self.proxies.items()):
            split: Split | None = getattr(proxy, "split", None)
            if split is None:
                continue
            live = split.live(time.monotonic())
            weight.add_metric([name], split.weight if live else 0.0)
            for arm in (split.primary, split.second):
                requests.add_metric([name, arm.name], arm.requests)
                for kind, n in sorted(arm.answers.items()):
                    answers.add_metric([name, arm.name, kind], n)
                answers.add_metric([name, arm.name, "unreachable"], arm.unreachable)
                buckets = arm.latency.cumulative(PROMETHEUS_BOUNDS)
                latency.add_metric([name, arm.name], buckets, arm.latency.sum)
        yield from (weight, requests, answers, latency)
