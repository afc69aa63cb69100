"""Signals that end a run the way an exception does, so its ``finally`` cleans up, and a block
(``holding``) that a signal does not cut short: the cleanup itself."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

CLEANING_UP = b"chaosml: stopping: cleaning up first (SIGKILL skips it)\n"


@dataclass
class _State:
    """The signals of the ``raising`` block under way (main thread only)."""

    exception: Callable[[int], BaseException] | None = None
    raised: bool = False  # the block's one exception was raised, or is held back
    held: int | None = None  # the signal that came while ``holding``, raised at its end
    holding: int = 0  # depth of ``holding`` blocks


_state = _State()


def _say_cleaning_up() -> None:
    with contextlib.suppress(OSError):  # stderr closed, or a pipe whose reader left
        os.write(2, CLEANING_UP)


@contextmanager
def raising(
    signals: tuple[signal.Signals, ...], exception: Callable[[int], BaseException]
) -> Iterator[None]:
    """While the block runs, the first of ``signals`` to arrive raises ``exception(signum)`` in
    the main thread (in any other thread nothing changes: handlers are the main thread's); the
    previous handlers come back after it.

    Only the first raises: a second Ctrl-C while the ``finally`` blocks clean up would cut
    the cleanup short and leave a fault behind. Later signals say so in one line instead; and
    one that comes during a ``holding`` block is raised when that block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if _state.raised:
            _say_cleaning_up()
            return
        if _state.holding:
            _state.held, _state.raised = signum, True
            _say_cleaning_up()
            return
        _state.raised = True
        raise exception(signum)

    outer = (_state.exception, _state.raised, _state.held)
    _state.exception, _state.raised, _state.held = exception, False, None
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _state.exception, _state.raised, _state.held = outer


@contextmanager
def holding() -> Iterator[None]:
    """A block that a signal of the ``raising`` block around it does not interrupt (removing a
    fault, a split, a shadow): the signal's exception is raised once the block has run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.holding += 1
    try:
        yield
    finally:
        _state.holding -= 1
        if _state.holding == 0 and _state.held is not None and _state.exception is not None:
            held, _state.held = _state.held, None
            raise _state.exception(held)


def keyboard_interrupts() -> AbstractContextManager[None]:
    """``raising`` for a command that ends on ``KeyboardInterrupt`` (a canary, a shadow):
    SIGTERM ends it as Ctrl-C does, its cleanup done and its report written."""
    return raising((signal.SIGINT, signal.SIGTERM), lambda signum: KeyboardInterrupt())
