"""Load for game days: Locust's library API in a driver process, controlled from the runner."""

from chaosml.load.plan import FIGURES, LoadPlan
from chaosml.load.process import LoadProcess, LoadStopped

__all__ = ["FIGURES", "LoadPlan", "LoadProcess", "LoadStopped"]
