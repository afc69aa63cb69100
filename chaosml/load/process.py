"""The runner's side of the load driver: start it, mark phases, read its figures, stop it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from chaosml._wait import wait_until
from chaosml.errors import UnreachableError
from chaosml.load.plan import LoadPlan
from chaosml.load.protocol import command, read_event


class LoadStopped(UnreachableError):
    """The load driver exited or reported an error."""


class LoadProcess:
    """A load driver process running ``plan``; ``ticks`` and ``phases`` fill in as it reports."""

    def __init__(self, plan: LoadPlan, *, on_tick: Callable[[dict[str, Any]], None] | None = None):
        self.plan = plan
        self.ticks: list[dict[str, Any]] = []
        self.phases: dict[str, dict[str, Any]] = {}
        self.error: str | None = None
        self._on_tick = on_tick
        self._armed = threading.Event()
        self._ready = threading.Event()
        self._done = threading.Event()
        self._phase_seen = threading.Condition()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 60) -> LoadProcess:
        """Start the driver and wait until it is armed (data loaded, workers connected)."""
        self.spawn()
        self._wait(self._armed, timeout)
        return self

    def spawn(self) -> LoadProcess:
        """Start the driver without waiting for it (``go`` waits until it is armed)."""
        if self._process is not None:
            return self
        self._process = subprocess.Popen(
            [sys.executable, "-m", "chaosml.load"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self._process.stdin is not None
        self._process.stdin.write(self.plan.to_json() + "\n")
        self._process.stdin.flush()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def go(self, timeout: float = 60) -> None:
        """Start the users (figures count from now), once the driver is armed."""
        self.spawn()
        self._wait(self._armed, timeout)
        self._send(command("start"))
        self._wait(self._ready, timeout)

    def _wait(self, event: threading.Event, timeout: float) -> None:
        if not wait_until(lambda: event.is_set() or self._done.is_set(), timeout) or (
            not event.is_set()
        ):
            self.stop()
            raise LoadStopped(f"load driver did not start: {self.error or 'timed out'}")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def latest(self) -> dict[str, Any] | None:
        return self.ticks[-1] if self.ticks else None

    def alive(self) -> bool:
        return not self._done.is_set()

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "tick": self._tick,
            "phase": self._phase,
            "armed": lambda _: self._armed.set(),
            "ready": lambda _: self._ready.set(),
            "error": self._error,
        }
        for line in self._process.stdout:
            found = read_event(line)
            if found is not None and found[0] in handlers:
                handlers[found[0]](found[1])
        if self.error is None and self._process.stderr is not None:
            tail = self._process.stderr.read()[-500:].strip()
            self.error = tail.splitlines()[-1] if tail else None
        self._done.set()
        with self._phase_seen:
            self._phase_seen.notify_all()

    def _tick(self, figures: dict[str, Any]) -> None:
        self.ticks.append(figures)
        if self._on_tick is not None:
            self._on_tick(figures)

    def _phase(self, figures: dict[str, Any]) -> None:
        with self._phase_seen:
            self.phases[figures.pop("name")] = figures
            self._phase_seen.notify_all()

    def _error(self, fields: dict[str, Any]) -> None:
        self.error = fields.get("message")

    def _send(self, line: str) -> None:
        stdin = None if self._process is None else self._process.stdin
        if stdin is None or stdin.closed or self._done.is_set():
            return
        with contextlib.suppress(BrokenPipeError, ValueError, OSError):
            stdin.write(line + "\n")
            stdin.flush()

    def mark(
        self, ended: str, timeout: float | None = None, *, last: bool = False
    ) -> dict[str, Any] | None:
        """End phase ``ended`` and return its figures: the predict requests that completed in
        it (``requests``, of which ``failures``), ``seconds``, the delivered ``rps``, the
        plan's ``planned_rps`` (None without a constant ``rate``), ``error_rate``, latency
        percentiles, and ``exact`` (False if a worker did not report in time). With ``last``,
        the users stop first and the requests in flight complete in this phase, so no request
        is left out of the phases; the driver then exits. None if the driver did not answer
        within ``timeout`` seconds."""
        if timeout is None:
            timeout = self.plan.timeout + 10 if last else 5
        self._send(command("last" if last else "phase", ended))
        deadline = time.monotonic() + timeout
        with self._phase_seen:
            while ended not in self.phases and not self._done.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._phase_seen.wait(left)
        return self.phases.get(ended)

    def stop(self, timeout: float | None = None, *, wait: bool = True) -> None:
        """Stop the users and the driver (by PID if it does not exit by itself within
        ``timeout``, by default the request timeout and 15 s); the requests in flight complete
        and are in phase ``end``. With ``wait=False`` only tell it to stop, and call ``stop()``
        again later to reap it."""
        if self._process is None:
            return
        if timeout is None:
            timeout = self.plan.timeout + 15
        self._send(command("stop"))
        if self._process.stdin is not None and not self._process.stdin.closed:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        if not wait:
            return
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        for pipe in (self._process.stdout, self._process.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> LoadProcess:
        self.start().go()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
