"""patterns: pattern subscriptions (SPEC.md §6.7, §9.4): which topics a pattern matches,
per-topic sequences and contiguity, one credit pool, one outcome per resumed topic, the
reserved characters, the request errors of a pattern SUBSCRIBE, and a topic's skip or
restart told per topic."""

from __future__ import annotations

from pushwire.client.conformance.registry import NEEDS_RESET, case
from pushwire.client.conformance.runner import CaseContext, check_seqs
from pushwire.client.conformance.wire import CaseFailed, NotApplicable, WireConnection, describe
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import (
    AT_LEAST_ONCE,
    PATTERN,
    FrameType,
    Outcome,
    SinceKind,
    SlowConsumerPolicy,
)

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


async def _told_per_topic(
    conn: WireConnection, want: dict[str, int]
) -> tuple[list[F.Subscribed], dict[str, list[tuple[int, int]]]]:
    """Frames until ``want[topic]`` messages of each topic arrived: the TOPIC_STATUS replies
    seen on the way, and each topic's (epoch, seq) in arrival order. A GAP frame fails at
    once (it names no topic, so it cannot be a pattern's [PW-SUB-30]), as does a
    TOPIC_STATUS after a push of its topic or any other frame."""
    statuses: list[F.Subscribed] = []
    got: dict[str, list[tuple[int, int]]] = {t: [] for t in want}
    while any(len(got[t]) < n for t, n in want.items()):
        obs = await conn.next_frame()
        if isinstance(obs, F.Gap):
            raise CaseFailed(
                "SUBSCRIBED(TOPIC_STATUS) for a pattern's topic, never a GAP frame",
                describe(obs),
            )
        if isinstance(obs, F.Subscribed) and obs.sub_id == 1 and obs.topic in got:
            if got[obs.topic]:
                raise CaseFailed(
                    f"the TOPIC_STATUS of {obs.topic!r} before its next push",
                    f"{describe(obs)} after {len(got[obs.topic])} pushes of it",
                )
            statuses.append(obs)
        elif isinstance(obs, F.Message) and obs.topic in got:
            got[obs.topic].append((obs.epoch, obs.seq))
        elif isinstance(obs, F.MessageBatch) and obs.topic in got:
            got[obs.topic] += [(obs.epoch, obs.base_seq + i) for i in range(len(obs.records))]
        else:
            raise CaseFailed(f"messages of {', '.join(sorted(want))}", describe(obs))
    return statuses, got


@case(
    "PT-09",
    "A pattern's slow-consumer skip is SUBSCRIBED(TOPIC_STATUS, GAP) for that topic, never GAP",
    category=CAT,
    requirements=("PW-SUB-30", "PW-ORDER-15"),
)
async def skip_told_per_topic(ctx: CaseContext) -> None:
    """'<base>/+' with credit 0: two messages of '<base>/b' wait while '<base>/a' is
    published until its first messages left the history. After CREDIT, '<base>/a' gets one
    SUBSCRIBED(TOPIC_STATUS) with outcome GAP (first 1, last oldest-1, start_seq oldest)
    before its messages from the oldest, and '<base>/b' its messages 1 and 2 with no
    status: a GAP frame names no topic, so a pattern subscriber could not tell which topic
    lost what (n/a when the server announces DISCONNECT, or its history outlasts
    --max-publish)."""
    base = ctx.topic("skip")
    a, b = f"{base}/a", f"{base}/b"
    sub = await ctx.connect()
    assert sub.welcome is not None
    if sub.welcome.slow_consumer_policy != SlowConsumerPolicy.DROP:
        raise NotApplicable("the server announces slow_consumer_policy DISCONNECT (see FC-07)")
    await _subscribe_pattern(sub, f"{base}/+", credit=0)
    b_epoch, _ = await ctx.publish(b, [b"b1", b"b2"])
    epoch, oldest, _ = await ctx.expire_history(a)
    await sub.send(F.Credit(1, 2 + 5))
    statuses, got = await _told_per_topic(sub, {a: 5, b: 2})
    want = f"SUBSCRIBED(TOPIC_STATUS, GAP, topic={a}, epoch={epoch}, gap 1..{oldest - 1})"
    told = [(s.topic, s.outcome, s.epoch, s.start_seq, s.gap_first, s.gap_last) for s in statuses]
    if told != [(a, Outcome.GAP, epoch, oldest, 1, oldest - 1)]:
        raise CaseFailed(
            f"{want} and nothing for {b}", ", ".join(map(describe, statuses)) or "no status"
        )
    if statuses[0].gap_reason not in (ErrorCode.SLOW_CONSUMER, ErrorCode.HISTORY_EXPIRED):
        raise CaseFailed(f"{want}, reason SLOW_CONSUMER (see FC-09)", describe(statuses[0]))
    if {e for e, _ in got[a]} != {epoch} or {e for e, _ in got[b]} != {b_epoch}:
        raise CaseFailed(f"{a} in epoch {epoch}, {b} in epoch {b_epoch}", repr(got))
    check_seqs(f"{a} after its skip", [s for _, s in got[a]], range(oldest, oldest + 5))
    check_seqs(f"{b}, untouched by the skip of {a}", [s for _, s in got[b]], [1, 2])


@case(
    "PT-10",
    "A topic reset under a pattern is SUBSCRIBED(TOPIC_STATUS, EPOCH_CHANGED), then seq 1",
    category=CAT,
    requirements=("PW-SUB-30", "PW-ORDER-12", "PW-ORDER-15"),
    needs=(NEEDS_RESET,),
)
async def reset_told_per_topic(ctx: CaseContext) -> None:
    """'<base>/+' receives messages 1-2 of '<base>/a' and 1 of '<base>/b'; the operator
    resets '<base>/a' (``--reset-command``). The next messages of '<base>/a' come after one
    SUBSCRIBED(TOPIC_STATUS) with outcome EPOCH_CHANGED and the new epoch, from sequence 1
    of that epoch; '<base>/b' carries on at 2 in its own epoch, with no status and no GAP
    frame."""
    assert ctx.target.reset is not None
    base = ctx.topic("reset")
    a, b = f"{base}/a", f"{base}/b"
    sub = await ctx.connect()
    await _subscribe_pattern(sub, f"{base}/+")
    old_epoch, _ = await ctx.publish(a, [b"a1", b"a2"])
    b_epoch, _ = await ctx.publish(b, [b"b1"])
    statuses, got = await _told_per_topic(sub, {a: 2, b: 1})
    if statuses or got != {a: [(old_epoch, 1), (old_epoch, 2)], b: [(b_epoch, 1)]}:
        raise CaseFailed(f"messages 1-2 of {a} and 1 of {b}, no status", repr(got))
    await ctx.target.reset(a)
    new_epoch, seqs = await ctx.publish(a, [b"new-1", b"new-2"])
    if new_epoch in (0, old_epoch) or seqs != [1, 2]:
        raise CaseFailed(
            f"PUBACK for {a} in a new non-zero epoch (not {old_epoch}) from seq 1",
            f"epoch {new_epoch}, seqs {seqs}",
        )
    await ctx.publish(b, [b"b2"])
    statuses, got = await _told_per_topic(sub, {a: 2, b: 1})
    told = [(s.topic, s.outcome, s.epoch, s.start_seq) for s in statuses]
    if told != [(a, Outcome.EPOCH_CHANGED, new_epoch, 1)]:
        raise CaseFailed(
            f"SUBSCRIBED(TOPIC_STATUS, EPOCH_CHANGED, topic={a}, epoch={new_epoch}, "
            f"start_seq=1) and nothing for {b}",
            ", ".join(map(describe, statuses)) or "no status",
        )
    want = {a: [(new_epoch, 1), (new_epoch, 2)], b: [(b_epoch, 2)]}
    if got != want:
        raise CaseFailed(repr(want), repr(got))
