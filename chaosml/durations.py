"""Durations as scenario files (and Prometheus rules) write them: ``45s``, ``2m``, ``1m30s``,
``500ms``, ``1h``, ``1d``, or a number of seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
EXPECTED = "expected a duration such as 45s, 2m, 1m30s or 500ms"


def parse_duration(value: Any) -> float:
    """Seconds in ``value``; ``ValueError`` with the expected form otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{EXPECTED}, got {value!r}")
    if isinstance(value, int | float):
        if value < 0 or value != value or value == float("inf"):
            raise ValueError(f"{EXPECTED}, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{EXPECTED}, got {value!r}")
    text = value.strip()
    parts = _PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{EXPECTED}, got {value!r}")
    units = [u for _, u in parts]
    if len(set(units)) != len(units) or units != sorted(units, key=lambda u: -UNITS[u]):
        raise ValueError(f"{EXPECTED} (each unit once, largest first), got {value!r}")
    return sum(float(n) * UNITS[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """A short form that ``parse_duration`` reads back to the same number of milliseconds."""
    millis = round(seconds * 1000)
    if millis % 1000:
        return f"{millis}ms"
    whole = millis // 1000
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{secs}s" if secs or not text else "")


Duration = Annotated[
    float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]
