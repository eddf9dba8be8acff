"""Real servers on a trio event loop in a thread of its own, for client tests that run under
either anyio backend.

The client under test runs on the test's loop (asyncio or trio); the server stays trio, as
an embedded server must. :class:`ServerLoop` hosts any number of servers, one after the
other or at once, so two servers can share a broker. Every call into the server's loop is
made from a worker thread (``anyio.to_thread``), so the test's loop keeps running while the
server works: a server call that waits for the client (``shutdown`` waits for clients to
close) cannot deadlock.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import anyio.to_thread
import trio

from pushwire.server import Server, ServerConfig, ServerStats, open_server

T = TypeVar("T")


class RemoteServer:
    """What a test does with a :class:`~pushwire.server.Server`, from the test's loop."""

    def __init__(self, loop: ServerLoop, server: Server) -> None:
        self._loop = loop
        self._server = server
        self.port = server.port

    async def publish(self, topic: str, payload: bytes) -> tuple[int, int]:
        return await self._loop.call(self._server.publish, topic, payload)

    async def publish_batch(self, topic: str, payloads: list[bytes]) -> tuple[int, int]:
        return await self._loop.call(self._server.publish_batch, topic, payloads)

    async def reset_topic(self, topic: str) -> int:
        return await self._loop.call(self._server.reset_topic, topic)

    async def shutdown(self) -> None:
        await self._loop.call(self._server.shutdown)

    async def stats(self) -> ServerStats:
        return await self._loop.call_sync(self._server.stats)


class ServerLoop:
    """A trio loop in a thread that runs servers for a test; made by :func:`server_loop`."""

    def __init__(self, token: trio.lowlevel.TrioToken, nursery: trio.Nursery) -> None:
        self.token = token
        self._nursery = nursery

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` on the server's loop."""
        run = functools.partial(trio.from_thread.run, fn, *args, trio_token=self.token)
        return await anyio.to_thread.run_sync(run)

    async def call_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the server's loop (to read its state between two steps)."""
        run = functools.partial(trio.from_thread.run_sync, fn, *args, trio_token=self.token)
        return await anyio.to_thread.run_sync(run)

    @asynccontextmanager
    async def server(
        self, config: ServerConfig | None = None, **options: Any
    ) -> AsyncIterator[RemoteServer]:
        """``open_server(config, **options)`` on the server's loop, for the block."""
        server, stop, stopped = await self.call(self._nursery.start, self._hold, config, options)
        try:
            yield RemoteServer(self, server)
        finally:
            with anyio.CancelScope(shield=True):
                await self.call(_close, stop, stopped)

    @staticmethod
    async def _hold(
        config: ServerConfig | None,
        options: dict[str, Any],
        task_status: trio.TaskStatus[tuple[Server, trio.Event, trio.Event]],
    ) -> None:
        stop, stopped = trio.Event(), trio.Event()
        try:
            async with open_server(config, **options) as server:
                task_status.started((server, stop, stopped))
                await stop.wait()
        finally:
            stopped.set()


async def _close(stop: trio.Event, stopped: trio.Event) -> None:
    stop.set()
    await stopped.wait()


@contextmanager
def server_loop() -> Iterator[ServerLoop]:
    """A trio loop in a daemon thread for the block; errors of its servers are raised at
    the end of the block."""
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            state["loop"] = ServerLoop(trio.lowlevel.current_trio_token(), nursery)
            state["done"] = done = trio.Event()
            started.set()
            await done.wait()
            nursery.cancel_scope.cancel()

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:
            state["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=run, name="pushwire-test-server", daemon=True)
    thread.start()
    started.wait()
    try:
        if "loop" not in state:
            raise state["error"]
        loop: ServerLoop = state["loop"]
        yield loop
    finally:
        try:
            trio.from_thread.run_sync(state["done"].set, trio_token=state["loop"].token)
        except (KeyError, trio.RunFinishedError):
            pass
        thread.join()
    if "error" in state:
        raise state["error"]
