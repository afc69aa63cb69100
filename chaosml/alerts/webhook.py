"""A webhook receiver for Alertmanager, and the alert source built on it.

Alertmanager POSTs ``{"version": "4", "status": "firing"|"resolved", "alerts": [{"status",
"labels", "annotations", "startsAt", "endsAt", "fingerprint", ...}], "groupLabels", ...}``.
The receiver keeps every alert in arrival order; readers take what arrived after their cursor,
under the same lock the writers hold, so nothing that arrives while they read is lost.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from chaosml._net import split_address
from chaosml.alerts.base import AlertState, RuleInfo
from chaosml.errors import InputError


@dataclass(frozen=True)
class ReceivedAlert:
    name: str
    status: str
    labels: dict[str, str]
    received_at: float  # Unix seconds, by this machine's clock


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # Alertmanager sends bursts; the default backlog (5) refuses them
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a sender that hung up mid-request has nothing to be told: no traceback on the terminal
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass(kw_only=True)
class WebhookReceiver:
    """Receives Alertmanager webhooks on ``host:port`` (``port=0``: a free one) in a thread."""

    host: str = "127.0.0.1"
    port: int = 0
    path: str = "/alerts"
    _alerts: list[ReceivedAlert] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: Alertmanager reuses its connection
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                try:
                    receiver.record(json.loads(self.rfile.read(length)))
                    self.send_response(200)
                except (ValueError, KeyError, TypeError, AttributeError):
                    self.send_response(400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

        try:
            self._server = _Server((self.host, self.port), Handler)
        except OSError as exc:
            raise InputError(
                f"webhook receiver: cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from exc
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def record(self, payload: dict[str, Any]) -> None:
        now = time.time()
        received = []
        for alert in payload["alerts"]:
            labels = {str(k): str(v) for k, v in dict(alert.get("labels", {})).items()}
            name = labels.get("alertname", "")
            received.append(ReceivedAlert(name, str(alert.get("status", "")), labels, now))
        with self._lock:
            self._alerts.extend(received)

    def since(self, cursor: int) -> tuple[list[ReceivedAlert], int]:
        """Alerts received after ``cursor`` (0: all), and the cursor to pass next time."""
        with self._lock:
            return self._alerts[cursor:], len(self._alerts)

    @property
    def alerts(self) -> list[ReceivedAlert]:
        return self.since(0)[0]

    def received(self, name: str, status: str = "firing") -> list[ReceivedAlert]:
        return [a for a in self.alerts if a.name == name and a.status == status]

    def follow(
        self, handle: Callable[[ReceivedAlert], None], stop: threading.Event, every: float = 0.2
    ) -> None:
        """Call ``handle`` with each alert as it arrives, until ``stop`` is set."""
        cursor = 0
        while True:
            new, cursor = self.since(cursor)
            for alert in new:
                handle(alert)
            if stop.wait(every) and not self.since(cursor)[0]:
                return

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass(kw_only=True)
class WebhookAlerts:
    """The receiver as an alert source: an alert is firing from the first notification that says
    so until one says it resolved. ``since`` is the delivery time: proof it reached a receiver."""

    listen: str
    path: str = "/alerts"
    name: str = "webhook"
    _receiver: WebhookReceiver | None = None
    _cursor: int = 0
    _active: dict[tuple[str, tuple[tuple[str, str], ...]], AlertState] = field(default_factory=dict)

    def start(self) -> None:
        host, port = split_address(self.listen)
        self._receiver = WebhookReceiver(host=host, port=port, path=self.path).start()

    def rules(self) -> list[RuleInfo] | None:
        return None

    def poll(self) -> list[AlertState]:
        assert self._receiver is not None, "start() first"
        new, self._cursor = self._receiver.since(self._cursor)
        for alert in new:
            labels = {k: v for k, v in alert.labels.items() if k != "alertname"}
            state = AlertState(alert.name, labels, "firing", alert.received_at)
            if alert.status == "resolved":
                self._active.pop(state.key, None)
            else:
                self._active.setdefault(state.key, state)
        return list(self._active.values())

    def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.stop()
            self._receiver = None
