"""A served model as a version (the artifacts read without the demo's prediction cache, which
other tests count): the reference service's /predict read through a codec, checked
against its own artifact (equivalent) and another model's (not), and the endpoint's failures as
one line each."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from chaosml.config import load_config
from chaosml.demo.data import LABEL
from chaosml.demo.train import DemoArtifacts
from chaosml.endpoint import EndpointVersion
from chaosml.errors import UnreachableError, VersionError
from chaosml.slices.compare import compare_versions
from chaosml.slices.suite import load_suite
from chaosml.versions import ArtifactVersion, load_model
from tests.live_servers import threaded_server

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "slices" / "credit.yaml"


@pytest.fixture(scope="module")
def served(demo: DemoArtifacts) -> Iterator[str]:
    """The reference service (v2) on a free loopback port: its /predict URL."""
    command = [sys.executable, "-m", "chaosml", "demo", "serve", "--out", str(demo.folder)]
    with subprocess.Popen(
        [*command, "--port", "0", "--no-monitors"], stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stderr is not None
            line = ""
            while not line.startswith("serving demo model"):
                line = process.stderr.readline()
                assert line, "the service stopped before serving"
            yield line.split(" on ", 1)[1].strip()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)


def _rows(demo: DemoArtifacts, n: int = 3000) -> pd.DataFrame:
    return pd.read_parquet(demo.data).iloc[:n].reset_index(drop=True)


def test_the_artifact_and_its_served_endpoint_are_equivalent(
    demo: DemoArtifacts, served: str
) -> None:
    config = load_config(demo.config)
    suite = load_suite(SUITE)
    rows = _rows(demo)
    artifact = ArtifactVersion(name="v2", path=demo.v2)
    endpoint = EndpointVersion(name="served", url=served, batch=97, concurrency=3)
    result = compare_versions(suite, artifact, endpoint, rows, config=config)
    assert result.equivalence is not None and result.equivalence.equivalent
    assert result.passed
    overall = result.equivalence.slices[0]
    assert overall.n == len(rows) and overall.same_labels == len(rows)
    assert overall.max_score_diff is not None and overall.max_score_diff <= 1e-6
    # the endpoint's metrics are the artifact's, slice by slice
    assert [s.v1 for s in result.slices] == [s.v2 for s in result.slices]


def test_another_model_behind_the_endpoint_is_not_equivalent_by_the_brute_force_count(
    demo: DemoArtifacts, served: str
) -> None:
    config = load_config(demo.config)
    suite = load_suite(SUITE)
    rows = _rows(demo)
    endpoint = EndpointVersion(name="served", url=served)
    result = compare_versions(
        suite, ArtifactVersion(name="v1", path=demo.v1), endpoint, rows, config=config
    )
    assert result.equivalence is not None and not result.equivalence.equivalent
    assert not result.passed
    # oracle: the two models row by row, offline
    features = rows.drop(columns=[LABEL])
    v1, v2 = load_model(demo.v1), load_model(demo.v2)
    same = v1.predict(features) == v2.predict(features)
    gap = np.abs(v1.predict_proba(features)[:, 1] - v2.predict_proba(features)[:, 1])
    overall = result.equivalence.slices[0]
    assert overall.same_labels == int(same.sum())
    assert overall.max_score_diff == pytest.approx(float(gap.max()), abs=1e-12)
    apac = next(s for s in result.equivalence.slices if s.name == "region=APAC")
    in_apac = (rows["region"] == "APAC").to_numpy()
    assert apac.same_labels == int(same[in_apac].sum())


def test_the_cli_exits_1_when_the_served_model_is_not_the_artifact(
    demo: DemoArtifacts, served: str, tmp_path: Path
) -> None:
    data = tmp_path / "rows.parquet"
    _rows(demo, 2000).to_parquet(data)
    project = tmp_path / "project"  # a copy: the artifacts' predictions get cached in it
    shutil.copytree(demo.folder, project)
    base = [sys.executable, "-m", "chaosml", "slices", "compare", "--suite", str(SUITE)]
    base += ["--config", str(project / demo.config.name), "--data", str(data), "--json"]
    same = subprocess.run([*base, "v2", served], capture_output=True, text=True, check=False)
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["equivalence"]["equivalent"] is True
    other = subprocess.run([*base, "v1", served], capture_output=True, text=True, check=False)
    assert other.returncode == 1, other.stderr
    assert json.loads(other.stdout)["equivalence"]["equivalent"] is False


class _Short(BaseHTTPRequestHandler):
    """Answers one prediction fewer than it was sent rows."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = json.dumps({"predictions": [0] * (len(body["instances"]) - 1)}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


def test_an_endpoint_down_or_answering_another_shape_is_one_clear_error(
    demo: DemoArtifacts, served: str
) -> None:
    config = load_config(demo.config)
    suite = load_suite(SUITE)
    rows = _rows(demo, 500)
    artifact = ArtifactVersion(name="v2", path=demo.v2)
    down = EndpointVersion(name="down", url="http://127.0.0.1:1/predict", retries=1)
    with pytest.raises(UnreachableError, match=r"cannot reach the endpoint after 2 tries"):
        compare_versions(suite, artifact, down, rows, config=config)
    health = EndpointVersion(name="health", url=served.replace("/predict", "/health"))
    with pytest.raises(VersionError, match=r"answered HTTP 405"):
        compare_versions(suite, artifact, health, rows, config=config)
    # (the client stops at the first short answer and hangs up on the batches in flight)
    with threaded_server(_Short) as address:
        short = EndpointVersion(name="short", url=f"http://{address}/predict", batch=50)
        with pytest.raises(VersionError, match=r"answered 49 predictions for a batch of 50 rows"):
            compare_versions(suite, artifact, short, rows, config=config)
