"""A served model as a version: rows sent to an HTTP endpoint, its answers read back.

``EndpointVersion`` sends each chunk of the data in batches of ``batch`` rows, encoded by a codec
(``records``, ``mlflow``, ``kserve``, ``tfserving``), with up to ``concurrency`` requests in
flight on keep-alive connections. Answers are aligned to rows by position: a batch of N rows must
come back with N predictions, or the version fails with one line saying so. Only a connection
that could not be made or was dropped is retried (``retries`` times, backing off); an HTTP error
answer, a timeout or an answer of another shape is an error at once, since sending the same rows
again would hide it.

``slices compare ARTIFACT http://host:port/predict`` reads the served model this way and reports,
beside the paired comparison, whether the endpoint serves the artifact (``equivalence``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from chaosml.codecs import CODECS, Codec, get_codec
from chaosml.errors import CodecError, InputError, UnreachableError, VersionError

if TYPE_CHECKING:
    import http.client

    import pandas as pd

    from chaosml.data import DataSource
    from chaosml.versions import Predictions, Predictor, Scalar


def is_endpoint(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


@dataclass(kw_only=True)
class EndpointVersion:
    """A model served at ``url`` (``http://host:port/path``), read through ``codec``."""

    name: str
    url: str
    codec: str = "records"
    batch: int = 256
    concurrency: int = 4
    timeout: float = 30.0
    retries: int = 3
    columns: tuple[str, ...] | None = None  # the features sent; default every column but the label

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"{self.url}: expected an http:// or https:// URL of a /predict")
        if self.codec not in CODECS:
            get_codec(self.codec)  # the one-line error naming the codecs
        if self.batch < 1 or self.concurrency < 1 or self.retries < 0:
            raise InputError(f"{self.url}: batch and concurrency must be >= 1, retries >= 0")

    def feature_columns(
        self, table: DataSource, label: str, positive: Scalar, *, cached: bool = True
    ) -> list[str]:
        if self.columns is not None:
            table.require(list(self.columns), f"a feature sent to {self.url}")
            return list(self.columns)
        return [column for column in table.columns if column != label]

    @contextmanager
    def predictor(self, table: DataSource, label: str, positive: Scalar) -> Iterator[Predictor]:
        columns = self.feature_columns(table, label, positive)
        client = Client(self)
        try:
            yield lambda chunk: client.predict(chunk[columns], positive)
        finally:
            client.close()

    def part_predictor(self, table: DataSource, label: str, positive: Scalar) -> _EndpointRows:
        return _EndpointRows(
            endpoint=self,
            columns=tuple(self.feature_columns(table, label, positive)),
            positive=positive,
        )


@dataclass(kw_only=True)
class _EndpointRows:
    """Predictions of any rows, read from the endpoint (picklable: a worker opens its own
    connections)."""

    endpoint: EndpointVersion
    columns: tuple[str, ...]
    positive: Scalar
    _client: Client | None = field(default=None, repr=False)

    def __call__(self, rows: pd.DataFrame, start: int) -> Predictions:
        if self._client is None:
            self._client = Client(self.endpoint)
        return self._client.predict(rows[list(self.columns)], self.positive)

    def __getstate__(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "columns": self.columns, "positive": self.positive}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _client=None)


class Client:
    """Batches to one endpoint, ``concurrency`` at a time, each thread on its own keep-alive
    connection."""

    def __init__(self, endpoint: EndpointVersion) -> None:
        import http.client  # here: an endpoint is what needs it, not every import of versions
        from concurrent.futures import ThreadPoolExecutor

        self._http = http.client
        self._retried = (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine)
        self.endpoint = endpoint
        self.codec: Codec = get_codec(endpoint.codec)
        parts = urlsplit(endpoint.url)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname or "", parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(endpoint.concurrency, thread_name_prefix="chaosml-endpoint")

    def predict(self, frame: pd.DataFrame, positive: Scalar) -> Predictions:
        from chaosml.versions import Predictions, as_binary

        size = self.endpoint.batch
        starts = range(0, len(frame), size)
        answers = list(self._pool.map(lambda s: self._batch(frame.iloc[s : s + size]), starts))
        labels = [label for batch, _ in answers for label in batch]
        scores = [score for _, batch_scores in answers for score in (batch_scores or [])]
        has_scores = all(batch_scores is not None for _, batch_scores in answers) and answers
        where = f"{self.endpoint.url}: its predictions"
        return Predictions(
            as_binary(np.asarray(labels, dtype=object), positive, where),
            np.asarray(scores, dtype=np.float64) if has_scores else None,
        )

    def _batch(self, rows: pd.DataFrame) -> tuple[list[Any], list[Any] | None]:
        table = {name: rows[name].to_numpy(dtype=object) for name in rows.columns}
        body = json.dumps(self.codec.request(table), allow_nan=False).encode()
        payload = self._post(body)
        try:
            outputs = self.codec.decode_response(payload)
        except CodecError as exc:
            raise VersionError(
                f"{self.endpoint.url}: the answer is not {self.endpoint.codec}'s shape: {exc}"
            ) from exc
        if len(outputs.predictions) != len(rows) or (
            outputs.scores is not None and len(outputs.scores) != len(rows)
        ):
            raise VersionError(
                f"{self.endpoint.url}: answered {len(outputs.predictions)} predictions for a batch "
                f"of {len(rows)} rows (answers are aligned to rows by position)"
            )
        return outputs.predictions, outputs.scores

    def _post(self, body: bytes) -> Any:
        url, tries = self.endpoint.url, self.endpoint.retries + 1
        for attempt in range(tries):
            connection = self._connection()
            try:
                connection.request("POST", self._path, body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                data = response.read()
            except TimeoutError as exc:
                self._drop(connection)
                raise VersionError(
                    f"{url}: no answer within {self.endpoint.timeout:g} s (not retried)"
                ) from exc
            except self._retried as exc:
                self._drop(connection)
                if attempt + 1 == tries:
                    raise UnreachableError(
                        f"{url}: cannot reach the endpoint after {tries} tries "
                        f"({type(exc).__name__}: {exc or 'connection closed'})"
                    ) from exc
                time.sleep(0.2 * 2**attempt)
                continue
            if response.status != 200:
                text = data[:200].decode("utf-8", "replace").strip()
                raise VersionError(f"{url}: answered HTTP {response.status}: {text}")
            try:
                return json.loads(data)
            except ValueError as exc:
                raise VersionError(f"{url}: the answer is not JSON: {data[:80]!r}") from exc
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            kind = self._http.HTTPSConnection if self._https else self._http.HTTPConnection
            connection = kind(self._host, self._port, timeout=self.endpoint.timeout)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _drop(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        self._local.connection = None

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
