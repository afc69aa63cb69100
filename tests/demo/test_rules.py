"""The monitoring configs in docker/ are exactly what chaosml.stack renders (one source)."""

from __future__ import annotations

from pathlib import Path

import yaml

from chaosml.demo.rules import RULES, render_docker, rules_file

DOCKER = Path(__file__).parents[2] / "docker"


def test_docker_configs_are_rendered_from_the_one_source() -> None:
    for path, text in render_docker().items():
        assert (DOCKER / path).read_text(encoding="utf-8") == text, (
            f"docker/{path} is stale: run `python -m chaosml.demo.rules docker`"
        )


def test_one_rule_per_failure_mode_and_short_for_in_tests() -> None:
    names = [rule["alert"] for rule in rules_file()["groups"][0]["rules"]]
    assert names == [rule.alert for rule in RULES] and len(set(names)) == 8
    short = {r["alert"]: r.get("for") for r in rules_file(time_scale=0.05)["groups"][0]["rules"]}
    assert short["FeatureMissingRateHigh"] == "3s" and short["ModelVersionChanged"] is None


def test_compose_mounts_the_rendered_files() -> None:
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text(encoding="utf-8"))
    mounts = [
        volume for service in compose["services"].values() for volume in service.get("volumes", [])
    ]
    for path in render_docker():
        assert any(
            volume.startswith((f"./{path}", f"./{Path(path).parent}")) for volume in mounts
        ), path
