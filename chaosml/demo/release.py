"""``chaosml demo release``: the demo's v2 released behind v1 on live traffic, first in its shadow,
then as a canary, through the fault proxy on loopback.

v1 and v2 are served on free ports, the fault proxy in front of v1; a traffic thread sends the
demo's rows through the proxy as users (one ``x-user-id`` per batch) and POSTs each answer's
labels by id to the target's feedback URL, through the proxy, as a label pipeline would; the proxy
records them beside the rows. ``chaosml shadow`` then copies
the traffic to v2 for a few seconds and reports per slice; ``chaosml canary`` gives v2 a growing
share of the users and rolls it back where a slice is worse. Everything started is stopped.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chaosml._net import free_port
from chaosml.demo.data import LABEL
from chaosml.errors import UnreachableError

BATCH = 20
SHADOW_SECONDS = 20.0
STEPS = "20%:30s,50%:45s,100%"
FAILED_PAUSE = 0.1  # seconds a user waits after a request that failed


class Users:
    """The demo's rows through the proxy as users, one batch each, the labels of each answer
    fed back by id: POSTed to ``feedback`` (with the user's header, so a split takes it to the
    version that answered) and, with ``labels``, appended to that CSV file."""

    def __init__(
        self,
        rows: pd.DataFrame,
        url: str,
        labels: Path | None = None,
        seed: int = 0,
        *,
        feedback: str | None = None,
    ) -> None:
        features = rows.drop(columns=[LABEL]).astype(object)
        self.records = features.where(features.notna(), None).to_dict("records")
        self.truth = rows[LABEL].tolist()
        self.url, self.labels, self.seed, self.feedback = url, labels, seed, feedback
        self.stop = threading.Event()
        self.sent = self.failed = 0
        self.thread = threading.Thread(target=self._run, name="chaosml-demo-users", daemon=True)

    def _run(self) -> None:
        rng = np.random.default_rng(self.seed)
        with ExitStack() as stack:
            out = None
            if self.labels is not None:
                out = stack.enter_context(self.labels.open("w"))
                out.write("id,label\n")
                out.flush()
            while not self.stop.is_set():
                start = int(rng.integers(0, len(self.records) - BATCH))
                user = {"x-user-id": f"user-{rng.integers(10**6)}"}
                body = {"instances": self.records[start : start + BATCH]}
                try:
                    ids = self._post(self.url, body, user)["ids"]
                except (OSError, ValueError, KeyError):
                    self.failed += 1
                    self.stop.wait(FAILED_PAUSE)  # a proxy that is down is not hammered
                    continue
                self.sent += 1
                labels = self.truth[start : start + BATCH]
                if self.feedback is not None:
                    pairs = zip(ids, labels, strict=True)
                    fed = {"labels": [{"id": i, "label": y} for i, y in pairs]}
                    with contextlib.suppress(OSError, ValueError):
                        self._post(self.feedback, fed, user)
                if out is not None:
                    out.write("".join(f"{i},{y}\n" for i, y in zip(ids, labels, strict=True)))
                    out.flush()

    @staticmethod
    def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
        data = json.dumps(body).encode()
        headers = {"content-type": "application/json", **headers}
        request = urllib.request.Request(url, data, headers, method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def __enter__(self) -> Users:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


@contextmanager
def served(folder: Path, version: str) -> Iterator[str]:
    """``chaosml demo serve --version VERSION`` in a process of its own (the two versions and
    the proxy do not share one interpreter's lock), on a free port: its ``host:port``."""
    command = [sys.executable, "-m", "chaosml", "demo", "serve", "--out", str(folder)]
    command += ["--version", version, "--port", "0", "--no-monitors"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            line = ""
            while not line.startswith("serving demo model"):
                line = process.stderr.readline()
                if not line:
                    raise UnreachableError(f"the demo's {version} stopped before serving")
            yield line.split("http://", 1)[1].split("/", 1)[0]
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def release_stack(folder: Path) -> Iterator[tuple[Path, str, str]]:
    """v1 behind the fault proxy and v2 beside it: (the target file, v2's URL, the proxy's
    control API)."""
    from chaosml.demo.train import train_demo
    from chaosml.proxy.api import ProxyServer, running
    from chaosml.proxy.client import ControlClient

    artifacts = train_demo(folder)
    with ExitStack() as stack:
        v1 = stack.enter_context(served(folder, "v1"))
        v2 = stack.enter_context(served(folder, "v2"))
        server = stack.enter_context(running(ProxyServer(api="127.0.0.1:0")))
        listen = ControlClient(address=server.api).create_proxy("model", v1, "127.0.0.1:0")
        target = folder / "release-target.yaml"
        target.write_text(
            f"name: chaosml-demo-release\nurl: http://{listen['listen']}/predict\n"
            f"codec: records\ndata: {artifacts.data.resolve()}\nlabel: {LABEL}\n"
            f"feedback: http://{listen['listen']}/feedback\n"
            f"fault_points:\n  proxy: {{api: '{server.api}', proxy: model}}\n"
            "alerts:  # the release judges quality itself; nothing sends alerts here\n"
            f"  - {{type: webhook, listen: '127.0.0.1:{free_port()}'}}\n"
        )
        yield target, f"http://{v2}/predict", server.api


def run_release(folder: Path, out: Any, err: Any, *, suite: Path) -> int:
    """The shadow, then the canary; the canary's exit code (1: v2 rolled back)."""
    from chaosml.release.canary import CanaryOptions, parse_steps, render_canary, run_canary
    from chaosml.release.shadow import render_shadow, run_shadow

    folder = Path(folder).resolve()
    err.print(f"chaosml demo release: models, data and run folders in {folder}")
    with release_stack(folder) as (target, candidate, api):
        url = target.read_text().split("url: ", 1)[1].split("\n", 1)[0]
        feedback = url.rsplit("/", 1)[0] + "/feedback"
        rows = pd.read_parquet(folder / "eval.parquet")
        say = lambda line: err.print(f"chaosml: {line}", highlight=False)  # noqa: E731
        with Users(rows, url, feedback=feedback):
            shadow = run_shadow(
                target, candidate, suite, duration=SHADOW_SECONDS, root=folder / "shadow", say=say
            )
        out.rule("chaosml shadow: v2 answers v1's traffic in its shadow")
        render_shadow(shadow, out)
        options = CanaryOptions(
            steps=parse_steps(STEPS),
            look=2.0,
            lease=10.0,
            key={"header": "x-user-id"},
            root=folder / "canary",
        )
        with Users(rows, url, seed=1, feedback=feedback):
            canary = run_canary(target, candidate, suite, options, say=say)
        out.rule("chaosml canary: v2 takes a growing share of the users")
        render_canary(canary, out)
    out.print(
        "\nThe same, by hand: see the README's sections Shadow release and Canary release "
        f"(the control API was {api}).\n"
    )
    return canary.exit_code
