"""Raw TCP through the proxy: any protocol relayed, the transport toxics acted out per direction
with Toxiproxy's semantics, payload toxics skipped and counted."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from chaosml.proxy.api import ProxyServer, running
from chaosml.proxy.server import Timeouts


class Echo(socketserver.StreamRequestHandler):
    """Echoes each line; a connection opening with ``BANNER?`` is greeted first (a protocol where
    the server speaks first is told apart by the listening port below)."""

    def handle(self) -> None:
        if self.server.server_address[1] in BANNERS:
            self.wfile.write(b"220 ready\n")
        while line := self.rfile.readline():
            ARRIVED[line] = time.monotonic()
            self.wfile.write(line)


BANNERS: set[int] = set()
ARRIVED: dict[bytes, float] = {}  # when the echo server read each line: where a delay was added


def serve(
    handler: type[socketserver.BaseRequestHandler],
) -> tuple[socketserver.ThreadingTCPServer, str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    server, address = serve(Echo)
    yield address
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def greeter() -> Iterator[str]:
    server, address = serve(Echo)
    BANNERS.add(server.server_address[1])
    yield address
    server.shutdown()
    server.server_close()


@pytest.fixture
def api() -> Iterator[str]:
    with running(ProxyServer(api="127.0.0.1:0", timeouts=Timeouts(sniff=0.3))) as server:
        yield f"http://{server.api}"


@pytest.fixture
def patient_api() -> Iterator[str]:
    """A proxy whose codec ``auto`` would wait 10 s for a silent client before relaying raw."""
    with running(ProxyServer(api="127.0.0.1:0", timeouts=Timeouts(sniff=10))) as server:
        yield f"http://{server.api}"


def create(api: str, upstream: str, **fields: object) -> tuple[str, int]:
    body = requests.post(
        f"{api}/proxies", json={"name": "tcp", "upstream": upstream, **fields}, timeout=5
    ).json()
    host, port = body["listen"].rsplit(":", 1)
    return host, int(port)


def toxic(api: str, **body: object) -> None:
    response = requests.post(f"{api}/proxies/tcp/toxics", json=body, timeout=5)
    assert response.status_code == 200, response.text


def roundtrip(address: tuple[str, int], line: bytes = b"hello\n") -> tuple[bytes, float]:
    """The answer to ``line`` and how long it took; the socket gives up after 5 s of silence."""
    started = time.monotonic()
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(line)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data, time.monotonic() - started


def talk(sock: socket.socket) -> bytes:
    sock.sendall(b"hello\n")
    return sock.recv(10)


def test_a_non_http_client_is_relayed_raw(patient_api: str, echo: str) -> None:
    api = patient_api
    address = create(api, echo)  # created the Toxiproxy way: codec auto
    data, took = roundtrip(address)
    # relayed as soon as the client's first bytes showed it is not HTTP: had the proxy waited out
    # its 10 s sniff, the socket would have given up at 5 s
    assert data == b"hello\n" and took < 5
    toxic(api, type="missing_values", stream="upstream", attributes={"columns": ["age"]})
    assert roundtrip(address, b"age=41\n")[0] == b"age=41\n"
    metrics = requests.get(f"{api}/metrics", timeout=5).text
    assert 'chaosml_proxy_toxics_skipped_total{proxy="tcp",type="missing_values"} 1.0' in metrics


@pytest.mark.parametrize("codec", ["tcp", "auto"])
def test_server_first_protocols(api: str, greeter: str, codec: str) -> None:
    address = create(api, greeter, codec=codec)
    with socket.create_connection(address, timeout=5) as sock:
        file = sock.makefile("rwb")
        assert file.readline() == b"220 ready\n"  # auto: after the sniff found no client bytes
        file.write(b"EHLO x\n")
        file.flush()
        assert file.readline() == b"EHLO x\n"


@pytest.mark.parametrize("stream", ["upstream", "downstream"])
def test_latency_per_direction(api: str, echo: str, stream: str) -> None:
    address = create(api, echo, codec="tcp")
    toxic(api, type="latency", stream=stream, attributes={"latency": 150})
    line = f"latency {stream}\n".encode()
    sent = time.monotonic()
    data, took = roundtrip(address, line)
    there, back = ARRIVED[line] - sent, took - (ARRIVED[line] - sent)
    assert data == line
    # the delay is on the way the toxic's stream names, and only there
    delayed, direct = (there, back) if stream == "upstream" else (back, there)
    assert delayed >= 0.15 and direct < delayed, (there, back)


def test_bandwidth_slicer_and_limit_data(api: str, echo: str) -> None:
    address = create(api, echo, codec="tcp")
    line = b"x" * 20_000 + b"\n"
    toxic(api, type="bandwidth", attributes={"rate": 50})  # 50 KB/s: ~0.4 s for 20 KB
    data, took = roundtrip(address, line)
    assert data == line and took >= 0.3
    requests.delete(f"{api}/proxies/tcp/toxics/bandwidth_downstream", timeout=5)

    toxic(api, type="slicer", attributes={"average_size": 1000, "delay": 20_000})
    data, took = roundtrip(address, line)
    assert data == line and took >= 0.3  # 20 pieces, 20 ms apart
    requests.delete(f"{api}/proxies/tcp/toxics/slicer_downstream", timeout=5)

    toxic(api, type="limit_data", attributes={"bytes": 100})
    data, _ = roundtrip(address, line)
    assert data == b"x" * 100  # then the connection closes


def test_timeout_reset_peer_and_slow_close(api: str, echo: str) -> None:
    address = create(api, echo, codec="tcp")
    toxic(api, type="timeout", attributes={"timeout": 300})
    data, took = roundtrip(address)
    # nothing through, then closed (recv saw the end of the stream before the socket gave up)
    assert data == b"" and took >= 0.3
    requests.delete(f"{api}/proxies/tcp/toxics/timeout_downstream", timeout=5)

    toxic(api, type="reset_peer", attributes={"timeout": 100})
    with socket.create_connection(address, timeout=5) as sock:
        time.sleep(0.3)
        with pytest.raises(ConnectionResetError):
            talk(sock)
    requests.delete(f"{api}/proxies/tcp/toxics/reset_peer_downstream", timeout=5)

    toxic(api, type="slow_close", attributes={"delay": 300})
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(b"hello\n")
        assert sock.recv(10) == b"hello\n"
        sock.shutdown(socket.SHUT_WR)  # the echo server closes; the proxy waits, then follows
        started = time.monotonic()
        assert sock.recv(10) == b""
        assert time.monotonic() - started >= 0.25


def test_toxics_apply_to_open_connections(api: str, echo: str) -> None:
    address = create(api, echo, codec="tcp")
    with socket.create_connection(address, timeout=5) as sock:
        file = sock.makefile("rwb")
        file.write(b"one\n")
        file.flush()
        assert file.readline() == b"one\n"
        toxic(api, type="latency", attributes={"latency": 200})
        started = time.monotonic()
        file.write(b"two\n")
        file.flush()
        assert file.readline() == b"two\n" and time.monotonic() - started >= 0.2
