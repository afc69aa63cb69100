"""A shadow through the real proxy: the demo's v1 served as the primary, v2 (or a candidate that
is down, slow or answers garbage) as the candidate; what the client gets, what is recorded, and
what is counted."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from chaosml.demo.data import LABEL
from chaosml.demo.service import serving_app
from chaosml.demo.train import DemoArtifacts
from chaosml.proxy.api import ProxyServer, running
from chaosml.proxy.client import ControlClient, ControlRefused
from chaosml.versions import load_model

BATCH = 25


@contextmanager
def served(demo: DemoArtifacts, version: str) -> Iterator[str]:
    """``chaosml demo serve --version VERSION`` on a free loopback port: its ``host:port``."""
    command = [sys.executable, "-m", "chaosml", "demo", "serve", "--out", str(demo.folder)]
    command += ["--version", version, "--port", "0", "--no-monitors"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            line = ""
            while not line.startswith("serving demo model"):
                line = process.stderr.readline()
                assert line, "the service stopped before serving"
            yield line.split("http://", 1)[1].split("/", 1)[0]
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def v1(demo: DemoArtifacts) -> Iterator[str]:
    with served(demo, "v1") as address:
        yield address


@pytest.fixture(scope="module")
def v2(demo: DemoArtifacts) -> Iterator[str]:
    with served(demo, "v2") as address:
        yield address


def payloads(demo: DemoArtifacts, n: int) -> list[dict[str, Any]]:
    rows = pd.read_parquet(demo.data).drop(columns=[LABEL]).iloc[: n * BATCH]
    records = rows.astype(object).where(rows.notna(), None).to_dict("records")
    return [{"instances": records[i : i + BATCH]} for i in range(0, len(records), BATCH)]


@contextmanager
def shadowed(primary: str, candidate: str, folder: Path, **extra: Any) -> Iterator[Any]:
    """A proxy to ``primary`` with a shadow to ``candidate``: (its address, the client, counts)."""
    with running(ProxyServer(api="127.0.0.1:0")) as server:
        client = ControlClient(address=server.api)
        listen = client.create_proxy("model", primary, "127.0.0.1:0")["listen"]
        body = {"candidate": candidate, "codec": "records", "folder": str(folder), **extra}
        client.request("POST", "/proxies/model/shadow", body)
        final: dict[str, Any] = {}
        yield listen, client, final
        final.update(client.remove_shadow("model"))


def send(listen: str, bodies: list[dict[str, Any]]) -> list[requests.Response]:
    with requests.Session() as session:
        return [session.post(f"http://{listen}/predict", json=b, timeout=10) for b in bodies]


def test_the_recorded_pairs_are_the_two_models_offline_predictions_on_the_same_rows(
    demo: DemoArtifacts, v1: str, v2: str, tmp_path: Path
) -> None:
    bodies = payloads(demo, 40)
    with shadowed(v1, v2, tmp_path) as (listen, _, counts):
        answers = send(listen, bodies)
    assert [a.status_code for a in answers] == [200] * len(bodies)
    # the client got the primary's answer: v1's, as it answers directly
    direct = send(v1, bodies[:5])
    assert [a.json()["predictions"] for a in answers[:5]] == [
        d.json()["predictions"] for d in direct
    ]
    assert {a.json()["model_version"] for a in answers} == {"v1"}
    n = len(bodies) * BATCH
    assert counts["mirrored"] == len(bodies) and counts["answered"] == len(bodies)
    assert counts["dropped"] == 0 and counts["recorded_rows"] == n
    rows = pd.read_parquet(tmp_path / "rows.parquet")
    primary = pd.read_parquet(tmp_path / "primary.parquet")
    candidate = pd.read_parquet(tmp_path / "candidate.parquet")
    assert len(rows) == len(primary) == len(candidate) == n
    # the ids the primary answered, in the order it answered them
    ids = [i for a in answers for i in a.json()["ids"]]
    assert sorted(rows["id"]) == sorted(ids) and rows["id"].is_unique
    order = rows.set_index("id").loc[ids]  # rows by answer order (copies may finish out of order)
    features = order[list(load_model(demo.v1).feature_names_in_)]
    for model_path, recorded in ((demo.v1, primary), (demo.v2, candidate)):
        model = load_model(model_path)
        by_id = recorded.set_index(rows["id"]).loc[ids]
        assert (by_id["prediction"].to_numpy() == model.predict(features)).all()
        offline = model.predict_proba(features)[:, 1]
        # batches of 25 served vs 1000 offline: the same sums in another order, to the last bits
        assert np.abs(by_id["score"].to_numpy() - offline).max() <= 1e-12
    # the two models do differ on these rows: the comparison is not vacuous
    assert (primary["prediction"] != candidate["prediction"]).any()


class Bad:
    """A candidate that sleeps 2 s before answering, or answers what no codec reads."""

    async def slow(self, request: Request) -> Response:
        await request.body()
        await asyncio.sleep(2)
        return Response(b'{"predictions": []}', media_type="application/json")

    async def garbage(self, request: Request) -> Response:
        await request.body()
        return PlainTextResponse("<html>not a prediction</html>")


@pytest.fixture(scope="module")
def bad() -> Iterator[dict[str, str]]:
    app = Starlette(
        routes=[Route("/predict", Bad().slow, methods=["POST"])],
    )
    garbage = Starlette(routes=[Route("/predict", Bad().garbage, methods=["POST"])])
    with serving_app(app) as slow, serving_app(garbage) as junk:
        yield {"slow": slow, "garbage": junk}


def closed_port() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(
    ("kind", "reasons"),
    [
        ("down", {"candidate error"}),
        ("slow", {"candidate timeout", "queue full", "unsent at stop"}),
        ("garbage", {"candidate answer unreadable"}),
    ],
)
def test_a_bad_candidate_costs_the_primary_nothing_and_every_copy_is_counted(
    demo: DemoArtifacts,
    v1: str,
    bad: dict[str, str],
    tmp_path: Path,
    kind: str,
    reasons: set[str],
) -> None:
    candidate = closed_port() if kind == "down" else bad[kind]
    bodies = payloads(demo, 30)
    with shadowed(v1, candidate, tmp_path, timeout=0.5, queue=4) as (listen, client, counts):
        answers = send(listen, bodies)
        live = client.shadow("model")
    assert [a.status_code for a in answers] == [200] * len(bodies)  # 0 failed requests
    assert all(len(a.json()["predictions"]) == BATCH for a in answers)
    assert live["mirrored"] == len(bodies)
    assert counts["mirrored"] == len(bodies) and counts["answered"] == (
        len(bodies) if kind == "garbage" else 0
    )
    # every copy accounted for: none recorded, each dropped with its reason
    assert counts["recorded_rows"] == 0 and counts["dropped"] == len(bodies)
    assert set(counts["drops"]) <= reasons and counts["drops"]
    if kind == "slow":
        assert counts["drops"].get("queue full", 0) > 0  # 4 in the queue, 4 on their way
    assert not (tmp_path / "rows.parquet").exists()


def test_the_shadow_endpoints_answer_as_the_control_api_does(tmp_path: Path) -> None:
    app = Starlette(routes=[])
    with serving_app(app) as upstream, running(ProxyServer(api="127.0.0.1:0")) as server:
        client = ControlClient(address=server.api)
        client.create_proxy("model", upstream, "127.0.0.1:0")
        before = client.proxy("model")
        where = "/proxies/model/shadow"
        cases = [
            ("POST", "/proxies/nope/shadow", {"candidate": upstream, "folder": "x"}, 404),
            ("POST", where, {"folder": str(tmp_path)}, 400),
            ("POST", where, {"candidate": "nohost", "folder": str(tmp_path)}, 400),
            ("POST", where, {"candidate": upstream, "folder": "x", "codec": "avro"}, 400),
            ("POST", where, {"candidate": upstream, "folder": "x", "timeout": -1}, 400),
            ("GET", where, None, 404),
            ("DELETE", where, None, 404),
        ]
        for method, path, body, status in cases:
            with pytest.raises(ControlRefused) as caught:
                client.request(method, path, body)
            assert caught.value.status == status, (method, path, body)
        made = client.set_shadow("model", upstream, "records", str(tmp_path))
        assert made["mirrored"] == 0 and made["candidate"] == upstream
        with pytest.raises(ControlRefused) as caught:
            client.set_shadow("model", upstream, "records", str(tmp_path))
        assert caught.value.status == 409
        # the proxy's own JSON is Toxiproxy's shape, shadow or not
        assert client.proxy("model") == before
        assert json.loads(json.dumps(client.remove_shadow("model")))["dropped"] == 0
        with pytest.raises(ControlRefused):
            client.shadow("model")
