"""The reference service's CPU per request with one OpenMP thread per prediction (its default,
``create_app(model_threads=1)``) against OpenMP's default of a thread per core (``None``).

Each round serves the demo's v2 (the gradient-boosted model) in a process of its own and drives
it with the bundled game day's load through chaosml's load driver: 4 users, 30 requests/s of 10
rows. The service's CPU time (from ``/proc``) over the measured seconds, divided by the requests
it answered, is its CPU per request. Rounds alternate between the two settings, and each
setting's median is kept, so both meet the same machine.

Run: python benchmarks/service_threads.py [--rounds 3] [--seconds 10]
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

from chaosml.demo.train import train_demo
from chaosml.load.plan import LoadPlan
from chaosml.load.process import LoadProcess

SERVE = """
import sys, time
from pathlib import Path
from chaosml.demo.service import serving
threads = None if sys.argv[2] == "none" else int(sys.argv[2])
with serving(Path(sys.argv[1]), version="v2", model_threads=threads) as address:
    print(address, flush=True)
    while True:
        time.sleep(60)
"""


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def answered(address: str) -> float:
    text = requests.get(f"http://{address}/metrics", timeout=5).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("chaosml_model_requests_total")
    )


def one_round(model: Path, data: Path, threads: str, seconds: float) -> float:
    """Milliseconds of the service's CPU per request answered."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # OpenMP's own default
    service = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(model), threads],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert service.stdout is not None
        address = service.stdout.readline().strip()
        plan = LoadPlan(
            url=f"http://{address}/predict",
            data=str(data),
            label="approved",
            batch=10,
            users=4,
            rate=30.0,
        )
        with LoadProcess(plan).start() as load:
            load.go()
            time.sleep(2)  # past the first requests (the model's first calls are slower)
            cpu, served = cpu_seconds(service.pid), answered(address)
            time.sleep(seconds)
            cpu, served = cpu_seconds(service.pid) - cpu, answered(address) - served
        return cpu / served * 1000
    finally:
        service.terminate()
        service.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        demo = train_demo(Path(tmp) / "demo")
        figures: dict[str, list[float]] = {"1": [], "none": []}
        for _ in range(options.rounds):
            for threads in figures:
                figures[threads].append(one_round(demo.v2, demo.data, threads, options.seconds))
    one, default = (statistics.median(figures[k]) for k in ("1", "none"))
    print(f"CPU per request, the game day's load (median of {options.rounds} rounds):")
    print(f"  one OpenMP thread      {one:6.2f} ms   {[round(v, 2) for v in figures['1']]}")
    print(f"  a thread per core      {default:6.2f} ms   {[round(v, 2) for v in figures['none']]}")
    print(f"  ratio {one / default:.2f} (one thread against a thread per core)")


if __name__ == "__main__":
    main()
