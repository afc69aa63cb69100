"""What a library user catches is a ``ChaosmlError``, with the message the API has always given."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

import chaosml
from chaosml.codecs import get_codec
from chaosml.faults import make_fault
from chaosml.proxy.toxics import build_toxic


@pytest.mark.parametrize(
    ("kind", "attributes", "message"),
    [
        ("teleport", {}, "invalid toxic type"),
        ("latency", {"latency": -1}, "invalid attribute 'latency'"),
        ("latency", {"latency": 10, "colour": "red"}, "unknown attribute for latency"),
    ],
)
def test_make_fault_raises_a_fault_error(kind: str, attributes: dict, message: str) -> None:
    with pytest.raises(chaosml.FaultError, match=message) as caught:
        make_fault(kind, attributes)
    assert isinstance(caught.value, chaosml.InputError) and caught.value.exit_code == 2


def test_get_codec_raises_a_codec_error() -> None:
    with pytest.raises(chaosml.CodecError) as caught:
        get_codec("protobuf")
    assert str(caught.value) == (
        "unknown codec 'protobuf' (expected one of: records, mlflow, kserve, tfserving, auto)"
    )


def test_a_refused_toxic_is_a_chaosml_error_with_its_status() -> None:
    with pytest.raises(chaosml.ChaosmlError) as caught:
        build_toxic({"type": "teleport", "stream": "downstream"}, None)
    assert isinstance(caught.value, chaosml.ApiError)
    assert (caught.value.status, caught.value.message) == (400, "invalid toxic type")


def _post(url: str, body: dict) -> None:
    request = urllib.request.Request(url, json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_an_http_error_toxic_raises_injected_error_with_a_text_body() -> None:
    """What an embedding service catches to answer the injected status: exported from chaosml,
    a ChaosmlError, its body the toxic's text."""
    with chaosml.FaultPoint.from_env(env={"CHAOSML_FAULT_POINT": "127.0.0.1:0"}) as point:
        toxic = {"type": "http_error", "attributes": {"status": 503, "body": '{"error": "x"}'}}
        _post(f"http://{point.api}/proxies/service/toxics", toxic)
        with pytest.raises(chaosml.InjectedError) as caught:
            point(lambda columns: (np.zeros(1), None), {"age": np.array([30])})
    assert isinstance(caught.value, chaosml.ChaosmlError)
    assert (caught.value.status, caught.value.body) == (503, '{"error": "x"}')
