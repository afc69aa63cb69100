"""The reference model service: the demo model versions behind a small FastAPI app.

``POST /predict`` takes generic records (``{"instances": [...]}``) or a KServe v2 request and answers
in the same protocol with predictions and scores; ``GET /health``. Run it with ``chaosml demo serve``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from chaosml.codecs import CODECS, CodecError, Outputs, detect
from chaosml.versions import load_model


def create_app(model_path: Path, *, version: str = "v2") -> FastAPI:
    model = load_model(model_path)
    features = list(getattr(model, "feature_names_in_", []))
    classes = np.asarray(model.classes_)
    app = FastAPI(title="chaosml reference model service")

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
            frame = codec.decode_request(payload).frame
            for column in features:
                if column not in frame.columns:
                    frame[column] = np.nan
            proba = model.predict_proba(frame[features] if features else frame)
            labels, scores = classes[proba.argmax(axis=1)], proba[:, 1]
        except (CodecError, ValueError, TypeError, KeyError) as exc:
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=422)
        return _answer(codec.name, labels, scores, version)

    return app


def _answer(protocol: str, labels: np.ndarray, scores: np.ndarray, version: str) -> Any:
    if protocol == "kserve":
        n = len(labels)
        return {
            "model_name": "credit",
            "model_version": version,
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
        {"score_key": "scores", "extra": {"model_version": version}},
    )
    return CODECS["records"].encode_response(outputs)


@contextmanager
def serving(
    model_path: Path, *, version: str = "v2", host: str = "127.0.0.1", port: int = 0
) -> Iterator[str]:
    """Serve the model in a background thread; yields ``host:port``."""
    import socket

    import uvicorn

    sock = socket.socket()
    sock.bind((host, port))
    config = uvicorn.Config(
        create_app(model_path, version=version), log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
