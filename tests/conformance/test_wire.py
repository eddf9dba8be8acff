"""The kit's raw connection (``client.conformance.wire``) as a peer sees it."""

from __future__ import annotations

import trio
import trio.testing

from pushwire.client.conformance.wire import TIMEOUT, WireConnection
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import encode_preface


async def test_a_preface_read_alone_does_not_end_the_stream_for_the_decoder() -> None:
    """The preface arrives in a read of its own, then a frame in two pieces: the frame is
    read whole, not reported as cut short by a close that never happened."""
    ours, theirs = trio.testing.memory_stream_pair()
    conn = WireConnection(stream=ours, timeout=2)
    frame = codec.encode_frame(F.Ping(0x7E57))
    await theirs.send_all(encode_preface(1, 1))
    assert await conn.read_preface() == encode_preface(1, 1)
    await theirs.send_all(frame[:7])
    assert await conn.next_frame(0.2, skip_pings=False) is TIMEOUT
    await theirs.send_all(frame[7:])
    assert await conn.next_frame(skip_pings=False) == F.Ping(0x7E57)
