"""Raw TCP toxics through `chaosml proxy`: does latency cut throughput, do fine slicer delays add up?

1. Throughput: a server writes N MB in 2 KB writes to a client through the proxy (raw TCP), with
   no toxic and with `latency` (1000 ms, downstream); runs alternate in the same script. A latency
   that pipelines (each chunk delayed from its arrival, as Toxiproxy's is) costs the latency once:
   the rate from the first byte to the last stays the no-toxic rate, up to what can be in flight
   (32 MiB per latency, as Toxiproxy's 1024 reads of 32 KB). Once with the sender paced to the
   issue's 14.1 MB/s, once back to back (loopback: far beyond the bound, which it then shows).
2. Slicer: 10,000 one-byte slices with `delay` 100 µs (and 1 ms) each: expected 1 s (10 s); prints
   the time taken against it.

Everything listens on 127.0.0.1; the proxy runs as its own process (`python -m chaosml proxy`, on
uvloop when installed, as users run it). Run: python benchmarks/tcp_toxics.py [--mb 32] [--runs 3]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import requests

from chaosml._net import free_port
from chaosml.proxy.stream import IN_FLIGHT

WRITE = 2048


@contextmanager
def proxy_process() -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "chaosml", "proxy", "--api", f"127.0.0.1:{port}"]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{api}/version", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("chaosml proxy did not start") from None
                time.sleep(0.1)
        yield api
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def server(talk: Callable[[socket.socket], None]) -> Iterator[str]:
    """A server that runs ``talk`` on each connection, in a thread of its own."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def loop() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn, suppress(OSError):
                talk(conn)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        listener.close()


def sender(total: int, rate: float | None) -> Callable[[socket.socket], None]:
    """Writes ``total`` bytes in ``WRITE``-byte writes, back to back or paced to ``rate`` MB/s."""
    block = b"x" * WRITE

    def talk(conn: socket.socket) -> None:
        started = time.monotonic()
        for i in range(total // WRITE):
            conn.sendall(block)
            if rate is not None and i % 32 == 31:
                ahead = started + (i + 1) * WRITE / (rate * 1e6) - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)

    return talk


def receive(address: tuple[str, int], total: int) -> tuple[float, float]:
    """Seconds to the first byte and to the last, reading ``total`` bytes."""
    started = time.monotonic()
    first = None
    got = 0
    with socket.create_connection(address, timeout=30) as sock:
        while got < total:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise SystemExit(f"the stream ended after {got} of {total} bytes")
            if first is None:
                first = time.monotonic() - started
            got += len(chunk)
    assert first is not None
    return first, time.monotonic() - started


def create(api: str, name: str, upstream: str) -> tuple[str, int]:
    body = {"name": name, "upstream": upstream, "listen": "127.0.0.1:0", "codec": "tcp"}
    listen = requests.post(f"{api}/proxies", json=body, timeout=5).json()["listen"]
    host, port = listen.rsplit(":", 1)
    return host, int(port)


def toxic(api: str, name: str, body: dict[str, Any]) -> None:
    response = requests.post(f"{api}/proxies/{name}/toxics", json=body, timeout=5)
    response.raise_for_status()


def throughput(api: str, mb: int, runs: int, latency: int, rate: float | None) -> None:
    total = mb * 1_000_000 // WRITE * WRITE
    with server(sender(total, rate)) as upstream:
        plain = create(api, "plain", upstream)
        delayed = create(api, "delayed", upstream)
        toxic(api, "delayed", {"type": "latency", "attributes": {"latency": latency}})
        rates: dict[str, list[float]] = {"none": [], "latency": [], "steady": []}
        for _ in range(runs):
            _, took = receive(plain, total)
            rates["none"].append(total / took / 1e6)
            first, took = receive(delayed, total)
            rates["latency"].append(total / took / 1e6)
            rates["steady"].append(total / (took - first) / 1e6)
        for name in ("plain", "delayed"):
            requests.delete(f"{api}/proxies/{name}", timeout=5)
    best = {k: max(v) for k, v in rates.items()}
    paced = "back to back" if rate is None else f"paced to {rate:g} MB/s"
    print(f"throughput, {mb} MB in {WRITE} B writes {paced}, best of {runs} (MB/s):")
    print(f"  no toxic                         {best['none']:8.1f}")
    print(f"  latency {latency} ms, first to last byte {best['steady']:8.1f}")
    print(f"  ratio latency / no toxic         {best['steady'] / best['none']:8.2f}")
    bound = IN_FLIGHT / (latency / 1000) / 1e6
    print(f"  ratio latency / min(no toxic, in-flight bound {bound:.1f})  ", end="")
    print(f"{best['steady'] / min(best['none'], bound):.2f}")
    expected = total / (best["none"] * 1e6) + latency / 1000
    print(
        f"  whole transfer / (no-toxic time + latency) {total / (best['latency'] * 1e6) / expected:.2f}"
    )


def slicer(api: str, slices: int, delays_us: list[int]) -> None:
    line = b"x" * (slices - 1) + b"\n"

    def echo(conn: socket.socket) -> None:
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        conn.sendall(data)

    with server(echo) as upstream:
        address = create(api, "sliced", upstream)
        print(f"slicer, {slices} slices of 1 byte (downstream):")
        for delay in delays_us:
            attributes = {"average_size": 1, "size_variation": 0, "delay": delay}
            toxic(api, "sliced", {"name": "slicer", "type": "slicer", "attributes": attributes})
            started = time.monotonic()
            with socket.create_connection(address, timeout=60) as sock:
                sock.sendall(line)
                got = 0
                while got < len(line):
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise SystemExit("the sliced answer ended early")
                    got += len(chunk)
            took = time.monotonic() - started
            expected = slices * delay / 1e6
            print(
                f"  delay {delay:5d} µs: {took:6.2f} s, expected {expected:6.2f} s, "
                f"ratio {took / expected:.2f}"
            )
            requests.delete(f"{api}/proxies/sliced/toxics/slicer", timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=128, help="back to back: beyond the 32 MiB bound")
    parser.add_argument("--paced-mb", type=int, default=64)
    parser.add_argument("--rate", type=float, default=14.1, help="MB/s of the paced sender")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--latency", type=int, default=1000, help="ms")
    parser.add_argument("--slices", type=int, default=10_000)
    args = parser.parse_args()
    with proxy_process() as api:
        throughput(api, args.paced_mb, args.runs, args.latency, args.rate)
        throughput(api, args.mb, args.runs, args.latency, None)
        slicer(api, args.slices, [100, 1000])


if __name__ == "__main__":
    main()
