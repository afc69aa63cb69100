"""Load for game days: Locust's library API in a driver process, controlled from the runner."""

from chaosml.load.plan import FIGURES, SHORTFALL_LIMIT, LoadPlan, shortfall
from chaosml.load.process import LoadProcess, LoadStopped

__all__ = ["FIGURES", "SHORTFALL_LIMIT", "LoadPlan", "LoadProcess", "LoadStopped", "shortfall"]
