"""Addresses and ports, shared by the proxy, the fault point, the load driver and the harness."""

from __future__ import annotations

import re
import socket


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) as a pair; ``ValueError`` if it is not one."""
    host, _, port = address.rpartition(":")
    if not host or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid address {address!r}: expected host:port")
    return host.strip("[]"), int(port)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for processes that cannot be handed a bound socket)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
