"""The reference stack on loopback (model service with its in-service fault point, the fault
proxy, Prometheus and Alertmanager, rules shortened 20 times), started once for the game-day
tests that run against it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from chaosml.demo.harness import ALERTMANAGER, PROMETHEUS, ReferenceStack, reference_stack
from chaosml.demo.run import write_target
from chaosml.demo.train import DemoArtifacts
from tests.live_servers import require_binaries

SCALE = 0.05
SCENARIOS = Path(__file__).parents[2] / "scenarios"


@pytest.fixture(scope="session")
def stack(demo: DemoArtifacts) -> Iterator[ReferenceStack]:
    require_binaries(PROMETHEUS, ALERTMANAGER)
    with reference_stack(demo.folder, time_scale=SCALE) as running:
        yield running


@pytest.fixture(scope="session")
def target(stack: ReferenceStack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_target(stack, tmp_path_factory.mktemp("target") / "target.yaml")


def scenario(folder: Path, **fields: Any) -> Path:
    data = {"name": "probe", "load": {"users": 4, "rate": 30, "batch": 10}, **fields}
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def toxics(stack: ReferenceStack) -> list[dict[str, Any]]:
    proxy = requests.get(f"http://{stack.proxy_api}/proxies/model/toxics", timeout=5).json()
    point = requests.get(f"http://{stack.service_point}/proxies/service/toxics", timeout=5).json()
    return list(proxy) + list(point)
