"""Run the real Prometheus and Alertmanager binaries on loopback, from chaosml's own configs.

For tests and local game days: scrape and evaluate every second, short ``for:`` durations, free
ports, a temporary folder; both processes are stopped by PID when the block ends.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaosml.errors import UnreachableError
from chaosml.stack import alertmanager_config, dump, prometheus_config, rules_file

PROMETHEUS = ("prometheus",)
ALERTMANAGER = ("prometheus-alertmanager", "alertmanager")


def find_binary(names: tuple[str, ...]) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise UnreachableError(
                f"{url}: exited with {process.returncode}: "
                f"{log.read_text(errors='replace')[-2000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise UnreachableError(f"{url}: not ready after {seconds:.0f} s")


@dataclass(frozen=True)
class Stack:
    prometheus: str  # host:port
    alertmanager: str

    def firing(self) -> list[dict[str, Any]]:
        """Alerts in state ``firing`` according to Prometheus."""
        import json

        with urllib.request.urlopen(f"http://{self.prometheus}/api/v1/alerts", timeout=5) as r:
            alerts = json.load(r)["data"]["alerts"]
        return [a for a in alerts if a["state"] == "firing"]


@contextmanager
def _process(argv: list[str], log: Path, ready: str) -> Iterator[None]:
    """Run ``argv`` (output to ``log``) until the block ends; wait for ``ready`` to answer 200."""
    with log.open("wb") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
        try:
            _wait_ready(ready, process, log)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def monitoring_stack(
    *, targets: list[str], webhook: str, for_scale: float = 0.05, interval: str = "1s"
) -> Iterator[Stack]:
    """Start Prometheus (scraping ``targets`` as job ``model``) and Alertmanager (sending to
    ``webhook``) on free loopback ports; stop both when done."""
    prometheus_bin, alertmanager_bin = find_binary(PROMETHEUS), find_binary(ALERTMANAGER)
    if prometheus_bin is None or alertmanager_bin is None:
        raise UnreachableError(
            "the prometheus and prometheus-alertmanager binaries are not "
            "installed (Debian: apt-get install prometheus prometheus-alertmanager)"
        )
    with tempfile.TemporaryDirectory(prefix="chaosml-stack-") as folder:
        work = Path(folder)
        alertmanager, prometheus = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        (work / "alertmanager.yml").write_text(
            dump(alertmanager_config(webhook=webhook, group_wait="1s", repeat_interval="1m")),
            encoding="utf-8",
        )
        (work / "rules.yml").write_text(dump(rules_file(for_scale=for_scale)), encoding="utf-8")
        (work / "prometheus.yml").write_text(
            dump(
                prometheus_config(
                    jobs={"model": targets},
                    alertmanager=alertmanager,
                    rules=str(work / "rules.yml"),
                    interval=interval,
                )
            ),
            encoding="utf-8",
        )
        alertmanager_argv = [
            alertmanager_bin,
            f"--config.file={work / 'alertmanager.yml'}",
            f"--storage.path={work / 'am-data'}",
            f"--web.listen-address={alertmanager}",
            "--cluster.listen-address=",
        ]
        prometheus_argv = [
            prometheus_bin,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'prom-data'}",
            f"--web.listen-address={prometheus}",
        ]
        with (
            _process(
                alertmanager_argv, work / "alertmanager.log", f"http://{alertmanager}/-/ready"
            ),
            _process(prometheus_argv, work / "prometheus.log", f"http://{prometheus}/-/ready"),
        ):
            yield Stack(prometheus, alertmanager)
