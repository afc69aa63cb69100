"""Changes to the set of proxies are serialized, as Toxiproxy's ProxyCollection does it: concurrent
creates of one name give one 201, concurrent populates leave one proxy, and no attempt leaves a
listener behind that is not a listed, deletable proxy."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from chaosml._net import free_port
from chaosml.proxy.api import ProxyServer, running

ATTEMPTS = 8
ROUNDS = 4


@pytest.fixture
def server() -> Iterator[ProxyServer]:
    with running(ProxyServer(api="127.0.0.1:0")) as server:
        yield server


def at_once(calls: list[Callable[[], requests.Response]]) -> list[requests.Response]:
    """Each call on its own thread, released together by a barrier (bounded: 10 s each)."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait(timeout=10)
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert all(isinstance(r, requests.Response) for r in results), results
    return results


def free(port: int) -> bool:
    """Whether ``port`` on 127.0.0.1 can be bound (no orphaned listener holds it)."""
    try:
        socket.create_server(("127.0.0.1", port)).close()
        return True
    except OSError:
        return False


def post(server: ProxyServer, path: str, body: Any) -> Callable[[], requests.Response]:
    return lambda: requests.post(f"http://{server.api}{path}", json=body, timeout=10)


def test_concurrent_creates_of_one_name_give_one_proxy_and_no_orphan(server: ProxyServer) -> None:
    for round in range(ROUNDS):
        name = f"same{round}"
        ports = [free_port() for _ in range(ATTEMPTS)]
        bodies = [
            {"name": name, "upstream": "127.0.0.1:1", "listen": f"127.0.0.1:{port}"}
            for port in ports
        ]
        answers = at_once([post(server, "/proxies", body) for body in bodies])
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [201] + [409] * (ATTEMPTS - 1), statuses
        winner = next(a for a in answers if a.status_code == 201).json()
        listed = requests.get(f"http://{server.api}/proxies", timeout=5).json()
        assert list(listed) == [name] and listed[name]["listen"] == winner["listen"]
        won = int(winner["listen"].rsplit(":", 1)[1])
        assert not free(won)  # the winner's listener is the one open
        assert all(free(port) for port in ports if port != won), ports
        assert requests.delete(f"http://{server.api}/proxies/{name}", timeout=5).status_code == 204
        assert free(won)  # deleting the listed proxy frees every port any attempt bound


def test_concurrent_populates_leave_one_proxy_and_no_orphan(server: ProxyServer) -> None:
    for round in range(ROUNDS):
        name = f"pop{round}"
        ports = [free_port() for _ in range(ATTEMPTS)]
        bodies = [
            [{"name": name, "upstream": "127.0.0.1:1", "listen": f"127.0.0.1:{port}"}]
            for port in ports
        ]
        answers = at_once([post(server, "/populate", body) for body in bodies])
        assert [a.status_code for a in answers] == [201] * ATTEMPTS  # each replaced the last
        listed = requests.get(f"http://{server.api}/proxies", timeout=5).json()
        assert list(listed) == [name]
        kept = int(listed[name]["listen"].rsplit(":", 1)[1])
        assert kept in ports and not free(kept)
        assert all(free(port) for port in ports if port != kept), ports
        assert requests.delete(f"http://{server.api}/proxies/{name}", timeout=5).status_code == 204
        assert all(free(port) for port in ports)


def test_creates_racing_deletes_and_updates_leave_only_listed_listeners(
    server: ProxyServer,
) -> None:
    ports = [free_port() for _ in range(ATTEMPTS)]
    calls: list[Callable[[], requests.Response]] = []
    for index, port in enumerate(ports):
        body = {"name": "r", "upstream": "127.0.0.1:1", "listen": f"127.0.0.1:{port}"}
        calls.append(post(server, "/proxies", body))
        if index % 2:
            calls.append(post(server, "/proxies/r", {"listen": f"127.0.0.1:{port}"}))
            calls.append(lambda: requests.delete(f"http://{server.api}/proxies/r", timeout=10))
    at_once(calls)
    listed = requests.get(f"http://{server.api}/proxies", timeout=5).json()
    held = {int(p["listen"].rsplit(":", 1)[1]) for p in listed.values()}
    assert len(held) <= 1
    assert all(free(port) for port in ports if port not in held), (ports, held)
    for name in listed:
        requests.delete(f"http://{server.api}/proxies/{name}", timeout=5)
    assert all(free(port) for port in ports)


def test_clients_connecting_as_the_server_stops_are_closed_not_left_hanging(
    echo_service: str,
) -> None:
    # a connection accepted just before the listener closes must still be closed by the server:
    # on asyncio's loop its transport is built a turn later, when the server is already closed
    hanging = 0
    for _ in range(ROUNDS * 3):
        clients = []
        with running(ProxyServer(api="127.0.0.1:0")) as server:
            created = requests.post(
                f"http://{server.api}/proxies",
                json={"name": "model", "upstream": echo_service, "listen": "127.0.0.1:0"},
                timeout=5,
            )
            host, port = created.json()["listen"].rsplit(":", 1)
            api_host, api_port = server.api.rsplit(":", 1)
            for _ in range(ATTEMPTS):
                clients.append(socket.create_connection((host, int(port)), timeout=5))
                clients.append(socket.create_connection((api_host, int(api_port)), timeout=5))
        for client in clients:
            client.settimeout(3)
            try:
                hanging += client.recv(1) != b""
            except ConnectionResetError:
                pass
            except TimeoutError:
                hanging += 1
            finally:
                client.close()
    assert hanging == 0, f"{hanging} connections left open after the server stopped"
