"""What each extra of ``pip install 'chaosml[...]'`` brings, and the one-line error when a part of
chaosml needs one that is not installed.

The core (``pip install chaosml``) is what a model service embeds: the in-service fault point and
the monitors, the fault proxy and the CLI. A command checks its extra before it imports anything
from it, so a missing package is one line that names the extra, never a traceback.
"""

from __future__ import annotations

import importlib.util

from chaosml.errors import MissingExtraError

# The top-level modules chaosml imports from each extra (as `import` spells them).
EXTRAS: dict[str, tuple[str, ...]] = {
    "gameday": ("locust", "gevent", "toxiproxy", "requests", "pyarrow", "scipy"),
    "slices": ("pyarrow", "scipy", "sklearn", "skops", "joblib"),
    "report": ("matplotlib",),
    "demo": ("fastapi", "uvicorn", "threadpoolctl", "locust", "sklearn", "skops", "matplotlib"),
}
NEEDS_EXTRA = "needs chaosml[{extra}]: pip install 'chaosml[{extra}]' ({module} not found)"


def missing(extra: str) -> str | None:
    """The first of ``extra``'s modules that is not installed, if one is not."""
    for module in EXTRAS[extra]:
        if importlib.util.find_spec(module) is None:
            return module
    return None


def require(extra: str) -> None:
    """Raise ``MissingExtraError`` unless every module of ``extra`` is installed."""
    module = missing(extra)
    if module is not None:
        raise MissingExtraError(NEEDS_EXTRA.format(extra=extra, module=module), extra=extra)
