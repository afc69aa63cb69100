"""A tiny model service that embeds chaosml's in-service fault point, as a service installed with
the bare core (``pip install chaosml``) would: the standard library's http.server, a predict
function, ``FaultPoint.from_env`` around it. Run by tests/test_packaging.py inside a fresh venv.

It checks, and exits non-zero unless: with no toxic the service answers its model's predictions; a ``constant_prediction`` toxic added through the
control API (urllib, Toxiproxy's JSON) changes what the service answers; an ``http_error`` toxic
raises ``chaosml.InjectedError`` (a ``ChaosmlError``), which the service answers with its status.
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def main() -> None:
    import numpy as np

    import chaosml

    point = chaosml.FaultPoint.from_env()  # CHAOSML_FAULT_POINT=127.0.0.1:0
    assert point.enabled and point.api is not None, "CHAOSML_FAULT_POINT is not set"

    def predict(columns: dict[str, Any]) -> tuple[Any, Any]:
        scores = np.clip(np.asarray(columns["income"], dtype=float) / 100_000, 0, 1)
        return (scores >= 0.5).astype(int), scores

    class Service(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            rows = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["instances"]
            columns = {k: np.array([row[k] for row in rows], dtype=object) for k in rows[0]}
            try:
                answer = point(predict, columns)
            except chaosml.InjectedError as exc:
                self._send(exc.status, exc.body.encode())
                return
            body = {"predictions": answer.predictions.tolist()}
            self._send(200, json.dumps(body).encode())

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/predict"
    rows = [{"income": 90_000}, {"income": 10_000}, {"income": 70_000}]
    try:
        assert post(url, {"instances": rows}) == (200, {"predictions": [1, 0, 1]})
        toxics = f"http://{point.api}/proxies/service/toxics"
        post(toxics, {"type": "constant_prediction", "attributes": {"value": 0, "score": 0.1}})
        assert post(url, {"instances": rows}) == (200, {"predictions": [0, 0, 0]})
        post(toxics, {"type": "http_error", "name": "down", "attributes": {"status": 503}})
        assert post(url, {"instances": rows}) == (503, {"error": "injected by chaosml"})
    finally:
        server.shutdown()
        point.close()
    print("embedded fault point: ok")


def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


if __name__ == "__main__":
    main()
    sys.exit(0)
