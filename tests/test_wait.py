"""The one polling helper, on a fake clock."""

from __future__ import annotations

import pytest

from chaosml._wait import wait_until


class Clock:
    def __init__(self) -> None:
        self.now, self.sleeps = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_it_checks_at_once_then_every_step_and_once_more_at_the_deadline() -> None:
    clock = Clock()
    assert wait_until(lambda: True, 1, clock=clock, sleep=clock.sleep) is True
    assert clock.sleeps == []
    calls = []
    held = wait_until(lambda: calls.append(clock.now), 1, every=0.3, clock=clock, sleep=clock.sleep)
    assert held is False
    assert calls == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.0])
    assert abs(sum(clock.sleeps) - 1.0) < 1e-9


def test_it_stops_as_soon_as_the_condition_holds() -> None:
    clock = Clock()
    assert wait_until(lambda: clock.now >= 0.5, 10, every=0.25, clock=clock, sleep=clock.sleep)
    assert clock.now == 0.5
