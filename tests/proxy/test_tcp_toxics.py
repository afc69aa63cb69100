"""Raw TCP toxics as Toxiproxy means them, against a Redis-like server written here: no client
ever reads another request's reply, ``reset_peer`` is timed from the data, fine slicer delays add
up, latency pipelines. Toxiproxy's code (``toxics/*.go``, ``link.go``) is the reference."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import requests

from chaosml.faults.transport import slices
from chaosml.proxy.api import ProxyServer, running
from chaosml.proxy.server import Timeouts


@dataclass
class Log:
    """What the Redis-like server saw: each command, and each connection it saw end."""

    commands: list[bytes] = field(default_factory=list)
    ended: threading.Event = field(default_factory=threading.Event)


class Redis(socketserver.StreamRequestHandler):
    """``GET key`` answers ``VALUE key``, ``ECHO text`` answers ``text``: one line each, in order,
    so an answer names the request it answers."""

    log: Log

    def handle(self) -> None:
        with contextlib.suppress(ConnectionResetError):  # what a reset_peer does
            while line := self.rfile.readline():
                type(self).log.commands.append(line)
                verb, _, rest = line.rstrip(b"\n").partition(b" ")
                self.wfile.write((b"VALUE " + rest if verb == b"GET" else rest) + b"\n")
        type(self).log.ended.set()


@pytest.fixture
def redis() -> Iterator[tuple[str, Log]]:
    log = Log()
    handler = type("Handler", (Redis,), {"log": log})
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", log
    server.shutdown()
    server.server_close()


@pytest.fixture
def api() -> Iterator[str]:
    with running(ProxyServer(api="127.0.0.1:0", timeouts=Timeouts(sniff=0.3))) as server:
        yield f"http://{server.api}"


def create(api: str, upstream: str) -> tuple[str, int]:
    body = {"name": "tcp", "upstream": upstream, "codec": "tcp"}
    host, port = (
        requests.post(f"{api}/proxies", json=body, timeout=5).json()["listen"].rsplit(":", 1)
    )
    return host, int(port)


def add(api: str, **body: Any) -> str:
    response = requests.post(f"{api}/proxies/tcp/toxics", json=body, timeout=5)
    assert response.status_code == 200, response.text
    return str(response.json()["name"])


def update(api: str, name: str, **body: Any) -> None:
    response = requests.post(f"{api}/proxies/tcp/toxics/{name}", json=body, timeout=5)
    assert response.status_code == 200, response.text


def remove(api: str, name: str) -> None:
    assert requests.delete(f"{api}/proxies/tcp/toxics/{name}", timeout=5).status_code == 204


def ask(sock: socket.socket, line: bytes) -> bytes:
    """Send ``line`` and read one line back (b"" if the connection ended first)."""
    sock.sendall(line)
    return read_line(sock)


def read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def rest(sock: socket.socket) -> bytes:
    """Everything the connection still delivers, up to its end (a reset counts as the end)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def until_reset(sock: socket.socket) -> bytes:
    """What the connection delivers before it is reset; AssertionError if it ends otherwise."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        return data
    raise AssertionError(f"closed without a reset, after {data!r}")


def send_after_close(sock: socket.socket, line: bytes) -> bytes:
    """Send ``line`` on a connection the proxy may have closed, and what comes back."""
    try:
        sock.sendall(line)
    except (BrokenPipeError, ConnectionResetError):
        return b""
    return rest(sock)


def until(condition: Callable[[], bool], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


@pytest.mark.parametrize("stream", ["upstream", "downstream"])
@pytest.mark.parametrize("timeout", [0, 60_000])
def test_removing_a_timeout_closes_the_connection_it_held(
    api: str, redis: tuple[str, Log], stream: str, timeout: int
) -> None:
    upstream, log = redis
    address = create(api, upstream)
    with socket.create_connection(address, timeout=5) as sock:
        assert ask(sock, b"GET x\n") == b"VALUE x\n"
        name = add(api, type="timeout", stream=stream, attributes={"timeout": timeout})
        sock.sendall(b"GET a\n")  # pipelined: its answer (or the request) is dropped
        if stream == "downstream":
            until(lambda: b"GET a\n" in log.commands)
        time.sleep(0.1)  # the proxy took GET a (or its answer) in
        remove(api, name)
        # at once after the removal: the proxy must not relay GET b on the hole GET a left
        answer = send_after_close(sock, b"GET b\n")
    assert answer == b"", "a client read another request's answer as its own"


def test_removing_a_timeout_closes_idle_connections(api: str, redis: tuple[str, Log]) -> None:
    upstream, log = redis
    address = create(api, upstream)
    with socket.create_connection(address, timeout=5) as sock:
        assert ask(sock, b"GET x\n") == b"VALUE x\n"
        name = add(api, type="timeout", stream="upstream", attributes={"timeout": 0})
        time.sleep(0.1)  # the open connection meets the toxic
        remove(api, name)
        assert rest(sock) == b""  # the client's end closed (the socket would time out at 5 s)
    assert log.ended.wait(
        5
    )  # and the server's (Toxiproxy's TestTimeoutToxicClosesConnectionOnRemove)


def test_a_timeout_closes_once_no_data_came_for_its_timeout(
    api: str, redis: tuple[str, Log]
) -> None:
    upstream, log = redis
    address = create(api, upstream)
    with socket.create_connection(address, timeout=5) as sock:
        add(api, type="timeout", stream="upstream", attributes={"timeout": 400})
        for _ in range(8):  # 0.8 s of data, a chunk every 0.1 s: each restarts the timer
            time.sleep(0.1)
            sock.sendall(b"GET a\n")
        last = time.monotonic()
        sock.settimeout(0.05)
        with pytest.raises(TimeoutError):  # still open, though its timeout passed twice
            sock.recv(10)
        sock.settimeout(5)
        assert rest(sock) == b""
        assert time.monotonic() - last >= 0.4  # closed its timeout after the last data
    assert log.commands == []  # everything was dropped


def test_a_lease_renewal_does_not_restart_a_timeout(api: str, redis: tuple[str, Log]) -> None:
    upstream, _ = redis
    address = create(api, upstream)
    attributes = {"timeout": 400, "lease": 30}
    with socket.create_connection(address, timeout=5) as sock:
        name = add(api, type="timeout", stream="upstream", attributes=attributes)
        sock.settimeout(0.1)
        closed = False
        for _ in range(30):  # renewed every ~0.1 s for up to 3 s: an update that changes nothing
            update(api, name, attributes=attributes)
            try:
                closed = sock.recv(10) == b""
            except TimeoutError:
                continue
            break
        assert closed


@pytest.mark.parametrize("stream", ["upstream", "downstream"])
def test_reset_peer_is_timed_from_the_data_not_the_connection(
    api: str, redis: tuple[str, Log], stream: str
) -> None:
    upstream, log = redis
    address = create(api, upstream)
    with socket.create_connection(address, timeout=5) as sock:
        assert ask(sock, b"GET x\n") == b"VALUE x\n"
        add(api, type="reset_peer", stream=stream, attributes={"timeout": 300})
        time.sleep(0.6)  # idle, as a pooled connection: Toxiproxy does not reset it
        sock.settimeout(0.05)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        sock.settimeout(5)
        sent = time.monotonic()
        sock.sendall(b"GET a\n")
        assert until_reset(sock) == b""  # GET a (or its answer) was dropped
        assert time.monotonic() - sent >= 0.3  # its timeout after the data, not at once
    # upstream: the request never reached the server; downstream: it did, its answer did not
    assert (b"GET a\n" in log.commands) == (stream == "downstream")


def test_a_reset_peer_that_saw_data_resets_even_if_removed(
    api: str, redis: tuple[str, Log]
) -> None:
    upstream, _ = redis
    address = create(api, upstream)
    with socket.create_connection(address, timeout=5) as sock:
        name = add(api, type="reset_peer", stream="upstream", attributes={"timeout": 300})
        sock.sendall(b"GET a\n")
        time.sleep(0.1)
        remove(api, name)  # Toxiproxy's timer, once started, is not interrupted
        with pytest.raises(ConnectionResetError):
            sock.recv(10)


def test_limit_data_counts_from_when_the_toxic_came(api: str, redis: tuple[str, Log]) -> None:
    upstream, _ = redis
    address = create(api, upstream)
    with socket.create_connection(address, timeout=5) as sock:
        assert ask(sock, b"ECHO " + b"x" * 49 + b"\n") == b"x" * 49 + b"\n"  # 50 bytes down
        add(api, type="limit_data", stream="downstream", attributes={"bytes": 20})
        sock.sendall(b"ECHO " + b"y" * 29 + b"\n")
        assert rest(sock) == b"y" * 20  # 20 bytes since the toxic came, then closed


@pytest.mark.parametrize("stream", ["upstream", "downstream"])
def test_slicer_delays_under_a_millisecond_add_up(
    api: str, redis: tuple[str, Log], stream: str
) -> None:
    upstream, _ = redis
    address = create(api, upstream)
    line = b"ECHO " + b"x" * 9_994 + b"\n"  # 10,000 bytes up, 9,995 down

    def roundtrip() -> float:
        with socket.create_connection(address, timeout=30) as sock:
            started = time.monotonic()
            assert ask(sock, line) == line[5:]
            return time.monotonic() - started

    baseline = roundtrip()
    attributes = {"average_size": 1, "size_variation": 0, "delay": 100}  # 1-byte slices, 100 µs
    add(api, type="slicer", stream=stream, attributes=attributes)
    took = roundtrip()
    # ~10,000 slices, 100 µs after each: 1 s in all (the pacer keeps the total to a millisecond),
    # neither skipped (uvloop rounds such timers to 0 ms) nor a timer tick each (asyncio: ~10 s);
    # the upper bound is generous: the baseline plus three times the delays asked for
    assert 0.99 <= took <= baseline + 3.0, (took, baseline)


def test_a_bandwidth_waits_each_pieces_time_before_sending_it(
    api: str, redis: tuple[str, Log]
) -> None:
    upstream, _ = redis
    address = create(api, upstream)
    add(api, type="bandwidth", stream="downstream", attributes={"rate": 10})  # 10 KB/s
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(b"ECHO " + b"x" * 1999 + b"\n")  # 2,000 bytes: 0.2 s at 10 KB/s
        started = time.monotonic()
        sock.recv(1)
        # Toxiproxy sends the first 100 ms' worth (1,000 bytes) after waiting 100 ms
        assert time.monotonic() - started >= 0.09


def test_a_chunk_held_by_a_latency_goes_when_the_latency_is_removed(
    api: str, redis: tuple[str, Log]
) -> None:
    upstream, _ = redis
    address = create(api, upstream)
    name = add(api, type="latency", stream="downstream", attributes={"latency": 60_000})
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(b"GET a\n")
        time.sleep(0.2)
        remove(api, name)
        assert read_line(sock) == b"VALUE a\n"  # before the socket's 5 s, not after 60 s


def test_latency_pipelines_bulk_data(api: str) -> None:
    """Back-to-back 2 KB writes through ``latency`` 1000 ms: each chunk is delayed from when it
    arrived, so after the first byte the data flows as without the toxic (Toxiproxy holds up to
    1024 reads in flight; a relay holding a few chunks stalls a latency per few chunks)."""
    total, block = 16 * 1024 * 1024, b"z" * 2048
    listener = socket.create_server(("127.0.0.1", 0))

    def send() -> None:
        conn, _ = listener.accept()
        with conn:
            for _ in range(total // len(block)):
                conn.sendall(block)

    address = create(api, f"127.0.0.1:{listener.getsockname()[1]}")

    def longest_gap() -> tuple[float, float]:
        """When the first byte came, and the longest wait between reads after it."""
        sender = threading.Thread(target=send)
        sender.start()
        with socket.create_connection(address, timeout=10) as sock:
            started = time.monotonic()
            got, gap, first, last = 0, 0.0, None, None
            while got < total:
                chunk = sock.recv(1 << 20)
                assert chunk
                now = time.monotonic()
                first = now - started if first is None else first
                gap = max(gap, now - last) if last is not None else gap
                got, last = got + len(chunk), now
        sender.join()
        assert first is not None
        return first, gap

    try:
        _, baseline = longest_gap()
        add(api, type="latency", stream="downstream", attributes={"latency": 1000})
        first, gap = longest_gap()
    finally:
        listener.close()
    assert first >= 1.0
    # the baseline's own longest wait, plus half the latency: a relay that stalls waits a latency
    assert gap < baseline + 0.5, (gap, baseline)


def test_slices_are_cut_the_way_toxiproxy_cuts_them() -> None:
    rng = np.random.default_rng(0)
    data = bytes(range(256)) * 2_000  # 512,000 bytes
    pieces = slices(data, 1024, 512, rng)
    assert b"".join(pieces) == data
    assert max(map(len, pieces)) <= 1024 + 512
    assert 512_000 / 1536 <= len(pieces) <= 512_000 / 256  # Toxiproxy's test: about 480 of 480 KB
    # no variation: halved until at most the average (20,000 bytes: 32 pieces of 625)
    assert [len(p) for p in slices(b"x" * 20_000, 1000, 0, rng)] == [625] * 32
    assert slices(b"abc", 1, 0, rng) == [b"a", b"b", b"c"]
    assert slices(b"", 10, 0, rng) == []


def test_reset_peer_without_timeout_resets_at_the_first_data(
    api: str, redis: tuple[str, Log]
) -> None:
    upstream, log = redis
    address = create(api, upstream)
    add(api, type="reset_peer", stream="upstream", attributes={"timeout": 0})
    with socket.create_connection(address, timeout=5) as sock:
        time.sleep(0.1)  # open and idle: not reset
        sock.sendall(b"GET a\n")
        assert until_reset(sock) == b""  # Toxiproxy's TestResetToxicNoTimeout
    assert log.commands == []


def test_noop_changes_nothing(api: str, redis: tuple[str, Log]) -> None:
    upstream, _ = redis
    address = create(api, upstream)
    add(api, type="noop", stream="upstream")
    add(api, type="noop", stream="downstream")
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(b"GET a\nGET b\n")
        sock.shutdown(socket.SHUT_WR)
        assert rest(sock) == b"VALUE a\nVALUE b\n"
