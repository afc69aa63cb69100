"""Streaming through the proxy: throughput on a 1 GB chunked answer, the first byte of a streamed
answer, and request throughput with and without a payload toxic, each against the same upstream
reached directly in the same run (alternating direct, proxied, ... and keeping the best of each).

The upstream is a small asyncio HTTP/1.1 server in its own process; the proxy is `chaosml proxy`
in its own process; the clients are plain sockets in this one. Where ``socat`` is installed, a
relay written in C (256 KiB buffers) stands in front of the same upstream too: what a relay costs
on this machine when it is not Python. The request load is a pure-Python keep-alive loop (one
thread per connection), not wrk: it is the baseline for the request ratios, and being Python too
it loads the machine as the proxy does, so read those ratios as the proxy's cost against a Python
client, not against a C load generator. Everything listens on 127.0.0.1.

A proxy holds back an answer's head from its body, so that a large body can be spliced, only
once it has met an answer worth splicing (chunked, or 64 KiB and more); the request figures are
measured on a proxy that has only met small answers and on the one that streamed.

Run: python benchmarks/proxy_stream.py [--gigabytes 1] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from chaosml._net import free_port

UPSTREAM = r"""
import asyncio, json, sys

PIECE = b"x" * 65536
CHUNK = b"%x\r\n" % len(PIECE) + PIECE + b"\r\n"

async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *headers = head.decode("latin-1").split("\r\n")
            method, path, _ = line.split(" ", 2)
            length = 0
            for h in headers:
                if h.lower().startswith("content-length:"):
                    length = int(h.split(":")[1])
            body = await reader.readexactly(length) if length else b""
            if path.startswith("/stream"):
                size = int(path.split("=")[1])
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                for _ in range(size // len(PIECE)):
                    writer.write(CHUNK)
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
            elif path == "/first":  # the first event at once, the rest later
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (10, b"data: 1\n\n\n"))
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(b"0\r\n\r\n")
            else:  # POST /predict: the rows back with a prediction each
                rows = json.loads(body)["instances"]
                answer = json.dumps({"predictions": [1] * len(rows), "echo": rows}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(answer) + answer)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""
ROWS = [
    {"age": 30 + i, "income": 40000 + 100 * i, "region": "EU", "employment": "salaried"}
    for i in range(20)
]


def wait_port(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def stream_rate(port: int, size: int) -> float:
    """MB/s of a ``size``-byte chunked answer read to its end."""
    with connect(port) as sock:
        started = time.perf_counter()
        sock.sendall(b"GET /stream?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        received, tail = 0, b""
        while not tail.endswith(b"\r\n0\r\n\r\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise SystemExit("the stream ended early")
            received += len(chunk)
            tail = (tail + chunk)[-16:]
        took = time.perf_counter() - started
    return received / took / 1e6


def first_byte(port: int) -> float:
    """Seconds from sending the request to the first byte of the streamed answer's body."""
    with connect(port) as sock:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.perf_counter()
        data = b""
        while b"data: 1" not in data:
            data += sock.recv(65536)
        took = time.perf_counter() - started
        while not data.endswith(b"0\r\n\r\n"):
            data += sock.recv(65536)
    return took


def load(port: int, seconds: float, clients: int) -> float:
    """Requests/s of ``clients`` keep-alive connections posting 20 rows each, for ``seconds``."""
    body = json.dumps({"instances": ROWS}).encode()
    request = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    request += b"Content-Length: %d\r\n\r\n" % len(body) + body
    done = [0] * clients
    stop = time.perf_counter() + seconds

    def client(index: int) -> None:
        with connect(port) as sock:
            buffer = b""
            while time.perf_counter() < stop:
                sock.sendall(request)
                while b"\r\n\r\n" not in buffer:
                    buffer += sock.recv(65536)
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(buffer) < length:
                    buffer += sock.recv(65536)
                buffer = buffer[length:]
                done[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started)


def best(measure, direct: int, proxied: int, rounds: int, higher: bool = True):  # type: ignore[no-untyped-def]
    """The best of ``rounds`` alternating measurements, direct and proxied."""
    pick = max if higher else min
    direct_values, proxied_values = [], []
    for _ in range(rounds):
        direct_values.append(measure(direct))
        proxied_values.append(measure(proxied))
    return pick(direct_values), pick(proxied_values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    upstream_port, api_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "upstream.py"
        script.write_text(UPSTREAM)
        upstream = subprocess.Popen([sys.executable, str(script), str(upstream_port)])
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        proxy = subprocess.Popen(
            [sys.executable, "-m", "chaosml", "proxy", "--api", f"127.0.0.1:{api_port}"], env=env
        )
        try:
            wait_port(upstream_port)
            wait_port(api_port)
            api = f"http://127.0.0.1:{api_port}"
            created = requests.post(
                f"{api}/proxies",
                json={"name": "bench", "upstream": f"127.0.0.1:{upstream_port}"},
                timeout=5,
            ).json()
            proxied = int(created["listen"].rsplit(":", 1)[1])
            raw = requests.post(
                f"{api}/proxies",
                json={"name": "raw", "upstream": f"127.0.0.1:{upstream_port}", "codec": "tcp"},
                timeout=5,
            ).json()
            answers = requests.post(  # a proxy that only ever relays small answers
                f"{api}/proxies",
                json={"name": "answers", "upstream": f"127.0.0.1:{upstream_port}"},
                timeout=5,
            ).json()
            ports = (proxied, int(raw["listen"].rsplit(":", 1)[1]))
            report(options, api, upstream_port, *ports, int(answers["listen"].rsplit(":", 1)[1]))
        finally:
            proxy.terminate()
            upstream.terminate()
            proxy.wait(10)
            upstream.wait(10)


def report(
    options: argparse.Namespace, api: str, direct: int, proxied: int, raw: int, answers: int
) -> None:
    size = int(options.gigabytes * 1e9) // 65536 * 65536
    print(f"streaming a {size / 1e9:.2f} GB chunked answer (best of {options.rounds}):")
    rates = best(lambda port: stream_rate(port, size), direct, proxied, options.rounds)
    print(
        f"  direct {rates[0]:8.1f} MB/s   proxied {rates[1]:8.1f} MB/s   ratio {rates[1] / rates[0]:.3f}"
    )
    # the same bytes through a byte-stream relay (codec tcp: what Toxiproxy does with HTTP), so
    # the HTTP path's own cost shows apart from the cost of a third process relaying at all
    relayed = best(lambda port: stream_rate(port, size), raw, proxied, options.rounds)
    print(
        f"  raw TCP relay {relayed[0]:8.1f} MB/s   HTTP path {relayed[1]:8.1f} MB/s   "
        f"ratio {relayed[1] / relayed[0]:.3f}"
    )
    # what a relay costs on this machine when it is not Python: socat, in front of the same upstream
    if shutil.which("socat"):
        port = free_port()
        socat = subprocess.Popen(
            [
                "socat",
                "-b",
                "262144",
                f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
                f"TCP:127.0.0.1:{direct}",
            ]
        )
        try:
            wait_port(port)
            c = best(lambda at: stream_rate(at, size), direct, port, options.rounds)
        finally:
            socat.terminate()
            socat.wait(10)
        print(
            f"  direct {c[0]:8.1f} MB/s   socat (a relay in C) {c[1]:8.1f} MB/s   "
            f"ratio {c[1] / c[0]:.3f}"
        )
    else:
        print("  (socat is not installed: no relay in C to compare with)")

    delays = [best(first_byte, direct, proxied, 1, higher=False) for _ in range(50)]
    direct_ms = statistics.median(d for d, _ in delays) * 1000
    proxied_ms = statistics.median(p for _, p in delays) * 1000
    print("first byte of a streamed answer (median of 50):")
    print(
        f"  direct {direct_ms:6.2f} ms   proxied {proxied_ms:6.2f} ms   added {proxied_ms - direct_ms:5.2f} ms"
    )

    def requests_per_second(port: int) -> float:
        return load(port, options.seconds, options.clients)

    print(
        f"requests, {options.clients} keep-alive clients x {options.seconds:g} s, 20 rows each "
        "(baseline: a pure-Python load loop; wrk is not used):"
    )
    # the proxy that streamed above holds answers' heads back for a splice from then on; a
    # proxy that has only met small answers (a model's) does not
    only = best(requests_per_second, direct, answers, options.rounds)
    print(
        f"  no toxic       direct {only[0]:7.0f}/s   proxied {only[1]:7.0f}/s   ratio {only[1] / only[0]:.3f}"
        "   (a proxy that met only small answers)"
    )
    plain = best(requests_per_second, direct, proxied, options.rounds)
    print(
        f"  no toxic       direct {plain[0]:7.0f}/s   proxied {plain[1]:7.0f}/s   ratio {plain[1] / plain[0]:.3f}"
        "   (the proxy that streamed: heads held back for splicing)"
    )
    toxic = {"type": "missing_values", "stream": "upstream", "attributes": {"columns": ["income"]}}
    requests.post(f"{api}/proxies/bench/toxics", json=toxic, timeout=5).raise_for_status()
    faulted = best(requests_per_second, direct, proxied, options.rounds)
    print(
        f"  missing_values direct {faulted[0]:7.0f}/s   proxied {faulted[1]:7.0f}/s   ratio {faulted[1] / faulted[0]:.3f}"
    )


if __name__ == "__main__":
    main()
