"""The journal: the machine-readable record of a game day, written as it happens.

``.chaosml/runs/<run-id>/journal.json`` is rewritten atomically after every phase, so a run that
is interrupted (or killed) still leaves what it saw. Schema ``chaosml.journal/1``: ``run_id``,
``started_at``/``ended_at`` (Unix seconds), ``target``, ``time_scale``, ``seed``, ``rules`` (what
the alert sources listed), ``sources``, and ``scenarios``: each with its ``phases`` (name, start,
end, load figures), ``faults`` (type, point, toxic, attributes, seed, added/removed times, how
often the point applied it and how often it failed), ``load`` (a tick of figures every 0.25 s),
``alerts`` (every alert episode seen, per source), ``events``, ``errors``, ``expectations`` with
verdicts, and the scenario's ``verdict``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaosml.errors import InputError

SCHEMA = "chaosml.journal/1"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


@dataclass
class Journal:
    folder: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, runs: Path, **fields: Any) -> Journal:
        run_id = new_run_id()
        folder = runs / run_id
        try:
            folder.mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            raise InputError(f"{folder}: cannot create the run folder: {exc.strerror}") from exc
        journal = cls(folder, {"schema": SCHEMA, "run_id": run_id, "scenarios": [], **fields})
        journal.save()
        return journal

    @property
    def path(self) -> Path:
        return self.folder / "journal.json"

    @property
    def scenarios(self) -> list[dict[str, Any]]:
        return list(self.data["scenarios"])

    def save(self) -> None:
        """Write atomically: a reader (or a crash) never sees half a journal."""
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.data, indent=1, default=_plain), encoding="utf-8")
        os.replace(temporary, self.path)


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"not JSON: {type(value).__name__}")


def load_journal(path: str | Path) -> Journal:
    """A run folder (or its journal.json); ``InputError`` naming the file otherwise."""
    path = Path(path)
    file = path / "journal.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{file}: no journal here (expected .chaosml/runs/<run-id>/)") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"{file}: not a chaosml journal: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise InputError(f"{file}: not a chaosml journal (expected schema {SCHEMA})")
    return Journal(file.parent, data)
