"""Keep-alive connections from a proxy to one upstream address."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from chaosml._net import split_address
from chaosml.proxy.http import STREAM_READ, StreamParser


@dataclass
class Upstream:
    """One connection to an upstream, with the parser of its answers."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    parser: StreamParser = field(init=False)
    reused: bool = False

    def __post_init__(self) -> None:
        self.parser = StreamParser(self.reader, response=True)

    @property
    def live(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


@dataclass
class Pool:
    """Idle keep-alive connections to ``address``. A connection goes back to the pool only after
    its answer was read whole and nothing followed it."""

    address: str
    idle: list[Upstream] = field(default_factory=list)

    def take(self) -> Upstream | None:
        """An idle connection still open, if one is left."""
        while self.idle:
            conn = self.idle.pop()
            if conn.live:
                conn.reused = True
                return conn
            conn.close()
        return None

    async def open(self) -> Upstream:
        host, port = split_address(self.address)
        reader, writer = await asyncio.open_connection(host, port, limit=STREAM_READ)
        return Upstream(reader, writer)

    def give(self, conn: Upstream, keep_alive: bool) -> None:
        """``conn`` back to the pool once its answer was read, if it can serve another."""
        if keep_alive and conn.parser.clean and conn.live:
            self.idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()
