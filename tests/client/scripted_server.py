"""A scripted server for client tests: the test plays the server, frame by frame.

Each client connection is a ``trio.testing.memory_stream_pair``; the client's
``open_stream`` hook hands the server end to the test through a channel, so a test sees
every (re)connection and can refuse some of them. Frames are built and parsed with the
protocol codec, so the bytes are real; only the socket is not.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.abc
import trio
import trio.testing

import pushwire.client as pw
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder, encode_preface
from pushwire.protocol.layouts import MAX_MAX_FRAME_SIZE, PREFACE_SIZE, Outcome

T = TypeVar("T")

EPOCH = 0x5EED


def welcome(heartbeat_ms: int = 5000, max_frame_size: int = 1 << 20) -> F.Welcome:
    return F.Welcome(1, heartbeat_ms, max_frame_size, 100, 1000, 1, "scripted")


class ScriptedServer:
    """The server end of one client connection."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(MAX_MAX_FRAME_SIZE)
        self.raw = bytearray()
        self.preface: bytes | None = None
        self.hello: F.Hello | None = None
        self.eof = False

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            self.eof = True
            raise EOFError("client closed")
        self.raw += data
        if self.preface is None:
            if len(self.raw) < PREFACE_SIZE:
                return
            self.preface = bytes(self.raw[:PREFACE_SIZE])
            data = bytes(self.raw[PREFACE_SIZE:])
        self.decoder.feed(data)

    async def recv(self) -> F.Frame:
        """The next frame the client sent (waits for it)."""
        while True:
            if self.preface is not None:
                frame = self.decoder.next_frame()
                if frame is not None:
                    return frame
            await self._fill()

    async def expect(self, cls: type[T], *, skip: tuple[type, ...] = (F.Ping, F.Pong)) -> T:
        """The next frame of type ``cls``, skipping heartbeat traffic."""
        while True:
            frame = await self.recv()
            if isinstance(frame, cls):
                return frame
            assert isinstance(frame, skip), f"expected {cls.__name__}, got {frame}"

    async def recv_until_eof(self) -> list[F.Frame]:
        frames: list[F.Frame] = []
        try:
            while True:
                frames.append(await self.recv())
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
            return frames

    async def send(self, *frames: F.Frame) -> None:
        await self.stream.send_all(b"".join(codec.encode_frame(f) for f in frames))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def handshake(self, welcome_frame: F.Welcome | None = None) -> F.Hello:
        hello = await self.expect(F.Hello)
        self.hello = hello
        await self.send_raw(encode_preface(1, 1) + codec.encode_frame(welcome_frame or welcome()))
        return hello

    async def accept_subscribe(
        self,
        *,
        epoch: int = EPOCH,
        head: int = 0,
        outcome: Outcome | None = None,
        start: int | None = None,
        gap: tuple[int, int, int] = (0, 0, 0),
    ) -> F.Subscribe:
        """Answer the next SUBSCRIBE the way a server with ``head`` messages would."""
        sub = await self.expect(F.Subscribe)
        if outcome is None:
            outcome = {0: Outcome.NEW, 1: Outcome.RECOVERED, 2: Outcome.RECOVERED}.get(
                sub.since_kind, Outcome.RECOVERED
            )
            if sub.since_kind == 1 and sub.since_epoch != epoch:
                outcome = Outcome.EPOCH_CHANGED
        if start is None:
            if outcome is Outcome.NEW or outcome is Outcome.EPOCH_CHANGED:
                start = head + 1 if outcome is Outcome.NEW else 1
            elif sub.since_kind == 1:
                start = sub.since_seq + 1
            elif sub.since_kind == 2:
                start = max(0, head - sub.since_count) + 1
            else:
                start = 1
        await self.send(F.Subscribed(sub.sub_id, outcome, epoch, start, head, *gap))
        return sub

    async def aclose(self) -> None:
        await self.stream.aclose()


class AnyioStream(anyio.abc.ByteStream):
    """A trio stream as the anyio byte stream the client's ``open_stream`` hook returns
    (EOF raises EndOfStream, trio's resource errors become anyio's)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream

    async def receive(self, max_bytes: int = 65536) -> bytes:
        try:
            data = await self.stream.receive_some(max_bytes)
        except trio.BrokenResourceError as exc:
            raise anyio.BrokenResourceError from exc
        except trio.ClosedResourceError as exc:
            raise anyio.ClosedResourceError from exc
        if not data:
            raise anyio.EndOfStream
        return data

    async def send(self, item: bytes) -> None:
        try:
            await self.stream.send_all(item)
        except trio.BrokenResourceError as exc:
            raise anyio.BrokenResourceError from exc
        except trio.ClosedResourceError as exc:
            raise anyio.ClosedResourceError from exc

    async def send_eof(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        await self.stream.aclose()


class Listener:
    """Where the client's connections arrive; ``refuse`` makes the next N fail."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[ScriptedServer](16)
        self.refuse = 0
        self.attempts: list[float] = []

    async def open_stream(self) -> anyio.abc.ByteStream:
        self.attempts.append(trio.current_time())
        if self.refuse:
            self.refuse -= 1
            raise OSError(errno.ECONNREFUSED, "Connection refused")
        client, server = trio.testing.memory_stream_pair()
        await self._send.send(ScriptedServer(server))
        return AnyioStream(client)

    async def accept(self) -> ScriptedServer:
        return await self._receive.receive()

    async def accept_open(self, welcome_frame: F.Welcome | None = None) -> ScriptedServer:
        server = await self.accept()
        await server.handshake(welcome_frame)
        return server

    @asynccontextmanager
    async def connected(
        self, *, welcome_frame: F.Welcome | None = None, **options: Any
    ) -> AsyncIterator[tuple[pw.Connection, ScriptedServer]]:
        """``connect()`` with the handshake played by a background task."""
        options.setdefault("backoff_initial", 0.1)
        options.setdefault("backoff_max", 1.0)
        result: list[ScriptedServer] = []
        async with trio.open_nursery() as nursery:

            async def serve_handshake() -> None:
                result.append(await self.accept_open(welcome_frame))

            nursery.start_soon(serve_handshake)
            async with pw.connect("scripted:7447", open_stream=self.open_stream, **options) as conn:
                assert result, "handshake not served"
                yield conn, result[0]


def run_soon(nursery: trio.Nursery, fn: Callable[..., Any], *args: Any) -> list[Any]:
    """Start ``fn`` and collect its return value into the returned list."""
    box: list[Any] = []

    async def runner() -> None:
        box.append(await fn(*args))

    nursery.start_soon(runner)
    return box
