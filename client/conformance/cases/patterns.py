"""patterns: pattern subscriptions (SPEC.md §6.7, §9.4): which topics a pattern matches,
per-topic sequences and contiguity, one credit pool, one outcome per resumed topic, the
reserved characters, and the request errors of a pattern SUBSCRIBE."""

from __future__ import annotations

from pushwire.client.conformance.registry import case
from pushwire.client.conformance.runner import CaseContext
from pushwire.client.conformance.wire import CaseFailed, WireConnection, describe
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import AT_LEAST_ONCE, PATTERN, FrameType, Outcome, SinceKind

CAT = "patterns"


async def _subscribe_pattern(
    conn: WireConnection,
    pattern: str,
    *,
    sub_id: int = 1,
    credit: int = 0xFFFF_FFFF,
    since: SinceKind = SinceKind.NEW,
    positions: tuple[F.TopicPosition, ...] = (),
) -> F.Subscribed:
    await conn.send(F.Subscribe(sub_id, pattern, since, initial_credit=credit, positions=positions))
    reply = await conn.next_frame()
    want = (sub_id, Outcome.NEW, 0, 0, 0, None)
    if (
        not isinstance(reply, F.Subscribed)
        or (
            reply.sub_id,
            reply.outcome,
            reply.epoch,
            reply.start_seq,
            reply.head_seq,
            reply.topic,
        )
        != want
    ):
        raise CaseFailed(
            f"SUBSCRIBED(sub_id={sub_id}, NEW, 0, 0, 0) for {pattern!r}", describe(reply)
        )
    return reply


async def _pushes(
    conn: WireConnection, count: int, timeout: float | None = None
) -> list[tuple[str, int, int, bytes]]:
    """The next ``count`` messages as (topic, epoch, seq, payload), batches expanded."""
    out: list[tuple[str, int, int, bytes]] = []
    while len(out) < count:
        obs = await conn.next_frame(timeout)
        if isinstance(obs, F.Message):
            out.append((obs.topic, obs.epoch, obs.seq, obs.payload))
        elif isinstance(obs, F.MessageBatch):
            out += [
                (obs.topic, obs.epoch, obs.base_seq + i, r.payload)
                for i, r in enumerate(obs.records)
            ]
        else:
            have = f"after {len(out)} of {count} messages: " if out else ""
            raise CaseFailed(f"{count} messages", have + describe(obs))
    return out


def _per_topic(pushes: list[tuple[str, int, int, bytes]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for topic, _, seq, _ in pushes:
        out.setdefault(topic, []).append(seq)
    return out


@case(
    "PT-01",
    "A '+' pattern gets every topic one segment below, each with its own sequences",
    category=CAT,
    requirements=("PW-SUB-29", "PW-ORDER-15", "PW-TOPIC-9"),
)
async def one_segment(ctx: CaseContext) -> None:
    """'<base>/+' receives '<base>/eu' and '<base>/us' (created after the SUBSCRIBED), each
    from sequence 1 and in order, and nothing of '<base>/eu/deep' or '<base>x/eu'."""
    base = ctx.topic("orders")
    sub = await ctx.connect()
    await _subscribe_pattern(sub, f"{base}/+")
    for topic in (f"{base}/eu", f"{base}/us", f"{base}/eu/deep", f"{base}x/eu"):
        await ctx.publish(topic, [b"1", b"2"])
    got = await _pushes(sub, 4)
    want = {f"{base}/eu": [1, 2], f"{base}/us": [1, 2]}
    if _per_topic(got) != want:
        raise CaseFailed(repr(want), repr(_per_topic(got)))
    await sub.expect_silence(ctx.quiet, "nothing of topics the pattern does not match")


@case(
    "PT-02",
    "A trailing '#' matches the parent and every topic below it",
    category=CAT,
    requirements=("PW-TOPIC-9", "PW-SUB-29"),
)
async def rest(ctx: CaseContext) -> None:
    """'<base>/#' receives '<base>', '<base>/a' and '<base>/a/b', not '<base>x'."""
    base = ctx.topic("tree")
    sub = await ctx.connect()
    await _subscribe_pattern(sub, f"{base}/#")
    for topic in (base, f"{base}/a", f"{base}/a/b", f"{base}x"):
        await ctx.publish(topic, [topic.encode()])
    got = sorted(topic for topic, *_ in await _pushes(sub, 3))
    if got != sorted([base, f"{base}/a", f"{base}/a/b"]):
        raise CaseFailed(f"{base}, {base}/a, {base}/a/b", ", ".join(got))
    await sub.expect_silence(ctx.quiet, f"nothing of {base}x")


@case(
    "PT-03",
    "Resuming a pattern gives exactly one TOPIC_STATUS per position, in order, before pushes",
    category=CAT,
    requirements=("PW-RESUME-5", "PW-SUB-11"),
)
async def resume(ctx: CaseContext) -> None:
    """Positions: '<base>/a' after its first message (RECOVERED at 2, then message 2),
    '<base>/b' in an epoch the server never had (EPOCH_CHANGED)."""
    base = ctx.topic("resume")
    epoch, _ = await ctx.publish(f"{base}/a", [b"1", b"2"])
    sub = await ctx.connect()
    positions = (F.TopicPosition(f"{base}/a", epoch, 1), F.TopicPosition(f"{base}/b", epoch ^ 1, 7))
    await _subscribe_pattern(sub, f"{base}/+", positions=positions)
    statuses = []
    for _ in positions:
        obs = await sub.next_frame()
        if not isinstance(obs, F.Subscribed) or obs.topic is None:
            raise CaseFailed("SUBSCRIBED(TOPIC_STATUS) per position", describe(obs))
        statuses.append(obs)
    got = [(s.topic, Outcome(s.outcome).name, s.start_seq) for s in statuses]
    if got[0] != (f"{base}/a", "RECOVERED", 2) or got[1][:2] != (f"{base}/b", "EPOCH_CHANGED"):
        raise CaseFailed("a: RECOVERED at 2, then b: EPOCH_CHANGED", repr(got))
    pushes = await _pushes(sub, 1)
    if [(t, s) for t, _, s, _ in pushes] != [(f"{base}/a", 2)]:
        raise CaseFailed(f"message 2 of {base}/a", repr(pushes))


@case(
    "PT-04",
    "'+' and '#' are reserved in topic names: PUBLISH and a plain SUBSCRIBE get INVALID_TOPIC",
    category=CAT,
    requirements=("PW-TOPIC-7", "PW-TOPIC-2"),
)
async def reserved(ctx: CaseContext) -> None:
    """Publishing to '<base>/+' or '<base>/#', or subscribing to one without PATTERN, is
    refused with INVALID_TOPIC; the connection stays open."""
    base = ctx.topic("reserved")
    conn = await ctx.connect()
    for i, topic in enumerate((f"{base}/+", f"{base}/#"), 1):
        await conn.send(F.Publish(i, topic, b"x"))
        await conn.expect_request_error(ErrorCode.INVALID_TOPIC, FrameType.PUBLISH, i)
        await conn.send(F.Subscribe(i, topic, initial_credit=1))
        await conn.expect_request_error(ErrorCode.INVALID_TOPIC, FrameType.SUBSCRIBE, i)
    await conn.expect_still_open("INVALID_TOPIC for reserved characters")


@case(
    "PT-05",
    "Pattern SUBSCRIBE errors: a bad pattern, a position it does not match, since AFTER, overlap",
    category=CAT,
    requirements=("PW-SUB-22", "PW-SUB-23", "PW-SUB-26", "PW-TOPIC-8"),
)
async def refusals(ctx: CaseContext) -> None:
    """'<base>/#/x' is INVALID_TOPIC; a position on '<base>x/a' INVALID_TOPIC; since AFTER
    INVALID_POSITION; with '<base>/+' live, '<base>/#' and the name '<base>/a' are
    ALREADY_SUBSCRIBED."""
    base = ctx.topic("refuse")
    conn = await ctx.connect()
    bad = [
        (F.Subscribe(1, f"{base}/#/x", positions=()), ErrorCode.INVALID_TOPIC),
        (
            F.Subscribe(2, f"{base}/+", positions=(F.TopicPosition(f"{base}x/a", 1, 1),)),
            ErrorCode.INVALID_TOPIC,
        ),
        (F.Subscribe(3, f"{base}/+", SinceKind.AFTER, positions=()), ErrorCode.INVALID_POSITION),
    ]
    for frame, code in bad:
        await conn.send(frame)
        await conn.expect_request_error(code, FrameType.SUBSCRIBE, frame.sub_id)
    await _subscribe_pattern(conn, f"{base}/+", sub_id=4)
    for frame in (F.Subscribe(5, f"{base}/#", positions=()), F.Subscribe(6, f"{base}/a")):
        await conn.send(frame)
        await conn.expect_request_error(
            ErrorCode.ALREADY_SUBSCRIBED, FrameType.SUBSCRIBE, frame.sub_id
        )


@case(
    "PT-06",
    "One credit pool per pattern subscription, across its topics",
    category=CAT,
    requirements=("PW-FLOW-9",),
)
async def credit(ctx: CaseContext) -> None:
    """With credit 3, five messages on three topics: three arrive, then nothing until
    CREDIT(2), then the other two."""
    base = ctx.topic("credit")
    sub = await ctx.connect()
    await _subscribe_pattern(sub, f"{base}/+", credit=3)
    for topic in (f"{base}/a", f"{base}/b", f"{base}/c", f"{base}/a", f"{base}/b"):
        await ctx.publish(topic, [b"m"])
    await _pushes(sub, 3)
    await sub.expect_silence(ctx.quiet, "nothing beyond the pattern's credit")
    await sub.send(F.Credit(1, 2))
    await _pushes(sub, 2)


@case(
    "PT-07",
    "UNSUBSCRIBE of a pattern: UNSUBSCRIBED with zeros, then nothing of any of its topics",
    category=CAT,
    requirements=("PW-SUB-32", "PW-SUB-16"),
)
async def unsubscribe(ctx: CaseContext) -> None:
    """After UNSUBSCRIBED(sub_id, 0, 0), neither a known topic nor a new one is pushed."""
    base = ctx.topic("unsub")
    sub = await ctx.connect()
    await _subscribe_pattern(sub, f"{base}/+")
    await ctx.publish(f"{base}/a", [b"1"])
    await _pushes(sub, 1)
    await sub.send(F.Unsubscribe(1))
    await sub.expect_type(F.Unsubscribed, sub_id=1, epoch=0, last_seq=0)
    await ctx.publish(f"{base}/a", [b"2"])
    await ctx.publish(f"{base}/new", [b"1"])
    await sub.expect_silence(ctx.quiet, "nothing after UNSUBSCRIBED")


@case(
    "PT-08",
    "SUBSCRIBE with both PATTERN and AT_LEAST_ONCE is FIELD_OUT_OF_RANGE",
    category=CAT,
    requirements=("PW-SUB-28",),
)
async def at_least_once(ctx: CaseContext) -> None:
    """An ACK names one sequence and a pattern has one per topic: the flag pair is out of
    range at decode time, a connection error."""
    conn = await ctx.connect()
    frame = F.Subscribe(1, f"{ctx.topic('alo')}/+", initial_credit=1, positions=())
    data = codec.encode_raw_frame(
        FrameType.SUBSCRIBE, PATTERN | AT_LEAST_ONCE, codec.encode_payload(frame)
    )
    await conn.send_raw(data)
    await conn.expect_error_close(ErrorCode.FIELD_OUT_OF_RANGE)
