"""Signals that end a run the way an exception does, so its ``finally`` cleans up."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

ROLLING_BACK = b"chaosml: stopping: rolling back first (SIGKILL skips the rollback)\n"


@contextmanager
def raising(
    signals: tuple[signal.Signals, ...], exception: Callable[[int], BaseException]
) -> Iterator[None]:
    """While the block runs, the first of ``signals`` to arrive raises ``exception(signum)`` in
    the main thread (in any other thread nothing changes: handlers are the main thread's); the
    previous handlers come back after it.

    Only the first raises: a second Ctrl-C while the ``finally`` blocks roll back would
    interrupt the rollback and leave a fault behind. Later signals say so in one line instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal raised
        if raised:
            os.write(2, ROLLING_BACK)
            return
        raised = True
        raise exception(signum)

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
