"""flow-control: per-subscription credit counted in messages, batch splitting, credit
overflow and the slow-consumer policy the server announced (SPEC.md §8.1, §8.2)."""

from __future__ import annotations

from pushwire.client.conformance.registry import case
from pushwire.client.conformance.runner import CaseContext, check_seqs
from pushwire.client.conformance.wire import CaseFailed, NotApplicable, describe
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import FrameType, SinceKind, SlowConsumerPolicy

CAT = "flow-control"


@case(
    "FC-01",
    "The server never sends more messages than the credit granted",
    category=CAT,
    requirements=("PW-FLOW-1", "PW-FLOW-2", "PW-FLOW-4"),
)
async def credit_window(ctx: CaseContext) -> None:
    """Credit 3 with 10 messages waiting: 3 arrive, then nothing; CREDIT(4): 4 more, then
    nothing; CREDIT(100): the last 3. A client's memory is bounded only if this holds."""
    topic = ctx.topic()
    sub = await ctx.connect()
    await ctx.subscribe(sub, topic, sub_id=1, credit=3)
    await ctx.publish(topic, [f"{i}".encode() for i in range(1, 11)])
    got = await ctx.receive(sub, topic, 3)
    await sub.expect_silence(ctx.quiet, "nothing beyond the initial credit of 3")
    await sub.send(F.Credit(1, 4))
    got += await ctx.receive(sub, topic, 4)
    await sub.expect_silence(ctx.quiet, "nothing beyond the 7 messages of credit")
    await sub.send(F.Credit(1, 100))
    got += await ctx.receive(sub, topic, 3)
    check_seqs("delivered", [m.seq for m in got], range(1, 11))


@case(
    "FC-02",
    "Credit 0: SUBSCRIBED and PONG still flow, messages do not",
    category=CAT,
    requirements=("PW-FLOW-1", "PW-HB-2"),
)
async def zero_credit(ctx: CaseContext) -> None:
    """Only MESSAGE and MESSAGE_BATCH consume credit; control frames never wait for it."""
    topic = ctx.topic()
    await ctx.publish(topic, [b"1", b"2"])
    sub = await ctx.connect()
    await ctx.subscribe(sub, topic, credit=0, since=SinceKind.OLDEST)
    await sub.roundtrip()
    await sub.expect_silence(ctx.quiet, "no message with zero credit")
    await sub.send(F.Credit(1, 1))
    await ctx.receive_seqs(sub, topic, [1], "after CREDIT(1)")
    await sub.expect_silence(ctx.quiet, "exactly one message for CREDIT(1)")


@case(
    "FC-03",
    "A batch is split to fit the remaining credit",
    category=CAT,
    requirements=("PW-FLOW-3",),
)
async def batch_split_by_credit(ctx: CaseContext) -> None:
    """Credit 2 and a 5-record batch: exactly records 1-2 arrive (re-framed), the other
    three after CREDIT(3)."""
    topic = ctx.topic()
    sub = await ctx.connect()
    await ctx.subscribe(sub, topic, credit=2)
    payloads = [f"r{i}".encode() for i in range(5)]
    await ctx.publish_batch(topic, payloads)
    got = await ctx.receive(sub, topic, 2)
    await sub.expect_silence(ctx.quiet, "nothing beyond credit 2 (the batch must be split)")
    await sub.send(F.Credit(1, 3))
    got += await ctx.receive(sub, topic, 3)
    check_seqs("records", [m.seq for m in got], range(1, 6))
    if [m.payload for m in got] != payloads:
        raise CaseFailed("record payloads unchanged by the split", repr([m.payload for m in got]))


@case(
    "FC-04",
    "Outstanding credit above 2^32-1 is FLOW_CONTROL_ERROR",
    category=CAT,
    requirements=("PW-FLOW-4",),
)
async def credit_overflow(ctx: CaseContext) -> None:
    """Credit is a u32 on both sides; overflow must not wrap to a small number."""
    sub = await ctx.connect()
    await ctx.subscribe(sub, ctx.topic(), credit=0xFFFF_FFFF)
    await sub.send(F.Credit(1, 1))
    await sub.expect_error_close(ErrorCode.FLOW_CONTROL_ERROR)


@case(
    "FC-05",
    "CREDIT for an unknown sub_id is ERROR(UNKNOWN_SUBSCRIPTION, 0x14, sub_id)",
    category=CAT,
    requirements=("PW-FLOW-6",),
)
async def credit_unknown(ctx: CaseContext) -> None:
    """A request error; the connection stays."""
    conn = await ctx.connect()
    await conn.send(F.Credit(55, 1))
    await conn.expect_request_error(ErrorCode.UNKNOWN_SUBSCRIPTION, FrameType.CREDIT, 55)
    await conn.roundtrip()


async def _drop_gap(ctx: CaseContext) -> tuple[list[F.Gap], str]:
    """A DROP subscriber with no credit while its next message leaves the history (and its
    lag passes max_lag, when --max-publish allows), then CREDIT(5): the GAP frames seen
    before the 5 messages, which must be the 5 after the gap, and how the one right GAP
    reads (its reason aside)."""
    topic = ctx.topic()
    sub = await ctx.connect()
    assert sub.welcome is not None
    if sub.welcome.slow_consumer_policy != SlowConsumerPolicy.DROP:
        raise NotApplicable("the server announces slow_consumer_policy DISCONNECT (see FC-07)")
    reply = await ctx.subscribe(sub, topic, credit=0)
    epoch, oldest, head = await ctx.expire_history(topic)
    lag = sub.welcome.max_lag
    if head <= lag < ctx.target.max_publish:
        # DROP never disconnects for lag alone: push the lag past max_lag too
        _, more = await ctx.fill_topic(topic, lag + 1 - head + 1)
        oldest = (await ctx.expire_history_probe(topic)).start_seq
        ctx.note(f"lag pushed to {more[-1] - reply.start_seq + 1} (max_lag {lag})")
    await sub.send(F.Credit(1, 5))
    gaps: list[F.Gap] = []
    msgs = await ctx.receive(sub, topic, 5, gaps=gaps)
    want = f"GAP(epoch={epoch}, first={reply.start_seq}, last={oldest - 1}"
    if len(gaps) != 1 or (gaps[0].epoch, gaps[0].first, gaps[0].last) != (
        epoch,
        reply.start_seq,
        oldest - 1,
    ):
        raise CaseFailed(
            want + ") before the messages", ", ".join(describe(g) for g in gaps) or "no GAP frame"
        )
    check_seqs("after the gap", [m.seq for m in msgs], range(oldest, oldest + 5))
    return gaps, want


@case(
    "FC-06",
    "Slow consumer, policy DROP: GAP(next..oldest-1) then delivery from the oldest",
    category=CAT,
    requirements=("PW-SLOW-3", "PW-SLOW-4", "PW-FLOW-1", "PW-HS-10"),
)
async def slow_consumer_drop(ctx: CaseContext) -> None:
    """A subscriber with no credit while its next message leaves the history (and its lag
    passes max_lag, when --max-publish allows) stays connected and learns exactly what it
    lost once it grants credit; the GAP frame does not use credit (n/a when the server
    announces DISCONNECT). The reason is FC-09's."""
    gaps, want = await _drop_gap(ctx)
    if gaps[0].reason not in (ErrorCode.SLOW_CONSUMER, ErrorCode.HISTORY_EXPIRED):
        raise CaseFailed(f"{want}, reason=SLOW_CONSUMER or HISTORY_EXPIRED)", describe(gaps[0]))


@case(
    "FC-09",
    "Slow consumer, policy DROP: the GAP's reason is SLOW_CONSUMER",
    category=CAT,
    requirements=("PW-SLOW-3", "PW-PUB-13"),
)
async def slow_consumer_drop_reason(ctx: CaseContext) -> None:
    """The FC-06 situation, judged on the reason: HISTORY_EXPIRED belongs to SUBSCRIBED
    (a resume position older than the history, §7.4); a live subscription that fell
    behind under DROP is told SLOW_CONSUMER, which is what lets its application tell
    "I was too slow" from "I came back too late" (n/a when the server announces
    DISCONNECT)."""
    gaps, want = await _drop_gap(ctx)
    if gaps[0].reason != ErrorCode.SLOW_CONSUMER:
        raise CaseFailed(f"{want}, reason=SLOW_CONSUMER)", describe(gaps[0]))


@case(
    "FC-07",
    "Slow consumer, policy DISCONNECT: ERROR(SLOW_CONSUMER) once lag exceeds max_lag",
    category=CAT,
    requirements=("PW-SLOW-2", "PW-SLOW-5", "PW-HS-10"),
)
async def slow_consumer_disconnect(ctx: CaseContext) -> None:
    """The server keeps its promise from WELCOME: a subscriber that lags more than max_lag
    (or whose next message left the history) is closed with SLOW_CONSUMER rather than
    stalling anyone (n/a when the server announces DROP)."""
    topic = ctx.topic()
    sub = await ctx.connect()
    assert sub.welcome is not None
    if sub.welcome.slow_consumer_policy != SlowConsumerPolicy.DISCONNECT:
        raise NotApplicable("the server announces slow_consumer_policy DROP (see FC-06)")
    lag = sub.welcome.max_lag
    if lag + 1 > ctx.target.max_publish:
        raise NotApplicable(f"max_lag {lag} exceeds --max-publish {ctx.target.max_publish}")
    await ctx.subscribe(sub, topic, credit=0)
    await ctx.fill_topic(topic, lag + 1)
    await sub.expect_error_close(ErrorCode.SLOW_CONSUMER, timeout=ctx.timeout * 2)


@case(
    "FC-08",
    "Slow consumer, policy DISCONNECT: history lost within max_lag is ERROR(SLOW_CONSUMER)",
    category=CAT,
    requirements=("PW-SLOW-2", "PW-ORDER-6"),
)
async def slow_consumer_disconnect_history(ctx: CaseContext) -> None:
    """DISCONNECT has two triggers: lag above max_lag (FC-07) and the next message leaving
    the history. A server whose history is shorter than max_lag meets the second one
    first: with no credit and the lag still within max_lag, once the subscriber's next
    message is gone the server must close with SLOW_CONSUMER rather than skip it silently
    or wait. The kit publishes in halving steps until the history moved, never past
    max_lag (n/a under DROP, or when the history holds max_lag messages or more)."""
    topic = ctx.topic()
    sub = await ctx.connect()
    assert sub.welcome is not None
    if sub.welcome.slow_consumer_policy != SlowConsumerPolicy.DISCONNECT:
        raise NotApplicable("the server announces slow_consumer_policy DROP (see FC-06)")
    lag = sub.welcome.max_lag
    reply = await ctx.subscribe(sub, topic, credit=0)
    published, step = 0, max(1, lag // 2)
    while True:
        step = min(step, lag - published, ctx.target.max_publish - published)
        if step <= 0:
            raise NotApplicable(
                f"the history still holds seq {reply.start_seq} after {published} messages "
                f"(max_lag {lag}): the lag trigger comes first (FC-07)"
            )
        await ctx.fill_topic(topic, step, size=256)
        published += step
        probe = await ctx.expire_history_probe(topic)
        if probe.start_seq > reply.start_seq:
            break
        step = max(1, step // 2)
    ctx.note(f"history moved past seq {reply.start_seq} at lag {published} (max_lag {lag})")
    await sub.expect_error_close(ErrorCode.SLOW_CONSUMER, timeout=ctx.timeout * 2)
