"""A split's cost: p50 latency and request throughput through the proxy with a split at weight 0.5
(keyed by a header, each request another user, so both arms serve), against the same proxy with
no split, in the same run (rounds alternating their order; the median round of each kept).
A third figure, the split with its recording on, is printed for information.

Both arms are the same fast asyncio HTTP/1.1 echo model (records codec: ``predictions``,
``scores``, ``ids``) in one process, so the figures are the proxy's own cost of splitting; with
``--two-upstreams`` the candidate is a second copy in a process and on a port of its own (each arm
then has its own pool of keep-alive connections, as a real candidate would, and on a small
machine the second process competes for the CPU). The proxy is ``chaosml proxy`` in its own
process; the clients are keep-alive Python threads in this one. Everything listens on 127.0.0.1.

Run: python benchmarks/canary_split.py [--seconds 3] [--rounds 6] [--two-upstreams]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from chaosml._net import free_port

sys.path.insert(0, str(Path(__file__).parent))
from shadow import STUB  # the model stub: rows in, predictions, scores and ids out

MODES = ("off", "on", "recording")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process ``pid`` has used (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_port(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def load(listen: str, seconds: float, clients: int, rows: int) -> tuple[float, float, int]:
    """Requests per second, p50 latency (s) and failed requests of ``clients`` keep-alive loops,
    each request with another ``x-user-id``."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failed = [0] * clients
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        body = {"instances": [{"id": f"{index}-{i}", "x": i / rows} for i in range(rows)]}
        n = 0
        with requests.Session() as session:
            while time.monotonic() < stop:
                n += 1
                headers = {"x-user-id": f"{index}-{n}"}
                start = time.perf_counter()
                answer = session.post(
                    f"http://{listen}/predict", json=body, headers=headers, timeout=10
                )
                latencies[index].append(time.perf_counter() - start)
                failed[index] += answer.status_code != 200

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - began
    every = [x for part in latencies for x in part]
    return len(every) / took, statistics.median(every), sum(failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--two-upstreams", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        echo = Path(folder) / "echo.py"
        echo.write_text(STUB)
        primary_port, candidate_port, api_port = free_port(), free_port(), free_port()
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        upstreams = [primary_port, candidate_port] if args.two_upstreams else [primary_port]
        candidate_port = upstreams[-1]
        processes = [subprocess.Popen([sys.executable, str(echo), str(p), "0"]) for p in upstreams]
        processes += [
            subprocess.Popen(
                [sys.executable, "-m", "chaosml", "proxy", "--api", f"127.0.0.1:{api_port}"],
                env=env,
            ),
        ]
        try:
            for port in (*upstreams, api_port):
                wait_port(port)
            api = f"http://127.0.0.1:{api_port}"
            made = requests.post(
                f"{api}/proxies",
                json={"name": "model", "upstream": f"127.0.0.1:{primary_port}"},
                timeout=5,
            ).json()
            listen = made["listen"]
            split: dict[str, Any] = {
                "candidate": f"127.0.0.1:{candidate_port}",
                "weight": 0.5,
                "key": {"header": "x-user-id"},
                "lease": 600,
            }
            load(listen, 1.0, args.clients, args.rows)  # warm-up
            figures: dict[str, list[tuple[float, float, int]]] = {m: [] for m in MODES}
            cpu: dict[str, list[float]] = {m: [] for m in MODES}  # proxy CPU s per request
            proxy = processes[-1].pid
            states: list[dict[str, Any]] = []
            for round_ in range(args.rounds):
                # each round in the other order (off, on, recording / recording, on, off): a
                # machine whose load drifts favours neither
                for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
                    body = dict(split)
                    if mode == "recording":
                        body["codec"] = "records"
                        body["folder"] = str(Path(folder) / f"split-{round_}")
                    if mode != "off":
                        requests.post(f"{api}/proxies/model/split", json=body, timeout=5)
                    used = cpu_seconds(proxy)
                    figures[mode].append(load(listen, args.seconds, args.clients, args.rows))
                    done = figures[mode][-1][0] * args.seconds  # about as many requests
                    cpu[mode].append((cpu_seconds(proxy) - used) / done)
                    if mode != "off":
                        where = f"{api}/proxies/model/split"
                        states.append(requests.delete(where, timeout=60).json())
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=10)
    # the median round of each mode (rounds alternate their order: see above)
    rps = {m: statistics.median(r[0] for r in runs) for m, runs in figures.items()}
    p50 = {m: statistics.median(r[1] for r in runs) for m, runs in figures.items()}
    per_request = {m: statistics.median(values) for m, values in cpu.items()}
    result = {
        "upstreams": len(upstreams),
        "rounds": args.rounds,
        "p50_ms_per_round": {
            m: [round(r[1] * 1000, 3) for r in runs] for m, runs in figures.items()
        },
        "proxy_cpu_us_per_request": {m: round(v * 1e6, 1) for m, v in per_request.items()},
        "proxy_cpu_ratio": round(per_request["on"] / per_request["off"], 3),
        "throughput_off_rps": round(rps["off"], 1),
        "throughput_on_rps": round(rps["on"], 1),
        "throughput_ratio": round(rps["on"] / rps["off"], 3),
        "p50_off_ms": round(p50["off"] * 1000, 3),
        "p50_on_ms": round(p50["on"] * 1000, 3),
        "p50_ratio": round(p50["on"] / p50["off"], 3),
        "recording_throughput_ratio": round(rps["recording"] / rps["off"], 3),
        "recording_p50_ratio": round(p50["recording"] / p50["off"], 3),
        "failed": sum(r[2] for runs in figures.values() for r in runs),
        "arms": [
            {arm: s["arms"][arm]["requests"] for arm in ("primary", "candidate")} for s in states
        ],
        "recorded_rows": [s["recording"]["rows"] for s in states if s["recording"]],
        "recording_drops": [s["recording"]["drops"] for s in states if s["recording"]],
        "goal": "p50_ratio <= 1.03",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
