"""The webhook receiver under a burst: every alert arrives once, including those that arrive while
a reader is taking what came before."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest
import requests

from chaosml._wait import wait_until
from chaosml.alerts import WebhookAlerts, WebhookReceiver


def notification(sender: int, i: int, status: str = "firing") -> dict[str, object]:
    return {
        "version": "4",
        "status": status,
        "alerts": [
            {"status": status, "labels": {"alertname": f"A{sender}", "i": str(i), "n": str(n)}}
            for n in range(2)
        ],
    }


def test_a_burst_loses_nothing_while_being_read() -> None:
    receiver = WebhookReceiver().start()
    senders, each = 32, 25
    seen: list[tuple[str, str, str]] = []
    done = threading.Event()

    def read() -> None:  # the CLI's reading loop: every alert, as it arrives
        receiver.follow(
            lambda a: seen.append((a.name, a.labels["i"], a.labels["n"])), done, every=0.001
        )

    failures: list[str] = []

    def send(sender: int) -> None:
        with requests.Session() as http:
            for i in range(each):
                try:
                    answer = http.post(receiver.url, json=notification(sender, i), timeout=10)
                except requests.RequestException as exc:
                    failures.append(f"{sender}/{i}: {exc}")
                    continue
                if answer.status_code != 200:
                    failures.append(f"{sender}/{i}: HTTP {answer.status_code}")

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=send, args=(s,)) for s in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    reader.join(timeout=10)
    stored = {(a.name, a.labels["i"], a.labels["n"]) for a in receiver.since(0)[0]}
    receiver.stop()
    assert len(stored) == senders * each * 2, "the receiver lost some"
    assert stored - set(seen) == set(), "the reader missed some"
    assert failures == []
    assert len(seen) == len(set(seen)) == senders * each * 2


def test_as_a_source_firing_until_resolved_with_delivery_time() -> None:
    source = WebhookAlerts(listen="127.0.0.1:0")
    source.start()
    assert source._receiver is not None
    url = source._receiver.url
    requests.post(url, json=notification(1, 0), timeout=5)
    (first, second) = sorted(source.poll(), key=lambda a: a.labels["n"])
    assert first.name == "A1" and first.state == "firing" and first.since is not None
    requests.post(url, json=notification(1, 0), timeout=5)  # a repeat keeps the first time
    assert {a.since for a in source.poll()} == {first.since, second.since}
    requests.post(url, json=notification(1, 0, "resolved"), timeout=5)
    assert source.poll() == []
    assert requests.post(url, data=b"not json", timeout=5).status_code == 400
    source.stop()


def test_a_sender_that_hangs_up_mid_request_prints_no_traceback(
    capfd: pytest.CaptureFixture[str],
) -> None:
    import socket
    import struct

    receiver = WebhookReceiver().start()
    server = receiver._server
    assert server is not None
    handled: list[BaseException | None] = []
    on_error = server.handle_error

    def counted(request: Any, client_address: Any) -> None:
        handled.append(sys.exc_info()[1])
        on_error(request, client_address)

    server.handle_error = counted  # type: ignore[method-assign]
    try:
        for _ in range(5):
            with socket.create_connection((receiver.host, receiver.port)) as sock:
                # a reset instead of a close: the receiver's answer meets a dead connection
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.sendall(b'POST /alerts HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{"alerts"')
        assert wait_until(lambda: len(handled) == 5, 10), handled
        assert all(isinstance(e, ConnectionError) for e in handled), handled
        sent = requests.post(receiver.url, json=notification(0, 0), timeout=5)
        assert sent.status_code == 200 and len(receiver.alerts) == 2  # and it still receives
        assert "Traceback" not in capfd.readouterr().err
    finally:
        receiver.stop()
