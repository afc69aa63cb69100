"""The reference stack as real processes on loopback, shared by the tests, ``chaosml demo up`` and
``chaosml demo``.

``monitoring_stack`` runs the real Prometheus and Alertmanager binaries from chaosml's rules (or a
user's rules file) with every ``for:`` and range shortened by ``time_scale``; ``reference_stack``
adds the demo model service (with its in-service fault point enabled) and the fault proxy in front
of it, and describes the whole as a game-day target. Every process is started here and stopped by
its PID when the block ends.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from chaosml._net import free_port
from chaosml._wait import wait_until
from chaosml.demo.data import LABEL
from chaosml.demo.rules import RULES, alertmanager_config, dump, prometheus_config, rules_file
from chaosml.durations import parse_duration
from chaosml.errors import InputError, UnreachableError

PROMETHEUS = ("prometheus",)
ALERTMANAGER = ("prometheus-alertmanager", "alertmanager")
NO_BINARIES = (
    "Prometheus/Alertmanager are not installed (Debian: apt-get install prometheus "
    "prometheus-alertmanager): reading the service's /metrics with metric probes instead"
)


def find_binary(names: tuple[str, ...]) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


def have_monitoring() -> bool:
    return find_binary(PROMETHEUS) is not None and find_binary(ALERTMANAGER) is not None


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:

    def ready() -> bool:
        if process.poll() is not None:
            raise UnreachableError(
                f"{url}: exited with {process.returncode}: "
                f"{log.read_text(errors='replace')[-2000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    if not wait_until(ready, seconds, every=0.1):
        raise UnreachableError(f"{url}: not ready after {seconds:.0f} s")


@contextmanager
def managed_process(
    argv: list[str], log: Path, ready: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` (output to ``log``) until the block ends; wait for ``ready`` to answer 200.
    Stopped by PID: SIGTERM, then SIGKILL after 10 s."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            argv, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        try:
            _wait_ready(ready, process, log)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass(frozen=True)
class Stack:
    prometheus: str  # host:port
    alertmanager: str

    def firing(self) -> list[dict[str, Any]]:
        """Alerts in state ``firing`` according to Prometheus."""
        with urllib.request.urlopen(f"http://{self.prometheus}/api/v1/alerts", timeout=5) as r:
            alerts = json.load(r)["data"]["alerts"]
        return [a for a in alerts if a["state"] == "firing"]


def scaled_rules(path: Path | None, time_scale: float) -> dict[str, Any]:
    """chaosml's rules, or those of the Prometheus rules file ``path``, with every ``for:``
    multiplied by ``time_scale``."""
    if path is None:
        return rules_file(time_scale=time_scale)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        groups = data["groups"]
        for group in groups:
            for rule in group.get("rules", []):
                if "for" in rule:
                    rule["for"] = f"{max(round(parse_duration(rule['for']) * time_scale), 1)}s"
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a Prometheus rules file: {exc}") from exc
    return dict(data)


@contextmanager
def monitoring_stack(
    *,
    targets: list[str],
    webhook: str,
    time_scale: float = 0.05,
    interval: str = "1s",
    rules: Path | None = None,
    folder: Path | None = None,
) -> Iterator[Stack]:
    """Start Prometheus (scraping ``targets`` as job ``model``) and Alertmanager (sending to
    ``webhook``) on free loopback ports; stop both when done."""
    prometheus_bin, alertmanager_bin = find_binary(PROMETHEUS), find_binary(ALERTMANAGER)
    if prometheus_bin is None or alertmanager_bin is None:
        raise UnreachableError(NO_BINARIES.split(":")[0])
    with ExitStack() as stack:
        work = folder or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chaosml-")))
        for data in ("prom-data", "am-data"):  # no alerts or series from an earlier run
            shutil.rmtree(work / data, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
        alertmanager, prometheus = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        (work / "alertmanager.yml").write_text(
            dump(alertmanager_config(webhook=webhook, group_wait="1s", repeat_interval="1m")),
            encoding="utf-8",
        )
        (work / "rules.yml").write_text(dump(scaled_rules(rules, time_scale)), encoding="utf-8")
        config = prometheus_config(
            jobs={"model": targets},
            alertmanager=alertmanager,
            rules=str(work / "rules.yml"),
            interval=interval,
        )
        (work / "prometheus.yml").write_text(dump(config), encoding="utf-8")
        stack.enter_context(
            managed_process(
                [
                    alertmanager_bin,
                    f"--config.file={work / 'alertmanager.yml'}",
                    f"--storage.path={work / 'am-data'}",
                    f"--web.listen-address={alertmanager}",
                    "--cluster.listen-address=",
                ],
                work / "alertmanager.log",
                f"http://{alertmanager}/-/ready",
            )
        )
        stack.enter_context(
            managed_process(
                [
                    prometheus_bin,
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'prom-data'}",
                    f"--web.listen-address={prometheus}",
                ],
                work / "prometheus.log",
                f"http://{prometheus}/-/ready",
            )
        )
        yield Stack(prometheus, alertmanager)


@dataclass(kw_only=True, frozen=True)
class ReferenceStack:
    """Addresses of the running reference stack, and the game-day target that describes it."""

    service: str  # host:port of the model service
    proxy_api: str
    proxy_listen: str  # where clients reach the service through the proxy
    service_point: str  # the in-service fault point's control API
    webhook: str  # where Alertmanager sends, for the game day's webhook receiver
    data: Path
    monitoring: Stack | None

    def target(self) -> dict[str, Any]:
        """A target file's content for this stack."""
        alerts: list[dict[str, Any]]
        if self.monitoring is not None:
            alerts = [
                {"type": "prometheus", "url": f"http://{self.monitoring.prometheus}"},
                {"type": "alertmanager", "url": f"http://{self.monitoring.alertmanager}"},
                {"type": "webhook", "listen": self.webhook},
            ]
        else:
            alerts = [
                {
                    "type": "probe",
                    "url": f"http://{self.service}/metrics",
                    "rules": [r for rule in RULES if (r := rule.probe_rule()) is not None],
                }
            ]
        return {
            "name": "chaosml-demo",
            "url": f"http://{self.proxy_listen}/predict",
            "codec": "records",
            "data": str(self.data),
            "label": LABEL,
            "feedback": f"http://{self.service}/feedback",
            "fault_points": {
                "proxy": {"api": self.proxy_api, "proxy": "model"},
                "service": {"api": self.service_point, "proxy": "service"},
            },
            "alerts": alerts,
        }


@contextmanager
def reference_stack(
    folder: Path,
    *,
    time_scale: float = 0.05,
    rules: Path | None = None,
    window: int = 500,
    seed: int = 0,
    say: Callable[[str], None] = lambda line: None,
) -> Iterator[ReferenceStack]:
    """Start the demo service (v2, its fault point on, v1 loaded as the stale alternate), the
    fault proxy in front of it and, when installed, Prometheus and Alertmanager."""
    from chaosml.demo.train import train_demo
    from chaosml.proxy.client import ToxiproxyTarget

    folder = Path(folder).resolve()  # the target file names its data absolutely
    train_demo(folder, say=say)
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    service, point = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    proxy_api, webhook = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    chaosml = [sys.executable, "-m", "chaosml"]
    with ExitStack() as stack:
        stack.enter_context(
            managed_process(
                [
                    *chaosml,
                    "demo",
                    "serve",
                    "--out",
                    str(folder),
                    "--window",
                    str(window),
                    "--port",
                    service.split(":")[1],
                ],
                logs / "service.log",
                f"http://{service}/health",
                env={"CHAOSML_FAULT_POINT": point, "CHAOSML_FAULT_POINT_SEED": str(seed)},
            )
        )
        stack.enter_context(
            managed_process(
                [*chaosml, "proxy", "--api", proxy_api, "--seed", str(seed + 1)],
                logs / "proxy.log",
                f"http://{proxy_api}/version",
            )
        )
        host, port = proxy_api.split(":")
        listen = ToxiproxyTarget(host, int(port)).ensure_proxy("model", service)["listen"]
        say(f"model service http://{service}, through the fault proxy http://{listen}")
        monitoring = None
        if have_monitoring():
            monitoring = stack.enter_context(
                monitoring_stack(
                    targets=[service, proxy_api, point],
                    webhook=f"http://{webhook}/alerts",
                    time_scale=time_scale,
                    rules=rules,
                    folder=folder / "monitoring",
                )
            )
            say(
                f"Prometheus http://{monitoring.prometheus}, Alertmanager "
                f"http://{monitoring.alertmanager} (for: × {time_scale:g})"
            )
        else:
            say(NO_BINARIES)
        yield ReferenceStack(
            service=service,
            proxy_api=proxy_api,
            proxy_listen=str(listen),
            service_point=point,
            webhook=webhook,
            data=folder / "eval.parquet",
            monitoring=monitoring,
        )
