"""Cases whose promise the reference server has no fault switch for, run against small
scripted servers that break exactly that promise: the case must fail, so it is worth
something. Each stub speaks just enough pushwire (preface, HELLO/WELCOME, SUBSCRIBE,
PUBLISH) for the case to reach the point it is about."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from pushwire.client.conformance.runner import Target, run_cases, select_cases
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder, encode_preface, read_preface
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import PREFACE_SIZE, FrameType, Outcome, SlowConsumerPolicy
from pushwire.protocol.testing.model import Result, Status

EPOCH = 0x5EED
WELCOME = F.Welcome(1, 60_000, 1 << 20, 64, 1000, SlowConsumerPolicy.DROP, "stub")

Handler = Callable[[trio.SocketStream], Awaitable[None]]


@asynccontextmanager
async def stub_server(handler: Handler) -> AsyncIterator[Target]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, handler, 0)
        port = listeners[0].socket.getsockname()[1]
        yield Target("127.0.0.1", port, timeout=1.0)
        nursery.cancel_scope.cancel()


async def run_one(handler: Handler, case_id: str) -> Result:
    async with stub_server(handler) as target:
        (result,) = await run_cases(target, select_cases([case_id]))
    assert result.status is Status.FAIL, result
    assert result.expected and result.observed, result
    return result


async def _preface(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    """The client preface and whatever came with it."""
    data = b""
    while len(data) < PREFACE_SIZE:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise trio.BrokenResourceError
        data += chunk
    return data[:PREFACE_SIZE], data[PREFACE_SIZE:]


async def test_ph16_catches_a_server_that_reads_frames_before_choosing_a_version() -> None:
    async def eager(stream: trio.SocketStream) -> None:
        async with stream:
            preface, rest = await _preface(stream)
            decoder = FrameDecoder()
            decoder.feed(rest)
            answer = encode_preface(0 if read_preface(preface).first > 1 else 1, 1)
            if isinstance(decoder.next_frame(), F.Hello):  # the bug: HELLO before the version
                answer += codec.encode_frame(WELCOME)
            await stream.send_all(answer)

    assert (await run_one(eager, "PH-16")).observed.startswith("Welcome(")


@dataclass
class StickySessions:
    """A server that keeps a client's subscriptions when its connection closes and hands
    them to the next connection with the same client name (a "session" SPEC.md does not
    have): the promise of PW-SUB-19 broken."""

    head: dict[str, int] = field(default_factory=dict)
    #: (client name, sub_id) -> (topic, the connection it is delivered on, or None)
    subs: dict[tuple[str, int], tuple[str, trio.SocketStream | None]] = field(default_factory=dict)

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            _, rest = await _preface(stream)
            await stream.send_all(encode_preface(1, 1))
            decoder, name = FrameDecoder(1 << 20), ""
            decoder.feed(rest)
            try:
                while True:
                    while (frame := decoder.next_frame()) is not None:
                        name = await self.on_frame(stream, name, frame)
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    decoder.feed(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                for key, (topic, conn) in list(self.subs.items()):
                    if conn is stream:
                        self.subs[key] = (topic, None)  # parked for the next connection

    async def on_frame(self, stream: trio.SocketStream, name: str, frame: F.Frame) -> str:
        match frame:
            case F.Hello():
                for key, (topic, conn) in list(self.subs.items()):
                    if key[0] == frame.client_name and conn is None:
                        self.subs[key] = (topic, stream)
                await stream.send_all(codec.encode_frame(WELCOME))
                return frame.client_name
            case F.Subscribe():
                if (name, frame.sub_id) in self.subs:
                    reply: F.Frame = F.Error(
                        ErrorCode.ALREADY_SUBSCRIBED, FrameType.SUBSCRIBE, frame.sub_id, "taken"
                    )
                else:
                    self.subs[(name, frame.sub_id)] = (frame.topic, stream)
                    head = self.head.get(frame.topic, 0)
                    reply = F.Subscribed(frame.sub_id, Outcome.NEW, EPOCH, head + 1, head)
                await stream.send_all(codec.encode_frame(reply))
            case F.Publish():
                seq = self.head[frame.topic] = self.head.get(frame.topic, 0) + 1
                await stream.send_all(codec.encode_frame(F.Puback(frame.request_id, EPOCH, seq, 1)))
                push = codec.encode_frame(F.Message(EPOCH, seq, frame.topic, frame.payload))
                for topic, conn in list(self.subs.values()):
                    if topic == frame.topic and conn is not None:
                        await conn.send_all(push)
            case F.Ping():
                await stream.send_all(codec.encode_frame(F.Pong(frame.opaque)))
        return name


async def test_so15_catches_a_server_whose_subscriptions_outlive_the_connection() -> None:
    result = await run_one(StickySessions().handle, "SO-15")
    assert result.observed.startswith("MESSAGE(seq=2"), result.observed
