"""Game-day figures on the reference stack (loopback, rules' for: x 0.05), in one run:

- runner overhead: a scenario's wall time beyond its own phases (goal <= 2 s per scenario);
- time-to-detect error: the reported detection against the moment Prometheus's own API first
  said "firing", polled on the side every 0.1 s (goal <= 1 s);
- Locust rate at the demo's load (4 users, 30 requests/s of 10 rows): achieved / requested
  (goal within 5%).

Run: python benchmarks/gameday.py [--scenarios 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from chaosml.alerts.base import parse_time
from chaosml.demo.harness import reference_stack
from chaosml.demo.run import write_target
from chaosml.demo.train import train_demo
from chaosml.gameday import RunOptions, run_files

SCALE = 0.05
ROOT = Path(__file__).parents[1]


class Watch(threading.Thread):
    """When Prometheus's API first shows each alert firing (and its activeAt)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.seen, self.stop = url, {}, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            alerts = requests.get(f"{self.url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
            for alert in alerts:
                if alert["state"] == "firing":
                    key = alert["labels"]["alertname"]
                    self.seen.setdefault(key, (time.time(), parse_time(alert["activeAt"])))


def overhead(record: dict[str, Any]) -> float:
    phases = sum(p["end"] - p["start"] for p in record["phases"])
    return record["ended_at"] - record["started_at"] - phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=4, help="healthy scenarios in a row")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        train_demo(work / "demo")
        with reference_stack(work / "demo", time_scale=SCALE) as stack:
            assert stack.monitoring is not None
            target = write_target(stack, work / "target.yaml")
            paths = []
            for i in range(args.scenarios):
                path = work / f"healthy-{i}.yaml"
                scenario = {
                    "name": f"healthy-{i}",
                    "load": {"users": 4, "rate": 30, "batch": 10},
                    "phases": {"steady": "2s", "fault": "5s", "recovery": "1s"},
                }
                path.write_text(yaml.safe_dump(scenario), encoding="utf-8")
                paths.append(path)
            started = time.time()
            report = run_files(paths, target, RunOptions(runs=work / "runs"))
            wall = time.time() - started
            extra = [overhead(s) for s in report.scenarios]
            phases = wall - sum(extra)
            print(f"runner overhead over {len(extra)} scenarios (their phases: {phases:.1f} s):")
            print(
                "  per scenario: "
                + ", ".join(f"{e:.2f} s" for e in extra)
                + f" (the first includes starting the load driver); mean "
                f"{statistics.mean(extra):.2f} s; mean / 2 s goal = {statistics.mean(extra) / 2:.2f}"
            )
            print(f"  whole game day: wall / phases = {wall / phases:.3f}")
            rates = [
                p["load"]["rps"]
                for s in report.scenarios
                for p in s["phases"]
                if p["name"] == "fault" and p["load"]
            ]
            print(
                f"Locust at the demo's load: achieved / requested 30 req/s = "
                f"{statistics.mean(rates) / 30:.3f} (per scenario: "
                + ", ".join(f"{r / 30:.3f}" for r in rates)
                + ")"
            )

            watch = Watch(f"http://{stack.monitoring.prometheus}")
            watch.start()
            scenarios = ["income-nulls", "bias", "error-burst"]
            report = run_files(
                [ROOT / "scenarios" / f"{name}.yaml" for name in scenarios],
                target,
                RunOptions(time_scale=SCALE, runs=work / "runs"),
            )
            watch.stop.set()
            watch.join()
            print("time to detect, reported vs Prometheus's API seen firing (polled every 0.1 s):")
            for record in report.scenarios:
                for e in record["expectations"]:
                    if not e["fires"] or e["alert"] not in watch.seen:
                        continue
                    seen, _ = watch.seen[e["alert"]]
                    prometheus = e["by_source"]["prometheus"]["detected_after_s"]
                    error = prometheus - (seen - record["injected_at"])
                    print(
                        f"  {record['name']}: {e['alert']} detected after {prometheus:.2f} s "
                        f"(webhook {e['by_source']['webhook']['detected_after_s']:.2f} s); "
                        f"|error| = {abs(error):.2f} s, / 1 s goal = {abs(error):.2f}"
                    )


if __name__ == "__main__":
    main()
