"""The payload pipeline: payload faults acted out on a request's rows and on a model's answers.

One pipeline serves every fault point: the proxy runs it on HTTP bodies it decoded (its codec
reads the JSON, a content coding is undone and done again), the in-service point on the columns
and answers of a predict call. A fault that raises is counted as the fault's error (the payload
then passes unchanged); a payload the codec cannot read, or whose coding or content type the
proxy does not decode, is a skip with its reason in the toxic's evidence.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import orjson

from chaosml._types import Table
from chaosml.codecs import Codec, CodecError, detect, get_codec, partial_table, patch_records
from chaosml.faults import RequestFault, ResponseFault, TransportFault
from chaosml.faults.evidence import Change, answer_changes, skip_reason, table_changes
from chaosml.proxy.http import Headers
from chaosml.proxy.metrics import ProxyMetrics
from chaosml.proxy.toxics import Toxic

try:  # br is decoded only where a well-kept library is installed
    import brotli  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - depends on the environment
    brotli = None

T = TypeVar("T")
# What a codec raises on a payload it cannot read; anything else in the payload path is a bug in a
# fault, counted as a fault error (not as an unreadable payload) so a game day can tell them apart.
UNREADABLE = (CodecError, ValueError, TypeError, KeyError, UnicodeDecodeError)
Pending = list[tuple[Toxic, int, Change, set[str]]]  # evidence to record once the payload is sent


def guarded(
    metrics: ProxyMetrics, point: str, toxic: Toxic, apply: Callable[..., T], *args: Any
) -> T | None:
    """``apply(*args)``; None if the fault failed, which is counted per fault type and in the
    toxic's evidence (the payload then passes through, as the fault could not change it)."""
    try:
        return apply(*args)
    except Exception:  # a bug in a fault must not take the service down with it
        metrics.series(metrics.fault_errors, point, toxic.type).inc()
        toxic.evidence.error()
        return None


def apply_request_faults(
    toxics: list[Toxic], columns: Table, n: int, metrics: ProxyMetrics, point: str
) -> tuple[Table, Pending]:
    """``columns`` (``n`` rows) with each request toxic applied in order, and what each changed."""
    pending: Pending = []
    for toxic in toxics:
        fault = cast(RequestFault, toxic.fault)
        changed = guarded(metrics, point, toxic, fault.apply, columns, toxic.rng)
        if changed is None:
            continue
        absent = (fault.reads() or set()) - columns.keys()
        pending.append((toxic, n, table_changes(columns, changed, n), absent))
        columns = changed
    return columns, pending


def apply_response_faults(
    toxics: list[Toxic],
    rows: Table | None,
    predictions: npt.NDArray[Any],
    scores: npt.NDArray[np.float64] | None,
    metrics: ProxyMetrics,
    point: str,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64] | None, Pending]:
    """The answers with each response toxic applied in order (``rows``: the request's rows, for
    ``where``), and what each changed. A routing toxic (``stale_model``) does not change them."""
    pending: Pending = []
    n = len(predictions)
    for toxic in toxics:
        fault = toxic.fault
        if not isinstance(fault, ResponseFault) or fault.routes:
            continue
        answer = guarded(metrics, point, toxic, fault.apply, rows, predictions, scores, toxic.rng)
        if answer is None:
            continue
        absent = set(fault.predicate.columns) if fault.predicate is not None else set()
        absent -= set(rows or ())
        pending.append((toxic, n, answer_changes(predictions, scores, *answer), absent))
        predictions, scores = answer
    return predictions, scores, pending


def acted(toxics: list[Toxic]) -> None:
    """The transport and routing toxics among ``toxics`` act on this exchange."""
    for toxic in toxics:
        if isinstance(toxic.fault, TransportFault) or toxic.fault.routes:
            toxic.evidence.act()


def record(pending: Pending) -> None:
    for toxic, n, change, absent in pending:
        toxic.evidence.change(n, change, absent)


def skip(toxics: list[Toxic], reason: str) -> None:
    for toxic in toxics:
        toxic.evidence.skip(reason)


# bodies the proxy decodes, faults and encodes again
CODINGS = ("gzip", "x-gzip", "deflate") + (("br",) if brotli is not None else ())


def decoded(body: bytes, coding: str | None) -> bytes:
    """``body`` without its content coding (``ValueError`` if it is not what it says)."""
    try:
        if coding in ("gzip", "x-gzip"):
            return gzip.decompress(body)
        if coding == "deflate":  # zlib-wrapped, as HTTP means it, or raw as some servers send
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)
        if coding == "br" and brotli is not None:
            return cast(bytes, brotli.decompress(body))
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"not a {coding} body: {exc}") from exc
    except Exception as exc:  # brotli.error
        raise ValueError(f"not a {coding} body: {exc}") from exc
    return body


def encoded_as(body: bytes, coding: str | None) -> bytes:
    """``body`` with the content coding it arrived in."""
    if coding in ("gzip", "x-gzip"):
        return gzip.compress(body, compresslevel=1, mtime=0)
    if coding == "deflate":
        return zlib.compress(body, 1)
    if coding == "br" and brotli is not None:
        return cast(bytes, brotli.compress(body, quality=1))
    return body


def coding_of(value: bytes | None) -> str | None:
    """A ``Content-Encoding`` value as a coding name (``gzip``, ...), None for identity."""
    coding = (value or b"").strip().decode("latin-1").lower()
    return None if coding in ("", "identity") else coding


def header(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def unreadable_type(headers: Headers) -> str | None:
    """The content type of a body no codec reads (an event stream, bytes, a form), None if a
    codec may read it (JSON, or no content type said)."""
    value = header(headers, b"content-type")
    if value is None:
        return None
    kind = value.partition(b";")[0].strip().decode("latin-1").lower()
    if not kind or "json" in kind or kind == "text/plain":
        return None
    return kind


@dataclass(frozen=True, kw_only=True)
class Framed:
    """What a request's payload faults left for its answer's: the rows, and the codec read."""

    table: Table | None = None
    codec: Codec | None = None


@dataclass(kw_only=True)
class Pipeline:
    """The payload faults of one fault point (``point``: its name in the metrics), with the
    codec it reads payloads with (``auto``: detected per payload)."""

    metrics: ProxyMetrics
    point: str
    codec: str = "auto"

    def _codec(self, payload: Any) -> Codec | None:
        return detect(payload) if self.codec == "auto" else get_codec(self.codec)

    def unread(self, side: str, toxics: list[Toxic], reason: str) -> None:
        """``toxics`` could not read this ``side``'s body (``request``/``response``)."""
        self.metrics.series(self.metrics.unparsed, self.point, side).inc()
        skip(toxics, reason)

    def columns(
        self, faults: list[Toxic], columns: Table
    ) -> tuple[Table, Pending]:  # the in-service point
        n = len(next(iter(columns.values()))) if columns else 0
        return apply_request_faults(faults, columns, n, self.metrics, self.point)

    def answers(
        self,
        toxics: list[Toxic],
        rows: Table | None,
        predictions: npt.NDArray[Any],
        scores: npt.NDArray[np.float64] | None,
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64] | None, Pending]:
        return apply_response_faults(toxics, rows, predictions, scores, self.metrics, self.point)

    def request(
        self,
        body: bytes,
        headers: Headers,
        faults: list[Toxic],
        readers: list[Toxic],
        reads: tuple[str, ...] | None,
    ) -> tuple[bytes | None, Framed]:
        """A request body with ``faults`` applied (None: unchanged); ``readers``: every toxic that
        reads it (``faults`` and the response faults with ``where``); ``reads``: the columns they
        read (None: all)."""
        coding = coding_of(header(headers, b"content-encoding"))
        if coding is not None and coding not in CODINGS:
            self.unread("request", readers, skip_reason("coding", f"request body {coding}"))
            return None, Framed()
        try:
            payload = orjson.loads(decoded(body, coding))
            codec = self._codec(payload)
            if codec is None:
                raise CodecError("no codec recognises the request")
            records = None if reads is None else codec.records(payload)
            if records is not None and reads is not None:  # decode only the columns read
                before = partial_table(records, reads)  # and patch them back in place
                batch = None
                n = len(records)
            else:
                batch = codec.decode_request(payload)
                before = batch.columns
                n = len(next(iter(before.values()))) if before else 0
        except UNREADABLE as exc:
            reason = skip_reason("unreadable", f"request body ({type(exc).__name__})")
            self.unread("request", readers, reason)
            return None, Framed()
        columns, pending = apply_request_faults(faults, before, n, self.metrics, self.point)
        try:
            if records is not None:
                new = orjson.dumps(payload) if patch_records(records, before, columns) else None
            elif columns is before:
                new = None
            else:
                assert batch is not None
                batch.columns = columns
                new = orjson.dumps(codec.encode_request(batch))
            new = None if new is None else encoded_as(new, coding)
        except Exception:  # the faulted values could not be sent: the fault's failure
            self.failed(pending)
            return None, Framed()
        record(pending)
        return new, Framed(table=columns, codec=codec)

    def failed(self, pending: Pending) -> None:
        for toxic, *_ in pending:
            self.metrics.series(self.metrics.fault_errors, self.point, toxic.type).inc()
            toxic.evidence.error()

    def response(
        self, status: int, headers: Headers, body: bytes, toxics: list[Toxic], framed: Framed
    ) -> bytes | None:
        """An answer's body with the response faults among ``toxics`` applied (None: unchanged)."""
        changers = [t for t in toxics if isinstance(t.fault, ResponseFault) and not t.fault.routes]
        coding = coding_of(header(headers, b"content-encoding"))
        if coding is not None and coding not in CODINGS:
            self.unread("response", changers, skip_reason("coding", f"response body {coding}"))
            return None
        try:
            payload = orjson.loads(decoded(body, coding))
            codec = framed.codec or self._codec(payload) or get_codec("records")
            outputs = codec.decode_response(payload)
            predictions = np.asarray(outputs.predictions, dtype=object)
            scores = None if outputs.scores is None else np.asarray(outputs.scores, dtype=float)
        except UNREADABLE as exc:
            why = f"HTTP {status} answer" if not 200 <= status < 300 else type(exc).__name__
            self.unread("response", changers, skip_reason("unreadable", f"response body ({why})"))
            return None
        n = len(predictions)
        table = framed.table
        rows = table if table and all(len(v) == n for v in table.values()) else None
        predictions, scores, pending = self.answers(changers, rows, predictions, scores)
        outputs.predictions = predictions.tolist()
        outputs.scores = None if scores is None else scores.tolist()
        try:
            new = encoded_as(orjson.dumps(codec.encode_response(outputs)), coding)
        except Exception:  # the faulted answers could not be sent: the fault's failure
            self.failed(pending)
            return None
        record(pending)
        return new
