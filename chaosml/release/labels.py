"""Labels for a release's recorded rows, by id: from the feedback the proxy recorded
(``chaosml.proxy.feedback``) and from a labels file (``--labels``), which has the last word.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from chaosml.errors import InputError


def feedback_route(target: Any) -> tuple[str | None, str | None]:
    """The path of the target's feedback endpoint when its labels pass the target's proxy (the
    feedback URL's host and port are the target ``url``'s), so the proxy can record them; else
    None, with why not (None when the target names no feedback URL)."""
    if target.feedback is None:
        return None, None
    feedback, served = urlsplit(str(target.feedback)), urlsplit(str(target.url))
    if (feedback.hostname, feedback.port) != (served.hostname, served.port):
        return None, (
            f"the target's feedback URL {target.feedback} does not pass its proxy "
            f"({served.netloc}): no labels from feedback, only from --labels"
        )
    return feedback.path or "/", None


def uniform(labels: pd.Series) -> pd.Series:
    """Labels of one type, whatever mix of sources and parts they came from: as they are when
    they already are; numbers when every label reads as one (``1``, ``"1"``, ``True``); text
    otherwise."""
    known = labels.dropna()
    if known.map(type).nunique() <= 1:
        return labels
    numbers = pd.to_numeric(labels, errors="coerce")
    if numbers.notna().sum() == len(known):
        return numbers
    return labels.map(lambda v: v if pd.isna(v) else str(v))


def feedback_labels(folder: Path) -> pd.DataFrame:
    """The labels the proxy recorded from feedback under ``folder`` so far (``id``, ``label``),
    part by part (a part's labels may be typed unlike another's)."""
    from chaosml.proxy.feedback import FOLDER

    frames = [pd.read_parquet(part) for part in sorted((folder / FOLDER).glob("part-*.parquet"))]
    if not frames:
        return pd.DataFrame({"id": pd.Series(dtype=object), "label": pd.Series(dtype=object)})
    table = pd.concat([f[["id", "label"]].astype({"label": object}) for f in frames])
    return table.astype({"id": str}).reset_index(drop=True)


def read_labels(path: Path | None, label: str) -> pd.Series | None:
    """The labels known so far, by id (a file that is still growing is read as it is now)."""
    if path is None or not path.is_file():
        return None
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except pd.errors.EmptyDataError:  # (a ValueError: caught first) just created, still empty
        return None
    except (OSError, ValueError) as exc:  # pandas' and pyarrow's parse errors are ValueErrors
        raise InputError(f"--labels {path}: cannot read: {exc}") from None
    column = label if label in table.columns else "label"
    if "id" not in table.columns or column not in table.columns:
        raise InputError(f"--labels {path}: expected columns id and {label} (or label)")
    table = table.dropna(subset=[column]).drop_duplicates("id", keep="last")
    return pd.Series(table[column].to_numpy(), index=table["id"].astype(str))


def known_labels(fed: pd.DataFrame, given: pd.Series | None) -> pd.Series | None:
    """The labels by id from feedback and from ``--labels`` (which has the last word)."""
    fed_labels = pd.Series(fed["label"].to_numpy(), index=fed["id"].to_numpy())
    parts = [s.astype(object) for s in (fed_labels, given) if s is not None and len(s)]
    if not parts:
        return None
    both = uniform(pd.concat(parts))
    return both[~both.index.duplicated(keep="last")]
