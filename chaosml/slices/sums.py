"""The slice sums: one pass over the rows, sufficient statistics per slice.

Each row falls in one *cell*: its label and each version's prediction, packed into the bits of a small
integer (``label << V | pred_1 << V-1 | ... | pred_V``), so a slice's statistics are a vector of
``2 ** (V + 1)`` cell counts: its confusion matrix for one version, the joint cells
label x v1 x v2 for a paired comparison. Every confusion metric of every version, McNemar's
discordant pairs and a bootstrap (multinomial over the cells) follow from those counts alone.

Per chunk the engine does one ``np.bincount`` per ``where`` slice and one per ``by`` group, whatever
the number of values in the group (values are factorized and folded into the bincount's index), so
1,000,000 rows x 100 ``by`` slices is a handful of vectorized passes. For ROC AUC it keeps per-slice
score histograms (``SCORE_BINS`` bins per label). Statistics are sums, so chunks stream and memory
stays bounded by the chunk size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from chaosml.codecs import plain
from chaosml.errors import PredicateError
from chaosml.predicate import BoolOp as And
from chaosml.predicate import Column, Compare, IsNa, Node, Predicate, Value, render

SCORE_BINS = 2048
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
MISSING = "<missing>"


@dataclass(kw_only=True, frozen=True)
class SliceInfo:
    """A slice as it appears in results: its name, its predicate text and its minimum size."""

    name: str
    where: str
    min_size: int
    group: tuple[str, ...] | None = None  # the `by` columns it came from
    value: tuple[object, ...] | None = None  # its values of those columns


@dataclass
class ChunkData:
    """One chunk: the rows' columns, labels, and per-version predictions (and scores)."""

    frame: pd.DataFrame
    label: npt.NDArray[np.bool_]
    predictions: list[npt.NDArray[np.bool_]]
    scores: list[npt.NDArray[np.float64] | None]


@dataclass(kw_only=True)
class GroupSums:
    """One ``by`` group's sums: a row of cell counts (and score histograms) per value seen."""

    columns: tuple[str, ...]
    min_size: int
    # the sums so far: value -> its row (first seen first), and the rows of counts
    ids: dict[tuple[object, ...], int] = field(init=False, default_factory=dict)
    cells: IntArray = field(init=False, default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    hist: IntArray | None = field(init=False, default=None)
    maxdiff: FloatArray | None = field(init=False, default=None)  # per value, see ``score_gap``

    def add(
        self,
        chunk: ChunkData,
        cell: IntArray,
        n_cells: int,
        keys: list[IntArray],
        gap: FloatArray | None = None,
    ) -> None:
        gid = self._group_ids(chunk.frame)
        size = len(self.ids)
        if self.cells.shape[0] < size:
            self.cells = _grow(self.cells, size, n_cells)
        self.cells += np.bincount(gid * n_cells + cell, minlength=size * n_cells).reshape(size, -1)
        if gap is not None:
            self.maxdiff = _grow_max(self.maxdiff, size)
            np.maximum.at(self.maxdiff, gid, gap)
        if keys:
            width = 2 * SCORE_BINS
            if self.hist is None or self.hist.shape[0] < size:
                self.hist = _grow(self.hist, size, len(keys) * width)
            for v, key in enumerate(keys):
                counts = np.bincount(gid * width + key, minlength=size * width).reshape(size, width)
                self.hist[:, v * width : (v + 1) * width] += counts

    def merge(self, other: GroupSums) -> None:
        """Add ``other``'s sums (from later rows: values new here are appended in its order)."""
        if not other.ids:
            return
        rows = np.array(
            [self.ids.setdefault(value, len(self.ids)) for value in other.ids], dtype=np.int64
        )
        size = len(self.ids)
        width = other.cells.shape[1]
        if self.cells.shape[0] < size or self.cells.shape[1] != width:
            self.cells = _grow(self.cells if self.cells.size else None, size, width)
        np.add.at(self.cells, rows, other.cells[list(other.ids.values())])
        if other.hist is not None:
            if self.hist is None or self.hist.shape[0] < size:
                self.hist = _grow(self.hist, size, other.hist.shape[1])
            np.add.at(self.hist, rows, other.hist[list(other.ids.values())])
        if other.maxdiff is not None:
            self.maxdiff = _grow_max(self.maxdiff, size)
            np.maximum.at(self.maxdiff, rows, other.maxdiff[list(other.ids.values())])

    def _group_ids(self, frame: pd.DataFrame) -> IntArray:
        combined = np.zeros(len(frame), dtype=np.int64)
        uniques_per_column = []
        for column in self.columns:
            codes, uniques = pd.factorize(frame[column], use_na_sentinel=False)
            combined = combined * len(uniques) + codes
            uniques_per_column.append(uniques)
        if len(self.columns) == 1:  # one column's codes are already dense and in order seen
            local, combos = combined, np.arange(len(uniques_per_column[0]))
        else:
            local, combos = pd.factorize(combined)
        lut = np.empty(len(combos), dtype=np.int64)
        for i, combo in enumerate(np.asarray(combos)):
            key = _decode(int(combo), [np.asarray(u) for u in uniques_per_column])
            lut[i] = self.ids.setdefault(key, len(self.ids))
        return lut[local]

    def slices(self) -> tuple[list[SliceInfo], IntArray]:
        """The group's slices in value order, and their row indices into ``cells``."""
        order = sorted(self.ids.items(), key=lambda item: tuple(_sort_key(v) for v in item[0]))
        infos = [self._info(values) for values, _ in order]
        return infos, np.array([index for _, index in order], dtype=np.int64)

    def _info(self, values: tuple[object, ...]) -> SliceInfo:
        name = " & ".join(f"{c}={_show(v)}" for c, v in zip(self.columns, values, strict=True))
        nodes: list[Node] = [
            IsNa(Column(c)) if _is_missing(v) else Compare(Column(c), "==", Value(_scalar(v)))
            for c, v in zip(self.columns, values, strict=True)
        ]
        where = render(nodes[0] if len(nodes) == 1 else And("and", tuple(nodes)))
        return SliceInfo(
            name=name, where=where, min_size=self.min_size, group=self.columns, value=values
        )


def _grow(array: IntArray | None, rows: int, width: int) -> IntArray:
    grown = np.zeros((max(rows, 1), width), dtype=np.int64)
    if array is not None and array.size:
        grown[: array.shape[0]] = array
    return grown


def _grow_max(array: FloatArray | None, rows: int) -> FloatArray:
    grown = np.zeros(max(rows, 1), dtype=np.float64)
    if array is not None and array.size:
        grown[: array.shape[0]] = array[:rows]
    return grown


def score_gap(first: FloatArray | None, second: FloatArray | None) -> FloatArray | None:
    """Per row, how far two versions' scores are apart: 0 where both are missing, infinite where
    only one is (one answered a number, the other none); None without both scores."""
    if first is None or second is None:
        return None
    missing_first, missing_second = np.isnan(first), np.isnan(second)
    gap = np.abs(first - second)
    gap[missing_first & missing_second] = 0.0
    gap[missing_first ^ missing_second] = np.inf
    return gap


def _decode(combo: int, uniques_per_column: list[npt.NDArray[Any]]) -> tuple[object, ...]:
    values: list[object] = []
    for uniques in reversed(uniques_per_column):
        size = len(uniques)
        values.append(plain(uniques[combo % size]))
        combo //= size
    return tuple(reversed(values))


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _scalar(value: object) -> str | int | float | bool:
    if isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _show(value: object) -> str:
    if _is_missing(value):
        return MISSING
    return str(value)


def _sort_key(value: object) -> tuple[int, float, str]:
    if _is_missing(value):
        return (2, 0.0, "")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


@dataclass(kw_only=True)
class SliceStats:
    """Per-slice sufficient statistics for ``n_versions`` versions (row 0 is overall)."""

    slices: list[SliceInfo]
    cells: IntArray  # (slices, 2 ** (n_versions + 1))
    hist: IntArray | None  # (slices, n_versions, 2 labels, SCORE_BINS) or None
    n_versions: int
    has_scores: list[bool]
    maxdiff: FloatArray | None = None  # (slices,): the largest score gap of two versions

    @property
    def n(self) -> IntArray:
        return np.asarray(self.cells.sum(axis=1), dtype=np.int64)


def quadrants(n_versions: int, version: int) -> IntArray:
    """Which of (tp, fp, fn, tn) each cell is for ``version``: shape (2 ** (n_versions + 1), 4)."""
    bits = np.arange(2 ** (n_versions + 1))
    label = (bits >> n_versions) & 1
    pred = (bits >> (n_versions - 1 - version)) & 1
    return np.stack(
        [label & pred, (1 - label) & pred, label & (1 - pred), (1 - label) & (1 - pred)], axis=1
    )


def confusion(cells: IntArray, n_versions: int, version: int) -> tuple[IntArray, ...]:
    """(tp, fp, fn, tn) of ``version`` from cell counts of shape (..., 2 ** (n_versions + 1))."""
    counts = cells @ quadrants(n_versions, version)
    return tuple(counts[..., k] for k in range(4))


@dataclass(frozen=True)
class SlicePlan:
    """What to accumulate, complete and picklable, so a worker process can reduce a partition:
    the ``where`` slices (each with the prefix its errors get, naming the suite line), the ``by``
    groups, the number of versions and whether scores are kept."""

    where: tuple[tuple[SliceInfo, Predicate, str], ...]
    groups: tuple[tuple[tuple[str, ...], int], ...]
    n_versions: int
    scores: bool
    maxdiff: bool = False  # keep the largest score gap of two versions per slice

    @property
    def n_cells(self) -> int:
        return int(2 ** (self.n_versions + 1))


@dataclass(kw_only=True)
class Partial:
    """The sums over some rows: what a chunk or a partition reduces to. Partials add up (``merge``)
    to the sums over all their rows, in any grouping; merged in row order, even the order in which
    ``by`` values were first seen is the single pass's."""

    cells: IntArray  # (1 + len(where), n_cells): overall, then each where slice
    hist: IntArray | None  # (1 + len(where), n_versions * 2 * SCORE_BINS) or None
    groups: list[GroupSums]
    has_scores: list[bool]
    rows: int = 0
    maxdiff: FloatArray | None = None  # (1 + len(where),), with the plan's ``maxdiff``

    @classmethod
    def empty(cls, plan: SlicePlan) -> Partial:
        rows = 1 + len(plan.where)
        return cls(
            cells=np.zeros((rows, plan.n_cells), dtype=np.int64),
            hist=(
                np.zeros((rows, plan.n_versions * 2 * SCORE_BINS), dtype=np.int64)
                if plan.scores
                else None
            ),
            groups=[
                GroupSums(columns=columns, min_size=min_size) for columns, min_size in plan.groups
            ],
            has_scores=[plan.scores or plan.maxdiff] * plan.n_versions,
            maxdiff=np.zeros(rows, dtype=np.float64) if plan.maxdiff else None,
        )

    def merge(self, other: Partial) -> Partial:
        """Add ``other`` (sums over later rows) into this one; returns this one."""
        self.cells += other.cells
        if self.hist is not None and other.hist is not None:
            self.hist += other.hist
        for mine, theirs in zip(self.groups, other.groups, strict=True):
            mine.merge(theirs)
        self.has_scores = [a and b for a, b in zip(self.has_scores, other.has_scores, strict=True)]
        if self.maxdiff is not None and other.maxdiff is not None:
            np.maximum(self.maxdiff, other.maxdiff, out=self.maxdiff)
        self.rows += other.rows
        return self


class Accumulator:
    """Accumulates a ``SlicePlan``'s sums chunk by chunk into a ``Partial``."""

    def __init__(self, plan: SlicePlan):
        self.plan = plan
        self.n_versions = plan.n_versions
        self.n_cells = plan.n_cells
        self.sums = Partial.empty(plan)

    def add(self, chunk: ChunkData) -> None:
        sums = self.sums
        cell = chunk.label.astype(np.int64) << self.n_versions
        for v, pred in enumerate(chunk.predictions):
            cell |= pred.astype(np.int64) << (self.n_versions - 1 - v)
        keys = self._score_keys(chunk)
        masks = [None] + [
            self._mask(predicate, prefix, chunk) for _, predicate, prefix in self.plan.where
        ]
        gap = self._gap(chunk)
        for row, mask in enumerate(masks):
            picked = cell if mask is None else cell[mask]
            sums.cells[row] += np.bincount(picked, minlength=self.n_cells)
            if gap is not None and sums.maxdiff is not None:
                part = gap if mask is None else gap[mask]
                if part.size:
                    sums.maxdiff[row] = max(sums.maxdiff[row], float(part.max()))
            if sums.hist is not None:
                width = 2 * SCORE_BINS
                for v, key in enumerate(keys):
                    picked_key = key if mask is None else key[mask]
                    sums.hist[row, v * width : (v + 1) * width] += np.bincount(
                        picked_key, minlength=width
                    )
        for group in sums.groups:
            group.add(chunk, cell, self.n_cells, keys, gap)
        sums.rows += len(chunk.label)

    def _gap(self, chunk: ChunkData) -> FloatArray | None:
        if not self.plan.maxdiff:
            return None
        gap = score_gap(*chunk.scores[:2])
        if gap is None:  # a version without scores: no largest gap to tell
            for v, score in enumerate(chunk.scores):
                if score is None:
                    self.sums.has_scores[v] = False
        return gap

    @staticmethod
    def _mask(predicate: Predicate, prefix: str, chunk: ChunkData) -> npt.NDArray[np.bool_]:
        try:
            return predicate.evaluate(chunk.frame)
        except (PredicateError, TypeError, ValueError) as exc:
            raise PredicateError(f"{prefix}: {exc}") from exc

    def _score_keys(self, chunk: ChunkData) -> list[IntArray]:
        if not self.plan.scores:
            return []
        keys = []
        for v, score in enumerate(chunk.scores):
            if score is None:
                self.sums.has_scores[v] = False
                score = np.zeros(len(chunk.label))
            bins = np.minimum((score * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)
            keys.append(chunk.label.astype(np.int64) * SCORE_BINS + bins)
        return keys


def slice_stats(plan: SlicePlan, sums: Partial, overall_min_size: int) -> SliceStats:
    """The per-slice statistics from a plan's sums over every row."""
    infos = [SliceInfo(name="overall", where="all rows", min_size=overall_min_size)]
    infos += [info for info, _, _ in plan.where]
    cells = [sums.cells]
    hists = [sums.hist] if sums.hist is not None else []
    gaps = [sums.maxdiff] if sums.maxdiff is not None else []
    for group in sums.groups:
        group_infos, order = group.slices()
        infos += group_infos
        if gaps:
            group_gap = group.maxdiff if group.maxdiff is not None else np.zeros(0)
            gaps.append(group_gap[order] if len(order) else group_gap[:0])
        group_cells = group.cells if group.cells.size else np.zeros((0, plan.n_cells), np.int64)
        cells.append(group_cells[order] if len(order) else group_cells[:0])
        if sums.hist is not None:
            group_hist = (
                group.hist
                if group.hist is not None
                else np.zeros((0, sums.hist.shape[1]), dtype=np.int64)
            )
            hists.append(group_hist[order] if len(order) else group_hist[:0])
    hist = None
    if hists:
        hist = np.concatenate(hists).reshape(len(infos), plan.n_versions, 2, SCORE_BINS)
    return SliceStats(
        slices=infos,
        cells=np.concatenate(cells),
        hist=hist,
        n_versions=plan.n_versions,
        has_scores=sums.has_scores,
        maxdiff=np.concatenate(gaps) if gaps and all(sums.has_scores) else None,
    )
