"""Reading tables (Parquet, CSV, or an in-memory DataFrame) in bounded chunks.

``DataSource`` knows a source's columns and, where the format says it up front, its row count. A
Parquet source is one file or a *dataset*: a folder or a glob of files, read as one table in sorted
path order. ``DataSource.chunks`` yields DataFrames of exactly ``chunk_rows`` rows (the last one
fewer) with only the requested columns, so memory does not grow with the file and chunk ``k`` always
starts at row ``k * chunk_rows``. ``DataSource.read`` reads one range of rows from the row groups that
hold it, which is how a partition of a distributed job finds its rows (and a predictions file the
rows aligned with them). ``RowReader`` hands out exactly the next ``n`` rows of a table, which keeps
a predictions file row-aligned with the data whatever their batch sizes.
"""

from __future__ import annotations

import functools
import glob
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from chaosml.errors import DataError

DEFAULT_CHUNK_ROWS = 1_000_000
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv"}

NOT_FOUND = "{path}: file not found"
NO_FILES = "{path}: no Parquet files match"
UNKNOWN_FORMAT = "{path}: unknown data format (expected .parquet or .csv)"
MISSING_COLUMN = "{path}: no column {column!r} (columns: {available})"


@dataclass(kw_only=True, frozen=True)
class DataSource:
    """A tabular data source: a file path or a DataFrame held in memory."""

    source: Path | pd.DataFrame | object  # object: a distributed engine's frame or table name
    columns: tuple[str, ...]
    num_rows: int | None  # None: not known before reading (CSV)
    categorical: frozenset[str] = frozenset()
    files: tuple[Path, ...] = ()  # a Parquet source's files, in reading order
    row_groups: tuple[tuple[int, int], ...] = ()  # per file: (first row, rows) of each row group
    file_groups: tuple[int, ...] = ()  # per file: how many of ``row_groups`` it has
    display: str | None = None  # how to name a source that is not a path

    @property
    def name(self) -> str:
        if self.display is not None:
            return self.display
        return str(self.source) if isinstance(self.source, Path) else "<DataFrame>"

    @property
    def parquet(self) -> bool:
        return bool(self.files)

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
            if self.parquet:
                yield from self._parquet_chunks(wanted, chunk_rows)
            else:
                path = Path(str(self.source))
                yield from pd.read_csv(
                    path, usecols=wanted, chunksize=chunk_rows, sep=_separator(path)
                )
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.source}: cannot read: {_first_line(exc)}") from exc

    def _parquet_chunks(self, wanted: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
        import pyarrow.parquet as pq

        dictionary = [column for column in wanted if column in self.categorical]
        pending: list[Any] = []  # record batches not yet handed out
        held = 0
        for path in self.files:
            parquet = pq.ParquetFile(path, read_dictionary=dictionary)
            for batch in parquet.iter_batches(batch_size=chunk_rows, columns=wanted):
                pending.append(batch)
                held += batch.num_rows
                while held >= chunk_rows:
                    table = _concat(pending)
                    yield _frame(table.slice(0, chunk_rows))
                    rest = table.slice(chunk_rows)
                    pending, held = rest.to_batches(), rest.num_rows
        if held:
            yield _frame(_concat(pending))
        elif self.num_rows == 0:
            yield _frame(_schema(self.files[0], wanted).empty_table())

    def read(self, columns: Sequence[str], start: int, stop: int) -> pd.DataFrame:
        """Rows ``start`` to ``stop`` (exclusive) of ``columns``, reading only the row groups that
        hold them (a Parquet source or a DataFrame)."""
        wanted = list(dict.fromkeys(columns))
        self.require(wanted)
        if isinstance(self.source, pd.DataFrame):
            return self.source.iloc[start:stop][wanted].reset_index(drop=True)
        if not self.parquet:
            raise DataError(f"{self.name}: reading a range of rows needs Parquet, not CSV")
        import pyarrow.parquet as pq

        dictionary = [column for column in wanted if column in self.categorical]
        pieces = []
        first_row: int | None = None
        group = 0
        try:
            for path, count in zip(self.files, self.file_groups, strict=True):
                groups = self.row_groups[group : group + count]
                hits = [i for i, (at, n) in enumerate(groups) if at < stop and at + n > start]
                group += count
                if not hits:
                    continue
                if first_row is None:
                    first_row = groups[hits[0]][0]
                parquet = pq.ParquetFile(path, read_dictionary=dictionary)
                pieces.append(parquet.read_row_groups(hits, columns=wanted))
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.name}: cannot read: {_first_line(exc)}") from exc
        if not pieces:
            return _frame(_schema(self.files[0], wanted).empty_table())
        table = _concat(pieces)
        offset = start - (first_row or 0)
        return _frame(table.slice(offset, stop - start))

    @functools.cached_property
    def fingerprint(self) -> str:
        """A digest of the source's content, for caching predictions per data."""
        digest = hashlib.blake2b(digest_size=16)
        if isinstance(self.source, pd.DataFrame):
            digest.update(pd.util.hash_pandas_object(self.source, index=False).to_numpy().tobytes())
            digest.update(repr(list(self.source.columns)).encode())
            return digest.hexdigest()
        for path in self.files or (Path(str(self.source)),):
            digest.update(file_digest(path).encode())
        return digest.hexdigest()


def _concat(pieces: list[Any]) -> Any:
    """Record batches or tables as one table; a file's all-null column (Parquet type null) or
    narrower type is promoted to the others' type."""
    import pyarrow as pa

    tables = [pa.Table.from_batches([p]) if isinstance(p, pa.RecordBatch) else p for p in pieces]
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive")


def _frame(table: Any) -> pd.DataFrame:
    return table.to_pandas()  # type: ignore[no-any-return]


def _schema(path: Path, columns: list[str]) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    return pa.schema([schema.field(name) for name in columns])


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
        return DataSource(
            source=source, columns=tuple(map(str, source.columns)), num_rows=len(source)
        )
    path = Path(source)
    files = _dataset_files(path)
    if files is not None:
        return _parquet_source(path, files)
    if not path.is_file():
        raise DataError(NOT_FOUND.format(path=path))
    try:
        if _format(path) == "parquet":
            return _parquet_source(path, [path])
        header = pd.read_csv(path, nrows=0, sep=_separator(path))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read as {_format(path)}: {_first_line(exc)}") from exc
    return DataSource(source=path, columns=tuple(map(str, header.columns)), num_rows=None)


def _dataset_files(path: Path) -> list[Path] | None:
    """A folder's or a glob's Parquet files in sorted order; None for a plain path."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".parquet", ".pq"))
    elif glob.has_magic(str(path)):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    else:
        return None
    if not files:
        raise DataError(NO_FILES.format(path=path))
    return files


def _parquet_source(path: Path, files: list[Path]) -> DataSource:
    import pyarrow as pa
    import pyarrow.parquet as pq

    groups: list[tuple[int, int]] = []
    per_file: list[int] = []
    schema = None
    rows = 0
    for file in files:
        try:
            metadata = pq.read_metadata(file)
            file_schema = pq.read_schema(file)
        except (OSError, ValueError) as exc:
            raise DataError(f"{file}: cannot read as parquet: {_first_line(exc)}") from exc
        if schema is None:
            schema = file_schema
        elif file_schema.names != schema.names:
            raise DataError(
                f"{file}: columns {file_schema.names} differ from {files[0]}'s {schema.names} "
                "(every file of a dataset must have the same columns)"
            )
        for index in range(metadata.num_row_groups):
            count = metadata.row_group(index).num_rows
            groups.append((rows, count))
            rows += count
        per_file.append(metadata.num_row_groups)
    assert schema is not None
    categorical = frozenset(
        field.name
        for field in schema
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
    )
    return DataSource(
        source=path,
        columns=tuple(schema.names),
        num_rows=rows,
        categorical=categorical,
        files=tuple(files),
        row_groups=tuple(groups),
        file_groups=tuple(per_file),
    )


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
