"""A served model as a version: how fast chaosml reads an endpoint against how fast it can serve.

The reference service (demo v2, monitors off) runs in its own process. The baseline is the rate
its ``/predict`` serves: the same rows, pre-encoded as ``records`` batches of the same size, posted
by the same number of threads on keep-alive connections, doing nothing with the answers. Against
it: ``EndpointVersion``'s predictor over the same rows (encode, post, decode, align), and
``slices compare v2 ENDPOINT`` end to end (the artifact's predictions, the endpoint's, the slice
sums and the equivalence check). Goal: the compare at ≥ 0.8 of the baseline's rows per second.

Run: python benchmarks/endpoint_version.py [--rows 100000] [--batch 256] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd

from chaosml.codecs import get_codec, plain
from chaosml.config import load_config
from chaosml.data import open_table
from chaosml.demo.data import LABEL
from chaosml.demo.train import train_demo
from chaosml.endpoint import EndpointVersion
from chaosml.slices.compare import compare_versions
from chaosml.slices.suite import load_suite
from chaosml.versions import resolve_version

ROOT = Path(__file__).resolve().parents[1]


def serve(folder: Path) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "chaosml", "demo", "serve", "--out", str(folder)]
    process = subprocess.Popen(
        [*command, "--port", "0", "--no-monitors"], stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    line = ""
    while not line.startswith("serving demo model"):
        line = process.stderr.readline()
        if not line:
            raise SystemExit("the reference service did not start")
    return process, line.split(" on ", 1)[1].strip()


def baseline(url: str, rows: pd.DataFrame, batch: int, concurrency: int) -> float:
    """Seconds to post every batch (pre-encoded) and read each answer, nothing more."""
    codec = get_codec("records")
    features = rows.drop(columns=[LABEL])
    bodies = [
        json.dumps(
            codec.request(
                {c: features[c].iloc[s : s + batch].to_numpy(dtype=object) for c in features}
            ),
            default=plain,
        ).encode()
        for s in range(0, len(rows), batch)
    ]
    parts = urlsplit(url)
    connections: dict[int, http.client.HTTPConnection] = {}

    def post(index: int) -> None:
        import threading

        me = threading.get_ident()
        if me not in connections:
            connections[me] = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        connection = connections[me]
        connection.request("POST", parts.path, bodies[index], {"Content-Type": "application/json"})
        connection.getresponse().read()

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(post, range(len(bodies))))
    took = time.perf_counter() - start
    for connection in connections.values():
        connection.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        demo = train_demo(folder / "demo")
        data = pd.read_parquet(demo.data)
        rows = pd.concat([data] * (args.rows // len(data) + 1), ignore_index=True)[: args.rows]
        path = folder / "rows.parquet"
        rows.to_parquet(path)
        process, url = serve(demo.folder)
        try:
            endpoint = EndpointVersion(
                name="served", url=url, batch=args.batch, concurrency=args.concurrency
            )
            base = baseline(url, rows, args.batch, args.concurrency)
            table = open_table(path)
            start = time.perf_counter()
            with endpoint.predictor(table, LABEL, 1) as predict:
                predict(rows)
            alone = time.perf_counter() - start
            config = load_config(demo.config)
            suite = load_suite(ROOT / "slices" / "credit.yaml")
            artifact = resolve_version("v2", config)
            start = time.perf_counter()
            result = compare_versions(suite, artifact, endpoint, path, config=config)
            whole = time.perf_counter() - start
            assert result.equivalence is not None and result.equivalence.equivalent
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)
    n = args.rows
    print(f"{n:,} rows, batches of {args.batch}, {args.concurrency} in flight")
    print(f"{'':42} {'seconds':>8} {'rows/s':>10} {'× baseline':>11}")
    for name, took in (
        ("baseline: /predict, pre-encoded batches", base),
        ("EndpointVersion predictor", alone),
        ("slices compare v2 ENDPOINT (end to end)", whole),
    ):
        print(f"{name:42} {took:8.2f} {n / took:10,.0f} {base / took:10.2f}×")


if __name__ == "__main__":
    main()
