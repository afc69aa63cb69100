"""Streams through the proxy's HTTP path: what no fault needs to read flows as it arrives, bodies
of any size pass whole, transport toxics act on the request's bytes as on the answer's, and a
payload fault that could not read a body says why in its evidence."""

from __future__ import annotations

import hashlib
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import requests
from toxiproxy import Toxiproxy

from chaosml.proxy.api import ProxyServer
from chaosml.proxy.server import Limits
from tests.live_servers import threaded_server, wait_for
from tests.proxy.test_evidence import evidence
from tests.proxy.test_protocol import connect, read_response

PARTS = 5
BIG = 100 * 1024 * 1024


def block(n: int) -> bytes:
    """``n`` deterministic bytes that are not all alike (so a shifted or lost piece shows)."""
    seed = hashlib.sha256(b"chaosml").digest() * 2048  # 64 KiB
    whole, rest = divmod(n, len(seed))
    return seed * whole + seed[:rest]


class Upstream(socketserver.StreamRequestHandler):
    """A hand-written HTTP/1.1 upstream (one request per connection):

    - ``GET /parts``: a chunked answer in ``PARTS`` parts; before part 3 it waits (up to 10 s)
      for the test to say the client holds part 1, and notes whether it had to give up;
    - ``GET /big``: ``BIG`` bytes with a Content-Length;
    - ``POST /hash``: the sha256 of the body it read (Content-Length or chunked), and its size.
    """

    got_first = threading.Event()
    gave_up: ClassVar[list[bool]] = []
    received: ClassVar[list[int]] = []
    content_type = b"text/event-stream"

    def handle(self) -> None:
        line = self.rfile.readline()
        headers: dict[bytes, bytes] = {}
        while (header := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = header.partition(b":")
            headers[name.strip().lower()] = value.strip()
        path = line.split()[1] if line else b""
        if path == b"/parts":
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: " + self.content_type + b"\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            for index in range(PARTS):
                if index == 2:
                    Upstream.gave_up.append(not Upstream.got_first.wait(10))
                part = b"data: part %d\n\n" % index
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
                time.sleep(0.1)
            self.wfile.write(b"0\r\n\r\n")
        elif path == b"/big":
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % BIG
            )
            for start in range(0, BIG, 1 << 20):
                self.wfile.write(block(min(1 << 20, BIG - start)))
        elif path == b"/hash":
            digest = hashlib.sha256()
            size = 0
            for piece in self.body(headers):
                digest.update(piece)
                size += len(piece)
            Upstream.received.append(size)
            answer = b'{"sha256": "%s", "size": %d}' % (digest.hexdigest().encode(), size)
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(answer) + answer
            )

    def body(self, headers: dict[bytes, bytes]) -> Iterator[bytes]:
        if b"chunked" in headers.get(b"transfer-encoding", b""):
            while size := int(self.rfile.readline().strip() or b"0", 16):
                yield self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return
        left = int(headers.get(b"content-length", b"0"))
        while left:
            piece = self.rfile.read(min(left, 1 << 20))
            if not piece:
                return
            left -= len(piece)
            yield piece


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with threaded_server(Upstream) as address:
        yield address


def first_part_then_rest(listen: str) -> bytes:
    """GET /parts, telling the upstream when part 1 is in; the whole chunked body as read."""
    Upstream.got_first.clear()
    with connect(listen) as sock:
        sock.settimeout(15)
        sock.sendall(b"GET /parts HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"part 0" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        Upstream.got_first.set()
        while not data.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    return data


@pytest.mark.parametrize(
    "toxic",
    [
        None,
        {"type": "latency", "attributes": {"latency": 50}},
        # a response fault on an event stream: no codec reads it, so it is not held for one
        {"name": "zeros", "type": "constant_prediction", "attributes": {"value": 0}},
    ],
)
def test_a_chunked_answer_reaches_the_client_as_it_is_sent(
    toxiproxy: Toxiproxy, upstream: str, toxic: dict[str, Any] | None
) -> None:
    proxy = toxiproxy.create(upstream=upstream, name="parts")
    if toxic is not None:
        proxy.add_toxic(**toxic)
    Upstream.gave_up.clear()
    data = first_part_then_rest(proxy.listen)
    # the client held part 1 before the upstream sent part 3 (store-and-forward would have
    # kept part 1 until the end, and the upstream would have given up waiting)
    assert Upstream.gave_up == [False]
    assert all(b"data: part %d" % i in data for i in range(PARTS))
    assert data.index(b"part 0") < data.index(b"part 4")
    if toxic is not None and toxic["type"] == "constant_prediction":
        found = evidence(toxiproxy, "parts", "zeros")
        assert found["acted"] == 0
        assert found["skipped"] == {"content type text/event-stream (relayed unread)": 1}


def test_a_100_mib_answer_and_request_pass_whole(toxiproxy: Toxiproxy, upstream: str) -> None:
    proxy = toxiproxy.create(upstream=upstream, name="big")
    expected = hashlib.sha256(block(BIG)).hexdigest()
    with requests.get(f"http://{proxy.listen}/big", stream=True, timeout=60) as answer:
        assert answer.status_code == 200
        digest = hashlib.sha256()
        for piece in answer.iter_content(1 << 20):
            digest.update(piece)
    assert digest.hexdigest() == expected

    def chunks() -> Iterator[bytes]:  # sent chunked, without a length
        for start in range(0, BIG, 1 << 20):
            yield block(BIG)[start : start + (1 << 20)]

    Upstream.received.clear()
    for body in (block(BIG), chunks()):
        answer = requests.post(f"http://{proxy.listen}/hash", data=body, timeout=60)
        assert answer.status_code == 200
        assert answer.json() == {"sha256": expected, "size": BIG}


def test_a_body_over_the_buffer_limit_is_relayed_and_counted(
    toxiproxy: Toxiproxy, proxy_server: ProxyServer, upstream: str
) -> None:
    proxy = toxiproxy.create(upstream=upstream, name="limited")
    proxy_server.proxies["limited"].limits = Limits(body=1 << 20)
    proxy.add_toxic(name="zeros", type="constant_prediction", attributes={"value": 0})
    proxy.add_toxic(
        name="nulls", type="missing_values", stream="upstream", attributes={"columns": ["a"]}
    )
    size = 3 << 20
    answer = requests.post(
        f"http://{proxy.listen}/hash",
        data=block(size),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert answer.json() == {"sha256": hashlib.sha256(block(size)).hexdigest(), "size": size}
    nulls = evidence(toxiproxy, "limited", "nulls")
    assert nulls["skipped"] == {"request body over the buffer limit (relayed unread)": 1}
    # the answer is small: read, and unreadable as a model's answer (it has no predictions)
    zeros = evidence(toxiproxy, "limited", "zeros")
    assert sum(zeros["skipped"].values()) == 1 and zeros["acted"] == 0
    with requests.get(f"http://{proxy.listen}/big", stream=True, timeout=60) as big:
        digest = hashlib.sha256()
        for piece in big.iter_content(1 << 20):
            digest.update(piece)
    assert digest.hexdigest() == hashlib.sha256(block(BIG)).hexdigest()
    zeros = evidence(toxiproxy, "limited", "zeros")
    assert zeros["skipped"]["response body over the buffer limit (relayed unread)"] == 1


def test_upstream_bandwidth_slicer_and_limit_data_act_on_the_request(
    toxiproxy: Toxiproxy, upstream: str
) -> None:
    proxy = toxiproxy.create(upstream=upstream, name="up")
    url = f"http://{proxy.listen}/hash"
    size = 200_000
    started = time.monotonic()
    assert requests.post(url, data=block(size), timeout=30).json()["size"] == size
    base = time.monotonic() - started
    proxy.add_toxic(type="bandwidth", stream="upstream", attributes={"rate": 400})  # KB/s
    started = time.monotonic()
    assert requests.post(url, data=block(size), timeout=30).json()["size"] == size
    assert time.monotonic() - started >= 0.45  # 200 KB at 400 KB/s: the time is the behaviour
    proxy.destroy_toxic("bandwidth_upstream")

    proxy.add_toxic(
        type="slicer",
        stream="upstream",
        attributes={"average_size": 1000, "size_variation": 0, "delay": 2000},  # µs
    )
    started = time.monotonic()
    assert requests.post(url, data=block(size), timeout=30).json()["size"] == size
    assert time.monotonic() - started >= 0.3 + base  # 200 slices, 2 ms after each
    proxy.destroy_toxic("slicer_upstream")

    Upstream.received.clear()
    proxy.add_toxic(type="limit_data", stream="upstream", attributes={"bytes": 1000})
    with pytest.raises(requests.ConnectionError):
        requests.post(url, data=block(size), timeout=10)
    # the upstream got the head and the start of the body: 1000 bytes in all, then the close
    # (which its handler notes as it ends, in its own thread)
    assert wait_for(lambda: Upstream.received, 10)
    assert len(Upstream.received) == 1 and 0 < Upstream.received[0] < 1000


def test_removing_a_timeout_0_closes_the_held_connection(
    toxiproxy: Toxiproxy, upstream: str
) -> None:
    proxy = toxiproxy.create(upstream=upstream, name="held")
    proxy.add_toxic(type="timeout", attributes={"timeout": 0})
    removed: list[float] = []

    def remove_soon() -> None:
        time.sleep(0.5)
        proxy.destroy_toxic("timeout_downstream")
        removed.append(time.monotonic())

    with connect(proxy.listen) as sock:
        sock.settimeout(10)  # held longer than this: the removal did not release it
        sock.sendall(b"POST /hash HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        remover = threading.Thread(target=remove_soon)
        remover.start()
        assert sock.recv(65536) == b""  # closed, with no answer (the data went nowhere)
        closed = time.monotonic()
        remover.join()
    assert removed and closed >= removed[0] - 0.05  # released by the removal, not before
    with connect(proxy.listen) as sock:  # and the next connection is served
        sock.sendall(b"POST /hash HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        assert read_response(sock)[0] == 200


def test_headers_are_capped_at_1_mb(
    toxiproxy: Toxiproxy, proxy_server: ProxyServer, upstream: str
) -> None:
    proxy = toxiproxy.create(upstream=upstream, name="heads")
    line = b"X-Filler: " + b"a" * 65_000 + b"\r\n"

    def flood(sock: Any) -> int:
        """Headers sent until the proxy stopped taking them (or 300 MB)."""
        sent = 0
        try:
            while sent < 300 * 1024 * 1024:
                sock.sendall(line)
                sent += len(line)
        except OSError:  # the proxy answered and closed: the rest cannot be sent
            return sent
        return sent

    with connect(proxy.listen) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n")
        # refused long before 300 MB were taken in (the kernel's buffers hold a few MB)
        assert flood(sock) < 64 * 1024 * 1024
    with connect(proxy_server.api) as sock:  # the control API reads requests with the same cap
        sock.sendall(b"GET /proxies HTTP/1.1\r\nHost: localhost\r\n")
        assert flood(sock) < 64 * 1024 * 1024
    with connect(proxy.listen) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + line * 20 + b"\r\n")
        status, _, _ = read_response(sock)
        assert status == 431
    with connect(proxy.listen) as sock:  # headers under the cap pass
        sock.sendall(b"POST /hash HTTP/1.1\r\nHost: x\r\n" + line * 10)
        sock.sendall(b"Content-Length: 2\r\n\r\n{}")
        assert read_response(sock)[0] == 200


def test_a_request_or_answer_without_a_body_is_a_counted_skip(
    toxiproxy: Toxiproxy, echo_service: str
) -> None:
    proxy = toxiproxy.create(upstream=echo_service, name="bodiless")
    proxy.add_toxic(
        name="nulls", type="missing_values", stream="upstream", attributes={"columns": ["a"]}
    )
    proxy.add_toxic(name="zeros", type="constant_prediction", attributes={"value": 0})
    assert requests.head(f"http://{proxy.listen}/big", timeout=5).status_code == 200
    nulls, zeros = (evidence(toxiproxy, "bodiless", name) for name in ("nulls", "zeros"))
    assert (nulls["hits"], nulls["acted"]) == (zeros["hits"], zeros["acted"]) == (1, 0)
    assert nulls["skipped"] == {"unreadable request body (JSONDecodeError)": 1}
    assert zeros["skipped"] == {"unreadable response body (HEAD answer)": 1}
