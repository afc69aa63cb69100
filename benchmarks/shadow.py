"""A shadow's cost to the primary: request throughput and p50 latency through the proxy with a
shadow to a candidate 10x slower than the primary, and with a shadow to a candidate that is down
(nothing listens on its port), against the same proxy without one, in the same run (rounds
alternating off, slow, down, off, slow, down, ...; the best round of each kept).

The primary and the candidate are the same small asyncio HTTP/1.1 model stub (records codec:
``predictions``, ``scores``, ``ids``), each in its own process, the candidate waiting 10x the
primary's delay before it answers; the proxy is ``chaosml proxy`` in its own process; the clients
are keep-alive Python threads in this one. Everything listens on 127.0.0.1. Copies that do not
fit the shadow's bounded queue are dropped and counted: the figures below print those counts.

Run: python benchmarks/shadow.py [--seconds 5] [--rounds 3] [--delay-ms 2]
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

STUB = r"""
import asyncio, json, sys

DELAY = float(sys.argv[2])

async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for h in head.decode("latin-1").split("\r\n")[1:]:
                if h.lower().startswith("content-length:"):
                    length = int(h.split(":")[1])
            body = json.loads(await reader.readexactly(length)) if length else {"instances": []}
            rows = body["instances"]
            await asyncio.sleep(DELAY)
            answer = json.dumps({
                "predictions": [int(r["x"] > 0.5) for r in rows],
                "scores": [r["x"] for r in rows],
                "ids": [str(r["id"]) for r in rows],
            }).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


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
    """Requests per second, p50 latency (s) and failed requests of ``clients`` keep-alive loops."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failed = [0] * clients
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        body = {"instances": [{"id": f"{index}-{i}", "x": i / rows} for i in range(rows)]}
        with requests.Session() as session:
            while time.monotonic() < stop:
                start = time.perf_counter()
                try:
                    answer = session.post(f"http://{listen}/predict", json=body, timeout=10)
                except requests.RequestException:
                    failed[index] += 1  # a request lost: counted, the loop goes on
                    continue
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
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        stub = Path(folder) / "stub.py"
        stub.write_text(STUB)
        primary_port, candidate_port, api_port = free_port(), free_port(), free_port()
        delay = args.delay_ms / 1000
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        processes = [
            subprocess.Popen([sys.executable, str(stub), str(primary_port), str(delay)]),
            subprocess.Popen([sys.executable, str(stub), str(candidate_port), str(delay * 10)]),
            subprocess.Popen(
                [sys.executable, "-m", "chaosml", "proxy", "--api", f"127.0.0.1:{api_port}"],
                env=env,
            ),
        ]
        try:
            for port in (primary_port, candidate_port, api_port):
                wait_port(port)
            api = f"http://127.0.0.1:{api_port}"
            made = requests.post(
                f"{api}/proxies",
                json={"name": "model", "upstream": f"127.0.0.1:{primary_port}"},
                timeout=5,
            ).json()
            listen = made["listen"]
            load(listen, 1.0, args.clients, args.rows)  # warm-up
            down_port = free_port()  # nothing listens there: the candidate is down
            candidates = {
                "slow": f"127.0.0.1:{candidate_port}",
                "down": f"127.0.0.1:{down_port}",
            }
            runs: dict[str, list[tuple[float, float, int]]] = {"off": [], "slow": [], "down": []}
            counts: dict[str, list[dict[str, Any]]] = {"slow": [], "down": []}
            for round_ in range(args.rounds):
                runs["off"].append(load(listen, args.seconds, args.clients, args.rows))
                for mode, candidate in candidates.items():
                    shadow = {
                        "candidate": candidate,
                        "codec": "records",
                        "folder": str(Path(folder) / f"shadow-{mode}-{round_}"),
                    }
                    made = requests.post(f"{api}/proxies/model/shadow", json=shadow, timeout=5)
                    made.raise_for_status()
                    runs[mode].append(load(listen, args.seconds, args.clients, args.rows))
                    ended = requests.delete(f"{api}/proxies/model/shadow", timeout=30)
                    counts[mode].append(ended.json())
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=10)
    best = {mode: max(r[0] for r in rounds) for mode, rounds in runs.items()}
    p50 = {mode: min(r[1] for r in rounds) for mode, rounds in runs.items()}
    keys = ("mirrored", "answered", "recorded_rows", "dropped", "drops")
    result: dict[str, Any] = {
        "primary_delay_ms": args.delay_ms,
        "candidate_delay_ms": args.delay_ms * 10,
        "throughput_off_rps": round(best["off"], 1),
        "p50_off_ms": round(p50["off"] * 1000, 3),
        "failed_off": sum(r[2] for r in runs["off"]),
    }
    for mode in ("slow", "down"):
        result[mode] = {
            "throughput_rps": round(best[mode], 1),
            "throughput_ratio": round(best[mode] / best["off"], 3),
            "p50_ms": round(p50[mode] * 1000, 3),
            "p50_ratio": round(p50[mode] / p50["off"], 3),
            "failed": sum(r[2] for r in runs[mode]),
            "shadow_counts": [{k: c[k] for k in keys} for c in counts[mode]],
        }
    result["goal"] = (
        "slow: throughput_ratio >= 0.90 and p50_ratio <= 1.05; down: failed 0 (nothing lost)"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
