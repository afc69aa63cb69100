"""How the proxy tells protocols apart on a proxy created the Toxiproxy way (no codec): a late
HTTP client is still served as HTTP with its payload toxics, a server that speaks first is relayed
at once, and WebSocket, h2c and HTTP/2 connections pass as streams with transport toxics, each
payload toxic they meet counted as a skip with that reason."""

from __future__ import annotations

import base64
import hashlib
import json
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from toxiproxy import Toxiproxy

from chaosml.proxy.api import ProxyServer, running
from chaosml.proxy.server import Timeouts
from tests.proxy.test_evidence import evidence
from tests.proxy.test_protocol import connect, post, read_response

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame


class Switching(socketserver.StreamRequestHandler):
    """An upstream that accepts any ``Upgrade`` (answering 101 as RFC 6455 asks for WebSocket)
    and then echoes the bytes of the new protocol; a client whose first bytes are not HTTP/1 (an
    HTTP/2 preface) is echoed from the start."""

    rbufsize = 0  # lines read byte by byte: what follows them stays on the socket for the echo

    def handle(self) -> None:
        first = self.rfile.readline()
        if not first.endswith(b"HTTP/1.1\r\n"):
            self.echo(first)
            return
        headers: dict[bytes, bytes] = {}
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        protocol = headers.get(b"upgrade", b"")
        answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + protocol
        answer += b"\r\nConnection: Upgrade\r\n"
        if protocol == b"websocket":
            key = headers[b"sec-websocket-key"]
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())  # RFC 6455
            answer += b"Sec-WebSocket-Accept: " + accept + b"\r\n"
        self.wfile.write(answer + b"\r\n")
        self.wfile.flush()
        self.echo(b"")

    def echo(self, first: bytes) -> None:
        if first:
            self.wfile.write(first)
            self.wfile.flush()
        while data := self.request.recv(65536):
            self.request.sendall(data)


class Greeter(socketserver.StreamRequestHandler):
    """A server that speaks first (SMTP, MySQL), then echoes lines."""

    def handle(self) -> None:
        self.wfile.write(b"220 ready\n")
        self.wfile.flush()
        while line := self.rfile.readline():
            self.wfile.write(line)
            self.wfile.flush()


def serve(handler: type[socketserver.BaseRequestHandler]) -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def switching() -> Iterator[str]:
    yield from serve(Switching)


@pytest.fixture(scope="module")
def greeter() -> Iterator[str]:
    yield from serve(Greeter)


def nulls(proxy: Any) -> None:
    proxy.add_toxic(
        name="nulls", type="missing_values", stream="upstream", attributes={"columns": ["age"]}
    )


def test_a_late_first_request_is_still_served_as_http(
    toxiproxy: Toxiproxy, echo_service: str, rows: list
) -> None:
    """A pooled connection opened at warm-up and first used 1.5 s later gets its payload
    toxics (it used to be relayed raw for its life, its faults skipped)."""
    proxy = toxiproxy.create(upstream=echo_service, name="late")
    nulls(proxy)
    with connect(proxy.listen) as sock:
        time.sleep(1.5)
        sock.sendall(post("/predict", json.dumps({"instances": rows[:4]}).encode()))
        status, _, body = read_response(sock)
    assert status == 200
    assert [row["age"] for row in json.loads(body)["echo"]["instances"]] == [None] * 4
    found = evidence(toxiproxy, "late", "nulls")
    assert found["acted"] == 1 and found["skipped"] == {}


def test_a_server_that_speaks_first_is_relayed_at_once(greeter: str) -> None:
    """With a sniff of 30 s the proxy would have waited for the client that long before the
    greeting passed; the client gives up after 5 s, so each of these greetings shows it did not
    wait."""
    with running(ProxyServer(api="127.0.0.1:0", timeouts=Timeouts(sniff=30))) as server:
        api = f"http://{server.api}"
        body = {"name": "smtp", "upstream": greeter}
        listen = requests.post(f"{api}/proxies", json=body, timeout=5).json()["listen"]
        toxic = {"name": "nulls", "type": "missing_values", "stream": "upstream"}
        toxic["attributes"] = {"columns": ["age"]}
        assert requests.post(f"{api}/proxies/smtp/toxics", json=toxic, timeout=5).ok
        for _ in range(5):
            with connect(listen) as sock:
                file = sock.makefile("rwb")
                assert file.readline() == b"220 ready\n"
                file.write(b"EHLO x\n")
                file.flush()
                assert file.readline() == b"EHLO x\n"
        found = requests.get(f"{api}/proxies/smtp/toxics/nulls/evidence", timeout=5).json()
        assert found["skipped"] == {"raw TCP connection (not HTTP)": 5}


def handshake(sock: Any, protocol: bytes, *extra: bytes) -> tuple[int, dict[str, str]]:
    key = base64.b64encode(b"chaosml-websocket")
    head = [b"GET /stream HTTP/1.1", b"Host: x", b"Upgrade: " + protocol]
    head += [b"Connection: Upgrade", b"Sec-WebSocket-Key: " + key, b"Sec-WebSocket-Version: 13"]
    sock.sendall(b"\r\n".join(head + list(extra)) + b"\r\n\r\n")
    status, headers, _ = read_response(sock, head=True)
    if protocol == b"websocket":
        expected = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        assert headers["sec-websocket-accept"] == expected
    return status, headers


def frame(text: bytes) -> bytes:
    """A masked WebSocket text frame, as a client sends it."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(text))
    return bytes([0x81, 0x80 | len(text)]) + mask + masked


def receive(sock: Any, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_a_websocket_is_relayed_as_a_stream_with_transport_toxics(
    toxiproxy: Toxiproxy, switching: str
) -> None:
    proxy = toxiproxy.create(upstream=switching, name="ws")
    nulls(proxy)
    with connect(proxy.listen) as sock:
        assert handshake(sock, b"websocket")[0] == 101
        for text in (b"hello", b"again"):
            sock.sendall(frame(text))
            assert receive(sock, len(frame(text))) == frame(text)
        proxy.add_toxic(type="latency", attributes={"latency": 300})
        started = time.monotonic()
        sock.sendall(frame(b"late"))
        assert receive(sock, len(frame(b"late"))) == frame(b"late")
        assert time.monotonic() - started >= 0.29  # the latency is the behaviour
    found = evidence(toxiproxy, "ws", "nulls")
    assert found["skipped"] == {"protocol upgrade to websocket (relayed as a stream)": 1}


def test_h2c_upgrade_and_http2_prior_knowledge_are_relayed(
    toxiproxy: Toxiproxy, switching: str
) -> None:
    proxy = toxiproxy.create(upstream=switching, name="h2")
    nulls(proxy)
    with connect(proxy.listen) as sock:
        status, headers = handshake(sock, b"h2c", b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA")
        assert (status, headers["upgrade"]) == (101, "h2c")
        sock.sendall(PREFACE + SETTINGS)
        assert receive(sock, len(PREFACE + SETTINGS)) == PREFACE + SETTINGS
    proxy.add_toxic(type="limit_data", attributes={"bytes": len(PREFACE)})
    with connect(proxy.listen) as sock:
        sock.sendall(PREFACE + SETTINGS)
        assert receive(sock, len(PREFACE)) == PREFACE
        assert sock.recv(65536) == b""  # limit_data closed it after the preface's bytes
    found = evidence(toxiproxy, "h2", "nulls")
    assert found["skipped"] == {
        "protocol upgrade to h2c (relayed as a stream)": 1,
        "HTTP/2 connection (relayed as a stream)": 1,
    }
