"""Helpers for the client integration tests: real TCP to a real server on 127.0.0.1.

:class:`Link` is the client's ``open_stream`` hook over real TCP that a test can cut
(``kill()``: the socket is shut down under the client, like a dropped network) and hold down
(``down = True``: connection attempts are refused), so disconnects happen exactly when a
test wants them without mocking the network.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc

import pushwire.client as pw

Item = pw.Message | pw.DeliveryInterrupted


class Link:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.down = False
        self.streams: list[anyio.abc.SocketStream] = []
        self.connects = 0
        self.attempts: list[float] = []  # anyio.current_time() of every connection attempt
        self._connected = anyio.Event()

    async def open_stream(self) -> anyio.abc.ByteStream:
        self.attempts.append(anyio.current_time())
        if self.down:
            raise OSError(errno.ECONNREFUSED, "link is down (test)")
        stream = await anyio.connect_tcp(self.host, self.port)
        self.streams.append(stream)
        self.connects += 1
        self._connected.set()
        self._connected = anyio.Event()
        return stream

    async def wait_connects(self, count: int) -> None:
        """Until ``count`` TCP connections were made in total (a new one is made only
        after the client noticed the previous one is gone)."""
        while self.connects < count:
            await self._connected.wait()

    def kill(self) -> None:
        """Cut every open connection of this link: both directions of the socket are shut
        down under the client (the socket itself stays the client's to close, which each
        event loop needs)."""
        for stream in self.streams:
            try:
                stream.extra(anyio.abc.SocketAttribute.raw_socket).shutdown(socket.SHUT_RDWR)
            except OSError:  # already gone
                pass
        self.streams.clear()

    @asynccontextmanager
    async def connect(self, **options: Any) -> AsyncIterator[pw.Connection]:
        options.setdefault("backoff_initial", 0.01)
        options.setdefault("backoff_max", 0.05)
        async with pw.connect(
            f"{self.host}:{self.port}", open_stream=self.open_stream, **options
        ) as conn:
            yield conn


async def next_item(sub: pw.Subscription) -> Item:
    """The next message, or the interruption it raised (returned, not raised)."""
    try:
        return await sub.__anext__()
    except pw.DeliveryInterrupted as exc:
        return exc


async def take_items(sub: pw.Subscription, n: int) -> list[Item]:
    return [await next_item(sub) for _ in range(n)]


async def take_until(sub: pw.Subscription, epoch_seq: tuple[int, int]) -> list[Item]:
    """Items until the message at (epoch, seq) inclusive."""
    items: list[Item] = []
    while True:
        item = await next_item(sub)
        items.append(item)
        if isinstance(item, pw.Message) and (item.epoch, item.seq) == epoch_seq:
            return items


def seqs(items: list[Item]) -> list[int | str]:
    """Messages as their seq; interruptions as 'gap a..b' / 'epoch'."""
    out: list[int | str] = []
    for item in items:
        if isinstance(item, pw.Message):
            out.append(item.seq)
        elif isinstance(item, pw.GapDetected):
            out.append(f"gap {item.first}..{item.last}")
        else:
            out.append("epoch")
    return out


async def poll(condition: Any, interval: float = 0.005) -> None:
    """Until ``condition()`` holds, for state only observable by looking (server stats);
    bounded by the caller's fail_after."""
    while not condition():
        await anyio.sleep(interval)
