"""The reference service's prediction threads: one OpenMP thread each, set in them alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from threadpoolctl import threadpool_info

from chaosml.demo.service import create_app, serving_app
from chaosml.demo.train import DemoArtifacts
from chaosml.faultpoint import FaultPoint


def openmp() -> set[int]:
    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"}


def predict(address: str, rows: list[dict[str, Any]]) -> int:
    answer = requests.post(f"http://{address}/predict", json={"instances": rows}, timeout=10)
    return answer.status_code


def test_a_prediction_runs_on_one_openmp_thread_and_nothing_else_changes(
    demo: DemoArtifacts, rows: list[dict[str, Any]]
) -> None:
    # ten rows through a gradient-boosted model: a thread per core costs more CPU than it saves
    seen: list[set[int]] = []

    class Looking(FaultPoint):  # what the prediction's own thread sees
        def __call__(self, predict: Any, columns: Any) -> Any:
            seen.append(openmp())
            return super().__call__(predict, columns)

    with ThreadPoolExecutor(1) as plain:  # what a thread of its own gets by default
        default = plain.submit(openmp).result()
    assert default, "OpenMP is not loaded: the model does not use it"
    if default == {1}:
        pytest.skip("OpenMP runs one thread here by default: no limit to tell apart")
    for threads, expected in ((1, {1}), (None, default)):
        seen.clear()
        app = create_app(
            demo.v2,
            version="v2",
            monitors=False,
            fault_point=Looking(alternates={}),
            model_threads=threads,
        )
        for _ in range(2):  # an app served a second time predicts again
            with serving_app(app) as address:
                assert predict(address, rows[:10]) == 200
        assert seen == [expected, expected], threads
    assert openmp() == default  # this thread, and the process's, keep their own
    with ThreadPoolExecutor(1) as plain:
        assert plain.submit(openmp).result() == default
