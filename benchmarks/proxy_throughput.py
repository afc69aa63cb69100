"""Proxy throughput: wrk against the demo model service, direct and through `chaosml proxy`.

Runs alternate (direct, proxied, direct, proxied, ...) in the same script, in three settings: no
toxic, and a `missing_values` toxic on every request (so every request is parsed, faulted and
re-encoded). Prints requests/s and proxied/direct ratios. Everything listens on 127.0.0.1.

Needs wrk (Debian package `wrk`). Run: python benchmarks/proxy_throughput.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chaosml._net import free_port
from chaosml.codecs import plain
from chaosml.demo.data import make_credit
from chaosml.demo.train import train_demo
from chaosml.proxy.client import ToxiproxyTarget

UPSTREAMS = {
    "echo": "an echo model: the request's rows back with a prediction each (Starlette/uvicorn)",
    "v1": "demo model v1 (logistic regression, FastAPI/uvicorn)",
    "v2": "demo model v2 (gradient boosting, FastAPI/uvicorn)",
    "fast": "a rule instead of a model (Starlette/uvicorn): the proxy's worst case",
}
ECHO_SERVICE = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

async def predict(request: Request) -> JSONResponse:
    rows = (await request.json())["instances"]
    return JSONResponse({"predictions": [1 for _ in rows], "echo": rows})

app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""
FAST_SERVICE = """
import json, sys, uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

async def predict(request: Request) -> JSONResponse:
    rows = (await request.json())["instances"]
    scores = [0.9 if (row.get("income") or 0) > 40000 else 0.2 for row in rows]
    return JSONResponse({"predictions": [int(s > 0.5) for s in scores], "scores": scores})

app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def wait_for(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def wrk(url: str, script: Path, seconds: int, connections: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error responses:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--version",
        default="echo",
        choices=["echo", "v1", "v2", "fast"],
        help="upstream: an echo model (the request's rows back), demo model v1 (logistic "
        "regression, with the demo's monitors), v2 (gradient boosting), or fast (a rule instead "
        "of a model: the proxy's worst case)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        train_demo(work / "demo")
        row = make_credit(1, seed=3).drop(columns=["approved"]).to_dict("records")[0]
        body = json.dumps({"instances": [{k: plain(v) for k, v in row.items()}]})
        script = work / "post.lua"
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body)}\n",
            encoding="utf-8",
        )
        service_port, api_port = free_port(), free_port()
        chaosml = [sys.executable, "-m", "chaosml"]
        # one thread per worker, as model services usually run: no OpenMP pool fighting the proxy
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if args.version in ("fast", "echo"):
            source = FAST_SERVICE if args.version == "fast" else ECHO_SERVICE
            command = [sys.executable, "-c", source, str(service_port)]
        else:
            command = [
                *chaosml,
                "demo",
                "serve",
                "--out",
                str(work / "demo"),
                "--version",
                args.version,
                "--port",
                str(service_port),
            ]
        service = subprocess.Popen(command, stderr=subprocess.DEVNULL, env=env)
        proxy = subprocess.Popen(
            [*chaosml, "proxy", "--api", f"127.0.0.1:{api_port}"], stderr=subprocess.DEVNULL
        )
        try:
            wait_for(service_port)
            wait_for(api_port)
            control = ToxiproxyTarget("127.0.0.1", api_port)
            listen = control.ensure_proxy("model", f"127.0.0.1:{service_port}")["listen"]
            direct_url = f"http://127.0.0.1:{service_port}/predict"
            proxied_url = f"http://{listen}/predict"
            wrk(direct_url, script, 1, args.connections)  # warm up both paths
            wrk(proxied_url, script, 1, args.connections)
            print(
                f"wrk -t1 -c{args.connections} -d{args.seconds}s, one-row records requests, "
                f"upstream {UPSTREAMS[args.version]}, {args.rounds} alternating rounds"
            )
            for setting in ("no toxic", "missing_values on every request"):
                if setting != "no toxic":
                    control.add_toxic(
                        "model",
                        "missing_values",
                        stream="upstream",
                        attributes={"columns": ["income"], "rate": 0.3},
                    )
                direct, proxied = [], []
                for _ in range(args.rounds):
                    direct.append(wrk(direct_url, script, args.seconds, args.connections))
                    proxied.append(wrk(proxied_url, script, args.seconds, args.connections))
                d, p = sum(direct) / len(direct), sum(proxied) / len(proxied)
                print(
                    f"  {setting:34s} direct {d:7.0f} req/s  proxied {p:7.0f} req/s  "
                    f"ratio {p / d:.3f}  (rounds: {', '.join(f'{x / y:.3f}' for x, y in zip(proxied, direct, strict=True))})"
                )
        finally:
            for process in (proxy, service):
                process.terminate()
                process.wait(timeout=10)


if __name__ == "__main__":
    main()
