"""Signals that end a run the way an exception does, so its ``finally`` cleans up."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def raising(
    signals: tuple[signal.Signals, ...], exception: Callable[[int], BaseException]
) -> Iterator[None]:
    """While the block runs, each of ``signals`` raises ``exception(signum)`` in the main thread
    (in any other thread nothing changes: handlers are the main thread's); the previous handlers
    come back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise exception(signum)

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
