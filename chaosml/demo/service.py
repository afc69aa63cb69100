"""The reference model service: a demo model version behind FastAPI, with ML monitors.

- ``POST /predict``: generic records (``{"instances": [...]}``) or KServe v2; answers in the same
  protocol with predictions, scores and one request id per row (``ids``, or the KServe ``id``);
- ``POST /feedback``: ``{"id": ..., "label": ...}`` or ``{"labels": [{"id", "label"}, ...]}``, the
  delayed ground truth, for online accuracy;
- ``GET /health``; ``GET /metrics``: the monitors of ``chaosml.monitors``.

Run it with ``chaosml demo serve``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from chaosml._types import Table
from chaosml._wait import wait_until
from chaosml.codecs import CODECS, CodecError, Outputs, detect
from chaosml.demo.data import LABEL, SENSITIVE, make_credit
from chaosml.errors import UnreachableError
from chaosml.faultpoint import FaultPoint, InjectedError, Predict
from chaosml.monitors import ModelMonitor, instrument
from chaosml.versions import load_model


def create_app(
    model_path: Path,
    *,
    version: str = "v2",
    reference: pd.DataFrame | None = None,
    monitors: bool = True,
    window: int = 500,
    fault_point: FaultPoint | None = None,
    model_threads: int | None = 1,
) -> FastAPI:
    """The service for the model at ``model_path``; ``reference`` is a sample of its training
    data (default: regenerated demo data). ``fault_point`` (default: ``FaultPoint.from_env``
    with the folder's other demo versions as alternates) wraps its predict call.

    Each prediction runs on one of the service's threads, with at most ``model_threads`` OpenMP
    threads of its own (None: OpenMP's default, a thread per core). A request's batch is small,
    and a gradient-boosted model that wakes a thread per core for ten rows spends more CPU on
    the threads than they save (``benchmarks/service_threads.py``), so a service that answers
    requests in parallel gives each prediction one thread, as model servers do."""
    model = load_model(model_path)
    features = list(getattr(model, "feature_names_in_", []))
    classes = np.asarray(model.classes_)
    app = FastAPI(title="chaosml reference model service")

    def predictor(fitted: Any) -> Predict:
        def predict(columns: Table) -> tuple[np.ndarray, np.ndarray]:
            frame = pd.DataFrame(columns).infer_objects()
            for column in features:
                if column not in frame.columns:
                    frame[column] = np.nan
            proba = fitted.predict_proba(frame[features])
            return classes[proba.argmax(axis=1)], proba[:, 1]

        return predict

    if fault_point is None:
        others = {
            path.stem: predictor(load_model(path))
            for path in sorted(model_path.parent.glob("v*.skops"))
            if path != model_path
        }
        fault_point = FaultPoint.from_env(others)
    point, predict_model = fault_point, predictor(model)
    app.state.fault_point = point
    threads = ModelThreads(model_threads)
    app.router.on_shutdown.extend([threads.close, point.close])  # the threads, then what they call
    monitor = None
    if monitors:
        reference = reference if reference is not None else make_credit(5000, seed=1)
        monitor = ModelMonitor(
            reference=reference,
            features=features,
            model_version=version,
            sensitive=SENSITIVE,
            window=window,
        )
        expected = model.predict(reference[features]) == 1
        monitor.reference_positive_rate.set(float(np.mean(expected)))
        instrument(app, monitor)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "model_version": version}

    @app.post("/predict")
    async def predict(request: Request) -> Any:
        try:
            payload = await request.json()
            codec = detect(payload)
            if codec is None:
                raise CodecError("unknown payload format")
            batch = codec.decode_request(payload)
            answer = await threads.run(point, predict_model, batch.columns)
        except InjectedError as exc:
            # the toxic's body (text, JSON by default) as it is
            return Response(exc.body, status_code=exc.status, media_type="application/json")
        except (CodecError, ValueError, TypeError, KeyError) as exc:
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=422)
        labels, scores = np.asarray(answer.predictions), answer.scores
        if scores is None:
            scores = np.full(len(labels), np.nan)
        ids = [uuid.uuid4().hex for _ in range(len(labels))]
        if monitor is not None:
            monitor.observe(
                answer.columns, labels.tolist(), scores.tolist(), ids, version=answer.version
            )
        return _answer(codec.name, labels, scores, ids, version)

    @app.post("/feedback")
    async def feedback(request: Request) -> Any:
        try:
            payload = await request.json()
            items = payload.get("labels", [payload])
            pairs = [(str(item["id"]), item["label"]) for item in items]
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse(
                {"error": f'expected {{"id": ..., "label": ...}} or {{"labels": [...]}}: {exc}'},
                status_code=422,
            )
        known = sum(monitor.feedback(i, label) for i, label in pairs) if monitor else 0
        return {"received": len(pairs), "matched": known}

    return app


class ModelThreads:
    """The threads predictions run on, each limited to ``threads`` OpenMP threads of the model's
    own (None: OpenMP's default). OpenMP keeps the limit per thread, so it is set in each of them
    and nowhere else (a BLAS limit would be the whole process's); it reaches the OpenMP runtimes
    loaded when the thread starts, and the model was loaded before the first request. The pool
    starts at the first prediction and again after ``close``, so an app served twice predicts
    both times."""

    def __init__(self, threads: int | None) -> None:
        if threads is not None:
            from threadpoolctl import threadpool_limits  # missing: say so now, not per request

            self._limit: Callable[[], object] | None = functools.partial(
                threadpool_limits, limits=threads, user_api="openmp"
            )
        else:
            self._limit = None
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, func: Callable[..., Any], *args: Any) -> Any:
        """``func(*args)`` on one of the threads, in this request's context (as
        ``asyncio.to_thread``)."""
        if self._pool is None:  # the event loop's thread alone starts and stops the pool
            self._pool = ThreadPoolExecutor(thread_name_prefix="predict", initializer=self._limit)
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(context.run, func, *args)
        )

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


def _answer(
    protocol: str, labels: np.ndarray, scores: np.ndarray, ids: list[str], version: str
) -> Any:
    if protocol == "kserve":
        n = len(labels)
        return {
            "model_name": "credit",
            "model_version": version,
            "id": ids[0] if ids else "",
            "parameters": {"ids": ids},
            "outputs": [
                {"name": "predict", "shape": [n], "datatype": "INT64", "data": labels.tolist()},
                {
                    "name": "predict_proba",
                    "shape": [n],
                    "datatype": "FP64",
                    "data": scores.tolist(),
                },
            ],
        }
    outputs = Outputs(
        labels.tolist(),
        scores.tolist(),
        {"score_key": "scores", "extra": {"ids": ids, "model_version": version}},
    )
    return CODECS["records"].encode_response(outputs)


def load_reference(folder: Path) -> pd.DataFrame | None:
    path = folder / "reference.parquet"
    return pd.read_parquet(path).drop(columns=[LABEL], errors="ignore") if path.is_file() else None


@contextmanager
def serving_app(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a background thread; yields ``host:port``."""
    import socket

    import uvicorn

    sock = socket.socket()
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    if not wait_until(lambda: server.started or not thread.is_alive(), 30, every=0.01):
        raise UnreachableError(f"the demo service did not start on {host}:{port} within 30 s")
    if not server.started:
        raise UnreachableError(f"the demo service could not start on {host}:{port}")
    try:
        yield f"{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def serving(
    model_path: Path, *, version: str = "v2", host: str = "127.0.0.1", port: int = 0, **options: Any
) -> Iterator[str]:
    """Serve the model at ``model_path`` (and its folder's reference sample); yields ``host:port``."""
    app = create_app(
        model_path, version=version, reference=load_reference(model_path.parent), **options
    )
    with serving_app(app, host=host, port=port) as address:
        yield address
