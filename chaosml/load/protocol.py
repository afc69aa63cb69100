"""What the runner and its load driver say to each other over the driver's pipes.

The runner writes one command per line to the driver's stdin (``start``, ``phase NAME`` to end a
phase, ``last NAME`` to end the last one and stop, ``stop``); the driver writes one JSON event per
line to its stdout, named by its ``event`` key: ``armed`` (data loaded, workers connected),
``ready`` (users started), ``tick`` (the load's figures over the last window), ``phase`` (a
phase's figures), ``error`` (why it cannot go on) and ``done``.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal, get_args

Command = Literal["start", "phase", "last", "stop"]
Event = Literal["armed", "ready", "tick", "phase", "error", "done"]
EVENTS: tuple[str, ...] = get_args(Event)


def command(word: Command, argument: str = "") -> str:
    return f"{word} {argument}".strip()


def read_command(line: str) -> tuple[Command | None, str]:
    """A command line as (word, argument); None for a line that is not a command."""
    word, _, argument = line.strip().partition(" ")
    return (word, argument) if word in get_args(Command) else (None, argument)  # type: ignore[return-value]


def event(kind: Event, **fields: Any) -> str:
    return json.dumps({"event": kind, "t": time.time(), **fields})


def read_event(line: str) -> tuple[Event, dict[str, Any]] | None:
    """An event line as (kind, fields); None for anything else the driver printed."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("event") not in EVENTS:
        return None
    kind = data.pop("event")
    return kind, data
