"""framing-limits: frame boundaries over a byte stream and the max_frame_size limits in both
directions (SPEC.md §3)."""

from __future__ import annotations

from pushwire.client.conformance.registry import case
from pushwire.client.conformance.runner import CaseContext, check_seqs
from pushwire.client.conformance.wire import CaseFailed, describe
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import INITIAL_MAX_FRAME_SIZE, FrameType, SinceKind

CAT = "framing-limits"


def _header(length: int, type_: int, flags: int = 0) -> bytes:
    return codec.encode_header(length, type_, flags)


def _pushed(push: F.Message | F.MessageBatch) -> tuple[str, list[tuple[int, bytes]]]:
    """(topic, [(seq, payload)]) of a push; a batch of one and a MESSAGE are the same."""
    if isinstance(push, F.Message):
        return push.topic, [(push.seq, push.payload)]
    return push.topic, [(push.base_seq + i, r.payload) for i, r in enumerate(push.records)]


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
    body_overhead = codec.payload_size(codec.encode_frame(F.Publish(1, topic, b"")))
    payload = b"x" * (conn.welcome.max_frame_size - body_overhead)
    frame = codec.encode_frame(F.Publish(7, topic, payload))
    assert codec.payload_size(frame) == conn.welcome.max_frame_size
    await conn.send_raw(frame)
    await conn.expect_type(F.Puback, timeout=ctx.timeout * 3, request_id=7, count=1)


@case(
    "FL-03",
    "Frames split one byte per TCP segment are reassembled",
    category=CAT,
    requirements=("PW-FRAME-1",),
)
async def bytewise_frames(ctx: CaseContext) -> None:
    """PUBLISH, SUBSCRIBE(OLDEST) and PING, each byte in its own segment, get their answers:
    PUBACK, SUBSCRIBED followed by the message just published, and PONG. The PONG may
    arrive before the MESSAGE: PING is answered without waiting for queued pushes."""
    conn = await ctx.connect()
    topic = ctx.topic()
    data = codec.encode_frame(F.Publish(9, topic, b"split"))
    data += codec.encode_frame(
        F.Subscribe(sub_id=3, topic=topic, since_kind=SinceKind.OLDEST, initial_credit=10)
    )
    data += codec.encode_frame(F.Ping(77))
    await conn.send_bytewise(data)
    # SPEC orders SUBSCRIBED before the subscription's pushes (PW-ORDER-5) and nothing else
    # among these answers: PW-HB-2 lets PONG overtake the MESSAGE, and PUBACK and SUBSCRIBED
    # answer different requests. So the four answers are collected in any such order.
    waiting = {
        "PUBACK": "PUBACK(request_id=9, count=1)",
        "SUBSCRIBED": "SUBSCRIBED(sub_id=3)",
        "MESSAGE": f"1 messages on {topic!r}",
        "PONG": "PONG(opaque=77)",
    }
    start_seq = 0
    order: list[str] = []
    while waiting:
        obs = await conn.next_frame()
        got = ""
        if isinstance(obs, F.Puback) and (obs.request_id, obs.count) == (9, 1):
            got = "PUBACK"
        elif isinstance(obs, F.Subscribed) and obs.sub_id == 3:
            got, start_seq = "SUBSCRIBED", obs.start_seq
        elif isinstance(obs, F.Message | F.MessageBatch) and "SUBSCRIBED" not in waiting:
            got = "MESSAGE"
            if _pushed(obs) != (topic, [(start_seq, b"split")]):
                raise CaseFailed("the published message back", repr(obs))
        elif isinstance(obs, F.Pong) and obs.opaque == 77:
            got = "PONG"
        if got not in waiting:
            raise CaseFailed(", ".join(waiting.values()), describe(obs))
        del waiting[got]
        order.append(got)
    ctx.note("answers in the order " + ", ".join(order))


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
    got: list[int] = []
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
    overhead = codec.payload_size(codec.encode_frame(F.Publish(1, topic, b"")))
    size = min(INITIAL_MAX_FRAME_SIZE, pub.welcome.max_frame_size - overhead)
    _, seqs = await ctx.publish(topic, [b"small-1", b"L" * size, b"small-2"])
    check_seqs("PUBACKs", seqs, range(reply.start_seq, reply.start_seq + 3))
    gaps: list[F.Gap] = []
    await ctx.receive_seqs(sub, topic, [seqs[0], seqs[2]], "messages that fit", gaps=gaps)
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
    msgs = await ctx.receive_seqs(
        sub, topic, range(reply.start_seq, reply.start_seq + 6), "records"
    )
    if [m.payload for m in msgs] != payloads:
        raise CaseFailed("record payloads unchanged", "different payloads")


@case(
    "FL-07",
    "A batch record too large for the subscriber becomes GAP(FRAME_TOO_LARGE); the rest arrive",
    category=CAT,
    requirements=("PW-PUB-11", "PW-FRAME-9", "PW-ORDER-6"),
)
async def batch_record_too_large_for_subscriber(ctx: CaseContext) -> None:
    """A five-record batch whose middle record alone is bigger than the subscriber's 16384
    bytes (FL-06's records all fit): the server splits the batch, delivers records 1, 2, 4
    and 5, and covers record 3 with GAP(first=last=its seq, FRAME_TOO_LARGE) in its place
    in the sequence; dropping it silently is loss the client cannot detect (n/a when the
    server's own limit cannot take the record)."""
    from pushwire.client.conformance.wire import NotApplicable

    topic = ctx.topic()
    sub = await ctx.connect(max_frame_size=INITIAL_MAX_FRAME_SIZE)
    pub = await ctx.publisher()
    assert pub.welcome is not None
    big = b"L" * INITIAL_MAX_FRAME_SIZE  # its record alone exceeds any 16384-byte frame
    payloads = [b"a1", b"a2", big, b"b1", b"b2"]
    size = codec.payload_size(
        codec.encode_frame(F.PublishBatch(1, topic, tuple(F.Record(p) for p in payloads)))
    )
    if size > pub.welcome.max_frame_size:
        raise NotApplicable(f"the batch ({size} bytes) exceeds the server's max_frame_size")
    reply = await ctx.subscribe(sub, topic)
    _, seqs = await ctx.publish_batch(topic, payloads)
    check_seqs("PUBACK", seqs, range(reply.start_seq, reply.start_seq + 5))
    order: list[str] = []
    want_order = [f"m{seqs[0]}", f"m{seqs[1]}", f"gap{seqs[2]}", f"m{seqs[3]}", f"m{seqs[4]}"]
    while len(order) < len(want_order):
        obs = await sub.next_frame()
        if isinstance(obs, F.Message | F.MessageBatch) and obs.topic == topic:
            order.extend(f"m{seq}" for seq, _ in _pushed(obs)[1])
        elif isinstance(obs, F.Gap) and obs.reason == ErrorCode.FRAME_TOO_LARGE:
            order.extend(f"gap{s}" for s in range(obs.first, obs.last + 1))
        else:
            order.append(describe(obs))
            break
    if order != want_order:
        raise CaseFailed(
            f"records {seqs[0]}, {seqs[1]}, GAP(first=last={seqs[2]}, FRAME_TOO_LARGE), "
            f"records {seqs[3]}, {seqs[4]}",
            ", ".join(order),
        )
