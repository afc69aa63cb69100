"""Running a ``ProxyServer``: in the foreground until a signal (``chaosml proxy``), or on an event
loop in a background thread (tests, library use)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from chaosml.errors import InputError
from chaosml.proxy.toxics import ApiError

if TYPE_CHECKING:
    from chaosml.proxy.api import ProxyServer


def serve_forever(
    server: ProxyServer,
    on_start: Callable[[ProxyServer], None],
    populate: list[Any] | None = None,
) -> None:
    """Run ``server`` in the foreground until SIGINT or SIGTERM (on uvloop when installed, which
    makes the data plane markedly cheaper); ``populate`` creates proxies first, as ``POST
    /populate`` would (Toxiproxy's ``-config``), and any entry that fails stops it; ``on_start``
    is called once it listens."""
    import signal

    async def run() -> None:
        await server.start()
        if populate is not None:
            try:
                await server.populate(populate)
            except ApiError as exc:
                await server.stop()
                raise InputError(f"--populate: {exc.message}") from exc
        serving = asyncio.ensure_future(server.serve())
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, serving.cancel)
        on_start(server)
        with contextlib.suppress(asyncio.CancelledError):
            await serving

    try:
        import uvloop
    except ImportError:
        asyncio.run(run())
    else:
        uvloop.run(run())


async def _quiesce(timeout: float = 5.0) -> None:
    """Before a loop of ``running`` ends: let the tasks still on it finish (the handler of a
    connection accepted as the server stopped starts, finds it closed and closes it), cancel any
    left after ``timeout``, then let the transports they closed release their sockets. Waiting on
    the tasks, not on the clock: a loaded machine may run the loop only now and then."""
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    deadline = loop.time() + timeout
    while (others := asyncio.all_tasks() - {me}) and loop.time() < deadline:
        await asyncio.wait(others, timeout=deadline - loop.time())
    others = asyncio.all_tasks() - {me}
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    for _ in range(3):  # a closed transport's connection_lost, then its socket's close
        await asyncio.sleep(0)


@contextmanager
def running(server: ProxyServer) -> Iterator[ProxyServer]:
    """Run ``server`` on an event loop in a background thread (tests, library use)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    task: list[asyncio.Task[None]] = []
    failure: list[BaseException] = []

    async def main() -> None:
        try:
            await server.start()
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        task.append(asyncio.current_task())  # type: ignore[arg-type]
        ready.set()
        with contextlib.suppress(asyncio.CancelledError):
            await server.serve()
        await _quiesce()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait()
    if failure:
        thread.join()
        loop.close()
        raise failure[0]
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(task[0].cancel)
        thread.join(timeout=10)
        loop.close()
