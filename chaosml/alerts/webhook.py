"""A webhook receiver for Alertmanager: it records every notification it is sent.

Alertmanager POSTs ``{"version": "4", "status": "firing"|"resolved", "alerts": [{"status",
"labels", "annotations", "startsAt", "endsAt", "fingerprint", ...}], "groupLabels", ...}``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class ReceivedAlert:
    name: str
    status: str
    labels: dict[str, str]
    received_at: float  # time.monotonic()


@dataclass
class WebhookReceiver:
    """Receives Alertmanager webhooks on ``host:port`` (``port=0``: a free one) in a thread."""

    host: str = "127.0.0.1"
    port: int = 0
    path: str = "/alerts"
    alerts: list[ReceivedAlert] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                try:
                    receiver.record(json.loads(self.rfile.read(length)))
                    self.send_response(200)
                except (ValueError, KeyError, TypeError):
                    self.send_response(400)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def record(self, payload: dict[str, Any]) -> None:
        now = time.monotonic()
        with self._lock:
            for alert in payload["alerts"]:
                labels = dict(alert.get("labels", {}))
                self.alerts.append(
                    ReceivedAlert(labels.get("alertname", ""), alert.get("status", ""), labels, now)
                )

    def received(self, name: str, status: str = "firing") -> list[ReceivedAlert]:
        with self._lock:
            return [a for a in self.alerts if a.name == name and a.status == status]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
