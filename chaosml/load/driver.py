"""The load driver: Locust's library API (an ``Environment`` and a runner) replaying data rows.

It runs in its own process (``python -m chaosml.load``), because importing Locust monkey-patches
the standard library for gevent; the game-day runner, its threads and signal handling stay
untouched. The runner talks to it over pipes: commands on stdin (``phase NAME`` ends a phase;
``last NAME`` stops the users and ends the last phase; ``stop``), JSON lines on stdout (``ready``,
a ``tick`` with the load's figures over a sliding window, the figures of each finished ``phase``,
``done``). When stdin closes (the runner died) it stops. Stopping lets each request in flight
complete, and its figures are in the last phase (``end`` after ``stop``).

Distributed: with ``workers: N`` the driver is a Locust master and starts N worker processes on
loopback; ``python -m chaosml.load worker --master HOST:PORT`` starts a worker on another machine
(it needs the data file at the same path). Workers receive the plan from the master.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
from gevent.fileobject import FileObjectThread
from locust import HttpUser, constant, constant_throughput, task
from locust.env import Environment
from locust.stats import RequestStats, calculate_response_time_percentile

from chaosml._net import free_port
from chaosml._wait import wait_until
from chaosml.codecs import get_codec, plain
from chaosml.load.marks import Marks, answer_marks
from chaosml.load.plan import LoadPlan
from chaosml.load.protocol import Event, event, read_command

PREDICT = "predict"
PLAN, PLANNED = "chaosml-plan", "chaosml-planned"  # the plan to a worker; its answer
WORKER = (sys.executable, "-m", "chaosml.load", "worker")  # a worker process's command line
PLAN_AGAIN = 2.0  # seconds before the plan goes again to a worker that has not answered
MARK_TIMEOUT = 3.0  # seconds for every worker to answer a phase mark (then ``exact`` is False)
# monotonic seconds, requests, failures, response-time histogram (ms -> count)
Snapshot = tuple[float, int, int, dict[int, int]]


def emit(kind: Event, **fields: Any) -> None:
    sys.stdout.write(event(kind, **fields) + "\n")
    sys.stdout.flush()


def load_columns(plan: LoadPlan) -> tuple[dict[str, list[Any]], list[Any]]:
    """The data's feature columns as Python lists, and the labels (empty without a label).

    Read with pyarrow (Parquet or CSV), not pandas, and kept as columns: rows are built per
    request, so a driver is ready about a second sooner."""
    import pyarrow.csv
    import pyarrow.parquet

    path = plan.data
    table = (
        pyarrow.parquet.read_table(path)
        if path.endswith(".parquet")
        else pyarrow.csv.read_csv(path)
    )
    names = table.column_names
    labels = [plain(v) for v in table[plan.label].to_pylist()] if plan.label in names else []
    features = {c: table[c].to_pylist() for c in names if c != plan.label and c not in plan.drop}
    return features, labels


def user_class(plan: LoadPlan) -> type[HttpUser]:
    """A Locust user that sends ``plan.batch`` rows per request, in turn, from a shared cursor."""
    import numpy as np

    features, labels = load_columns(plan)
    codec = get_codec(plan.codec)
    rows = len(next(iter(features.values()), []))
    if rows == 0:
        raise ValueError(f"{plan.data}: no rows to replay")
    cursor = {"next": int(np.random.default_rng(plan.seed).integers(rows))}
    users = max(plan.users, 1)

    class Replay(HttpUser):
        host = plan.url
        wait_time = constant_throughput(plan.rate / users) if plan.rate else constant(plan.think)

        @task
        def predict(self) -> None:
            start = cursor["next"]
            cursor["next"] = (start + plan.batch) % rows
            index = [(start + i) % rows for i in range(plan.batch)]
            table = {}
            for name, values in features.items():
                table[name] = column = np.empty(len(index), dtype=object)
                column[:] = [values[i] for i in index]
            with self.client.post(
                "",
                json=codec.request(table),
                name=PREDICT,
                timeout=plan.timeout,
                catch_response=True,
            ) as response:
                if response.status_code >= 400 or response.status_code == 0:
                    response.failure(f"HTTP {response.status_code}")
                    return
                ids = _ids(response)
                if plan.feedback_url and labels and ids and len(ids) == len(index):
                    pairs = [{"id": i, "label": labels[r]} for i, r in zip(ids, index, strict=True)]
                    gevent.spawn_later(plan.feedback_delay, self._feedback, pairs)

        def _feedback(self, pairs: list[dict[str, Any]]) -> None:
            self.client.post(
                plan.feedback_url or "",
                json={"labels": pairs},
                name="feedback",
                timeout=plan.timeout,
            )

    return Replay


def _ids(response: Any) -> list[Any] | None:
    try:
        payload = response.json()
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    ids = payload.get("ids") or (payload.get("parameters") or {}).get("ids")
    if ids is None and "id" in payload:
        ids = [payload["id"]]
    return ids if isinstance(ids, list) else None


class Figures:
    """The predict requests' figures: per phase, and over a sliding window for each tick.

    A phase's ``requests`` are the predict requests that completed in it (answered or failed:
    Locust counts both, failures also in ``failures``), ``rps`` those over its ``seconds``, and
    ``planned_rps`` the plan's constant rate (None when users wait a ``think`` time instead)."""

    def __init__(self, stats: RequestStats, window: float, planned_rps: float | None) -> None:
        self.stats, self.window, self.planned_rps = stats, window, planned_rps
        self.history: deque[Snapshot] = deque()
        self.phase_start = self._snapshot()

    def _snapshot(self, at: float | None = None) -> Snapshot:
        at = time.monotonic() if at is None else at
        e = self.stats.entries.get((PREDICT, "POST"))  # created by the first request
        if e is None:
            return at, 0, 0, {}
        return at, e.num_requests, e.num_failures, dict(e.response_times)

    @staticmethod
    def _between(old: Snapshot, new: Snapshot) -> dict[str, Any]:
        seconds = max(new[0] - old[0], 1e-9)
        requests, failures = new[1] - old[1], new[2] - old[2]
        times = {k: v - old[3].get(k, 0) for k, v in new[3].items() if v - old[3].get(k, 0) > 0}
        answered = sum(times.values())

        def pct(p: float) -> float | None:
            return (
                float(calculate_response_time_percentile(times, answered, p)) if answered else None
            )

        return {
            "seconds": round(seconds, 3),
            "requests": requests,
            "failures": failures,
            "rps": requests / seconds,
            "error_rate": failures / requests if requests else 0.0,
            "p50_ms": pct(0.5),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
        }

    def tick(self) -> dict[str, Any]:
        now = self._snapshot()
        self.history.append(now)
        while self.history and now[0] - self.history[0][0] > self.window:
            self.history.popleft()
        return self._between(self.history[0], now)

    def phase(self, at: float | None = None) -> dict[str, Any]:
        """The figures since the last phase ended; this one ends at ``at`` (monotonic seconds,
        default now), though requests that completed until now are in it."""
        now = self._snapshot(at)
        figures, self.phase_start = self._between(self.phase_start, now), now
        return {**figures, "planned_rps": self.planned_rps}


class Phases:
    """Ends phases: the figures of every request that completed in the phase, also those a
    worker made and has not reported yet (see ``chaosml.load.marks``)."""

    def __init__(self, runner: Any, figures: Figures, plan: LoadPlan) -> None:
        self.runner, self.figures, self.plan = runner, figures, plan
        self.marks = Marks(runner) if plan.workers else None

    def end(self, *, stop: bool = False) -> dict[str, Any]:
        """End the current phase now; with ``stop``, stop the users first (a request in flight
        completes or times out, and is in this phase)."""
        at, exact = time.monotonic(), True
        if self.marks is not None:
            timeout = self.plan.timeout + 5 if stop else MARK_TIMEOUT
            exact = self.marks.flush(stop=stop, timeout=timeout)
        elif stop:
            self.runner.stop()
        return {**self.figures.phase(at), "exact": exact}


def run(plan: LoadPlan) -> None:
    """Run until ``stop`` (or ``last NAME``) or end of stdin, reporting on stdout."""
    # a stopped user finishes the request it is in: every request sent completes in a phase
    env = Environment(user_classes=[user_class(plan)], stop_timeout=plan.timeout + 1)
    runner, workers = _runners(env, plan)
    figures = Figures(env.stats, plan.window, plan.rate or None)
    phases = Phases(runner, figures, plan)
    commands = FileObjectThread(sys.stdin, "r")
    go, stopping = gevent.event.Event(), gevent.event.Event()
    last = {"name": "end"}

    def read_commands() -> None:
        for line in commands:
            word, argument = read_command(line)
            if word == "start":
                go.set()
            elif word == "phase":
                emit("phase", name=argument, **phases.end())
            elif word == "last":
                last["name"] = argument
                break
            elif word == "stop":
                break
        stopping.set()
        go.set()

    gevent.spawn(read_commands)
    emit("armed", workers=plan.workers)
    try:
        go.wait()
        if stopping.is_set():
            return
        figures.phase()  # the figures start now
        runner.start(plan.users, spawn_rate=plan.spawn_rate or plan.users)
        emit("ready", workers=plan.workers)
        while not stopping.wait(plan.tick):
            emit("tick", users=runner.user_count, **figures.tick())
        emit("phase", name=last["name"], **phases.end(stop=True))
    finally:
        runner.quit()
        for process in workers:
            process.terminate()
        for process in workers:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        emit("done")


def _runners(env: Environment, plan: LoadPlan) -> tuple[Any, list[subprocess.Popen[bytes]]]:
    """The local runner, or a master runner with ``plan.workers`` worker processes that have the
    plan."""
    if not plan.workers:
        return env.create_local_runner(), []
    # Locust's master returns from start() only after up to 1 s of waiting for the workers'
    # reports; the local runner returns at once, and so should a phase's start in both modes
    os.environ["LOCUST_WAIT_FOR_WORKERS_REPORT_AFTER_RAMP_UP"] = "0"
    port = free_port()
    runner: Any = env.create_master_runner("127.0.0.1", port)
    workers = [
        subprocess.Popen(
            [*WORKER, "--master", f"127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL,
        )
        for _ in range(plan.workers)
    ]
    planned: dict[str, str | None] = {}  # worker id -> None, or why it could not load the plan
    runner.register_message(
        PLANNED, lambda msg, **_: planned.update({msg.node_id: msg.data["error"]})
    )
    try:
        _wait(lambda: len(runner.clients.ready) >= plan.workers, "connected")
        # A worker reads the data when the plan arrives: until it has, it would not start users.
        # The plan goes again to each worker that has not answered: one that took the master's
        # ack and the plan in one go, before its handler for the plan was registered, dropped it.
        text = plan.to_json()
        sent: dict[str, float] = {}  # worker id -> when the plan last went to it

        def all_planned() -> bool:
            now = time.monotonic()
            for client in runner.clients.ready:
                if (
                    client.id not in planned
                    and now - sent.get(client.id, -PLAN_AGAIN) >= PLAN_AGAIN
                ):
                    runner.send_message(PLAN, text, client_id=client.id)
                    sent[client.id] = now
            return len(planned) >= plan.workers

        _wait(all_planned, "loaded the plan")
        errors = [e for e in planned.values() if e]
        if errors:
            raise RuntimeError(f"a worker could not load the plan: {errors[0]}")
    except BaseException:
        for process in workers:
            process.kill()
        raise
    return runner, workers


def _wait(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    if not wait_until(condition, seconds, sleep=gevent.sleep):
        raise RuntimeError(f"the load's workers have not {what} within {seconds:g} s")


def worker(master: str) -> None:
    """A Locust worker: waits for the master's plan, then runs users as the master says."""
    host, _, port = master.rpartition(":")
    import locust.runners

    locust.runners.WORKER_REPORT_INTERVAL = 1.0  # default 3 s: too coarse for stop conditions
    env = Environment(user_classes=[])
    runner = env.create_worker_runner(host, int(port))

    def on_plan(environment: Environment, msg: Any, **_: Any) -> None:
        if env.user_classes:  # the plan again, as the master had no answer yet: answer again
            runner.send_message(PLANNED, {"error": None})
            return
        try:
            env.user_classes = [user_class(LoadPlan.from_json(msg.data))]
        except Exception as exc:
            runner.send_message(PLANNED, {"error": f"{type(exc).__name__}: {exc}"})
            return
        runner.send_message(PLANNED, {"error": None})

    runner.register_message(PLAN, on_plan)
    answer_marks(runner)
    runner.greenlet.join()


def main(argv: list[str]) -> None:
    if argv[:1] == ["worker"]:
        worker(argv[argv.index("--master") + 1])
        return
    plan = LoadPlan.from_json(sys.stdin.readline())
    try:
        run(plan)
    except Exception as exc:  # the runner reads this line; a traceback on stderr helps no one
        emit("error", message=f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from exc
