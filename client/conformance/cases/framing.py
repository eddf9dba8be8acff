"""framing-limits: frame boundaries over a byte stream and the max_frame_size limits in both
directions (SPEC.md §3)."""

from __future__ import annotations

from pushwire.client.conformance.model import case
from pushwire.client.conformance.runner import CaseContext, check_seqs
from pushwire.client.conformance.wire import CaseFailed, describe
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import HEADER_SIZE, INITIAL_MAX_FRAME_SIZE, FrameType

CAT = "framing-limits"


def _header(length: int, type_: int, flags: int = 0) -> bytes:
    return length.to_bytes(4, "big") + bytes((type_, flags))


@case(
    "FL-01",
    "A header declaring more than WELCOME.max_frame_size is FRAME_TOO_LARGE, from the header alone",
    category=CAT,
    requirements=("PW-FRAME-2", "PW-FRAME-10"),
)
async def oversized_from_header(ctx: CaseContext) -> None:
    """Only the 6 header bytes are sent: a server that waits for the payload before judging
    the length can be made to buffer 4 GiB; it must answer ERROR(FRAME_TOO_LARGE) now."""
    conn = await ctx.connect()
    assert conn.welcome is not None
    await conn.send_raw(_header(conn.welcome.max_frame_size + 1, FrameType.PUBLISH))
    await conn.expect_error_close(ErrorCode.FRAME_TOO_LARGE)


@case(
    "FL-02",
    "A frame of exactly WELCOME.max_frame_size is accepted",
    category=CAT,
    requirements=("PW-FRAME-10", "PW-HS-10"),
)
async def frame_at_limit(ctx: CaseContext) -> None:
    """The limit is inclusive: a PUBLISH whose payload makes the frame body exactly
    max_frame_size bytes is published (PUBACK)."""
    conn = await ctx.connect()
    assert conn.welcome is not None
    topic = ctx.topic()
    body_overhead = len(codec.encode_frame(F.Publish(1, topic, b""))) - HEADER_SIZE
    payload = b"x" * (conn.welcome.max_frame_size - body_overhead)
    frame = codec.encode_frame(F.Publish(7, topic, payload))
    assert len(frame) - HEADER_SIZE == conn.welcome.max_frame_size
    await conn.send_raw(frame)
    await conn.expect_type(F.Puback, timeout=ctx.timeout * 3, request_id=7, count=1)


@case(
    "FL-03",
    "Frames split one byte per TCP segment are reassembled",
    category=CAT,
    requirements=("PW-FRAME-1",),
)
async def bytewise_frames(ctx: CaseContext) -> None:
    """PUBLISH, SUBSCRIBE and PING, each byte in its own segment, get their answers."""
    conn = await ctx.connect()
    topic = ctx.topic()
    data = codec.encode_frame(F.Publish(9, topic, b"split"))
    data += codec.encode_frame(F.Subscribe(sub_id=3, topic=topic, since_kind=3, initial_credit=10))
    data += codec.encode_frame(F.Ping(77))
    await conn.send_bytewise(data)
    await conn.expect_type(F.Puback, request_id=9, count=1)
    sub = await conn.expect_type(F.Subscribed, sub_id=3)
    msgs = await ctx.receive(conn, topic, 1)
    if msgs[0].payload != b"split" or msgs[0].seq != sub.start_seq:  # type: ignore[attr-defined]
        raise CaseFailed("the published message back", repr(msgs[0]))
    await conn.expect_type(F.Pong, opaque=77)


@case(
    "FL-04",
    "Many frames in one TCP segment are all answered, in order",
    category=CAT,
    requirements=("PW-FRAME-1", "PW-HB-2"),
)
async def coalesced_frames(ctx: CaseContext) -> None:
    """200 PINGs in a single write produce 200 PONGs with the same opaques in the same
    order: the server must not drop what follows the first frame of a read."""
    conn = await ctx.connect()
    opaques = [(i * 0x9E3779B97F4A7C15) & 0xFFFF_FFFF_FFFF_FFFF for i in range(200)]
    await conn.send(*(F.Ping(o) for o in opaques))
    got = []
    for _ in opaques:
        obs = await conn.next_frame()
        if not isinstance(obs, F.Pong):
            raise CaseFailed(f"{len(opaques)} PONGs", f"after {len(got)}: {describe(obs)}")
        got.append(obs.opaque)
    if got != opaques:
        raise CaseFailed("PONG opaques in PING order", "a different order or values")


@case(
    "FL-05",
    "A push larger than the subscriber's HELLO.max_frame_size becomes GAP(FRAME_TOO_LARGE)",
    category=CAT,
    requirements=("PW-FRAME-9", "PW-PUB-11"),
)
async def push_too_large_for_subscriber(ctx: CaseContext) -> None:
    """A subscriber that advertised 16384 bytes must never receive a larger frame; the
    message it cannot take is not silently dropped either: GAP(first=last=seq,
    FRAME_TOO_LARGE), then the next message as usual."""
    topic = ctx.topic()
    sub = await ctx.connect(max_frame_size=INITIAL_MAX_FRAME_SIZE)
    pub = await ctx.publisher()
    assert pub.welcome is not None
    reply = await ctx.subscribe(sub, topic)
    overhead = len(codec.encode_frame(F.Publish(1, topic, b""))) - HEADER_SIZE
    size = min(INITIAL_MAX_FRAME_SIZE, pub.welcome.max_frame_size - overhead)
    _, seqs = await ctx.publish(topic, [b"small-1", b"L" * size, b"small-2"])
    check_seqs("PUBACKs", seqs, range(reply.start_seq, reply.start_seq + 3))
    gaps: list[F.Gap] = []
    msgs = await ctx.receive(sub, topic, 2, gaps=gaps)
    check_seqs("messages that fit", [m.seq for m in msgs], [seqs[0], seqs[2]])
    want = f"GAP(sub_id=1, first={seqs[1]}, last={seqs[1]}, reason=FRAME_TOO_LARGE)"
    if len(gaps) != 1 or (gaps[0].first, gaps[0].last, gaps[0].reason) != (
        seqs[1],
        seqs[1],
        ErrorCode.FRAME_TOO_LARGE,
    ):
        raise CaseFailed(want, ", ".join(describe(g) for g in gaps) or "no GAP frame")


@case(
    "FL-06",
    "A batch too large for the subscriber is split; every record that fits arrives",
    category=CAT,
    requirements=("PW-FRAME-9", "PW-FLOW-3"),
)
async def batch_split_for_subscriber(ctx: CaseContext) -> None:
    """Six 4000-byte records fit a 16384-byte subscriber only three or so at a time: the
    server re-frames the batch instead of dropping it."""
    topic = ctx.topic()
    sub = await ctx.connect(max_frame_size=INITIAL_MAX_FRAME_SIZE)
    reply = await ctx.subscribe(sub, topic)
    payloads = [bytes([65 + i]) * 4000 for i in range(6)]
    await ctx.publish_batch(topic, payloads)
    msgs = await ctx.receive(sub, topic, len(payloads))
    check_seqs("records", [m.seq for m in msgs], range(reply.start_seq, reply.start_seq + 6))
    if [m.payload for m in msgs] != payloads:
        raise CaseFailed("record payloads unchanged", "different payloads")
