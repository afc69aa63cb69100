"""HTTP edge cases on the proxy's data path: each reply reaches its own client, whole, and nothing
a client sends (or fails to send) breaks the proxy or prints a traceback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from toxiproxy import Toxiproxy

from chaosml._net import free_port
from chaosml.proxy.api import ProxyServer, running
from chaosml.proxy.metrics import OTHER, ProxyMetrics
from chaosml.proxy.server import Timeouts
from tests.live_servers import wait_for


def connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


_buffers: dict[int, bytes] = {}


def read_response(sock: socket.socket, *, head: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response from ``sock`` (interim 1xx responses are returned as they come); bytes
    past it are kept for the next call."""
    data = _buffers.pop(sock.fileno(), b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    block, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = block.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    status = int(status_line.split()[1])
    length = 0 if head or status < 200 else int(headers.get("content-length", 0))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    if rest[length:]:
        _buffers[sock.fileno()] = rest[length:]
    return status, headers, rest[:length]


def no_more(sock: socket.socket) -> bool:
    """Nothing but the end of the stream is left on ``sock``."""
    return not _buffers.pop(sock.fileno(), b"") and sock.recv(1) == b""


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Interim(socketserver.StreamRequestHandler):
    """An upstream that answers every request with ``100 Continue`` first (as one honouring
    ``Expect`` does), then its final answer naming the request's path."""

    def handle(self) -> None:
        while True:
            line = self.rfile.readline()
            if not line:
                return
            length = 0
            while (header := self.rfile.readline()) not in (b"\r\n", b""):
                if header.lower().startswith(b"content-length:"):
                    length = int(header.split(b":")[1])
            self.rfile.read(length)
            path = line.split()[1]
            body = json.dumps({"path": path.decode()}).encode()
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            self.wfile.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)


@pytest.fixture(scope="module")
def interim_upstream() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Interim)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_expect_100_continue_gets_its_own_answer(
    toxiproxy: Toxiproxy, echo_service: str, interim_upstream: str
) -> None:
    # The client waits for 100 Continue before it sends the body (as curl does over 1 MB).
    proxy = toxiproxy.create(upstream=echo_service, name="expect")
    body = json.dumps({"rows": "x" * 2_000_000}).encode()
    with connect(proxy.listen) as sock:
        head, _, _ = post("/predict", body, "Expect: 100-continue").partition(b"\r\n\r\n")
        sock.sendall(head + b"\r\n\r\n")
        status, _, _ = read_response(sock)
        assert status == 100
        sock.sendall(body)
        status, _, answer = read_response(sock)
        assert status == 200 and json.loads(answer)["echo"] == {"rows": "x" * 2_000_000}

    # An upstream sending 100 Continue before each answer: every client gets its own final one.
    relay = toxiproxy.create(upstream=interim_upstream, name="interim")
    for n in range(5):
        with connect(relay.listen) as sock:
            sock.sendall(post(f"/client/{n}", b"{}", "Expect: 100-continue"))
            status, _, answer = read_response(sock)
            if status == 100:  # the proxy's own, before it read the body
                status, _, answer = read_response(sock)
            assert (status, json.loads(answer)) == (200, {"path": f"/client/{n}"})


def test_head_answers_at_once_with_its_length(toxiproxy: Toxiproxy, echo_service: str) -> None:
    proxy = toxiproxy.create(upstream=echo_service, name="head")
    with connect(proxy.listen) as sock:
        full = []  # the baseline: whole answers, their 20 KB bodies included
        for _ in range(3):
            started = time.monotonic()
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            assert len(read_response(sock)[2]) > 20_000
            full.append(time.monotonic() - started)
        started = time.monotonic()
        sock.sendall(b"HEAD /big HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_response(sock, head=True)
        assert status == 200 and body == b"" and int(headers["content-length"]) > 20_000
        # not held back waiting for a body (the upstream keeps the connection open for seconds)
        assert time.monotonic() - started < min(full) + 1.0, full
        assert sock.fileno() not in _buffers  # no body followed the HEAD answer
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # the connection is still good
        status, headers, body = read_response(sock)
        assert status == 200 and len(body) == int(headers["content-length"])


def test_pipelined_requests_before_garbage_are_answered(
    toxiproxy: Toxiproxy, echo_service: str
) -> None:
    proxy = toxiproxy.create(upstream=echo_service, name="pipeline")
    with connect(proxy.listen) as sock:
        sock.sendall(
            post("/predict", b'{"n": 1}') + post("/predict", b'{"n": 2}') + b"GARBAGE\r\n\r\n"
        )
        answers = [read_response(sock) for _ in range(3)]
        assert [a[0] for a in answers] == [200, 200, 400]
        assert [json.loads(a[2])["echo"] for a in answers[:2]] == [{"n": 1}, {"n": 2}]
        assert no_more(sock)  # then it closes


def rst(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_client_resets_print_no_traceback(echo_service: str) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "chaosml", "proxy", "--api", f"127.0.0.1:{port}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    api = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _up(api), 20)
        listen = requests.post(
            f"{api}/proxies", json={"name": "m", "upstream": echo_service}, timeout=5
        ).json()["listen"]
        for partial in (b"POST /predict HTTP/1.1\r\nContent-Le", post("/predict", b"{}")[:-1]):
            sock = connect(listen)
            sock.sendall(partial)
            time.sleep(0.05)
            rst(sock)
        requests.post(
            f"{api}/proxies/m/toxics", json={"type": "latency", "attributes": {"latency": 300}}
        )
        for toxic_on in (True, False):  # reset while the proxy waits on the upstream or writes
            sock = connect(listen)
            sock.sendall(post("/predict", b"{}"))
            time.sleep(0.05 if toxic_on else 0.0)
            rst(sock)
        requests.post(f"{api}/reset", timeout=5)
        for _ in range(20):  # a keep-alive connection reset between requests (as wrk ends)
            sock = connect(listen)
            sock.sendall(post("/predict", b"{}"))
            read_response(sock)
            rst(sock)
        sock = connect(listen)  # and a reset of the control API's own connection
        sock.sendall(b"POST /proxies HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        rst(sock)
        time.sleep(0.6)
        assert requests.get(f"{api}/proxies", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    assert "Traceback" not in stderr and "Unhandled" not in stderr, stderr


def _up(api: str) -> bool:
    try:
        return requests.get(f"{api}/version", timeout=1).ok
    except requests.ConnectionError:
        return False


def test_half_sent_requests_and_idle_connections_time_out(echo_service: str) -> None:
    timeouts = Timeouts(idle=1.0, request=0.5, sniff=0.2)
    with running(ProxyServer(api="127.0.0.1:0", timeouts=timeouts)) as server:
        listen = requests.post(
            f"http://{server.api}/proxies", json={"name": "t", "upstream": echo_service}, timeout=5
        ).json()["listen"]
        with contextlib.ExitStack() as stack:
            half = [stack.enter_context(connect(listen)) for _ in range(100)]
            for sock in half:
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
            idle = stack.enter_context(connect(listen))
            idle.sendall(post("/predict", b"{}"))
            assert read_response(idle)[0] == 200
            api = stack.enter_context(connect(server.api))
            api.sendall(b"GET /proxies HTTP/1.1\r\nHost: localhost\r\n")  # never finished
            time.sleep(1.6)
            for sock in half:
                status, _, _ = read_response(sock)
                assert status == 408 and no_more(sock)
            assert read_response(api)[0] == 408 and no_more(api)
            assert idle.recv(1) == b""


def test_metric_labels_are_capped_and_dropped_with_their_proxy() -> None:
    metrics = ProxyMetrics(max_proxies=2)
    for name in ("a", "b", "c", "d"):
        metrics.series(metrics.requests, name).inc()
    text = metrics.render().decode()
    assert 'proxy="a"' in text and 'proxy="b"' in text and 'proxy="c"' not in text
    assert f'chaosml_proxy_requests_total{{proxy="{OTHER}"}} 2.0' in text  # c and d
    metrics.forget("a")
    metrics.series(metrics.requests, "e").inc()
    text = metrics.render().decode()
    assert 'proxy="a"' not in text and 'proxy="e"' in text

    with running(ProxyServer(api="127.0.0.1:0", metrics=ProxyMetrics(max_proxies=3))) as server:
        api = f"http://{server.api}"
        for n in range(6):
            created = requests.post(
                f"{api}/proxies", json={"name": f"p{n}", "upstream": "127.0.0.1:1"}, timeout=5
            )
            with connect(created.json()["listen"]) as sock:
                sock.sendall(post("/", b"{}"))
                read_response(sock)
        text = requests.get(f"{api}/metrics", timeout=5).text
        proxies = {
            line.split('proxy="')[1].split('"')[0]
            for line in text.splitlines()
            if 'proxy="' in line
        }
        assert len(proxies - {OTHER}) == 3, proxies
        requests.delete(f"{api}/proxies/p0", timeout=5)
        assert 'proxy="p0"' not in requests.get(f"{api}/metrics", timeout=5).text


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_cli_rejects_bad_api_addresses_in_one_line() -> None:
    for bad in ("18475", "garbage", "127.0.0.1:99999", "127.0.0.1:-1"):
        done = subprocess.run(
            [sys.executable, "-m", "chaosml", "proxy", "--api", bad],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "--api" in done.stderr, done.stderr
