"""Applying payload faults offline, to a DataFrame of evaluation rows and its predictions.

Each row is treated as one request: a fault with toxicity ``t`` hits each row with probability ``t``
(the proxy rolls once per request), then applies exactly as it does online.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from chaosml.faults.base import Fault, RequestFault, ResponseFault


def apply_offline(
    fault: Fault,
    frame: pd.DataFrame,
    predictions: npt.NDArray[Any] | None = None,
    scores: npt.NDArray[np.float64] | None = None,
    *,
    toxicity: float = 1.0,
    rng: np.random.Generator | None = None,
) -> tuple[pd.DataFrame, npt.NDArray[Any] | None, npt.NDArray[np.float64] | None]:
    """``frame`` (and ``predictions``/``scores``) with ``fault`` applied to a ``toxicity`` of rows.

    Request faults change the frame; response faults change the predictions. Columns a fault
    removes (``drop_field``) become missing values in the rows it hit.
    """
    rng = rng or np.random.default_rng()
    hit = rng.random(len(frame)) < toxicity
    if isinstance(fault, RequestFault):
        return _apply_rows(fault, frame, hit, rng), predictions, scores
    if isinstance(fault, ResponseFault) and predictions is not None:
        labels, new_scores = fault.apply(
            frame[hit].reset_index(drop=True),
            predictions[hit],
            None if scores is None else scores[hit],
            rng,
        )
        out_labels = predictions.astype(object) if labels.dtype == object else predictions.copy()
        out_labels[hit] = labels
        out_scores = None
        if scores is not None:
            out_scores = scores.copy()
            if new_scores is not None:
                out_scores[hit] = new_scores
        return frame, out_labels, out_scores
    return frame, predictions, scores


def _apply_rows(
    fault: RequestFault, frame: pd.DataFrame, hit: np.ndarray, rng: np.random.Generator
) -> pd.DataFrame:
    if not hit.any():
        return frame
    table = {str(column): frame[column].to_numpy() for column in frame.columns}
    changed = fault.apply({name: values[hit] for name, values in table.items()}, rng)
    out = {}
    for name, values in table.items():
        new = changed.get(name)
        if new is None:  # dropped: the rows hit have no value
            merged = values.astype(float if values.dtype.kind == "f" else object)
            merged[hit] = np.nan if merged.dtype.kind == "f" else None
        else:
            kind = (
                np.result_type(values.dtype, new.dtype)
                if "O" not in (values.dtype.kind, new.dtype.kind)
                else np.dtype(object)
            )
            merged = values.astype(kind)
            merged[hit] = new
        out[name] = merged
    result = pd.DataFrame(out, index=frame.index)
    for name in result.columns:
        if result[name].dtype == object:
            result[name] = result[name].infer_objects()
    return result
