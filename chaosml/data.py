"""Reading tables (Parquet, CSV, or an in-memory DataFrame) in bounded chunks.

``DataSource`` knows a source's columns and, where the format says it up front, its row count;
``DataSource.chunks`` yields DataFrames of at most ``chunk_rows`` rows with only the requested columns, so
memory does not grow with the file. ``RowReader`` hands out exactly the next ``n`` rows of a table,
which keeps a predictions file row-aligned with the data whatever their batch sizes.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from chaosml.errors import DataError

DEFAULT_CHUNK_ROWS = 1_000_000
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv"}

NOT_FOUND = "{path}: file not found"
UNKNOWN_FORMAT = "{path}: unknown data format (expected .parquet or .csv)"
MISSING_COLUMN = "{path}: no column {column!r} (columns: {available})"


@dataclass(frozen=True)
class DataSource:
    """A tabular data source: a file path or a DataFrame held in memory."""

    source: Path | pd.DataFrame
    columns: tuple[str, ...]
    num_rows: int | None  # None: not known before reading (CSV)
    categorical: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return str(self.source) if isinstance(self.source, Path) else "<DataFrame>"

    def require(self, columns: Sequence[str], what: str = "") -> None:
        for column in columns:
            if column not in self.columns:
                available = ", ".join(self.columns[:20]) + (
                    " ..." if len(self.columns) > 20 else ""
                )
                message = MISSING_COLUMN.format(path=self.name, column=column, available=available)
                raise DataError(f"{message}{f' ({what})' if what else ''}")

    def chunks(
        self, columns: Sequence[str] | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> Iterator[pd.DataFrame]:
        wanted = list(dict.fromkeys(columns)) if columns is not None else list(self.columns)
        self.require(wanted)
        if isinstance(self.source, pd.DataFrame):
            for start in range(0, max(len(self.source), 1), chunk_rows):
                yield self.source.iloc[start : start + chunk_rows][wanted]
            return
        try:
            if _format(self.source) == "parquet":
                yield from self._parquet_chunks(wanted, chunk_rows)
            else:
                yield from pd.read_csv(
                    self.source, usecols=wanted, chunksize=chunk_rows, sep=_separator(self.source)
                )
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.source}: cannot read: {_first_line(exc)}") from exc

    def _parquet_chunks(self, wanted: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
        import pyarrow.parquet as pq

        dictionary = [column for column in wanted if column in self.categorical]
        parquet = pq.ParquetFile(self.source, read_dictionary=dictionary)
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=wanted):
            yield batch.to_pandas()

    @functools.cached_property
    def fingerprint(self) -> str:
        """A digest of the source's content, for caching predictions per data."""
        digest = hashlib.blake2b(digest_size=16)
        if isinstance(self.source, pd.DataFrame):
            digest.update(pd.util.hash_pandas_object(self.source, index=False).to_numpy().tobytes())
            digest.update(repr(list(self.source.columns)).encode())
            return digest.hexdigest()
        return file_digest(self.source)


def file_digest(path: Path) -> str:
    """A digest of a file's content, read in blocks."""
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        while block := handle.read(1 << 23):
            digest.update(block)
    return digest.hexdigest()


def open_table(source: str | Path | pd.DataFrame) -> DataSource:
    """Open a table without reading its rows; raise ``DataError`` if it is missing or unreadable."""
    if isinstance(source, pd.DataFrame):
        return DataSource(source, tuple(map(str, source.columns)), len(source))
    path = Path(source)
    if not path.is_file():
        raise DataError(NOT_FOUND.format(path=path))
    try:
        if _format(path) == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
            metadata = pq.read_metadata(path)
            categorical = frozenset(
                field.name
                for field in schema
                if pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
            )
            return DataSource(path, tuple(schema.names), metadata.num_rows, categorical)
        header = pd.read_csv(path, nrows=0, sep=_separator(path))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read as {_format(path)}: {_first_line(exc)}") from exc
    return DataSource(path, tuple(map(str, header.columns)), None)


class RowReader:
    """Reads a table sequentially, handing out exactly ``n`` rows per ``take(n)``."""

    def __init__(
        self, table: DataSource, columns: Sequence[str], chunk_rows: int = DEFAULT_CHUNK_ROWS
    ):
        self._chunks = table.chunks(columns, chunk_rows)
        self._buffer: list[pd.DataFrame] = []
        self._buffered = 0
        self.rows_read = 0

    def take(self, n: int) -> pd.DataFrame | None:
        """The next ``n`` rows, or ``None`` if fewer than ``n`` are left."""
        while self._buffered < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                return None
            self._buffer.append(chunk)
            self._buffered += len(chunk)
        joined = self._buffer[0] if len(self._buffer) == 1 else pd.concat(self._buffer)
        head, tail = joined.iloc[:n], joined.iloc[n:]
        self._buffer = [tail] if len(tail) else []
        self._buffered = len(tail)
        self.rows_read += n
        return head.reset_index(drop=True)

    @property
    def available(self) -> int:
        """Rows handed out plus rows read ahead: all the table had, once ``take`` returned None."""
        return self.rows_read + self._buffered

    def remaining(self) -> int:
        """Count (and consume) the rows left."""
        return self._buffered + sum(len(chunk) for chunk in self._chunks)


def _format(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise DataError(UNKNOWN_FORMAT.format(path=path)) from None


def _separator(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
