"""Model versions and their predictions.

A ``Version`` yields, chunk by chunk and row-aligned with the data, a boolean "predicted positive"
array and, when the model has them, scores (probability of the positive class). Kinds:

- ``ArtifactVersion``: a scikit-learn compatible model saved with joblib or skops; its predictions
  are cached per (artifact content, data content) so later runs read them instead of re-predicting;
- ``PredictionsFile``: a Parquet/CSV file with a ``prediction`` column and an optional ``score``
  column, one row per data row, for models that are not Python objects;
- ``InMemory``: arrays already in memory (library use).

``resolve_version`` turns a CLI argument (a version name from the config, or a path) into one.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt
import pandas as pd

from chaosml.codecs import plain
from chaosml.config import ProjectConfig
from chaosml.data import DataSource, RowReader, file_digest, open_table
from chaosml.errors import DataError, VersionError
from chaosml.extras import require

Scalar = str | int | float | bool
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

PREDICTION_COLUMN = "prediction"
SCORE_COLUMN = "score"
LENGTH_MISMATCH = "{path}: {count} prediction rows for {rows} data rows (they must be row-aligned)"
RANGE_NEEDS_PARQUET = (
    "{path}: a distributed engine reads predictions by row range, which needs Parquet "
    "(convert it, e.g. pandas.read_csv(...).to_parquet(...))"
)
NOT_BINARY = "{where}: expected two classes, found {values}"
# skops checks what a functools.partial wraps separately, so trusting partial itself is safe.
TRUSTED_MODULES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.", "functools.partial")


@dataclass(frozen=True)
class Predictions:
    positive: BoolArray
    score: FloatArray | None


Predictor = Callable[[pd.DataFrame], Predictions]


class PartPredictor(Protocol):
    """Predictions for any range of rows, given the rows and where they start in the table:
    picklable, so a distributed engine ships it to its workers once."""

    def __call__(self, rows: pd.DataFrame, start: int) -> Predictions: ...


class Version(Protocol):
    name: str

    def feature_columns(
        self, table: DataSource, label: str, positive: Scalar, *, cached: bool = True
    ) -> list[str]:
        """Columns of the data this version needs to predict (none for precomputed predictions,
        nor for an artifact whose predictions of this data are ``cached`` and may be used)."""
        ...

    @contextmanager
    def predictor(self, table: DataSource, label: str, positive: Scalar) -> Iterator[Predictor]:
        """A function from a data chunk to its predictions; checks alignment when the block ends."""
        ...

    def part_predictor(self, table: DataSource, label: str, positive: Scalar) -> PartPredictor:
        """Predictions for rows read in any order (partitions of a distributed engine)."""
        ...


def as_binary(values: pd.Series | npt.NDArray[Any], positive: Scalar, where: str) -> BoolArray:
    """Map a column of two classes to "is positive"; refuse missing values and a third class."""
    array = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    binary = array.dtype.kind == "b" or (
        array.dtype.kind in "iu" and len(array) > 0 and array.min() >= 0 and array.max() <= 1
    )
    if binary and isinstance(positive, int):  # 0/1 or booleans: no need for pd.unique's hashing
        return np.asarray(array == positive, dtype=bool)
    series = pd.Series(values)
    if series.isna().any():
        raise DataError(f"{where}: has missing values (expected a class for every row)")
    uniques = pd.unique(series)
    if len(uniques) > 2 or (positive in (1, True) and not set(uniques) <= {0, 1}):
        shown = ", ".join(repr(plain(v)) for v in uniques[:5])
        hint = (
            ""
            if len(uniques) > 2
            else f" (set `positive:` to the positive class, not {positive!r})"
        )
        raise DataError(NOT_BINARY.format(where=where, values=shown) + hint)
    return np.asarray(series == positive, dtype=bool)


def _scores(values: pd.Series, where: str) -> FloatArray:
    scores = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
    if bad.any():
        raise DataError(
            f"{where}: row {int(np.argmax(bad))}: expected a probability in [0, 1], "
            f"got {plain(values.iloc[int(np.argmax(bad))])!r}"
        )
    return scores


@dataclass
class InMemory:
    """Predictions held in memory: ``prediction`` (classes) and optional ``score`` arrays."""

    name: str
    prediction: npt.ArrayLike
    score: npt.ArrayLike | None = None

    def feature_columns(
        self, table: DataSource, label: str, positive: Scalar, *, cached: bool = True
    ) -> list[str]:
        return []

    @contextmanager
    def predictor(self, table: DataSource, label: str, positive: Scalar) -> Iterator[Predictor]:
        part = self.part_predictor(table, label, positive)
        offset = 0

        def predict(chunk: pd.DataFrame) -> Predictions:
            nonlocal offset
            offset += len(chunk)
            return part(chunk, offset - len(chunk))

        yield predict

    def part_predictor(self, table: DataSource, label: str, positive: Scalar) -> PartPredictor:
        prediction = np.asarray(self.prediction)
        where = f"version {self.name!r}"
        if table.num_rows is not None and len(prediction) != table.num_rows:
            raise VersionError(
                LENGTH_MISMATCH.format(path=where, count=len(prediction), rows=table.num_rows)
            )
        positives = as_binary(prediction, positive, f"{where} predictions")
        scores = None if self.score is None else _scores(pd.Series(self.score), f"{where} scores")
        return _Arrays(positives, scores)


@dataclass(frozen=True)
class _Arrays:
    positive: BoolArray
    score: FloatArray | None

    def __call__(self, rows: pd.DataFrame, start: int) -> Predictions:
        span = slice(start, start + len(rows))
        return Predictions(self.positive[span], None if self.score is None else self.score[span])


@dataclass
class PredictionsFile:
    """A file of precomputed predictions, row-aligned with the data."""

    name: str
    path: Path

    def feature_columns(
        self, table: DataSource, label: str, positive: Scalar, *, cached: bool = True
    ) -> list[str]:
        return []

    def _open(self) -> DataSource:
        """The file as a table, refused if it cannot be read or has no ``prediction`` column."""
        try:
            source = open_table(self.path)
        except DataError as exc:
            raise VersionError(f"version {self.name!r}: {exc}") from exc
        if PREDICTION_COLUMN not in source.columns:
            raise VersionError(
                f"{self.path}: no {PREDICTION_COLUMN!r} column "
                f"(a predictions file needs `prediction` and optionally `score`)"
            )
        return source

    @contextmanager
    def predictor(self, table: DataSource, label: str, positive: Scalar) -> Iterator[Predictor]:
        source = self._open()
        if None not in (source.num_rows, table.num_rows) and source.num_rows != table.num_rows:
            raise VersionError(
                LENGTH_MISMATCH.format(path=self.path, count=source.num_rows, rows=table.num_rows)
            )
        has_score = SCORE_COLUMN in source.columns
        reader = RowReader(source, _prediction_columns(has_score))

        def predict(chunk: pd.DataFrame) -> Predictions:
            rows = reader.take(len(chunk))
            if rows is None:
                raise VersionError(
                    LENGTH_MISMATCH.format(
                        path=self.path,
                        count=reader.available,
                        rows=table.num_rows or f"at least {reader.rows_read + len(chunk)}",
                    )
                )
            return _read_predictions(rows, positive, has_score, str(self.path))

        yield predict
        extra = reader.remaining()
        if extra:
            raise VersionError(
                LENGTH_MISMATCH.format(
                    path=self.path, count=reader.rows_read + extra, rows=reader.rows_read
                )
            )

    def part_predictor(self, table: DataSource, label: str, positive: Scalar) -> PartPredictor:
        source = self._open()
        if not source.parquet:
            raise VersionError(RANGE_NEEDS_PARQUET.format(path=self.path))
        if table.num_rows is None or source.num_rows != table.num_rows:
            raise VersionError(
                LENGTH_MISMATCH.format(path=self.path, count=source.num_rows, rows=table.num_rows)
            )
        return _FileRows(source, positive, SCORE_COLUMN in source.columns)


@dataclass(frozen=True)
class _FileRows:
    """A predictions file's rows for a range of data rows (read from the row groups holding it)."""

    source: DataSource
    positive: Scalar
    has_score: bool

    def __call__(self, rows: pd.DataFrame, start: int) -> Predictions:
        columns = _prediction_columns(self.has_score)
        found = self.source.read(columns, start, start + len(rows))
        return _read_predictions(found, self.positive, self.has_score, self.source.name)


def _prediction_columns(has_score: bool) -> list[str]:
    return [PREDICTION_COLUMN] + ([SCORE_COLUMN] if has_score else [])


def _read_predictions(
    rows: pd.DataFrame, positive: Scalar, has_score: bool, where: str
) -> Predictions:
    """A predictions file's rows as "is positive" (and scores), checked."""
    positives = as_binary(rows[PREDICTION_COLUMN], positive, f"{where}: prediction")
    score = _scores(rows[SCORE_COLUMN], f"{where}: score") if has_score else None
    return Predictions(positives, score)


@dataclass
class ArtifactVersion:
    """A model artifact (``.joblib``/``.pkl`` or ``.skops``); predictions cached under ``cache_dir``."""

    name: str
    path: Path
    cache_dir: Path | None = None
    _model: Any = field(default=None, repr=False)

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_model(self.path)
        return self._model

    def feature_columns(
        self, table: DataSource, label: str, positive: Scalar, *, cached: bool = True
    ) -> list[str]:
        cache = self._cache_path(table, positive) if cached else None
        if cache is not None and cache.is_file():
            return []
        return self.model_columns(table, label)

    def model_columns(self, table: DataSource, label: str) -> list[str]:
        """The columns the model reads (all but the label if it does not say)."""
        names = getattr(self.model, "feature_names_in_", None)
        if names is None:
            return [column for column in table.columns if column != label]
        columns = [str(name) for name in names]
        try:
            table.require(columns, f"a feature of model {self.name!r}")
        except DataError as exc:
            raise VersionError(str(exc)) from exc
        return columns

    @contextmanager
    def predictor(self, table: DataSource, label: str, positive: Scalar) -> Iterator[Predictor]:
        cache = self._cache_path(table, positive)
        if cache is not None and cache.is_file():
            with PredictionsFile(self.name, cache).predictor(table, label, True) as cached:
                yield cached
            return
        fresh = self.fresh_predictor(table, label, positive)
        parts: list[pd.DataFrame] = []

        def predict(chunk: pd.DataFrame) -> Predictions:
            predictions = fresh(chunk)
            if cache is not None:
                part: dict[str, npt.NDArray[Any]] = {
                    PREDICTION_COLUMN: predictions.positive.astype(np.int8)
                }
                if predictions.score is not None:
                    part[SCORE_COLUMN] = predictions.score
                parts.append(pd.DataFrame(part))
            return predictions

        yield predict
        if cache is not None and parts:
            _write_atomically(pd.concat(parts, ignore_index=True), cache)

    def fresh_predictor(self, table: DataSource, label: str, positive: Scalar) -> Predictor:
        """The model's answers to whatever rows it is given (no cache: the rows may be changed)."""
        model, columns = self.model, self.model_columns(table, label)
        classes = list(getattr(model, "classes_", []))
        if classes and positive not in classes:
            raise VersionError(
                f"{self.path}: the model's classes are {classes}, "
                f"not including the positive class {positive!r}"
            )
        return lambda chunk: _predict(model, chunk[columns], positive, classes, self.path)

    def part_predictor(self, table: DataSource, label: str, positive: Scalar) -> PartPredictor:
        """The model itself, shipped to the workers (no prediction cache: they may not share it)."""
        self.fresh_predictor(table, label, positive)  # checks the classes and feature columns
        model = self.model
        return _ModelRows(
            model=model,
            columns=tuple(self.model_columns(table, label)),
            positive=positive,
            classes=tuple(getattr(model, "classes_", [])),
            path=self.path,
        )

    @functools.cached_property
    def _digest(self) -> str:
        return file_digest(self.path)

    def _cache_path(self, table: DataSource, positive: Scalar) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.blake2b(digest_size=16)
        key.update(self._digest.encode())
        key.update(table.fingerprint.encode())
        key.update(repr(positive).encode())
        return self.cache_dir / "predictions" / f"{key.hexdigest()}.parquet"


@dataclass(kw_only=True, frozen=True)
class _ModelRows:
    model: Any
    columns: tuple[str, ...]
    positive: Scalar
    classes: tuple[Any, ...]
    path: Path

    def __call__(self, rows: pd.DataFrame, start: int) -> Predictions:
        features = rows[list(self.columns)]
        return _predict(self.model, features, self.positive, list(self.classes), self.path)


def _predict(
    model: Any, features: pd.DataFrame, positive: Scalar, classes: list[Any], path: Path
) -> Predictions:
    try:
        labels = np.asarray(model.predict(features))
        score = None
        if hasattr(model, "predict_proba") and classes:
            score = np.asarray(model.predict_proba(features))[:, classes.index(positive)]
        elif hasattr(model, "decision_function"):
            margin = np.asarray(model.decision_function(features), dtype=np.float64)
            score = 1.0 / (1.0 + np.exp(-margin))  # monotone: AUC is unchanged
    except Exception as exc:  # a user's model can raise anything
        raise VersionError(
            f"{path}: the model failed to predict: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    return Predictions(
        np.asarray(labels == positive, dtype=bool),
        None if score is None else np.asarray(score, dtype=np.float64),
    )


def _write_atomically(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    frame.to_parquet(partial, index=False)
    partial.replace(path)


def load_model(path: Path) -> Any:
    """Load a joblib or skops artifact; skops files may only hold scikit-learn/numpy/scipy types."""
    if not path.is_file():
        raise VersionError(f"{path}: model file not found")
    require("slices")  # skops, joblib and scikit-learn: a MissingExtraError, not "not a model"
    try:
        if path.suffix.lower() == ".skops":
            import skops.io as sio

            untrusted = sio.get_untrusted_types(file=path)
            refused = [t for t in untrusted if not t.startswith(TRUSTED_MODULES)]
            if refused:
                raise VersionError(
                    f"{path}: refusing to load untrusted types: {', '.join(refused)}"
                )
            model = sio.load(path, trusted=untrusted)
        else:
            import joblib

            model = joblib.load(path)
    except VersionError:
        raise
    except Exception as exc:  # unpickling raises anything
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise VersionError(
            f"{path}: not a model chaosml can load ({reason}); expected a scikit-learn-style "
            "model saved with skops (.skops) or joblib (.joblib, .pkl), or a predictions file "
            "(.parquet, .csv with a `prediction` column)"
        ) from exc
    if not hasattr(model, "predict"):
        raise VersionError(
            f"{path}: loaded a {type(model).__name__}, expected a model with predict()"
        )
    return model


def resolve_version(
    spec: str | Version, config: ProjectConfig, *, codec: str = "records"
) -> Version:
    """A version from a config name, an artifact path, a predictions-file path or the URL of a
    served model (spoken to with ``codec``)."""
    if not isinstance(spec, str):
        return spec
    from chaosml.endpoint import EndpointVersion, is_endpoint

    if is_endpoint(spec):
        return EndpointVersion(name=urlsplit(spec).netloc, url=spec, codec=codec)
    entry = config.version(spec)
    if entry is not None and entry.endpoint is not None:
        return EndpointVersion(name=spec, url=entry.endpoint, codec=entry.codec)
    if entry is not None:
        path = config.resolve(entry.path)
        if entry.predictions is not None:
            return PredictionsFile(spec, path)
        return ArtifactVersion(spec, path, _cache_dir(config))
    path = Path(spec)
    if not path.exists():
        if config.versions:
            known = f"the config names {', '.join(config.versions)}"
        else:  # nothing configured here: say where versions come from
            known = (
                "no versions are configured (pass --config FILE, e.g. the demo's "
                ".chaosml/demo/chaosml.yaml after `chaosml demo train`)"
            )
        raise VersionError(
            f"{spec}: not a version name nor an existing file: {known}; a version is a config "
            "name, a model artifact (.skops, .joblib, .pkl), a predictions file (.parquet, .csv) "
            "or the URL of a served model (http://host:port/predict)"
        )
    if path.suffix.lower() in (".parquet", ".pq", ".csv", ".tsv"):
        return PredictionsFile(path.stem, path)
    return ArtifactVersion(path.stem, path, _cache_dir(config))


def named_versions(config: ProjectConfig) -> dict[str, Version]:
    """Every version the config names (what a ``stale_model`` fault can answer with)."""
    return {name: resolve_version(name, config) for name in config.versions}


def distinct_versions(
    first: Version, second: Version, specs: tuple[str, str]
) -> tuple[Version, Version, str | None]:
    """``first`` and ``second`` with distinct labels (two files both called ``model`` are labelled
    by the paths given), and a warning if both sides are the same content."""
    warning = None
    paths = [getattr(v, "path", None) for v in (first, second)]
    if paths[0] is not None and paths[1] is not None:
        a, b = Path(paths[0]), Path(paths[1])
        same = a.resolve() == b.resolve() or (
            a.stat().st_size == b.stat().st_size and file_digest(a) == file_digest(b)
        )
        if same:
            warning = f"{specs[0]} and {specs[1]} are the same content ({a}): every delta will be 0"
    if first.name == second.name:
        if specs[0] == specs[1]:
            specs = (f"{specs[0]} (v1)", f"{specs[1]} (v2)")
        first = replace(first, name=specs[0])  # type: ignore[type-var]
        second = replace(second, name=specs[1])  # type: ignore[type-var]
    return first, second, warning


def _cache_dir(config: ProjectConfig) -> Path | None:
    return None if config.cache_dir is None else config.resolve(config.cache_dir)
