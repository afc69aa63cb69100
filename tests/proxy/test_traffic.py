"""A bounded load through the proxy, counted at the client, the proxy and the upstream: no request
lost, none doubled, and every reply delivered to the client that asked for it."""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chaosml.demo.service import serving_app
from chaosml.proxy.api import ProxyServer, running

CLIENTS = 8
PER_CLIENT = 150


class Counting:
    """An upstream answering each request with the ids it was sent, counting what it saw."""

    def __init__(self) -> None:
        self.seen = 0
        self.lock = threading.Lock()

    async def predict(self, request: Request) -> JSONResponse:
        rows = (await request.json())["instances"]
        with self.lock:
            self.seen += 1
        return JSONResponse(
            {"predictions": [row["id"] for row in rows], "ages": [row["age"] for row in rows]}
        )


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[Counting, str]]:
    counting = Counting()
    app = Starlette(routes=[Route("/predict", counting.predict, methods=["POST"])])
    with serving_app(app) as address:
        yield counting, address


def proxied(server: ProxyServer) -> float:
    text = requests.get(f"http://{server.api}/metrics", timeout=5).text
    match = re.search(r'chaosml_proxy_requests_total\{proxy="load"\} ([\d.e+]+)', text)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize("toxic", [None, "missing_values"])
def test_no_loss_and_no_crossed_replies(upstream: tuple[Counting, str], toxic: str | None) -> None:
    counting, address = upstream
    ids = itertools.count()
    with running(ProxyServer(api="127.0.0.1:0")) as server:
        api = f"http://{server.api}"
        listen = requests.post(
            f"{api}/proxies", json={"name": "load", "upstream": address}, timeout=5
        ).json()["listen"]
        if toxic:
            requests.post(
                f"{api}/proxies/load/toxics",
                json={"type": toxic, "stream": "upstream", "attributes": {"columns": ["age"]}},
                timeout=5,
            ).raise_for_status()
        before = counting.seen

        def client(_: int) -> tuple[int, int]:
            ok = crossed = 0
            with requests.Session() as session:
                for _ in range(PER_CLIENT):
                    mine = [f"r{next(ids)}" for _ in range(3)]
                    body = {"instances": [{"id": i, "age": 40} for i in mine]}
                    answer = session.post(f"http://{listen}/predict", json=body, timeout=10)
                    ok += answer.status_code == 200
                    reply = answer.json()
                    crossed += reply["predictions"] != mine
                    if toxic:
                        assert reply["ages"] == [None, None, None]
                    else:
                        assert reply["ages"] == [40, 40, 40]
            return ok, crossed

        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(client, range(CLIENTS)))
        sent = CLIENTS * PER_CLIENT
        assert sum(ok for ok, _ in results) == sent
        assert sum(crossed for _, crossed in results) == 0
        assert counting.seen - before == sent
        assert proxied(server) == sent
