"""Phase marks in Locust's distributed mode: every worker's requests up to a mark, in that phase.

A Locust worker sends its request stats to the master every ``WORKER_REPORT_INTERVAL`` seconds
(and resets them; on ``quit`` it sends a last report), so at any instant the master lacks up to one
interval of each worker's requests. Figures taken from the master's stats at a mark would put those
requests in the next phase, and the requests after the last report would be in no phase at all.

So a mark is a round trip: the master sends ``chaosml-mark`` to every worker; each worker takes its
stats report at once (the same report Locust sends periodically, which resets the worker's stats)
and answers ``chaosml-marked`` with it; the master applies each answer as Locust applies a periodic
report, and the phase's figures are read when every worker has answered. A request is in the phase
during which it completed, as the worker that made it saw it: before or after that worker took the
mark (milliseconds after the master sent it). With ``stop``, each worker first stops its users,
letting a request in flight complete (or time out), so the last phase also holds those.
"""

from __future__ import annotations

from typing import Any

import gevent
from gevent.event import Event
from locust.runners import STATE_MISSING

MARK, MARKED = "chaosml-mark", "chaosml-marked"


class Marks:
    """The master's side: ``flush()`` returns once every worker's requests so far are in the
    master's stats, or the timeout passed (then False)."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.number = 0
        self.waiting: set[str] = set()
        self.answered = Event()
        runner.register_message(MARKED, self._marked)

    def flush(self, *, stop: bool = False, timeout: float = 5.0) -> bool:
        self.number += 1
        self.waiting = {c.id for c in self.runner.clients.all if c.state != STATE_MISSING}
        self.answered.clear()
        for client in list(self.waiting):
            self.runner.send_message(MARK, {"number": self.number, "stop": stop}, client)
        if not self.waiting:
            return True
        with gevent.Timeout(timeout, False):
            self.answered.wait()
        return not self.waiting

    def _marked(self, environment: Any, msg: Any, **_: Any) -> None:
        # a late answer (to a mark that timed out) still carries requests: they go to this phase
        environment.events.worker_report.fire(client_id=msg.node_id, data=msg.data["report"])
        if msg.data["number"] == self.number:
            self.waiting.discard(msg.node_id)
            if not self.waiting:
                self.answered.set()


def answer_marks(runner: Any) -> None:
    """The worker's side: answer each mark with this worker's stats report (stopping its users
    first, when the mark says so: a request in flight may complete within the ``stop_timeout``
    the master sent with the users)."""

    def on_mark(environment: Any, msg: Any, **_: Any) -> None:
        if msg.data["stop"]:
            runner.stop()
        # no greenlet switch between taking the report (which resets the stats) and sending it,
        # so the periodic reports and this one never overlap or miss a request
        report: dict[str, Any] = {}
        environment.events.report_to_master.fire(client_id=runner.client_id, data=report)
        runner.send_message(MARKED, {"number": msg.data["number"], "report": report})

    # concurrent: stopping users can take a request's timeout, and the worker must keep
    # answering the master's heartbeats meanwhile
    runner.register_message(MARK, on_mark, concurrent=True)
