"""Real servers on loopback: the demo model service (v2 and v1), an echo service that answers with
the request it received, and the chaosml proxy driven through toxiproxy-python."""

from __future__ import annotations

import os
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer

from chaosml.codecs import plain
from chaosml.demo.data import make_credit
from chaosml.demo.harness import find_binary
from chaosml.demo.service import serving, serving_app
from chaosml.demo.train import DemoArtifacts
from chaosml.proxy.api import ProxyServer, running


class _Quiet(socketserver.ThreadingTCPServer):
    """A test server: a client that hangs up (the proxy dropping a connection on purpose) is
    no traceback in the test run's output."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def threaded_server(handler: type[socketserver.BaseRequestHandler]) -> Iterator[str]:
    """``handler`` serving each connection on a thread of its own on loopback: its address."""
    server = _Quiet(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def require_binaries(*names: tuple[str, ...]) -> None:
    """Skip without Prometheus/Alertmanager (or promtool) locally; fail under CI=true."""
    missing = [group[0] for group in names if find_binary(group) is None]
    if missing:
        reason = f"needs {', '.join(missing)} (apt-get install prometheus prometheus-alertmanager)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)


def wait_for(condition: Callable[[], object], seconds: float, every: float = 0.05) -> bool:
    """True as soon as ``condition()`` holds, False if it did not within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False


def within_plan(rps: float, planned: float) -> bool:
    """A paced load never runs ahead of its plan (5% for the window's edges); a busy machine may
    hold it back, so below the plan the bound is generous."""
    return 0.8 * planned <= rps <= 1.05 * planned


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    try:
        payload: Any = await request.json()
    except ValueError:
        payload = body.decode(errors="replace")
    return JSONResponse({"echo": payload, "predictions": [1, 0, 1]})


async def big(request: Request) -> JSONResponse:
    return JSONResponse({"blob": "x" * 20_000})


@pytest.fixture(scope="session")
def echo_service() -> Iterator[str]:
    app = Starlette(routes=[Route("/predict", echo, methods=["POST"]), Route("/big", big)])
    with serving_app(app) as address:
        yield address


@pytest.fixture(scope="session")
def model_v2(demo: DemoArtifacts) -> Iterator[str]:
    with serving(demo.v2, version="v2") as address:
        yield address


@pytest.fixture(scope="session")
def model_v1(demo: DemoArtifacts) -> Iterator[str]:
    with serving(demo.v1, version="v1") as address:
        yield address


@pytest.fixture(scope="session")
def proxy_server() -> Iterator[ProxyServer]:
    with running(ProxyServer(api="127.0.0.1:0", reap_interval=0.05)) as server:
        yield server


@pytest.fixture
def toxiproxy(proxy_server: ProxyServer) -> Iterator[Toxiproxy]:
    """A toxiproxy-python client pointed at the chaosml proxy; every proxy removed after."""
    host, port = proxy_server.api.split(":")
    APIConsumer.host, APIConsumer.port = host, int(port)
    client = Toxiproxy()
    yield client
    client.destroy_all()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="session")
def rows() -> list[dict[str, Any]]:
    frame = make_credit(40, seed=9).drop(columns=["approved"])
    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
