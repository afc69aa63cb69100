"""/predict overhead of what a service embeds: the ML monitors, and the in-service fault point
with no fault active.

Three `chaosml demo serve` processes on 127.0.0.1: monitors off; monitors on; monitors on and the
fault point enabled (CHAOSML_FAULT_POINT set, its control API listening, no toxic). One client
sends one-row requests to each in alternating rounds; prints p50 latencies and their ratios.

Run: python benchmarks/predict_overhead.py [--requests 300] [--rounds 3] [--rows 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from chaosml.codecs import plain
from chaosml.demo.data import make_credit
from chaosml.demo.train import train_demo

sys.path.insert(0, str(Path(__file__).parent))
from proxy_throughput import free_port, wait_for


def latencies(http: requests.Session, url: str, body: dict, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        response = http.post(url, json=body, timeout=10)
        out.append(time.perf_counter() - start)
        assert response.status_code == 200, response.text
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        demo = Path(folder) / "demo"
        train_demo(demo)
        rows = make_credit(args.rows, seed=5).drop(columns=["approved"]).to_dict("records")
        body = {"instances": [{k: plain(v) for k, v in row.items()} for row in rows]}
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        modes = {
            "off": (["--no-monitors"], {}),
            "on": (["--monitors"], {}),
            "point": (["--monitors"], {"CHAOSML_FAULT_POINT": f"127.0.0.1:{free_port()}"}),
        }
        ports, processes = {}, []
        for mode, (flags, extra) in modes.items():
            ports[mode] = free_port()
            command = [sys.executable, "-m", "chaosml", "demo", "serve", "--out", str(demo)]
            processes.append(
                subprocess.Popen(
                    [*command, "--port", str(ports[mode]), *flags],
                    stderr=subprocess.DEVNULL,
                    env={**env, **extra},
                )
            )
        try:
            for port in ports.values():
                wait_for(port)
            results: dict[str, list[float]] = {mode: [] for mode in modes}
            with requests.Session() as http:
                for port in ports.values():  # warm up
                    latencies(http, f"http://127.0.0.1:{port}/predict", body, 30)
                for _ in range(args.rounds):
                    for mode, port in ports.items():
                        results[mode] += latencies(
                            http, f"http://127.0.0.1:{port}/predict", body, args.requests
                        )
            p50 = {mode: statistics.median(values) * 1000 for mode, values in results.items()}
            print(
                f"/predict, {args.rows} row(s) per request, {args.rounds} alternating rounds of "
                f"{args.requests} requests"
            )
            print(
                f"  p50 monitors off {p50['off']:.2f} ms, on {p50['on']:.2f} ms: "
                f"on/off {p50['on'] / p50['off']:.3f} (goal <= 1.10)"
            )
            print(
                f"  p50 monitors on + fault point enabled, no fault {p50['point']:.2f} ms: "
                f"point/on {p50['point'] / p50['on']:.3f} (goal <= 1.05)"
            )
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=10)


if __name__ == "__main__":
    main()
