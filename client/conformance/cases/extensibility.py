"""extensibility: what lets v1 grow without breaking v1 peers: ignorable frame types and
version negotiation over a range (SPEC.md §2.3, §3.3)."""

from __future__ import annotations

import os

from pushwire.client.conformance.registry import case
from pushwire.client.conformance.runner import CaseContext
from pushwire.client.conformance.wire import CaseFailed, chooses_version, describe
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import encode_preface
from pushwire.protocol.errors import ErrorCode

CAT = "extensibility"


unknown = codec.encode_raw_frame


async def _chooses_version_1(ctx: CaseContext, preface: bytes) -> None:
    """A client ``preface`` offering a range with 1 in it gets a server preface choosing 1."""
    conn = await ctx.open()
    await conn.send_raw(preface)
    got = await conn.read_preface()
    if not chooses_version(got, 1):
        raise CaseFailed("server preface choosing version 1", describe(got))


@case(
    "EX-01",
    "Unknown frame types with the ignorable bit are skipped",
    category=CAT,
    requirements=("PW-FRAME-8",),
)
async def ignorable_skipped(ctx: CaseContext) -> None:
    """Types 0x80, 0xA7 and 0xFF with payloads of 0, 1 and 1000 bytes, interleaved with
    real requests: the requests are answered as if the unknown frames were not there."""
    conn = await ctx.connect()
    topic = ctx.topic()
    data = (
        unknown(0x80, 0, b"")
        + codec.encode_frame(F.Publish(3, topic, b"x"))
        + unknown(0xA7, 0, b"\x01")
        + unknown(0xFF, 0, os.urandom(1000))
        + codec.encode_frame(F.Ping(99))
    )
    await conn.send_raw(data)
    await conn.expect_type(F.Puback, request_id=3)
    await conn.expect_type(F.Pong, opaque=99)


@case(
    "EX-02",
    "Ignorable unknown frames are skipped whatever their flags",
    category=CAT,
    requirements=("PW-FRAME-8",),
)
async def ignorable_any_flags(ctx: CaseContext) -> None:
    """Reserved-bit rules belong to known types; an unknown type's flags mean something to
    its future definition only."""
    conn = await ctx.connect()
    await conn.send_raw(unknown(0xC3, 0xFF, b"future") + codec.encode_frame(F.Ping(5)))
    await conn.expect_type(F.Pong, opaque=5)


@case(
    "EX-03",
    "The length limit applies to ignorable frames too (FRAME_TOO_LARGE from the header)",
    category=CAT,
    requirements=("PW-FRAME-2", "PW-FRAME-8"),
)
async def ignorable_too_large(ctx: CaseContext) -> None:
    """Skipping must not mean buffering an unbounded frame."""
    conn = await ctx.connect()
    assert conn.welcome is not None
    await conn.send_raw(codec.encode_header(conn.welcome.max_frame_size + 1, 0xA0, 0))
    await conn.expect_error_close(ErrorCode.FRAME_TOO_LARGE)


@case(
    "EX-04",
    "Offered versions 1..255: the server picks 1, the highest it shares",
    category=CAT,
    requirements=("PW-PREFACE-6",),
)
async def version_range_up(ctx: CaseContext) -> None:
    """A future client offering a range that includes 1 still talks to a v1 server."""
    await _chooses_version_1(ctx, encode_preface(1, 255))


@case(
    "EX-05",
    "Offered versions 0..1: the server picks 1",
    category=CAT,
    requirements=("PW-PREFACE-6",),
)
async def version_range_low(ctx: CaseContext) -> None:
    """The range's bounds are inclusive."""
    await _chooses_version_1(ctx, encode_preface(0, 1))


@case(
    "EX-06",
    "An ignorable frame of 64 KiB is skipped without breaking the stream",
    category=CAT,
    requirements=("PW-FRAME-8",),
    level="SHOULD",
)
async def large_ignorable(ctx: CaseContext) -> None:
    """Skipping is by length, byte-exact, even across many TCP segments."""
    conn = await ctx.connect()
    assert conn.welcome is not None
    size = min(65536, conn.welcome.max_frame_size)
    await conn.send_raw(unknown(0x9F, 0, os.urandom(size)) + codec.encode_frame(F.Ping(6)))
    await conn.expect_type(F.Pong, opaque=6)
