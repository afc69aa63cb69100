"""How far a phase fell short of its planned rate."""

from __future__ import annotations

import pytest

from chaosml.load import SHORTFALL_LIMIT, shortfall


def test_the_shortfall_is_the_fraction_under_plan() -> None:
    assert shortfall({"rps": 4.0, "planned_rps": 10.0}) == pytest.approx(0.6)
    assert shortfall({"rps": 9.5, "planned_rps": 10.0}) == pytest.approx(0.05)


def test_a_phase_at_or_above_its_plan_has_no_shortfall() -> None:
    assert shortfall({"rps": 10.0, "planned_rps": 10.0}) == 0.0
    assert shortfall({"rps": 12.0, "planned_rps": 10.0}) == 0.0


def test_without_a_planned_rate_there_is_no_shortfall() -> None:
    assert shortfall({"rps": 4.0, "planned_rps": None}) is None
    assert shortfall({"rps": 4.0}) is None  # figures written before planned_rps existed
    assert shortfall({"planned_rps": 10.0}) is None


def test_the_limit_separates_a_slow_phase_from_noise() -> None:
    slow, close = (
        shortfall({"rps": 8.0, "planned_rps": 10.0}),
        shortfall({"rps": 9.5, "planned_rps": 10}),
    )
    assert slow is not None and slow > SHORTFALL_LIMIT
    assert close is not None and close < SHORTFALL_LIMIT
