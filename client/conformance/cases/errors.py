"""errors: decode-time errors with their exact codes and check order, role violations, and
request errors that must leave the connection up (SPEC.md §3.5, §8.7, §11)."""

from __future__ import annotations

from pushwire.client.conformance.registry import NEEDS_FORBIDDEN_TOPIC, case
from pushwire.client.conformance.runner import CaseContext
from pushwire.client.conformance.wire import (
    EOF,
    RESET,
    CaseFailed,
    NotApplicable,
    WireConnection,
    describe,
)
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import FrameType, SinceKind

CAT = "errors"


raw_frame = codec.encode_raw_frame
body = codec.encode_payload


async def _fatal(ctx: CaseContext, data: bytes, code: ErrorCode) -> None:
    conn = await ctx.connect()
    await conn.send_raw(data)
    await conn.expect_error_close(code)


async def _request_error(
    conn: WireConnection, code: ErrorCode, request_type: int, request_id: int
) -> None:
    """ERROR(code, request_type, request_id) and the connection still answers PING."""
    await conn.expect_request_error(code, request_type, request_id)
    await conn.expect_still_open("a request error")


@case(
    "ER-01",
    "Undefined flag bits on PING are RESERVED_BITS_SET",
    category=CAT,
    requirements=("PW-FRAME-3",),
)
async def reserved_bits_ping(ctx: CaseContext) -> None:
    """Flags a type does not define must be zero; a receiver that ignores them makes those
    bits unusable for future extensions."""
    await _fatal(ctx, raw_frame(FrameType.PING, 0x40, body(F.Ping(1))), ErrorCode.RESERVED_BITS_SET)


@case(
    "ER-02",
    "An undefined flag bit next to defined ones (SUBSCRIBE 0x04) is RESERVED_BITS_SET",
    category=CAT,
    requirements=("PW-FRAME-3",),
)
async def reserved_bits_subscribe(ctx: CaseContext) -> None:
    """SUBSCRIBE defines AT_LEAST_ONCE (0x01) and PATTERN (0x02) only."""
    frame = F.Subscribe(sub_id=1, topic=ctx.topic(), initial_credit=1)
    await _fatal(
        ctx, raw_frame(FrameType.SUBSCRIBE, 0x05, body(frame)), ErrorCode.RESERVED_BITS_SET
    )


@case(
    "ER-03",
    "An unknown frame type without the ignorable bit is UNKNOWN_FRAME_TYPE",
    category=CAT,
    requirements=("PW-FRAME-5",),
)
async def unknown_fatal_type(ctx: CaseContext) -> None:
    """Type 0x7E is not defined and bit 7 is clear: the sender demands understanding."""
    await _fatal(ctx, raw_frame(0x7E, 0, b"\x00\x01"), ErrorCode.UNKNOWN_FRAME_TYPE)


@case(
    "ER-04",
    "A truncated payload (PING with 7 bytes) is MALFORMED_FRAME",
    category=CAT,
    requirements=("PW-FRAME-4",),
)
async def truncated_payload(ctx: CaseContext) -> None:
    """The declared length must match the layout exactly."""
    await _fatal(ctx, raw_frame(FrameType.PING, 0, b"\x00" * 7), ErrorCode.MALFORMED_FRAME)


@case(
    "ER-05",
    "Trailing bytes after a payload (CREDIT + 1 byte) are MALFORMED_FRAME",
    category=CAT,
    requirements=("PW-FRAME-4",),
)
async def trailing_bytes(ctx: CaseContext) -> None:
    """Extra bytes inside the declared length are not silently ignored."""
    await _fatal(
        ctx,
        raw_frame(FrameType.CREDIT, 0, body(F.Credit(1, 1)) + b"\x00"),
        ErrorCode.MALFORMED_FRAME,
    )


@case(
    "ER-06",
    "A topic that is not UTF-8 is INVALID_UTF8",
    category=CAT,
    requirements=("PW-FRAME-6",),
)
async def invalid_utf8(ctx: CaseContext) -> None:
    """Text fields are UTF-8; 0xFF never is."""
    good = body(F.Subscribe(sub_id=1, topic="ab", initial_credit=1))
    bad = good.replace(b"\x02ab", b"\x02\xff\xfe")
    await _fatal(ctx, raw_frame(FrameType.SUBSCRIBE, 0, bad), ErrorCode.INVALID_UTF8)


@case(
    "ER-07",
    "An undefined enumeration value (SUBSCRIBE since_kind 9) is FIELD_OUT_OF_RANGE",
    category=CAT,
    requirements=("PW-FRAME-7",),
)
async def enum_out_of_range(ctx: CaseContext) -> None:
    """since_kind 9 has no layout: the bytes after it are still consumed as the default
    layout (only a topic), then the range check fails."""
    bad = F.Subscribe(sub_id=1, topic="ab", since_kind=9, initial_credit=1)
    await _fatal(ctx, codec.encode_frame(bad), ErrorCode.FIELD_OUT_OF_RANGE)


@case(
    "ER-08",
    "CREDIT with increment 0 is FIELD_OUT_OF_RANGE",
    category=CAT,
    requirements=("PW-FRAME-7",),
)
async def credit_zero(ctx: CaseContext) -> None:
    """An increment of 0 means nothing and is refused."""
    await _fatal(
        ctx,
        codec.encode_frame(F.Credit(1, 0)),
        ErrorCode.FIELD_OUT_OF_RANGE,
    )


@case(
    "ER-09",
    "Check order: header rules before payload (reserved bits + truncated payload)",
    category=CAT,
    requirements=("PW-FRAME-14",),
)
async def order_header_first(ctx: CaseContext) -> None:
    """Every implementation reports the same code for the same bytes: the header is judged
    before the payload is parsed."""
    await _fatal(ctx, raw_frame(FrameType.PING, 0x80, b"\x00"), ErrorCode.RESERVED_BITS_SET)


@case(
    "ER-10",
    "Check order: payload parsing before ranges (since_kind 9 + bad UTF-8 topic)",
    category=CAT,
    requirements=("PW-FRAME-14",),
)
async def order_payload_before_range(ctx: CaseContext) -> None:
    """A frame broken at two levels reports the earlier step: INVALID_UTF8, not
    FIELD_OUT_OF_RANGE."""
    good = body(F.Subscribe(sub_id=1, topic="ab", since_kind=9, initial_credit=1))
    bad = good.replace(b"\x02ab", b"\x02\xc3\x28")  # the topic's str8, not UTF-8
    await _fatal(ctx, raw_frame(FrameType.SUBSCRIBE, 0, bad), ErrorCode.INVALID_UTF8)


@case(
    "ER-11",
    "A frame type only servers send (MESSAGE) from a client is UNEXPECTED_FRAME",
    category=CAT,
    requirements=("PW-FRAME-13",),
)
async def wrong_direction(ctx: CaseContext) -> None:
    """Roles are fixed: a server that accepted a MESSAGE would let a client forge pushes."""
    await _fatal(
        ctx, codec.encode_frame(F.Message(1, 1, ctx.topic(), b"forged")), ErrorCode.UNEXPECTED_FRAME
    )


@case(
    "ER-12",
    "WELCOME from a client after the handshake is UNEXPECTED_FRAME",
    category=CAT,
    requirements=("PW-FRAME-13",),
)
async def welcome_from_client(ctx: CaseContext) -> None:
    """Same rule for a handshake frame of the other role."""
    await _fatal(
        ctx, codec.encode_frame(F.Welcome(1, 1000, 16384, 1, 1, 0, "x")), ErrorCode.UNEXPECTED_FRAME
    )


@case(
    "ER-13",
    "An invalid topic in SUBSCRIBE is a request error; the connection stays up",
    category=CAT,
    requirements=("PW-TOPIC-1", "PW-TOPIC-2", "PW-ERR-4", "PW-ERR-5"),
)
async def invalid_topic_subscribe(ctx: CaseContext) -> None:
    """'a//b' has an empty segment: ERROR(INVALID_TOPIC, 0x10, sub_id), then PING works."""
    conn = await ctx.connect()
    await conn.send(F.Subscribe(sub_id=41, topic="a//b", initial_credit=1))
    await _request_error(conn, ErrorCode.INVALID_TOPIC, FrameType.SUBSCRIBE, 41)


@case(
    "ER-14",
    "Topic syntax: leading '/', trailing '/', control char and DEL are INVALID_TOPIC",
    category=CAT,
    requirements=("PW-TOPIC-1", "PW-TOPIC-2"),
)
async def invalid_topic_variants(ctx: CaseContext) -> None:
    """Every rule of the topic syntax is enforced by the server, not only by clients."""
    conn = await ctx.connect()
    base = ctx.topic()
    for i, bad in enumerate(("/" + base, base + "/", base + "\x01x", base + "\x7f")):
        await conn.send(F.Subscribe(sub_id=50 + i, topic=bad, initial_credit=1))
        await _request_error(conn, ErrorCode.INVALID_TOPIC, FrameType.SUBSCRIBE, 50 + i)


@case(
    "ER-15",
    "An invalid topic in PUBLISH is ERROR(INVALID_TOPIC, 0x22, request_id)",
    category=CAT,
    requirements=("PW-TOPIC-2", "PW-PUB-3", "PW-PUB-4", "PW-PUB-6"),
)
async def invalid_topic_publish(ctx: CaseContext) -> None:
    """Publishing is checked the same way as subscribing, for PUBLISH_BATCH too, and a
    fire-and-forget publish (request_id 0) still hears about its failure."""
    conn = await ctx.connect()
    await conn.send(F.Publish(17, "bad//topic", b"x"))
    await _request_error(conn, ErrorCode.INVALID_TOPIC, FrameType.PUBLISH, 17)
    await conn.send(F.PublishBatch(18, "/bad", (F.Record(b"x"),)))
    await _request_error(conn, ErrorCode.INVALID_TOPIC, FrameType.PUBLISH_BATCH, 18)
    # request_id 0 wants no PUBACK, but a failure is still reported (with request_id 0)
    await conn.send(F.Publish(0, "bad/", b"x"))
    await _request_error(conn, ErrorCode.INVALID_TOPIC, FrameType.PUBLISH, 0)


@case(
    "ER-16",
    "UNSUBSCRIBE of an unknown sub_id is ERROR(UNKNOWN_SUBSCRIPTION, 0x12, sub_id)",
    category=CAT,
    requirements=("PW-SUB-15",),
)
async def unsubscribe_unknown(ctx: CaseContext) -> None:
    """A request error, the connection stays."""
    conn = await ctx.connect()
    await conn.send(F.Unsubscribe(999))
    await _request_error(conn, ErrorCode.UNKNOWN_SUBSCRIPTION, FrameType.UNSUBSCRIBE, 999)


@case(
    "ER-17",
    "A sub_id already in use is ERROR(ALREADY_SUBSCRIBED)",
    category=CAT,
    requirements=("PW-SUB-3",),
)
async def duplicate_sub_id(ctx: CaseContext) -> None:
    """sub_ids are unique among a connection's active subscriptions."""
    conn = await ctx.connect()
    await ctx.subscribe(conn, ctx.topic("a"), sub_id=5)
    await conn.send(F.Subscribe(sub_id=5, topic=ctx.topic("b"), initial_credit=1))
    await _request_error(conn, ErrorCode.ALREADY_SUBSCRIBED, FrameType.SUBSCRIBE, 5)


@case(
    "ER-18",
    "A second subscription to the same topic on one connection is ALREADY_SUBSCRIBED",
    category=CAT,
    requirements=("PW-SUB-3",),
)
async def duplicate_topic(ctx: CaseContext) -> None:
    """MESSAGE carries the topic, not the sub_id, so one topic maps to one subscription."""
    conn = await ctx.connect()
    topic = ctx.topic()
    await ctx.subscribe(conn, topic, sub_id=5)
    await conn.send(F.Subscribe(sub_id=6, topic=topic, initial_credit=1))
    await _request_error(conn, ErrorCode.ALREADY_SUBSCRIBED, FrameType.SUBSCRIBE, 6)


@case(
    "ER-19",
    "One subscription more than WELCOME.max_subscriptions is TOO_MANY_SUBSCRIPTIONS",
    category=CAT,
    requirements=("PW-SUB-4",),
)
async def too_many_subscriptions(ctx: CaseContext) -> None:
    """The limit a server announces is the limit it enforces (n/a above 20000)."""
    conn = await ctx.connect()
    assert conn.welcome is not None
    limit = conn.welcome.max_subscriptions
    if limit > 20_000:
        raise NotApplicable(f"max_subscriptions is {limit}; the kit tries at most 20000")
    base = ctx.topic()
    subs = [
        F.Subscribe(sub_id=i + 1, topic=f"{base}/{i}", initial_credit=0) for i in range(limit + 1)
    ]
    for start in range(0, len(subs), 500):
        await conn.send(*subs[start : start + 500])
    for i in range(limit):
        obs = await conn.next_frame()
        if not isinstance(obs, F.Subscribed):
            raise CaseFailed(f"SUBSCRIBED for subscription {i + 1} of {limit}", describe(obs))
    await _request_error(conn, ErrorCode.TOO_MANY_SUBSCRIPTIONS, FrameType.SUBSCRIBE, limit + 1)


@case(
    "ER-20",
    "A connection-level ERROR from the client makes the server close",
    category=CAT,
    requirements=("PW-ERR-3",),
)
async def client_error_closes(ctx: CaseContext) -> None:
    """After ERROR(code, 0, 0) the sender closes; the receiver closes too rather than
    keeping a half-dead connection."""
    conn = await ctx.connect()
    await conn.send(F.Error(ErrorCode.INTERNAL_ERROR, 0, 0, "conformance: closing"))
    await conn.expect_close()


@case(
    "ER-21",
    "A connection-level ERROR carries request_type 0 and request_id 0",
    category=CAT,
    requirements=("PW-ERR-1", "PW-ERR-2"),
)
async def connection_error_shape(ctx: CaseContext) -> None:
    """Checked on a decode error triggered after a subscription exists, so a server cannot
    get away with attributing it to a request."""
    conn = await ctx.connect()
    await ctx.subscribe(conn, ctx.topic(), sub_id=3)
    await conn.send_raw(raw_frame(FrameType.ACK, 0, b"\x00\x00\x00\x03"))  # short ACK
    await conn.expect_error_close(ErrorCode.MALFORMED_FRAME)


@case(
    "ER-22",
    "A client ERROR with an unknown code is still a connection error, not a decode error",
    category=CAT,
    requirements=("PW-ERR-6", "PW-ERR-3"),
)
async def unknown_code(ctx: CaseContext) -> None:
    """Codes are extensible: 0x7777 is unknown, request_type 0 makes it connection-level,
    so the server closes, without complaining about the code."""
    conn = await ctx.connect()
    await conn.send(F.Error(0x7777, 0, 0, "from the future"))
    obs = await conn.next_frame()
    if obs not in (EOF, RESET):
        raise CaseFailed("the server to close, without an ERROR of its own", describe(obs))


@case(
    "ER-23",
    "SUBSCRIBE checks run in the specified order (INVALID_TOPIC before ALREADY_SUBSCRIBED...)",
    category=CAT,
    requirements=("PW-SUB-6",),
)
async def subscribe_check_order(ctx: CaseContext) -> None:
    """Two requests each breaking two rules: an invalid topic with a sub_id in use is
    INVALID_TOPIC; an AFTER beyond the head on an already-subscribed topic is
    ALREADY_SUBSCRIBED, not INVALID_POSITION."""
    topic = ctx.topic()
    epoch, _ = await ctx.publish(topic, [b"1"])
    conn = await ctx.connect()
    await ctx.subscribe(conn, topic, sub_id=1)
    await conn.send(F.Subscribe(sub_id=1, topic="a//b", initial_credit=1))
    await _request_error(conn, ErrorCode.INVALID_TOPIC, FrameType.SUBSCRIBE, 1)
    await conn.send(
        F.Subscribe(
            sub_id=2, topic=topic, since_kind=SinceKind.AFTER, since_epoch=epoch, since_seq=99
        )
    )
    await _request_error(conn, ErrorCode.ALREADY_SUBSCRIBED, FrameType.SUBSCRIBE, 2)


@case(
    "ER-24",
    "A stream that ends inside a frame is MALFORMED_FRAME",
    category=CAT,
    requirements=("PW-FRAME-4",),
)
async def eof_inside_frame(ctx: CaseContext) -> None:
    """Half a PUBLISH, then EOF: the server reports MALFORMED_FRAME (it can still write) and
    closes; it must not publish the fragment or wait forever."""
    conn = await ctx.connect()
    data = codec.encode_frame(F.Publish(1, ctx.topic(), b"cut short"))
    await conn.send_raw(data[: len(data) // 2])
    await conn.send_eof()
    await conn.expect_error_close(ErrorCode.MALFORMED_FRAME)


@case(
    "ER-25",
    "A topic the identity may not use is FORBIDDEN for SUBSCRIBE and for publishing",
    category=CAT,
    requirements=("PW-SUB-20", "PW-SEC-3", "PW-PUB-6"),
    needs=(NEEDS_FORBIDDEN_TOPIC,),
)
async def forbidden(ctx: CaseContext) -> None:
    """Authorisation is per topic and per request, and a refusal is a request error."""
    topic = ctx.target.forbidden_topic
    assert topic
    conn = await ctx.connect()
    await conn.send(F.Subscribe(sub_id=3, topic=topic, initial_credit=1))
    await _request_error(conn, ErrorCode.FORBIDDEN, FrameType.SUBSCRIBE, 3)
    await conn.send(F.Publish(4, topic, b"x"))
    await _request_error(conn, ErrorCode.FORBIDDEN, FrameType.PUBLISH, 4)


@case(
    "ER-26",
    "A publish on a reserved topic ($ first segment) is FORBIDDEN",
    category=CAT,
    requirements=("PW-TOPIC-6", "PW-ERR-4"),
)
async def reserved_topic(ctx: CaseContext) -> None:
    """Topics whose first segment starts with ``$`` belong to the server; a client's
    PUBLISH and PUBLISH_BATCH there are refused with FORBIDDEN (a request error), unless
    the server documents the topic as writable, which no server does for this made-up
    name. The connection stays usable."""
    topic = "$conformance-reserved/" + ctx.topic().replace("/", "-")
    conn = await ctx.connect()
    await conn.send(F.Publish(5, topic, b"x"))
    await _request_error(conn, ErrorCode.FORBIDDEN, FrameType.PUBLISH, 5)
    await conn.send(F.PublishBatch(6, topic, (F.Record(b"a", None),)))
    await _request_error(conn, ErrorCode.FORBIDDEN, FrameType.PUBLISH_BATCH, 6)
    await conn.roundtrip()


@case(
    "ER-27",
    "At the subscription limit, a reused sub_id or topic is ALREADY_SUBSCRIBED, not TOO_MANY",
    category=CAT,
    requirements=("PW-SUB-6", "PW-SUB-3", "PW-SUB-4"),
)
async def already_subscribed_before_limit(ctx: CaseContext) -> None:
    """§6.1 checks ALREADY_SUBSCRIBED (step 3) before TOO_MANY_SUBSCRIPTIONS (step 4): on
    a connection holding max_subscriptions subscriptions, a SUBSCRIBE reusing a sub_id and
    one reusing a topic are each ALREADY_SUBSCRIBED; only a new sub_id on a new topic is
    TOO_MANY_SUBSCRIPTIONS (n/a above 20000). A client that retries on TOO_MANY would
    otherwise never learn that it is reusing its own sub_id."""
    conn = await ctx.connect()
    assert conn.welcome is not None
    limit = conn.welcome.max_subscriptions
    if limit > 20_000:
        raise NotApplicable(f"max_subscriptions is {limit}; the kit tries at most 20000")
    base = ctx.topic()
    subs = [F.Subscribe(sub_id=i + 1, topic=f"{base}/{i}", initial_credit=0) for i in range(limit)]
    for start in range(0, len(subs), 500):
        await conn.send(*subs[start : start + 500])
    for i in range(limit):
        obs = await conn.next_frame()
        if not isinstance(obs, F.Subscribed):
            raise CaseFailed(f"SUBSCRIBED for subscription {i + 1} of {limit}", describe(obs))
    await conn.send(F.Subscribe(sub_id=1, topic=f"{base}/new", initial_credit=0))
    await _request_error(conn, ErrorCode.ALREADY_SUBSCRIBED, FrameType.SUBSCRIBE, 1)
    await conn.send(F.Subscribe(sub_id=limit + 1, topic=f"{base}/0", initial_credit=0))
    await _request_error(conn, ErrorCode.ALREADY_SUBSCRIBED, FrameType.SUBSCRIBE, limit + 1)
    await conn.send(F.Subscribe(sub_id=limit + 2, topic=f"{base}/new", initial_credit=0))
    await _request_error(conn, ErrorCode.TOO_MANY_SUBSCRIPTIONS, FrameType.SUBSCRIBE, limit + 2)


@case(
    "ER-28",
    "FORBIDDEN looks the same whether the forbidden topic exists or not",
    category=CAT,
    requirements=("PW-SEC-4", "PW-SUB-20"),
    needs=(NEEDS_FORBIDDEN_TOPIC,),
)
async def forbidden_reveals_nothing(ctx: CaseContext) -> None:
    """Authorisation comes before a topic is looked up or created (§12): SUBSCRIBE and
    PUBLISH on --forbidden-topic (which may exist) and on a name below it that no one has
    used get the same ERROR(FORBIDDEN) with the same message once the topic names are
    taken out, and SUBSCRIBE(OLDEST) cannot tell them apart either (n/a when the made-up
    name is not forbidden too)."""
    topic = ctx.target.forbidden_topic
    assert topic
    fresh = f"{topic.rstrip('/')}/never-used-{ctx.target.topic_prefix.rsplit('/', 1)[-1]}"
    conn = await ctx.connect()
    answers: dict[str, list[str]] = {}
    for name in (topic, fresh):
        got = answers[name] = []
        rid = ctx.request_id()
        await conn.send(
            F.Subscribe(sub_id=rid, topic=name, since_kind=SinceKind.OLDEST, initial_credit=0),
            F.Publish(rid, name, b"x"),
        )
        for _ in range(2):
            obs = await conn.next_frame()
            if not isinstance(obs, F.Error):
                if name == fresh and isinstance(obs, F.Subscribed | F.Puback):
                    raise NotApplicable(f"{fresh!r} is not forbidden to the token")
                raise CaseFailed(f"ERROR(FORBIDDEN) for {name!r}", describe(obs))
            if obs.code != ErrorCode.FORBIDDEN or obs.request_id != rid:
                raise CaseFailed(f"ERROR(FORBIDDEN, request_id={rid}) for {name!r}", describe(obs))
            got.append(f"0x{obs.request_type:02x} {obs.message.replace(name, '<topic>')!r}")
    if sorted(answers[topic]) != sorted(answers[fresh]):
        raise CaseFailed(
            "the same FORBIDDEN answers for both topics",
            f"{topic!r}: {answers[topic]}; unused name: {answers[fresh]}",
        )
