"""A split through the real proxy: two real upstreams on loopback that say who answered, keys from
a header, a column and the client's address; the lease, the figures, the recorded parts."""

from __future__ import annotations

import http.client
import json
import math
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from hashlib import blake2b
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import chaosml
from chaosml.demo.data import LABEL
from chaosml.demo.service import serving_app
from chaosml.demo.train import DemoArtifacts
from chaosml.proxy.api import ProxyServer, running
from chaosml.proxy.client import ControlClient, ControlRefused
from tests.live_servers import wait_for

PATIENCE = 60.0  # seconds a poll may wait for what must happen (a bound, not a timing)


def answering(name: str) -> Starlette:
    """An upstream that answers a records request with its own name, a prediction per row
    (``x > 0.5``), the row's ``x`` as its score, and the rows' ids."""

    async def predict(request: Request) -> Response:
        body = await request.body()
        try:
            rows = json.loads(body)["instances"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "not records"}, status_code=400)
        return JSONResponse(
            {
                "who": name,
                "predictions": [int(r.get("x", 0) > 0.5) for r in rows],
                "scores": [r.get("x", 0) for r in rows],
                "ids": [str(r.get("id", i)) for i, r in enumerate(rows)],
            }
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"who": name})

    async def feedback(request: Request) -> Response:
        await request.body()
        return JSONResponse({"who": name})

    routes = [Route("/predict", predict, methods=["POST"]), Route("/health", health)]
    routes.append(Route("/feedback", feedback, methods=["POST"]))
    return Starlette(routes=routes)


@pytest.fixture(scope="module")
def arms() -> Iterator[tuple[str, str]]:
    """The primary's and the candidate's ``host:port``."""
    with serving_app(answering("primary")) as one, serving_app(answering("candidate")) as two:
        yield one, two


@contextmanager
def proxied(primary: str) -> Iterator[tuple[str, ControlClient]]:
    """A proxy named ``model`` in front of ``primary``: its address and the control client."""
    with running(ProxyServer(api="127.0.0.1:0", reap_interval=0.05)) as server:
        client = ControlClient(address=server.api)
        listen = client.create_proxy("model", primary, "127.0.0.1:0")["listen"]
        yield listen, client


def on_candidate(key: bytes, weight: float) -> bool:
    """The documented rule, computed here from hashlib: BLAKE2b-64 of the key, mod 10000."""
    digest = int.from_bytes(blake2b(key, digest_size=8).digest(), "big")
    return digest % 10_000 < round(weight * 10_000)


def who(session: requests.Session, listen: str, **headers: str) -> str:
    body = {"instances": [{"x": 0.7, "id": "a"}]}
    answer = session.post(f"http://{listen}/predict", json=body, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["who"])


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def within_binomial(hits: int, n: int, p: float) -> bool:
    """``hits`` within 5 standard deviations of ``n * p`` (fails by chance ~1 in 1.7 million)."""
    return abs(hits - n * p) <= 5 * math.sqrt(n * p * (1 - p))


def test_the_weight_is_honoured_each_key_keeps_its_arm_and_a_rising_weight_keeps_it(
    arms: tuple[str, str],
) -> None:
    primary, candidate = arms
    keys = [f"user-{i}" for i in range(400)]
    with proxied(primary) as (listen, client):
        state = client.set_split("model", candidate, 0.2, key={"header": "X-User-Id"}, lease=600)
        assert state["weight"] == 0.2 and state["key"] == {"header": "X-User-Id"}
        with requests.Session() as session:
            first = {k: who(session, listen, **{"x-user-id": k}) for k in keys}
        for key, arm in first.items():  # each request where the rule says, exactly
            assert (arm == "candidate") == on_candidate(key.encode(), 0.2), key
        hits = sum(arm == "candidate" for arm in first.values())
        assert within_binomial(hits, len(keys), 0.2) and 0 < hits < len(keys)
        # the same keys on new connections, one per request: the same arms
        again = {}
        for key in keys[:60]:
            with requests.Session() as session:
                again[key] = who(session, listen, **{"x-user-id": key})
        assert again == {k: first[k] for k in keys[:60]}
        state = client.change_split("model", weight=0.5)
        with requests.Session() as session:
            wider = {k: who(session, listen, **{"x-user-id": k}) for k in keys}
        # monotone: every key on the candidate at 20% is on it at 50%
        assert all(wider[k] == "candidate" for k, arm in first.items() if arm == "candidate")
        more = sum(arm == "candidate" for arm in wider.values())
        assert more > hits and within_binomial(more, len(keys), 0.5)
        # a request without the header: the primary, counted by its reason
        with requests.Session() as session:
            assert who(session, listen) == "primary"
        state = client.split("model")
    figures = state["arms"]
    assert (
        figures["candidate"]["requests"]
        == hits + sum(again[k] == "candidate" for k in again) + more
    )
    total = 2 * len(keys) + len(again) + 1
    assert figures["primary"]["requests"] + figures["candidate"]["requests"] == total
    assert figures["candidate"]["answers"]["2xx"] == figures["candidate"]["requests"]
    assert state["keys"] == {
        "keyed": {"header": total - 1},
        "unkeyed": {"header missing": 1},
    }
    latency = figures["primary"]["latency"]
    assert latency["count"] == figures["primary"]["requests"]
    assert 0 < latency["p50"] <= latency["p95"]


def test_weights_0_and_1_send_nothing_and_everything_to_the_candidate(
    arms: tuple[str, str],
) -> None:
    primary, candidate = arms
    with proxied(primary) as (listen, client):
        client.set_split("model", candidate, 0.0, key={"header": "x-user-id"})
        with requests.Session() as session:
            none = {who(session, listen, **{"x-user-id": str(i)}) for i in range(100)}
            client.change_split("model", weight=1.0)
            every = {who(session, listen, **{"x-user-id": str(i)}) for i in range(100)}
        removed = client.remove_split("model")
        with requests.Session() as session:  # deleted: everything back on the primary
            after = {who(session, listen, **{"x-user-id": str(i)}) for i in range(20)}
    assert none == {"primary"} and every == {"candidate"} and after == {"primary"}
    assert removed["arms"]["candidate"]["requests"] == 100


def test_a_column_key_reads_the_first_row_and_an_unreadable_body_goes_to_the_primary(
    arms: tuple[str, str],
) -> None:
    primary, candidate = arms
    with proxied(primary) as (listen, client):
        client.set_split("model", candidate, 0.5, key={"column": "user_id"}, codec="records")
        url = f"http://{listen}/predict"
        arms_of: dict[int, set[str]] = {}
        with requests.Session() as session:
            for user in range(120):
                for other in (0, 1):  # the first row decides, whatever the rows after it
                    rows = [{"user_id": user, "x": 0.2}, {"user_id": 999 + other, "x": 0.9}]
                    answer = session.post(url, json={"instances": rows}, timeout=10)
                    arms_of.setdefault(user, set()).add(answer.json()["who"])
            # a float that is a whole number is the same user (a column with nulls is float)
            answer = session.post(url, json={"instances": [{"user_id": 7.0}]}, timeout=10)
            same = answer.json()["who"]
            junk = session.post(
                url, data=b"{not json", headers={"content-type": "application/json"}, timeout=10
            )
            lacking = session.post(url, json={"instances": [{"x": 1}]}, timeout=10)
        state = client.split("model")
    assert all(len(found) == 1 for found in arms_of.values())  # sticky
    for user, (arm,) in ((u, tuple(a)) for u, a in arms_of.items()):
        assert (arm == "candidate") == on_candidate(str(user).encode(), 0.5), user
    assert same == next(iter(arms_of[7]))
    # the undecodable body reached the primary, which answered it (400): not the candidate's
    assert junk.status_code == 400 and lacking.json()["who"] == "primary"
    assert state["keys"]["unkeyed"] == {"body unreadable": 1, "column missing": 1}
    assert state["keys"]["keyed"] == {"column": 241}
    assert state["arms"]["primary"]["answers"]["4xx"] == 1


def source_addressed(listen: str, source: str) -> str:
    """Who answers a request sent from the loopback address ``source``."""
    host, port = listen.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(source, 0))
    try:
        body = json.dumps({"instances": [{"x": 0.1}]})
        conn.request("POST", "/predict", body, {"content-type": "application/json"})
        return str(json.loads(conn.getresponse().read())["who"])
    finally:
        conn.close()


def test_without_a_key_the_client_address_decides(arms: tuple[str, str]) -> None:
    primary, candidate = arms
    sources = [f"127.0.0.{i}" for i in range(2, 60)]
    with proxied(primary) as (listen, client):
        client.set_split("model", candidate, 0.5)  # key: null
        found = {s: source_addressed(listen, s) for s in sources}
        twice = {s: source_addressed(listen, s) for s in sources}  # new connections each
        state = client.split("model")
    assert found == twice
    for source, arm in found.items():
        assert (arm == "candidate") == on_candidate(source.encode(), 0.5), source
    assert {"primary", "candidate"} == set(found.values())
    assert state["key"] is None and state["keys"]["keyed"] == {"address": 2 * len(sources)}


def test_when_the_lease_runs_out_all_traffic_goes_to_the_primary(arms: tuple[str, str]) -> None:
    primary, candidate = arms
    with proxied(primary) as (listen, client):
        client.set_split("model", candidate, 1.0, key={"header": "k"}, lease=30)
        with requests.Session() as session:
            assert who(session, listen, k="1") == "candidate"
            renewed = client.change_split("model")  # {}: only renews
            assert renewed["weight"] == 1.0 and not renewed["expired"]
            client.change_split("model", lease=0.3)  # a short lease, not renewed after
            assert wait_for(lambda: client.split("model")["expired"], PATIENCE)
            after = {who(session, listen, k=str(i)) for i in range(30)}
        state = client.split("model")
        with pytest.raises(ControlRefused) as refused:  # not revived by a late renewal
            client.change_split("model", weight=1.0)
    assert after == {"primary"}
    assert state["expired"] and state["effective_weight"] == 0.0 and state["weight"] == 1.0
    assert state["expires_in"] == 0.0
    assert refused.value.status == 409 and "lease ran out" in refused.value.detail


def test_a_candidate_that_is_down_fails_only_its_own_clients(arms: tuple[str, str]) -> None:
    primary, _ = arms
    down = closed_port()
    keys = [str(i) for i in range(200)]
    with proxied(primary) as (listen, client):
        client.set_split("model", down, 0.3, key={"header": "k"})
        statuses = {}
        with requests.Session() as session:
            for key in keys:
                body = {"instances": [{"x": 0.4}]}
                answer = session.post(
                    f"http://{listen}/predict", json=body, headers={"k": key}, timeout=10
                )
                statuses[key] = answer.status_code
        state = client.split("model")
    for key, status in statuses.items():
        assert status == (502 if on_candidate(key.encode(), 0.3) else 200), key
    failed = sum(status == 502 for status in statuses.values())
    assert failed > 0
    assert state["arms"]["candidate"]["unreachable"] == failed
    assert state["arms"]["candidate"]["errors"] == failed
    assert state["arms"]["primary"]["errors"] == 0
    assert state["arms"]["primary"]["answers"]["2xx"] == len(keys) - failed


def test_toxics_apply_to_both_arms(arms: tuple[str, str]) -> None:
    primary, candidate = arms
    with proxied(primary) as (listen, client):
        client.set_split("model", candidate, 0.5, key={"header": "k"})
        stuck = {"type": "constant_prediction", "stream": "downstream", "attributes": {"value": 7}}
        client.add_toxic("model", {"name": "stuck", **stuck})
        url = f"http://{listen}/predict"
        with requests.Session() as session:
            body = {"instances": [{"x": 0.9}, {"x": 0.1}]}
            answers = [
                session.post(url, json=body, headers={"k": str(i)}, timeout=10).json()
                for i in range(40)
            ]
            client.remove_toxic("model", "stuck")
            refused = {"type": "http_error", "stream": "upstream", "attributes": {"status": 503}}
            client.add_toxic("model", {"name": "down", **refused})
            statuses = {
                session.post(url, json=body, headers={"k": str(i)}, timeout=10).status_code
                for i in range(40)
            }
        state = client.split("model")
    # the answer fault changed both arms' answers: each arm answered, each answer is stuck
    assert {a["who"] for a in answers} == {"primary", "candidate"}
    assert all(a["predictions"] == [7, 7] for a in answers)
    # a toxic that answers in the upstream's place does so whatever the arm; neither arm served
    assert statuses == {503}
    assert sum(arm["requests"] for arm in state["arms"].values()) == 40


def test_the_split_endpoints_answer_as_the_control_api_does(
    arms: tuple[str, str], tmp_path: Path
) -> None:
    primary, candidate = arms
    where = "/proxies/model/split"
    with proxied(primary) as (_, client):
        before = client.proxy("model")
        cases = [
            ("POST", "/proxies/nope/split", {"candidate": candidate, "weight": 0.1}, 404, ""),
            ("POST", where, [], 400, "expected a JSON object"),
            ("POST", where, {"weight": 0.1}, 400, "missing required field: candidate"),
            ("POST", where, {"candidate": candidate}, 400, "missing required field: weight"),
            ("POST", where, {"candidate": "nohost", "weight": 0.1}, 400, ""),
            ("POST", where, {"candidate": candidate, "weight": 1.5}, 400, "from 0 to 1"),
            ("POST", where, {"candidate": candidate, "weight": -0.1}, 400, "from 0 to 1"),
            ("POST", where, {"candidate": candidate, "weight": True}, 400, "from 0 to 1"),
            (
                "POST",
                where,
                {"candidate": candidate, "weight": 0, "key": {"cookie": "u"}},
                400,
                "invalid attribute 'key'",
            ),
            (
                "POST",
                where,
                {"candidate": candidate, "weight": 0, "key": "u"},
                400,
                "invalid attribute 'key'",
            ),
            (
                "POST",
                where,
                {"candidate": candidate, "weight": 0, "lease": 0},
                400,
                "invalid attribute 'lease'",
            ),
            (
                "POST",
                where,
                {"candidate": candidate, "weight": 0, "folder": "rel"},
                400,
                "expected an absolute path",
            ),
            (
                "POST",
                where,
                {"candidate": candidate, "weight": 0, "key": {"column": "u"}},
                400,
                "'codec' is needed",
            ),
            (
                "POST",
                where,
                {"candidate": candidate, "weight": 0, "codec": "avro"},
                400,
                "invalid attribute 'codec'",
            ),
            (
                "POST",
                where,
                {"candidate": candidate, "weight": 0, "speed": 1},
                400,
                "unknown field 'speed'",
            ),
            ("GET", where, None, 404, "split not found"),
            ("PATCH", where, {"weight": 0.2}, 404, "split not found"),
            ("DELETE", where, None, 404, "split not found"),
        ]
        for method, path, body, status, message in cases:
            with pytest.raises(ControlRefused) as caught:
                client.request(method, path, body)
            assert caught.value.status == status, (method, path, body)
            assert message in caught.value.detail, (body, caught.value.detail)
        made = client.set_split("model", candidate, 0.1, key={"header": "k"}, lease=60)
        assert made["candidate"] == candidate and made["primary"] == primary
        assert made["arms"]["primary"]["requests"] == 0 and made["recording"] is None
        assert 59 < made["expires_in"] <= 60
        with pytest.raises(ControlRefused) as caught:
            client.set_split("model", candidate, 0.1)
        assert caught.value.status == 409
        for body in ({"weight": 2}, {"lease": -1}, {"weight": 0.2, "key": None}):
            with pytest.raises(ControlRefused) as caught:
                client.request("PATCH", where, body)
            assert caught.value.status == 400, body
        assert client.change_split("model", weight=0.3)["weight"] == 0.3
        assert client.proxy("model") == before  # the proxy's JSON is Toxiproxy's, split or not
        assert client.remove_split("model")["weight"] == 0.3
        with pytest.raises(ControlRefused):
            client.split("model")
        # a deleted proxy takes its split with it
        client.set_split("model", candidate, 0.1)
        client.request("DELETE", "/proxies/model")
        client.create_proxy("model", primary, "127.0.0.1:0")
        with pytest.raises(ControlRefused) as caught:
            client.split("model")
        assert caught.value.status == 404
        metrics = requests.get(f"http://{client.address}/metrics", timeout=5).text
        assert "chaosml_proxy_split" in metrics  # the collector, with no split left: no series
        client.set_split("model", candidate, 0.25)
        metrics = requests.get(f"http://{client.address}/metrics", timeout=5).text
        assert 'chaosml_proxy_split_weight{proxy="model"} 0.25' in metrics


def test_the_in_service_point_has_no_traffic_to_split(arms: tuple[str, str]) -> None:
    env = {"CHAOSML_FAULT_POINT": "127.0.0.1:0"}
    with chaosml.FaultPoint.from_env(env=env) as point:
        assert point.api is not None
        client = ControlClient(address=point.api)
        with pytest.raises(ControlRefused) as caught:
            client.set_split("service", arms[1], 0.5)
    assert caught.value.status == 400 and "in-service point" in caught.value.detail


def parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet"))


def test_the_recorded_parts_are_what_the_clients_got(
    demo: DemoArtifacts, model_v1: str, model_v2: str, tmp_path: Path
) -> None:
    frame = pd.read_parquet(demo.data).drop(columns=[LABEL]).iloc[:600]
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    bodies = [records[i : i + 20] for i in range(0, len(records), 20)]
    folder = tmp_path / "canary"
    got: list[tuple[str, dict[str, Any]]] = []
    with proxied(model_v1) as (listen, client):
        client.set_split(
            "model", model_v2, 0.5, key={"header": "x-user"}, folder=str(folder), codec="records"
        )
        with requests.Session() as session:
            half = len(bodies) // 2
            for user, rows in enumerate(bodies[:half]):
                answer = session.post(
                    f"http://{listen}/predict",
                    json={"instances": rows},
                    headers={"x-user": str(user)},
                    timeout=10,
                )
                got.append((str(user), answer.json()))
            # a part is complete and readable while the split runs
            assert wait_for(lambda: parts(folder), PATIENCE)
            early = pd.read_parquet(parts(folder)[0])
            assert len(early) > 0
            for user, rows in enumerate(bodies[half:], half):
                answer = session.post(
                    f"http://{listen}/predict",
                    json={"instances": rows},
                    headers={"x-user": str(user)},
                    timeout=10,
                )
                got.append((str(user), answer.json()))
        final = client.remove_split("model")
    files = parts(folder)
    assert [f.name for f in files] == [f"part-{i:06d}.parquet" for i in range(1, len(files) + 1)]
    assert not [f for f in folder.iterdir() if f not in files]  # no temporary file left
    recorded = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    assert final["recording"]["rows"] == len(recorded) == len(records)
    assert final["recording"]["parts"] == len(files) and final["recording"]["dropped"] == 0
    assert pd.read_parquet(folder).shape == recorded.shape  # the folder reads as one dataset
    by_id = recorded.set_index("id")
    for user, answer in got:
        arm = "candidate" if answer["model_version"] == "v2" else "primary"
        assert (arm == "candidate") == on_candidate(user.encode(), 0.5)
        rows = by_id.loc[answer["ids"]]
        assert (rows["arm"] == arm).all() and (rows["status"] == 200).all()
        # the user's key as its digest: one user's rows share it, the value is not written
        assert (rows["key"] == blake2b(user.encode(), digest_size=8).hexdigest()).all()
        assert rows["prediction"].tolist() == answer["predictions"]
        assert rows["score"].tolist() == answer["scores"]
    # the rows as sent: each id's features are the request's row
    sent = pd.DataFrame(records)
    ids = [i for _, answer in got for i in answer["ids"]]
    columns = [c for c in sent.columns if c in recorded.columns]
    assert columns
    mine = by_id.loc[ids, columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, sent[columns], check_dtype=False)
    assert {"primary", "candidate"} == set(recorded["arm"])


def labels_of(folder: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in sorted(folder.glob("_labels/part-*.parquet"))])


def test_feedback_goes_to_its_user_s_arm_and_its_labels_are_recorded_not_counted(
    arms: tuple[str, str], tmp_path: Path
) -> None:
    primary, candidate = arms
    users = [str(u) for u in range(40)]
    with proxied(primary) as (listen, client):
        client.set_split(
            "model",
            candidate,
            0.5,
            key={"header": "x-user"},
            folder=str(tmp_path),
            codec="records",
            feedback="/feedback",
        )
        with requests.Session() as session:
            for user in users:
                assert who(session, listen, **{"x-user": user}) in ("primary", "candidate")
                labels = {
                    "labels": [{"id": f"{user}-a", "label": 1}, {"id": f"{user}-b", "label": 0}]
                }
                answer = session.post(
                    f"http://{listen}/feedback?source=x", json=labels, headers={"x-user": user}
                )
                # the user's feedback reaches the version that answered the user
                on = "candidate" if on_candidate(user.encode(), 0.5) else "primary"
                assert answer.json()["who"] == on
            session.post(f"http://{listen}/feedback", data=b"not json", headers={"x-user": "1"})
            session.get(f"http://{listen}/feedback", headers={"x-user": "1"})  # not a POST
        final = client.remove_split("model")
    # the figures count the predictions only; the feedback is not recorded as rows
    arms_ = final["arms"]
    assert arms_["primary"]["requests"] + arms_["candidate"]["requests"] == len(users) + 1
    assert final["recording"]["rows"] == len(users)
    # the GET is no feedback: an exchange without rows, counted as such
    assert list(final["recording"]["drops"]) == ["request: no body"]
    assert final["feedback"]["requests"] == len(users) and final["feedback"]["labels"] == 80
    assert final["feedback"]["drops"] == {"feedback unreadable": 1}
    labels = labels_of(tmp_path)
    assert sorted(labels["id"]) == sorted(f"{u}-{x}" for u in users for x in "ab")
    assert labels.set_index("id")["label"].to_dict() == {
        f"{u}-{x}": int(x == "a") for u in users for x in "ab"
    }
    assert pd.read_parquet(tmp_path).shape[0] == len(users)  # the rows still read as one dataset


def test_feedback_needs_a_folder_and_a_path(arms: tuple[str, str], tmp_path: Path) -> None:
    primary, candidate = arms
    with proxied(primary) as (_, client):
        folder = {"folder": str(tmp_path), "codec": "records"}
        for extra in ({"feedback": "/feedback"}, {**folder, "feedback": "feedback"}):
            with pytest.raises(ControlRefused) as caught:
                client.request(
                    "POST", "/proxies/model/split", {"candidate": candidate, "weight": 0.5, **extra}
                )
            assert caught.value.status == 400 and "feedback" in caught.value.detail


def test_a_promoted_candidate_serves_every_request_from_then_on_and_no_client_sees_the_switch(
    arms: tuple[str, str], tmp_path: Path
) -> None:
    import threading

    primary, candidate = arms
    failures: list[str] = []
    answered: list[list[str]] = [[] for _ in range(4)]
    stop = threading.Event()
    with proxied(primary) as (listen, client):
        before = client.proxy("model")
        client.set_split("model", candidate, 0.5, key={"header": "k"}, lease=30.0)

        def user(index: int) -> None:  # a keep-alive client, one request after another
            with requests.Session() as session:
                n = 0
                while not stop.is_set():
                    n += 1
                    try:
                        answered[index].append(who(session, listen, k=f"{index}-{n}"))
                    except (requests.RequestException, AssertionError) as exc:
                        failures.append(repr(exc))

        users = [threading.Thread(target=user, args=(i,)) for i in range(4)]
        for thread in users:
            thread.start()
        assert wait_for(lambda: all(len(a) > 20 for a in answered), PATIENCE)
        final = client.promote_split("model")
        marks = [len(a) for a in answered]
        assert wait_for(
            lambda: all(len(a) > m + 20 for a, m in zip(answered, marks, strict=True)), PATIENCE
        )
        stop.set()
        for thread in users:
            thread.join()
        after = client.proxy("model")
        with pytest.raises(ControlRefused) as caught:
            client.split("model")
    assert not failures, failures[:3]
    assert caught.value.status == 404  # the split ended with the promotion
    assert final["upstream"] == candidate and after["upstream"] == candidate
    assert after["listen"] == before["listen"] and after["enabled"]
    # from the promotion on, every request but the one each client had in flight: the candidate
    assert all(set(a[m + 1 :]) == {"candidate"} for a, m in zip(answered, marks, strict=True))
    assert {"primary", "candidate"} <= {
        w for a, m in zip(answered, marks, strict=True) for w in a[:m]
    }


def test_a_split_whose_lease_ran_out_is_not_promoted(arms: tuple[str, str]) -> None:
    primary, candidate = arms
    with proxied(primary) as (_, client):
        client.set_split("model", candidate, 0.5, lease=0.1)
        assert wait_for(lambda: client.split("model")["expired"], PATIENCE)
        with pytest.raises(ControlRefused) as caught:
            client.promote_split("model")
        assert caught.value.status == 409 and client.proxy("model")["upstream"] == primary


def test_a_recorded_folder_that_holds_parts_is_refused(
    arms: tuple[str, str], tmp_path: Path
) -> None:
    primary, candidate = arms
    (tmp_path / "part-000001.parquet").write_bytes(b"")
    with proxied(primary) as (_, client), pytest.raises(ControlRefused) as caught:
        client.set_split("model", candidate, 0.1, folder=str(tmp_path), codec="records")
    assert caught.value.status == 400 and "already holds recorded parts" in caught.value.detail


def test_a_stopped_server_closes_its_split_s_recording(
    arms: tuple[str, str], tmp_path: Path
) -> None:
    primary, candidate = arms
    with proxied(primary) as (listen, client):
        client.set_split(
            "model", candidate, 0.5, key={"header": "k"}, folder=str(tmp_path), codec="records"
        )
        with requests.Session() as session:
            for i in range(10):
                who(session, listen, k=str(i))
    recorded = pd.concat([pd.read_parquet(f) for f in parts(tmp_path)])
    assert len(recorded) == 10 and set(recorded["arm"]) <= {"primary", "candidate"}


def test_time_is_recorded_per_request(arms: tuple[str, str], tmp_path: Path) -> None:
    primary, candidate = arms
    began = time.time()
    with proxied(primary) as (listen, client):
        client.set_split(
            "model", candidate, 0.5, key={"header": "k"}, folder=str(tmp_path), codec="records"
        )
        with requests.Session() as session:
            who(session, listen, k="1")
        client.remove_split("model")
    recorded = pd.concat([pd.read_parquet(f) for f in parts(tmp_path)])
    assert recorded["time"].between(began, time.time()).all()


def test_the_latency_histogram_s_quantiles_are_within_a_bucket_of_the_exact_ones() -> None:
    import numpy as np

    from chaosml.proxy.canary import Latency

    rng = np.random.default_rng(5)
    seconds = rng.lognormal(mean=math.log(0.004), sigma=1.0, size=5000)
    histogram = Latency()
    for value in seconds:
        histogram.add(float(value))
    for q in (0.5, 0.95):
        found = histogram.quantile(q)
        assert found is not None
        exact = float(np.quantile(seconds, q))
        assert abs(found - exact) <= 0.11 * exact, (q, found, exact)  # a bucket is 10% wide
    assert histogram.count == 5000 and histogram.sum == pytest.approx(seconds.sum())
    assert Latency().quantile(0.5) is None


def test_what_cannot_be_recorded_is_counted_and_a_candidate_s_502_is_recorded_as_such(
    arms: tuple[str, str], tmp_path: Path
) -> None:
    primary, _ = arms
    down = closed_port()
    with proxied(primary) as (listen, client):
        client.set_split("model", down, 1.0, key=None, folder=str(tmp_path), codec="records")
        with requests.Session() as session:
            url = f"http://{listen}/predict"
            failed = session.post(url, json={"instances": [{"x": 0.9, "id": "q"}]}, timeout=10)
            junk = session.post(
                url, data=b"[{", headers={"content-type": "application/json"}, timeout=10
            )
            bare = session.get(f"http://{listen}/health", timeout=10)
        final = client.remove_split("model")
    assert failed.status_code == junk.status_code == bare.status_code == 502
    recording = final["recording"]
    assert recording["drops"] == {"request unreadable": 1, "request: no body": 1}
    assert recording["rows"] == 1 and recording["unpredicted"] == {"non-2xx answer": 1}
    (row,) = pd.concat([pd.read_parquet(f) for f in parts(tmp_path)]).to_dict("records")
    assert row["arm"] == "candidate" and row["status"] == 502 and row["x"] == 0.9
    assert math.isnan(row["prediction"]) and math.isnan(row["score"])
    assert final["arms"]["candidate"]["unreachable"] == 3


SPLIT_FIELDS = st.dictionaries(
    st.sampled_from(["candidate", "weight", "key", "lease", "codec", "folder"])
    | st.text(max_size=5),
    st.none()
    | st.booleans()
    | st.integers(min_value=-3, max_value=3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["127.0.0.1:9", "nohost", "records", "avro", "/x", "rel", ""])
    | st.dictionaries(st.sampled_from(["header", "column", "cookie"]), st.text(max_size=4)),
    max_size=6,
)


@pytest.fixture(scope="module")
def fuzzed(arms: tuple[str, str]) -> Iterator[str]:
    """One proxy for the fuzz test's many examples: its control API's URL."""
    with proxied(arms[0]) as (_, client):
        yield f"http://{client.address}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=SPLIT_FIELDS | st.lists(st.integers(), max_size=2), change=SPLIT_FIELDS)
def test_any_split_body_is_set_or_refused_with_a_4xx_never_a_5xx(
    fuzzed: str, body: Any, change: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if isinstance(body, dict) and body.get("folder") == "/x":
        body["folder"] = str(tmp_path_factory.mktemp("fuzz"))  # an absolute folder it may make
    where = f"{fuzzed}/proxies/model/split"
    for method, sent in (("POST", body), ("PATCH", change), ("GET", None), ("DELETE", None)):
        reply = requests.request(method, where, json=sent, timeout=10)
        assert reply.status_code < 500, (method, sent, reply.text)
        assert reply.status_code in (200, 201) or "error" in reply.json(), reply.text
    requests.delete(where, timeout=10)  # none left for the next example
