"""The raw-wire peer, as server tests use it: frames in, frames out, no policy.

The reference client enforces the protocol on the server, which is what a normal client
should do but not what a test of the server's reaction to bad input wants. :class:`RawPeer`
is the kit's raw-wire peer (``pushwire.client.conformance.wire.WireConnection``) with the
test suite's habits: no timeouts of its own (the tests' ``trio.fail_after`` bound them),
PINGs returned rather than answered, assertions instead of reports, and
:class:`PeerClosed` when the server closes while a frame is expected. It runs over any trio
stream (memory streams in tests/server, TCP and TLS in tests/integration). Imported by both
test folders as ``integration.server_peer``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import trio
import trio.testing

from pushwire.client.conformance.wire import Closed, WireConnection, preface_fields
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder, encode_preface
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import INITIAL_MAX_FRAME_SIZE, SinceKind

CLIENT_PREFACE = encode_preface(1, 1)
PREFACE_ONLY = CLIENT_PREFACE


def hello(
    *,
    client_name: str = "test",
    auth_token: bytes = b"",
    max_frame_size: int = 1 << 20,
    heartbeat_ms: int = 0,
) -> bytes:
    return codec.encode_frame(F.Hello(max_frame_size, heartbeat_ms, client_name, auth_token))


class PeerClosed(Exception):
    """The server closed the connection (EOF) while a frame was expected."""


@dataclass
class RawPeer(WireConnection):
    """``max_frame_size``: what :meth:`handshake` announces in HELLO."""

    auto_pong: bool = False
    record: bool = False
    decoder: FrameDecoder = field(default_factory=lambda: FrameDecoder(INITIAL_MAX_FRAME_SIZE))
    max_frame_size: int = 1 << 20
    #: The server preface's (version, max_version), once read.
    preface: tuple[int, int] | None = None

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1", **kwargs: Any) -> RawPeer:
        return cls(await trio.open_tcp_stream(host, port), **kwargs)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)

    async def send(self, *items: F.Frame | bytes) -> bool:  # type: ignore[override]
        data = b"".join(
            i if isinstance(i, bytes | bytearray) else codec.encode_frame(i) for i in items
        )
        return await self.send_raw(data)

    async def read_preface(self, timeout: float | None = None) -> tuple[int, int]:  # type: ignore[override]
        """The server preface's two version bytes; PeerClosed if it closes before."""
        got = await super().read_preface(timeout)
        fields = preface_fields(got)
        if fields is None:
            raise PeerClosed(f"closed after {_describe_short(got)} of the preface")
        self.preface = (fields.first, fields.second)
        return self.preface

    async def recv(self) -> F.Frame:
        """The next frame; PeerClosed on EOF."""
        if self.preface is None:
            await self.read_preface()
        obs = await self.next_frame(skip_pings=False)
        if isinstance(obs, Closed):
            raise PeerClosed(f"server closed the connection ({obs})")
        return obs

    async def expect(self, cls: type) -> F.Frame:  # type: ignore[override]
        frame = await self.recv()
        assert isinstance(frame, cls), f"expected {cls.__name__}, got {frame!r}"
        return frame

    async def recv_until(self, cls: type) -> tuple[F.Frame, list[F.Frame]]:
        """Skip frames (PINGs, pushes ...) until one of ``cls``; returns it and the skipped."""
        skipped = []
        while True:
            frame = await self.recv()
            if isinstance(frame, cls):
                return frame, skipped
            skipped.append(frame)

    async def expect_eof(self) -> None:
        """Nothing more but the end of the stream (PING/PONG aside; any other frame fails
        the test)."""
        while True:
            try:
                frame = await self.recv()
            except PeerClosed:
                return
            if not isinstance(frame, F.Ping | F.Pong):
                raise AssertionError(f"expected EOF, got {frame!r}")

    async def recv_data(self) -> F.Frame:
        """The next frame that is not a PING (PINGs are answered)."""
        while True:
            frame = await self.recv()
            if not isinstance(frame, F.Ping):
                return frame
            await self.send(F.Pong(frame.opaque))

    async def expect_error_and_close(self, code: ErrorCode) -> F.Error:
        """A connection-level ERROR(code, 0, 0) (after any other frames), then EOF."""
        while True:
            frame = await self.recv()
            if isinstance(frame, F.Error):
                break
        assert (frame.code, frame.request_type, frame.request_id) == (int(code), 0, 0), (
            f"expected ERROR({code.name}), got {frame!r} "
            f"({ErrorCode(frame.code).name if frame.code in ErrorCode._value2member_map_ else '?'})"
        )
        await self.expect_eof()
        return frame

    async def handshake(self, **hello_fields: Any) -> F.Welcome:  # type: ignore[override]
        mfs = int(hello_fields.get("max_frame_size", self.max_frame_size))
        hello_fields["max_frame_size"] = mfs
        await self.send(CLIENT_PREFACE + hello(**hello_fields))
        version, _ = await self.read_preface()
        assert version == 1
        welcome = await self.expect(F.Welcome)
        assert isinstance(welcome, F.Welcome)
        self.decoder.max_frame_size = mfs
        self.welcome = welcome
        return welcome

    async def subscribe(
        self,
        sub_id: int,
        topic: str,
        *,
        credit: int = 1000,
        since: int = SinceKind.NEW,
        epoch: int = 0,
        seq: int = 0,
        count: int = 0,
        at_least_once: bool = False,
    ) -> F.Subscribed:
        await self.send(F.Subscribe(sub_id, topic, since, epoch, seq, count, credit, at_least_once))
        frame, _ = await self.recv_until((F.Subscribed, F.Error))  # type: ignore[arg-type]
        assert isinstance(frame, F.Subscribed), f"SUBSCRIBE refused: {frame!r}"
        return frame

    async def publish(
        self, topic: str, payload: bytes, *, request_id: int = 1, headers: F.Headers | None = None
    ) -> F.Puback:
        await self.send(F.Publish(request_id, topic, payload, headers))
        frame, _ = await self.recv_until((F.Puback, F.Error))  # type: ignore[arg-type]
        assert isinstance(frame, F.Puback), f"PUBLISH refused: {frame!r}"
        return frame

    async def messages(self, n: int) -> list[tuple[int, bytes]]:
        """The next ``n`` messages as (seq, payload), batches flattened, other frames
        (PING, PUBACK ...) skipped."""
        out: list[tuple[int, bytes]] = []
        while len(out) < n:
            frame = await self.recv()
            if isinstance(frame, F.Message):
                out.append((frame.seq, frame.payload))
            elif isinstance(frame, F.MessageBatch):
                out.extend((frame.base_seq + i, r.payload) for i, r in enumerate(frame.records))
            elif isinstance(frame, F.Ping):
                await self.send(F.Pong(frame.opaque))
        return out


def _describe_short(got: object) -> str:
    return f"{len(got)} bytes" if isinstance(got, bytes) else str(got)


class MemoryServer:
    """A Server whose connections are in-memory stream pairs (no sockets): for tests that
    need trio's virtual clock. ``await connect()`` returns a RawPeer on a new connection."""

    def __init__(self, server: Any, nursery: trio.Nursery, pair: Any) -> None:
        self.server = server
        self.nursery = nursery
        self.pair = pair

    async def connect(self, **kwargs: Any) -> RawPeer:
        client, server_side = self.pair()
        self.nursery.start_soon(self.server.serve_stream, server_side, "memory")
        return RawPeer(client, **kwargs)


@asynccontextmanager
async def memory_server(
    config: Any = None, pair: Any = None, *, factories: Any = None, **overrides: Any
) -> AsyncIterator[MemoryServer]:
    """A server without a listener; ``pair`` makes (client, server) streams
    (default trio.testing.memory_stream_pair; lockstep_stream_pair gives backpressure);
    ``factories`` are Server's keyword arguments (e.g. ``faults.server_options(name)``)."""
    from pushwire.server import Server, ServerConfig

    config = config or ServerConfig(port=0)
    if overrides:
        config = replace(config, **overrides)
    server = Server(config, **(factories or {}))
    async with trio.open_nursery() as nursery:
        yield MemoryServer(server, nursery, pair or trio.testing.memory_stream_pair)
        nursery.cancel_scope.cancel()
