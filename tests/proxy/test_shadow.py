"""A shadow through the real proxy: the demo's v1 served as the primary, v2 (or a candidate that
is down, slow or answers garbage) as the candidate; what the client gets, what is recorded, and
what is counted."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
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
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from chaosml._wait import wait_until
from chaosml.demo.data import LABEL
from chaosml.demo.release import served
from chaosml.demo.service import serving_app
from chaosml.demo.train import DemoArtifacts
from chaosml.proxy.api import ProxyServer, running
from chaosml.proxy.client import ControlClient, ControlRefused
from chaosml.versions import load_model

BATCH = 25


@pytest.fixture(scope="module")
def v1(demo: DemoArtifacts) -> Iterator[str]:
    with served(demo.folder, "v1") as address:
        yield address


@pytest.fixture(scope="module")
def v2(demo: DemoArtifacts) -> Iterator[str]:
    with served(demo.folder, "v2") as address:
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


def test_feedback_through_the_proxy_is_recorded_as_labels_and_not_copied(
    demo: DemoArtifacts, v1: str, v2: str, tmp_path: Path
) -> None:
    bodies = payloads(demo, 10)
    truth = pd.read_parquet(demo.data)[LABEL].iloc[: 10 * BATCH].tolist()
    with shadowed(v1, v2, tmp_path, feedback="/feedback") as (listen, _, counts):
        answers = send(listen, bodies)
        ids = [i for a in answers for i in a.json()["ids"]]
        with requests.Session() as session:
            for start in range(0, len(ids), BATCH):
                pairs = zip(ids[start : start + BATCH], truth[start : start + BATCH], strict=True)
                labels = {"labels": [{"id": i, "label": y} for i, y in pairs]}
                answer = session.post(f"http://{listen}/feedback", json=labels, timeout=10)
                assert answer.status_code == 200, answer.text  # the service got it too
    assert counts["mirrored"] == len(bodies) and counts["dropped"] == 0
    assert counts["feedback"]["requests"] == len(bodies)
    assert counts["feedback"]["labels"] == len(ids) and counts["feedback"]["dropped"] == 0
    parts = sorted((tmp_path / "_labels").glob("part-*.parquet"))
    recorded = pd.concat([pd.read_parquet(f) for f in parts])
    assert recorded.set_index("id")["label"].to_dict() == dict(zip(ids, truth, strict=True))


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
        ("down", {"candidate error", "candidate down"}),
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
    if kind == "down":
        assert counts["drops"]["candidate error"] >= 3  # tried until it refused three in a row
    assert not (tmp_path / "rows.parquet").exists()


async def zeros(request: Request) -> Response:
    """A candidate that answers every row 0 with score 0.5."""
    n = len(json.loads(await request.body())["instances"])
    return JSONResponse({"predictions": [0] * n, "scores": [0.5] * n})


def settled(client: ControlClient) -> dict[str, Any]:
    """The shadow's counts once every copy offered is answered or dropped (a bound: 60 s)."""
    for _ in range(600):
        now: dict[str, Any] = client.shadow("model")
        if now["answered"] + now["dropped"] == now["mirrored"]:
            return now
        time.sleep(0.1)
    raise AssertionError(f"copies unaccounted for: {now}")


def test_a_candidate_that_refuses_is_left_alone_for_a_while_and_copied_to_once_it_is_back(
    demo: DemoArtifacts, v1: str, tmp_path: Path
) -> None:
    from chaosml.proxy.shadow import BACKOFF, REFUSALS

    bodies = payloads(demo, 5)
    port = int(closed_port().rsplit(":", 1)[1])
    with shadowed(v1, f"127.0.0.1:{port}", tmp_path) as (listen, client, counts):
        for _ in range(REFUSALS):  # one copy at a time, each refused
            send(listen, bodies[:1])
            settled(client)
        assert settled(client)["drops"] == {"candidate error": REFUSALS}
        send(listen, bodies)  # within the pause (0.1 s, doubling): dropped at once, not tried
        paused = settled(client)["drops"]
        assert paused["candidate down"] >= 1 and sum(paused.values()) == REFUSALS + len(bodies)
        app = Starlette(routes=[Route("/predict", zeros, methods=["POST"])])
        with serving_app(app, port=port):  # the candidate is back
            time.sleep(BACKOFF)  # the longest pause is over
            answers = send(listen, bodies)
            after = settled(client)
    assert [a.status_code for a in answers] == [200] * len(bodies)
    assert after["answered"] == len(bodies) and after["drops"] == paused
    assert counts["recorded_rows"] == len(bodies) * BATCH


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
            ("POST", where, {"candidate": upstream, "folder": "x", "lease": 0}, 400),
            ("POST", where, {"candidate": upstream, "folder": "x", "lease": True}, 400),
            ("GET", where, None, 404),
            ("PATCH", where, {}, 404),
            ("DELETE", where, None, 404),
        ]
        for method, path, body, status in cases:
            with pytest.raises(ControlRefused) as caught:
                client.request(method, path, body)
            assert caught.value.status == status, (method, path, body)
        made = client.set_shadow("model", upstream, "records", str(tmp_path))
        assert made["mirrored"] == 0 and made["candidate"] == upstream and made["lease"] is None
        for body in ({"lease": -1}, {"weight": 1}, [1]):
            with pytest.raises(ControlRefused) as caught:
                client.request("PATCH", where, body)
            assert caught.value.status == 400, body
        assert client.renew_shadow("model", 30)["lease"] == 30
        with pytest.raises(ControlRefused) as caught:
            client.set_shadow("model", upstream, "records", str(tmp_path))
        assert caught.value.status == 409
        # the proxy's own JSON is Toxiproxy's shape, shadow or not
        assert client.proxy("model") == before
        assert json.loads(json.dumps(client.remove_shadow("model")))["dropped"] == 0
        with pytest.raises(ControlRefused):
            client.shadow("model")


SUITE = Path(__file__).resolve().parents[2] / "slices" / "credit.yaml"


def target_file(folder: Path, api: str, url: str = "http://127.0.0.1:9/predict") -> Path:
    path = folder / "target.yaml"
    path.write_text(
        f"url: {url}\ncodec: records\n"
        f"fault_points:\n  proxy: {{api: '{api}', proxy: model}}\n"
        "alerts:\n  - {type: prometheus, url: 'http://127.0.0.1:9'}\n"
    )
    return path


def shadow_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "chaosml", "shadow", "--suite", str(SUITE), *args]


def until_shadowing(client: ControlClient, run: subprocess.Popen[bytes]) -> None:
    """Until the command ``run`` has set the shadow on proxy ``model`` (at most 60 s)."""
    for _ in range(600):
        try:
            client.shadow("model")
            return
        except ControlRefused:
            assert run.poll() is None, run.stderr.read() if run.stderr else ""
            time.sleep(0.1)
    pytest.fail("the command did not set the shadow within 60 s")


def test_the_command_records_judges_and_joins_labels_and_ctrl_c_ends_it_with_its_report(
    demo: DemoArtifacts, v1: str, v2: str, tmp_path: Path
) -> None:
    bodies = payloads(demo, 40)
    truth = pd.read_parquet(demo.data)[LABEL].iloc[: 40 * BATCH].to_numpy()
    with running(ProxyServer(api="127.0.0.1:0")) as server:
        client = ControlClient(address=server.api)
        listen = client.create_proxy("model", v1, "127.0.0.1:0")["listen"]
        target = target_file(tmp_path, server.api)
        labels = tmp_path / "labels.csv"
        command = shadow_cli("--target", str(target), "--candidate", f"http://{v2}/predict")
        command += ["--duration", "1h", "--labels", str(labels), "--json"]
        command += ["--out", str(tmp_path / "runs")]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as run:
            try:
                until_shadowing(client, run)
                answers = send(listen, bodies)
                ids = [i for a in answers for i in a.json()["ids"]]
                # feedback for all but the last batch: labels join by id, unlabelled rows stay
                pd.DataFrame({"id": ids[:-BATCH], "label": truth[:-BATCH]}).to_csv(labels)
                run.send_signal(signal.SIGINT)
                out, err = run.communicate(timeout=180)  # a bound on a wait, not a timing
            finally:
                if run.poll() is None:
                    run.kill()
        with pytest.raises(ControlRefused):  # the shadow is removed
            client.shadow("model")
    assert run.returncode == 130, err
    report = json.loads(out)
    assert report["schema"] == "chaosml.shadow/1" and report["interrupted"]
    n = len(bodies) * BATCH
    assert report["counts"]["mirrored"] == len(bodies) and report["counts"]["recorded_rows"] == n
    assert report["labelled_rows"] == n - BATCH
    # oracle: the two models offline on the same rows
    rows = pd.read_parquet(demo.data).drop(columns=[LABEL]).iloc[:n]
    first, second = load_model(demo.v1).predict(rows), load_model(demo.v2).predict(rows)
    overall = report["slices"][0]
    assert overall["name"] == "overall" and overall["n"] == n
    assert overall["disagree"] == int((first != second).sum()) > 0
    apac = next(s for s in report["slices"] if s["name"] == "region=APAC")
    in_apac = (rows["region"] == "APAC").to_numpy()
    assert apac["n"] == int(in_apac.sum())
    assert apac["disagree"] == int((first != second)[in_apac].sum())
    low, high = apac["ci"]
    assert low <= apac["rate"] <= high
    # the rule: a slice disagreeing beyond max_drop (its interval's low end above it) fails it
    judged = [s for s in report["slices"] if s["verdict"] != "too small"]
    failing = [s for s in judged if s["ci"][0] > report["rule"]["max_disagreement"]]
    assert {s["name"] for s in failing} == {
        s["name"] for s in report["slices"] if s["verdict"] == "disagrees"
    }
    assert report["comparison"] is not None
    assert report["comparison"]["overall"]["n"] == n - BATCH
    # the folder is a valid --data for slices compare, the two answers its versions
    folder = Path(report["folder"])
    recorded = pd.read_parquet(folder / "rows.parquet")
    assert LABEL in recorded.columns and recorded[LABEL].notna().sum() == n - BATCH
    sub = folder / "labelled"
    versions = [str(sub / "primary.parquet"), str(sub / "candidate.parquet")]
    data = ["--data", str(sub / "rows.parquet"), "--suite", str(SUITE), "--json"]
    again = subprocess.run(
        [sys.executable, "-m", "chaosml", "slices", "compare", *versions, *data],
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode in (0, 1), again.stderr
    offline = json.loads(again.stdout)
    assert offline["overall"] == report["comparison"]["overall"]
    assert offline["slices"] == report["comparison"]["slices"]


def test_a_running_shadow_shows_each_slice_live_and_joins_the_feedback_labels(
    demo: DemoArtifacts, v1: str, v2: str, tmp_path: Path
) -> None:
    from chaosml.proxy.shadow import FLUSH
    from chaosml.release.shadow import run_shadow

    bodies = payloads(demo, 20)
    truth = pd.read_parquet(demo.data)[LABEL].iloc[: 20 * BATCH].tolist()
    lines: list[str] = []
    sent: list[int] = []
    with running(ProxyServer(api="127.0.0.1:0")) as server:
        client = ControlClient(address=server.api)
        listen = client.create_proxy("model", v1, "127.0.0.1:0")["listen"]
        target = target_file(tmp_path, server.api, f"http://{listen}/predict")
        target.write_text(target.read_text() + f"feedback: http://{listen}/feedback\n")

        def traffic_then_a_flush(seconds: float) -> None:
            """The shadow's first wait carries the traffic and its feedback, then a flush."""
            if not sent:
                answers = send(listen, bodies)
                ids = [i for a in answers for i in a.json()["ids"]]
                pairs = [{"id": i, "label": y} for i, y in zip(ids, truth, strict=True)]
                requests.post(f"http://{listen}/feedback", json={"labels": pairs}, timeout=10)
                sent.append(len(answers))
            time.sleep(FLUSH * 1.5)

        result = run_shadow(
            target,
            f"http://{v2}/predict",
            SUITE,
            duration=FLUSH * 3.5,
            root=tmp_path / "runs",
            say=lines.append,
            wait=traffic_then_a_flush,
        )
    n = len(bodies) * BATCH
    assert any("labels: recorded from the feedback" in line for line in lines), lines
    live = [line for line in lines if line.startswith("live: ")]
    assert live and live[0].startswith("live: overall "), lines
    # the live figures are the final ones: all the traffic came before the first look
    overall = result.slices[0]
    assert f"disagrees on {overall.rate:.4f}" in live[0] and f"of {n} rows" in live[0]
    worst = max(
        (s for s in result.slices[1:] if s.verdict != "too small" and s.ci),
        key=lambda s: s.ci[0] if s.ci else 0,
    )
    assert live[1].startswith(f"live: {worst.name} disagrees on {worst.rate:.4f}")
    assert not (result.folder / "_live").exists()  # the live parts are gone once read
    assert result.labelled == n and result.comparison is not None
    assert result.counts["feedback"]["labels"] == n


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--candidate", "ftp://x/predict"], 2, "expected http://HOST:PORT/PATH"),
        (["--candidate", "http://{closed}/predict"], 3, "candidate 127.0.0.1:"),
        (["--duration", "soon"], 2, "--duration 'soon'"),
        (["--labels", "{missing}"], 2, "no such file"),
        (["--api", "{closed}"], 3, "control API 127.0.0.1:"),
        (["--no-point", ""], 2, "no fault_points.proxy"),
    ],
)
def test_the_command_says_what_is_wrong_in_one_line(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    import socket

    closed = closed_port()
    with (
        socket.create_server(("127.0.0.1", 0)) as listening,  # a candidate that accepts
        running(ProxyServer(api="127.0.0.1:0")) as server,
    ):
        ControlClient(address=server.api).create_proxy("model", closed, "127.0.0.1:0")
        api = closed if "--api" in args else server.api
        target = target_file(tmp_path, api)
        if "--no-point" in args:
            target.write_text(
                "url: http://127.0.0.1:9/predict\nalerts: [{type: prometheus, url: 'http://x:9'}]\n"
            )
        port = listening.getsockname()[1]
        options = {"--candidate": f"http://127.0.0.1:{port}/predict", "--duration": "1s"}
        for key, value in zip(args[::2], args[1::2], strict=True):
            if key not in ("--api", "--no-point"):  # those two are in the target file
                options[key] = value.format(closed=closed, missing=tmp_path / "none.csv")
        command = shadow_cli("--target", str(target), "--out", str(tmp_path))
        for key, value in options.items():
            command += [key, value]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == code, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("chaosml: error: ")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert done.stderr.strip().splitlines()[-1] == errors[0]  # said last, on one line


def test_sigterm_removes_the_shadow_and_reports_as_ctrl_c_does(
    demo: DemoArtifacts, v1: str, v2: str, tmp_path: Path
) -> None:
    bodies = payloads(demo, 5)
    with running(ProxyServer(api="127.0.0.1:0")) as server:
        client = ControlClient(address=server.api)
        listen = client.create_proxy("model", v1, "127.0.0.1:0")["listen"]
        target = target_file(tmp_path, server.api)
        command = shadow_cli("--target", str(target), "--candidate", f"http://{v2}/predict")
        command += ["--duration", "1h", "--json", "--out", str(tmp_path / "runs")]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as run:
            try:
                until_shadowing(client, run)
                send(listen, bodies)
                run.send_signal(signal.SIGTERM)
                out, err = run.communicate(timeout=180)  # a bound on a wait, not a timing
            finally:
                if run.poll() is None:
                    run.kill()
        with pytest.raises(ControlRefused):  # the shadow is removed
            client.shadow("model")
    assert run.returncode == 130, err
    assert b"Traceback" not in err
    report = json.loads(out)
    assert report["interrupted"] and report["counts"]["mirrored"] == len(bodies)


def test_a_shadow_nobody_renews_is_removed_once_its_lease_runs_out(
    demo: DemoArtifacts, v1: str, v2: str, tmp_path: Path
) -> None:
    bodies = payloads(demo, 4)
    with running(ProxyServer(api="127.0.0.1:0", reap_interval=0.05)) as server:
        client = ControlClient(address=server.api)
        listen = client.create_proxy("model", v1, "127.0.0.1:0")["listen"]
        client.set_shadow("model", v2, "records", str(tmp_path), lease=3.0)
        for _ in range(3):  # renewed every half lease, it outlives its lease
            time.sleep(1.5)
            assert client.renew_shadow("model")["lease"] == 3.0
        send(listen, bodies)
        # a bound on a wait, not a timing
        assert wait_until(lambda: _no_shadow(client), 30), "the shadow outlived its lease"

        def recorded() -> int:  # its files are closed whole once the copies under way end
            try:
                return len(pd.read_parquet(tmp_path / "rows.parquet"))
            except (OSError, ValueError):
                return 0

        assert wait_until(lambda: recorded() == len(bodies) * BATCH, 30)
        # traffic after it passes and is not copied
        assert [a.status_code for a in send(listen, bodies)] == [200] * len(bodies)
        assert recorded() == len(bodies) * BATCH


def _no_shadow(client: ControlClient) -> bool:
    try:
        client.shadow("model")
    except ControlRefused as exc:
        return exc.status == 404
    return False


def test_a_run_whose_shadow_lapsed_ends_and_leaves_another_run_s_shadow_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chaosml.release import shadow as shadow_run

    monkeypatch.setattr(shadow_run, "PROGRESS", 0.5)  # a progress line (and renewal) each 0.5 s
    app = Starlette(routes=[])
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    with (
        serving_app(app) as upstream,
        running(ProxyServer(api="127.0.0.1:0", reap_interval=0.05)) as server,
    ):
        client = ControlClient(address=server.api)
        client.create_proxy("model", upstream, "127.0.0.1:0")
        first = client.set_shadow("model", upstream, "records", str(mine), lease=0.2)
        # the run stalled past its lease: the proxy removed its shadow, another run set its own
        assert wait_until(lambda: _no_shadow(client), 30)
        client.set_shadow("model", upstream, "records", str(theirs), lease=60)
        lines: list[str] = []
        point = type("Point", (), {"proxy": "model", "api": server.api})()
        counts, _, interrupted = shadow_run._shadowing(
            client,
            point,
            folder=mine,
            counts=first,
            live=shadow_run.LiveView(None, mine),
            duration=30,
            say=lines.append,
            wait=time.sleep,
            announce=[],
        )
        assert not interrupted and counts == first
        assert any("another run's now" in line for line in lines), lines
        assert client.shadow("model")["folder"] == str(theirs)  # left as it is
