"""Helpers for the client integration tests: real TCP to a real server on 127.0.0.1.

:class:`Link` is the client's ``open_stream`` hook over real TCP that a test can cut
(``kill()``: the socket is shut down under the client, like a dropped network) and hold down
(``down = True``: connection attempts are refused), so disconnects happen exactly when a
test wants them without mocking the network. With ``tap=True`` it also decodes what the
client writes, one list of frames per connection (``sent``), for tests that check the
client's side of the wire (what a resume asks for, which ACKs went out) against a real
server that does not report it.
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
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder
from pushwire.protocol.layouts import MAX_MAX_FRAME_SIZE, PREFACE_SIZE

Item = pw.Message | pw.DeliveryInterrupted


class _Tap(anyio.abc.ByteStream):
    """A client's stream that decodes every byte the client writes into ``frames``, as it
    is written: a frame counts as sent whether or not the server ever reads it."""

    def __init__(self, inner: anyio.abc.ByteStream, frames: list[F.Frame]) -> None:
        self._inner = inner
        self._frames = frames
        self._preface = PREFACE_SIZE  # preface bytes still to skip
        self._decoder = FrameDecoder(MAX_MAX_FRAME_SIZE)

    async def send(self, item: bytes) -> None:
        data = memoryview(item)
        skip = min(self._preface, len(data))
        self._preface -= skip
        self._decoder.feed(data[skip:])
        while (frame := self._decoder.next_frame()) is not None:
            self._frames.append(frame)
        await self._inner.send(item)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self._inner.receive(max_bytes)

    async def send_eof(self) -> None:
        await self._inner.send_eof()

    async def aclose(self) -> None:
        await self._inner.aclose()

    @property
    def extra_attributes(self) -> Any:
        return self._inner.extra_attributes


class Link:
    def __init__(self, port: int, host: str = "127.0.0.1", *, tap: bool = False) -> None:
        self.host = host
        self.port = port
        self.down = False
        self.tap = tap
        #: With ``tap``: the frames the client wrote, one list per connection, in order.
        self.sent: list[list[F.Frame]] = []
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
        if self.tap:
            self.sent.append([])
            return _Tap(stream, self.sent[-1])
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
