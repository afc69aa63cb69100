"""Bytes no toxic acts on move between sockets inside the kernel: an HTTP answer's body that nothing
reads or shapes, a raw TCP stream while no toxic acts on it. Each test runs spliced and with
splicing off (the oracle: the bytes read through Python), and sees the same."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from toxiproxy import Toxiproxy

from chaosml.proxy import splice
from chaosml.proxy.splice import next_chunk
from chaosml.proxy.stream import Link
from tests.live_servers import threaded_server
from tests.proxy.test_http_stream import block
from tests.proxy.test_protocol import connect
from tests.proxy.test_tcp_toxics import add, api, create

__all__ = ["api"]  # a fixture

CHUNK = 64 * 1024


class Upstream(socketserver.StreamRequestHandler):
    """A keep-alive HTTP/1.1 upstream:

    - ``GET /chunks/N``: N chunks of ``CHUNK`` bytes, sized in upper-case hex with an extension,
      and a trailer after the last chunk;
    - ``GET /sized/N``: N bytes with a Content-Length;
    - ``GET /slow/N``: N chunks of ``CHUNK`` bytes, 50 ms apart;
    - ``GET /bad``: one chunk, then a chunk size that is not hex;
    - ``GET /plain/N``: N chunks sized as the proxy sizes them (lower-case hex, no extension);
    - ``GET /longer/N``: likewise, then a chunk with more data than its size.
    """

    connections: ClassVar[list[int]] = []

    def handle(self) -> None:
        Upstream.connections.append(1)
        while line := self.rfile.readline():
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            _, kind, count = line.split()[1].decode().split("/")
            n = int(count or 0)
            if kind == "sized":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n + block(n))
                continue
            self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            data = block(n * CHUNK)
            if kind in ("plain", "longer"):
                for start in range(0, len(data), CHUNK):
                    self.wfile.write(b"%x\r\n%s\r\n" % (CHUNK, data[start : start + CHUNK]))
                self.wfile.write(b"1\r\nxy\r\n" if kind == "longer" else b"0\r\n\r\n")
                self.wfile.flush()
                if kind == "longer":
                    return
                continue
            for start in range(0, len(data), CHUNK):
                if kind == "slow":
                    self.wfile.flush()
                    time.sleep(0.05)
                self.wfile.write(b"%X;part=x\r\n%s\r\n" % (CHUNK, data[start : start + CHUNK]))
            if kind == "bad":
                self.wfile.write(b"1\r\nx\r\nzz\r\n")
                self.wfile.flush()
                return
            self.wfile.write(b"0\r\nX-Trailer: 1\r\n\r\n")
            self.wfile.flush()


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with threaded_server(Upstream) as address:
        yield address


class Moves:
    """The bodies moved by splice, by framing (none when splicing is off)."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self.chunked: list[int] = []
        self.sized: list[int] = []


@pytest.fixture(params=["spliced", "read"])
def moves(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Moves:
    """Bodies moved by splice (counted), or read through Python (splice unavailable)."""
    counted = Moves(request.param == "spliced")
    if not counted.on:
        monkeypatch.setattr(splice, "AVAILABLE", False)
        return counted
    chunked_body, body_with_length = splice.chunked_body, splice.body_with_length

    async def chunked(splicer: splice.Splicer, data: bytes, framed: bool) -> bytes:
        counted.chunked.append(1)
        return await chunked_body(splicer, data, framed)

    async def sized(splicer: splice.Splicer, data: bytes, length: int) -> bytes:
        counted.sized.append(length)
        return await body_with_length(splicer, data, length)

    monkeypatch.setattr(splice, "chunked_body", chunked)
    monkeypatch.setattr(splice, "body_with_length", sized)
    return counted


class Client:
    """One keep-alive client connection, reading answers as they are framed."""

    def __init__(self, address: str) -> None:
        self.sock = connect(address)
        self.sock.settimeout(15)
        self.data = b""

    def get(self, path: str, version: str = "1.1") -> None:
        self.sock.sendall(f"GET {path} HTTP/{version}\r\nHost: x\r\n\r\n".encode())

    def _more(self) -> None:
        more = self.sock.recv(1 << 20)
        if not more:
            raise ConnectionError(f"closed after {len(self.data)} bytes")
        self.data += more

    def line(self) -> bytes:
        while b"\r\n" not in self.data:
            self._more()
        line, _, self.data = self.data.partition(b"\r\n")
        return line

    def exactly(self, n: int) -> bytes:
        while len(self.data) < n:
            self._more()
        out, self.data = self.data[:n], self.data[n:]
        return out

    def head(self) -> dict[bytes, bytes]:
        status = self.line()
        assert status.startswith(b"HTTP/1.1 200"), status
        headers = {}
        while line := self.line():
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return headers

    def body(self) -> bytes:
        """The answer's body, de-chunked (its chunk lines checked on the way)."""
        headers = self.head()
        if b"content-length" in headers:
            return self.exactly(int(headers[b"content-length"]))
        assert headers[b"transfer-encoding"] == b"chunked"
        pieces = []
        while size := int(self.line(), 16):
            pieces.append(self.exactly(size))
            assert self.line() == b""
        assert self.line() == b""  # no trailers: the proxy drops them
        return b"".join(pieces)

    def rest(self) -> bytes:
        """Everything up to the end of the stream."""
        while more := self.sock.recv(1 << 20):
            self.data += more
        out, self.data = self.data, b""
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def client(toxiproxy: Toxiproxy, upstream: str) -> Iterator[Client]:
    """A client of a proxy that has met one answer worth splicing (on this connection)."""
    proxy = toxiproxy.create(upstream=upstream, name="spliced")
    opened = Client(proxy.listen)
    opened.get(f"/sized/{1 << 17}")
    assert opened.body() == block(1 << 17)
    yield opened
    opened.close()


def test_a_proxy_splices_once_it_has_met_an_answer_worth_it(
    toxiproxy: Toxiproxy, upstream: str, moves: Moves
) -> None:
    proxy = toxiproxy.create(upstream=upstream, name="fresh")
    client = Client(proxy.listen)
    try:
        for _ in range(2):  # the first is read through Python: small answers pay nothing
            client.get(f"/sized/{5 << 20}")
            assert client.body() == block(5 << 20)
    finally:
        client.close()
    assert moves.sized == ([5 << 20] if moves.on else [])


def test_a_chunked_answer_arrives_whole_and_the_connection_serves_on(
    client: Client, moves: Moves
) -> None:
    client.get("/sized/5")
    assert client.body() == block(5)
    Upstream.connections.clear()
    for count in (16, 3, 1):
        client.get(f"/chunks/{count}")
        assert client.body() == block(count * CHUNK)
    client.get("/sized/5")
    assert client.body() == block(5)
    assert not Upstream.connections  # the upstream connection was reused each time
    # 1 MiB cannot have come with its head: moved by splice (the shorter ones may have)
    assert (len(moves.chunked) >= 1) is moves.on
    assert not moves.sized  # (5 bytes: read with their head)


def test_chunks_framed_as_the_proxy_frames_them_arrive_whole_and_the_connection_serves_on(
    client: Client, moves: Moves
) -> None:
    Upstream.connections.clear()
    for count in (64, 1, 16):
        client.get(f"/plain/{count}")
        assert client.body() == block(count * CHUNK)
    client.get("/sized/5")
    assert client.body() == block(5)
    assert not Upstream.connections  # the upstream connection was reused each time
    assert (len(moves.chunked) >= 1) is moves.on


def test_a_chunk_longer_than_its_size_ends_the_connection_after_what_came_before(
    client: Client, moves: Moves
) -> None:
    client.get("/longer/20")
    client.head()
    framed, data = client.rest(), b""  # up to the end of the stream
    while framed:
        line, _, framed = framed.partition(b"\r\n")
        size = int(line, 16)
        data, framed = data + framed[:size], framed[size:]
        if framed[:2] != b"\r\n":  # the one chunk longer than its size: what it held went on
            break
        framed = framed[2:]
    assert data.startswith(block(20 * CHUNK)), len(data)
    assert bool(moves.chunked) is moves.on


def test_a_sized_answer_arrives_byte_for_byte(client: Client, moves: Moves) -> None:
    client.get("/sized/5")
    assert client.body() == block(5)
    Upstream.connections.clear()
    for size in (5 << 20, 200_000, 65_536 + 1):
        client.get(f"/sized/{size}")
        assert client.body() == block(size)
    client.get("/chunks/2")
    assert client.body() == block(2 * CHUNK)
    assert not Upstream.connections  # the upstream connection was reused each time
    assert (5 << 20 in moves.sized) is moves.on


def test_an_http_1_0_client_gets_the_data_until_close(client: Client, moves: Moves) -> None:
    client.get("/chunks/20", version="1.0")
    headers = client.head()
    assert b"transfer-encoding" not in headers
    assert headers[b"connection"] == b"close"
    assert client.rest() == block(20 * CHUNK)
    assert bool(moves.chunked) is moves.on


def test_a_malformed_chunk_ends_the_connection_after_what_came_before(
    client: Client, moves: Moves
) -> None:
    client.get("/bad/20")
    client.head()
    framed, data = client.rest(), b""  # up to the end of the stream
    while framed:  # de-chunked, however the proxy cut the chunks
        line, _, framed = framed.partition(b"\r\n")
        size = int(line, 16)
        assert size and framed[size : size + 2] == b"\r\n"
        data, framed = data + framed[:size], framed[size + 2 :]
    assert data == block(20 * CHUNK) + b"x"  # all before the bad size: no last chunk
    assert bool(moves.chunked) is moves.on


def test_a_toxic_added_during_an_answer_acts_from_the_next_request(
    toxiproxy: Toxiproxy, client: Client, moves: Moves
) -> None:
    client.get("/slow/10")
    client.head()
    assert int(client.line(), 16) == CHUNK  # the answer is under way
    toxiproxy.get_proxy("spliced").add_toxic(
        name="cut", type="limit_data", stream="downstream", attributes={"bytes": 1000}
    )
    body = client.exactly(CHUNK + 2)[:CHUNK]
    while size := int(client.line(), 16):  # the answer rolled no toxic: it goes on whole
        body += client.exactly(size)
        assert client.line() == b""
    assert client.line() == b""
    assert body == block(10 * CHUNK)
    client.get("/chunks/4")
    assert len(client.rest()) == 1000  # the next one meets it: cut, and the connection closed
    assert bool(moves.chunked) is moves.on


class Feed(socketserver.StreamRequestHandler):
    """A raw TCP upstream: ``N\\n`` answers N bytes; ``echo\\n`` answers all that follows, once
    the client half-closed."""

    def handle(self) -> None:
        while line := self.rfile.readline():
            if line == b"echo\n":
                self.wfile.write(self.rfile.read())
                return
            self.wfile.write(block(int(line)))


@pytest.fixture
def feed() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Feed)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["spliced", "read"])
def pieces(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Moves:
    """Times a raw relay spliced a stream, upstream (``sized``) and downstream (``chunked``)."""
    counted = Moves(request.param == "spliced")
    if not counted.on:
        monkeypatch.setattr(splice, "AVAILABLE", False)
    spliced = Link.spliced

    async def counting(link: Link, stream: str, *args: Any) -> bool:
        try:
            return await spliced(link, stream, *args)
        finally:
            if stream not in link.unspliced:  # (its sockets could be spliced)
                (counted.sized if stream == "upstream" else counted.chunked).append(1)

    monkeypatch.setattr(Link, "spliced", counting)
    return counted


def raw_connect(api: str, feed: str) -> socket.socket:
    sock = socket.create_connection(create(api, feed), timeout=15)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def receive(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n and (more := sock.recv(1 << 20)):
        data += more
    return data


def test_raw_bytes_pass_whole_both_ways_and_the_end_as_a_half_close(
    api: str, feed: str, pieces: Moves
) -> None:
    with raw_connect(api, feed) as sock:
        for size in (8 << 20, 100, 300_000):
            sock.sendall(b"%d\n" % size)
            assert receive(sock, size) == block(size)
        sent = block(3 << 20)
        sock.sendall(b"echo\n" + sent)
        sock.shutdown(socket.SHUT_WR)  # the upstream answers once it saw the end
        assert receive(sock, len(sent) + 1) == sent
    assert bool(pieces.chunked and pieces.sized) is pieces.on  # (both ways were spliced)


@pytest.mark.parametrize(
    ("toxic", "stream"), [("limit_data", "downstream"), ("limit_data", "upstream")]
)
def test_a_toxic_added_while_bytes_are_spliced_acts_on_the_next_ones(
    api: str, feed: str, pieces: Moves, toxic: str, stream: str
) -> None:
    with raw_connect(api, feed) as sock:
        sock.sendall(b"65536\n")
        assert receive(sock, 65536) == block(65536)
        add(api, type=toxic, stream=stream, attributes={"bytes": 3})
        sock.sendall(b"65536\n")
        # downstream: 3 bytes of the answer pass; upstream: 3 bytes of the request ("655")
        # reach the upstream, which answers nothing for a line it did not get whole
        expected = block(3) if stream == "downstream" else b""
        assert receive(sock, 65536) == expected  # and the connection closed
    assert bool(pieces.chunked) is pieces.on


def test_latency_added_while_bytes_are_spliced_delays_the_next_ones(
    api: str, feed: str, pieces: Moves
) -> None:
    with raw_connect(api, feed) as sock:
        sock.sendall(b"1000\n")
        assert receive(sock, 1000) == block(1000)
        add(api, type="latency", stream="downstream", attributes={"latency": 300})
        started = time.monotonic()
        sock.sendall(b"1000\n")
        assert receive(sock, 1000) == block(1000)
        assert time.monotonic() - started >= 0.3
    assert bool(pieces.chunked) is pieces.on


@pytest.mark.parametrize(
    ("data", "due", "whole"),
    [
        (b"10\r\n", False, 4 + 16),  # its size line and its 16 bytes, seen or not
        (b"\r\n10\r\nxy", True, 2 + 4 + 16),  # the CRLF after the chunk before, first
        (b"ffffffffffffffff\r\n", False, 18 + 0xFFFFFFFFFFFFFFFF),
        (b"10", False, 0),  # the line is not all there
        (b"\r", True, 0),  # nor the CRLF before it
        (b"x\r\n10\r\n", True, 0),  # the chunk before was longer than its size
        (b"0\r\n\r\n", False, 0),  # the last chunk: the caller's
        (b"010\r\n", False, 0),  # framed anew: a leading zero,
        (b"1A\r\n", False, 0),  # upper-case hex,
        (b"10;x=1\r\n", False, 0),  # an extension
    ],
)
def test_a_chunk_moves_whole_only_when_framed_as_the_proxy_frames_it(
    data: bytes, due: bool, whole: int
) -> None:
    assert next_chunk(data, due) == whole
