"""``chaosml canary`` through the real proxy, with the demo's models served on loopback: v2 behind
v1 is rolled back on a slice where it is worse offline, a copy of v1 is promoted, Ctrl-C and
SIGKILL leave all traffic on the primary, bad input is one line."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from chaosml.demo.data import LABEL
from chaosml.demo.release import BATCH, Users, served
from chaosml.demo.train import DemoArtifacts
from chaosml.proxy.api import ProxyServer, running
from chaosml.proxy.client import ControlClient, ControlRefused
from chaosml.release.canary import same
from chaosml.slices.suite import load_suite
from chaosml.versions import load_model

SUITE = Path(__file__).parents[1] / "slices" / "credit.yaml"


def free_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def target_file(folder: Path, api: str, listen: str, data: Path, feedback: bool = False) -> Path:
    path = folder / "target.yaml"
    fed = f"feedback: http://{listen}/feedback\n" if feedback else ""
    path.write_text(
        f"url: http://{listen}/predict\ncodec: records\ndata: {data}\n{fed}"
        f"fault_points:\n  proxy: {{api: '{api}', proxy: model}}\n"
        f"alerts:\n  - {{type: webhook, listen: '{free_address()}'}}\n"
    )
    return path


def canary_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "chaosml", "canary", "--suite", str(SUITE), *args]


def traffic(demo: DemoArtifacts, listen: str, labels: Path | None) -> Users:
    """The demo's rows through the proxy as users, labels fed back by id: into ``labels``, or
    (None) POSTed through the proxy to the feedback URL, as the demo does."""
    rows = pd.read_parquet(demo.data)
    if labels is None:
        return Users(rows, f"http://{listen}/predict", feedback=f"http://{listen}/feedback")
    return Users(rows, f"http://{listen}/predict", labels)


@contextmanager
def proxied(primary: str) -> Iterator[tuple[ControlClient, str, str]]:
    """A proxy ``model`` in front of ``primary``: (its client, the API, the listen address)."""
    with running(ProxyServer(api="127.0.0.1:0", reap_interval=0.05)) as server:
        client = ControlClient(address=server.api)
        listen = client.create_proxy("model", primary, "127.0.0.1:0")["listen"]
        yield client, server.api, listen


def wait_for_split(client: ControlClient, run: subprocess.Popen[str]) -> dict[str, Any]:
    for _ in range(600):  # until the command has set the split (a bound on a wait: 60 s)
        try:
            return client.split("model")
        except ControlRefused:
            assert run.poll() is None, run.stderr.read() if run.stderr else ""
            time.sleep(0.1)
    raise AssertionError("the canary never set its split")


def canary(
    demo: DemoArtifacts,
    tmp_path: Path,
    primary: str,
    candidate: str,
    steps: str,
    *extra: str,
    feedback: bool = False,
) -> tuple[int, dict[str, Any], str, Path]:
    """Run the command to its end under traffic: (exit code, its JSON, stderr, run folder);
    the JSON's ``upstream`` is the proxy's upstream once it ended. Labels come from a file, or
    with ``feedback`` through the proxy's feedback endpoint."""
    labels = None if feedback else tmp_path / "labels.csv"
    with proxied(primary) as (client, api, listen):
        target = target_file(tmp_path, api, listen, demo.data, feedback)
        command = canary_cli("--target", str(target), "--candidate", f"http://{candidate}/predict")
        command += ["--steps", steps, "--look", "1s", "--lease", "5s", "--key", "header:x-user-id"]
        command += ["--json", "--out", str(tmp_path / "runs")]
        command += [] if labels is None else ["--labels", str(labels)]
        command += ["--junit", str(tmp_path / "canary.xml"), "--html", str(tmp_path / "c.html")]
        command += extra
        with (
            subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            ) as run,
            traffic(demo, listen, labels) as users,
        ):
            try:
                out, err = run.communicate(timeout=300)  # a bound on a wait, not a timing
            finally:
                if run.poll() is None:
                    run.kill()
        with pytest.raises(ControlRefused):  # the split is removed in every case
            client.split("model")
        upstream = client.proxy("model")["upstream"]
    # --switch too: the promotion moves the upstream under a listener that stays
    assert users.sent and not users.failed, f"{users.failed} requests of clients failed"
    report = json.loads(out)
    report["upstream"] = upstream
    return run.returncode, report, err, Path(report["folder"])


def offline_errors(demo: DemoArtifacts) -> dict[str, tuple[float, float]]:
    """Each slice's error rate of v1 and v2 on the demo's rows, offline (the oracle)."""
    from chaosml.release.shadow import slice_masks

    rows = pd.read_parquet(demo.data)
    features = rows.drop(columns=[LABEL])
    truth = rows[LABEL]
    wrong = {
        v: ~same(pd.Series(load_model(path).predict(features)), truth.reset_index(drop=True))
        for v, path in (("v1", demo.v1), ("v2", demo.v2))
    }
    return {
        name: (float(wrong["v1"][mask].mean()), float(wrong["v2"][mask].mean()))
        for name, mask in slice_masks(load_suite(SUITE), rows.reset_index(drop=True))
    }


def test_a_canary_of_v2_is_rolled_back_for_what_is_true_of_it(
    demo: DemoArtifacts, model_v1: str, model_v2: str, tmp_path: Path
) -> None:
    code, report, err, folder = canary(
        demo, tmp_path, model_v1, model_v2, "20%:30s,50%:60s,100%", feedback=True
    )
    assert code == 1, err
    # the labels came through the proxy's feedback endpoint, recorded beside the rows
    assert "labels: recorded from the feedback POSTed through the proxy" in err
    assert report["split"]["feedback"]["labels"] > 0
    assert report["schema"] == "chaosml.release/1" and report["verdict"] == "rolled_back"
    rollback = report["rollback"]
    if rollback["figure"] == "slow_requests":  # v2 answers slower than v1: true of it?
        arms = report["split"]["arms"]
        p50 = {a: arms[a]["latency"]["p50"] for a in ("primary", "candidate")}
        assert rollback["reason"] == "service" and p50["candidate"] > p50["primary"], p50
    else:  # a slice where v2 is worse in truth: both models offline on the demo's rows
        assert rollback["reason"] == "quality" and rollback["figure"] == "error", rollback
        v1_error, v2_error = offline_errors(demo)[rollback["slice"]]
        assert v2_error > v1_error, (rollback, v1_error, v2_error)
    assert report["plan"]["steps"][0] == {"weight": 0.2, "seconds": 30.0}
    assert report["steps"][rollback["step"] - 1]["verdict"] == "rolled_back"  # numbered from 1
    assert all(s["verdict"] == "passed" for s in report["steps"][: rollback["step"] - 1])
    # after the decision the candidate answered at most the one batch the one client had in
    # flight to it: the weight was 0 at once (the split is then removed, and recording ends)
    parts = pd.concat(pd.read_parquet(p) for p in sorted(folder.glob("part-*.parquet")))
    after = parts[parts["time"] > rollback["decided_at"] + rollback["weight_zero_after"]]
    assert (after["arm"] == "candidate").sum() <= BATCH
    assert report["split"]["weight"] == 0.0
    assert (folder / "release.json").is_file() and (folder / "looks.jsonl").is_file()
    assert "ROLLED BACK" not in err  # the verdict is on stdout (JSON), progress on stderr
    junit = (tmp_path / "canary.xml").read_text()
    assert junit.count("<failure") == 1
    assert "candidate weight" in (tmp_path / "c.html").read_text()


def test_a_canary_of_v1_against_a_copy_of_v1_is_promoted(
    demo: DemoArtifacts, tmp_path: Path
) -> None:
    # both in processes of their own, as the demo serves them: neither shares this process's
    # interpreter lock with the traffic, so neither answers slower for it
    with served(demo.folder, "v1") as primary, served(demo.folder, "v1") as copy:
        code, report, err, _ = canary(
            demo, tmp_path, primary, copy, "25%:10s,50%:10s,100%", "--switch"
        )
    arms = report["split"]["arms"]
    assert arms["candidate"]["requests"] > 0 and arms["primary"]["requests"] > 0
    rollback = report["rollback"]
    if rollback is not None and rollback["figure"] == "slow_requests":
        # The answers are the same, the processes are not: here the copy with a third of the
        # requests answers about 0.5 ms slower at the median, and on a 2-core machine busy with
        # other tests its tail can be slower still. Such a rollback is for service alone, on a
        # larger share of slow requests that the split measured, and nothing is switched.
        assert code == 1 and rollback["reason"] == "service", err
        assert not report["switched"] and report["upstream"] == primary
        steps = report["steps"]
        assert all(s["verdict"] == "passed" for s in steps[: rollback["step"] - 1])
        (slow,) = [
            f for f in steps[rollback["step"] - 1]["figures"] if f["figure"] == "slow_requests"
        ]
        assert slow["candidate"] > slow["primary"], slow
        return
    assert code == 0, err
    assert report["verdict"] == "promoted" and rollback is None
    assert [s["verdict"] for s in report["steps"]] == ["passed", "passed", "reached"]
    assert report["switched"] and report["upstream"] == copy  # --switch: the candidate serves
    assert report["never_judged"] == [] or "overall/error" not in report["never_judged"]
    judged = report["steps"][1]["figures"]
    assert any(f["testable"] for f in judged)  # it was judged on data, not promoted unseen


def test_a_canary_that_sees_no_traffic_is_not_promoted(
    demo: DemoArtifacts, model_v1: str, tmp_path: Path
) -> None:
    with proxied(model_v1) as (_, api, listen):
        target = target_file(tmp_path, api, listen, demo.data)
        command = canary_cli("--target", str(target), "--candidate", f"http://{model_v1}/predict")
        command += ["--steps", "50%:3s,100%", "--look", "1s", "--lease", "3s", "--json"]
        command += ["--out", str(tmp_path)]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["verdict"] == "rolled_back"
    assert report["rollback"]["reason"] == "unobservable"
    assert "answered no request" in report["rollback"]["detail"]


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "sigkill", "stalled"])
def test_an_ended_canary_leaves_all_traffic_on_the_primary(
    demo: DemoArtifacts, model_v1: str, model_v2: str, tmp_path: Path, how: str
) -> None:
    labels = tmp_path / "labels.csv"
    with proxied(model_v1) as (client, api, listen):
        target = target_file(tmp_path, api, listen, demo.data)
        command = canary_cli("--target", str(target), "--candidate", f"http://{model_v2}/predict")
        command += ["--steps", "50%:1h,100%", "--look", "1s", "--lease", "3s", "--json"]
        command += ["--out", str(tmp_path / "runs"), "--labels", str(labels)]
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as run:
            try:
                assert wait_for_split(client, run)["weight"] == 0.5
                with traffic(demo, listen, labels):
                    time.sleep(2)
                if how in ("ctrl-c", "sigterm"):
                    run.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGTERM)
                    out, err = run.communicate(timeout=120)
                elif how == "stalled":  # stopped past its lease, then resumed
                    run.send_signal(signal.SIGSTOP)
                    for _ in range(300):  # the lease runs out (3 s; a bound on a wait: 30 s)
                        if client.split("model")["expired"]:
                            break
                        time.sleep(0.1)
                    run.send_signal(signal.SIGCONT)
                    out, err = run.communicate(timeout=120)
                else:
                    run.kill()
                    run.wait(timeout=30)
            finally:
                if run.poll() is None:
                    run.kill()
        if how == "stalled":
            assert run.returncode == 1, err
            report = json.loads(out)
            assert report["verdict"] == "rolled_back"
            assert report["rollback"]["reason"] == "unobservable"
            assert "lease ran out" in report["rollback"]["detail"]
            with pytest.raises(ControlRefused):  # removed by the command itself
                client.split("model")
            return
        if how in ("ctrl-c", "sigterm"):
            assert run.returncode == 130, err
            report = json.loads(out)
            assert report["verdict"] == "interrupted"
            assert report["steps"][0]["verdict"] == "interrupted"
            with pytest.raises(ControlRefused):  # removed by the command itself
                client.split("model")
            return
        for _ in range(300):  # the lease runs out (3 s; a bound on a wait: 30 s)
            state = client.split("model")
            if state["expired"]:
                break
            time.sleep(0.1)
        assert state["expired"] and state["effective_weight"] == 0.0
        before = state["arms"]["candidate"]["requests"]
        with requests.Session() as session:
            for _ in range(20):
                session.post(f"http://{listen}/predict", json={"instances": [{}]}, timeout=10)
        assert client.split("model")["arms"]["candidate"]["requests"] == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "5%,50%:1m"], "needs a duration"),
        (["--steps", "50%:1m,20%:1m"], "weights must rise"),
        (["--key", "cookie:x"], "expected header:NAME or column:NAME"),
        (["--look", "5s", "--lease", "6s"], "must exceed twice --look"),
        (["--alpha", "1.5"], r"--alpha 1.5: expected a level in \(0, 1\)"),
        (["--look", "0s"], "--look 0 s: a duration above 0"),
        (["--html", "/no/such/folder/c.html"], "cannot write: no folder /no/such/folder"),
        (["--candidate-path", "/score"], "the split sends each request to the same path"),
    ],
)
def test_bad_input_is_one_line_and_sets_no_split(
    tmp_path: Path, args: list[str], message: str, echo_service: str
) -> None:
    with proxied(echo_service) as (client, api, listen):
        target = target_file(tmp_path, api, listen, tmp_path / "none.parquet")
        path = "/predict"
        if args[0] == "--candidate-path":
            path, args = args[1], []
        command = canary_cli("--target", str(target), "--candidate", f"http://{echo_service}{path}")
        command += ["--out", str(tmp_path), *args]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
        with pytest.raises(ControlRefused):
            client.split("model")
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("chaosml: error: ")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert __import__("re").search(message, errors[0]), errors[0]
