"""acks-redelivery: cumulative ACKs on at-least-once subscriptions, INVALID_ACK, and
redelivery of what was not acknowledged (SPEC.md §8.3)."""

from __future__ import annotations

from pushwire.client.conformance.registry import case
from pushwire.client.conformance.runner import CaseContext
from pushwire.client.conformance.wire import CaseFailed, WireConnection, describe
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import FrameType, Outcome, SinceKind

CAT = "acks-redelivery"


async def _invalid_ack(conn: WireConnection, sub_id: int) -> None:
    await conn.expect_request_error(ErrorCode.INVALID_ACK, FrameType.ACK, sub_id)
    await conn.expect_still_open("INVALID_ACK")


async def _alo(
    ctx: CaseContext, n: int, *, at_least_once: bool = True
) -> tuple[WireConnection, str, F.Subscribed]:
    topic = ctx.topic()
    conn = await ctx.connect()
    reply = await ctx.subscribe(conn, topic, sub_id=2, at_least_once=at_least_once)
    await ctx.publish(topic, [f"{i}".encode() for i in range(1, n + 1)])
    await ctx.receive(conn, topic, n)
    return conn, topic, reply


@case(
    "AR-01",
    "Valid cumulative ACKs are accepted silently (including a repeat of the last one)",
    category=CAT,
    requirements=("PW-ACK-3",),
)
async def valid_acks(ctx: CaseContext) -> None:
    """ACK(2), ACK(5), ACK(5): no answer at all, the connection stays."""
    conn, _, _ = await _alo(ctx, 5)
    await conn.send(F.Ack(2, 2), F.Ack(2, 5), F.Ack(2, 5))
    await conn.roundtrip()


@case(
    "AR-02",
    "ACK on an at-most-once subscription is INVALID_ACK (request error)",
    category=CAT,
    requirements=("PW-ACK-2", "PW-ERR-4"),
)
async def ack_at_most_once(ctx: CaseContext) -> None:
    """Only at-least-once subscriptions are acknowledged."""
    conn, _, _ = await _alo(ctx, 2, at_least_once=False)
    await conn.send(F.Ack(2, 1))
    await _invalid_ack(conn, 2)


@case(
    "AR-03",
    "ACK beyond the last delivered sequence is INVALID_ACK",
    category=CAT,
    requirements=("PW-ACK-2",),
)
async def ack_beyond_delivered(ctx: CaseContext) -> None:
    """Acknowledging what was never delivered would make the server forget messages."""
    conn, _, _ = await _alo(ctx, 3)
    await conn.send(F.Ack(2, 4))
    await _invalid_ack(conn, 2)


@case(
    "AR-04",
    "ACK lower than a previous ACK is INVALID_ACK",
    category=CAT,
    requirements=("PW-ACK-2",),
)
async def ack_backwards(ctx: CaseContext) -> None:
    """Acks are cumulative and only move forward."""
    conn, _, _ = await _alo(ctx, 4)
    await conn.send(F.Ack(2, 3))
    await conn.roundtrip()
    await conn.send(F.Ack(2, 2))
    await _invalid_ack(conn, 2)


@case(
    "AR-05",
    "Unacknowledged messages are redelivered on resume from the last ACK",
    category=CAT,
    requirements=("PW-SUB-9", "PW-ORDER-6"),
)
async def redelivery(ctx: CaseContext) -> None:
    """Receive 1..6, ACK 3, drop the connection; AFTER(epoch, 3) on a new one brings 4..6
    again, in order, still at-least-once."""
    conn, topic, reply = await _alo(ctx, 6)
    await conn.send(F.Ack(2, 3))
    await conn.roundtrip()
    await conn.aclose()
    again = await ctx.connect()
    r2 = await ctx.subscribe(
        again, topic, sub_id=2, since=SinceKind.AFTER, epoch=reply.epoch, seq=3, at_least_once=True
    )
    if (r2.outcome, r2.start_seq) != (Outcome.RECOVERED, 4):
        raise CaseFailed("SUBSCRIBED(RECOVERED, start_seq=4)", describe(r2))
    await ctx.receive_seqs(again, topic, [4, 5, 6], "redelivered")
    await again.send(F.Ack(2, 6))
    await again.roundtrip()


@case(
    "AR-06",
    "ACK for an unknown sub_id is ERROR(UNKNOWN_SUBSCRIPTION, 0x15, sub_id)",
    category=CAT,
    requirements=("PW-ACK-5",),
)
async def ack_unknown_sub(ctx: CaseContext) -> None:
    """A request error that names the ACK's sub_id; the connection stays."""
    conn = await ctx.connect()
    await conn.send(F.Ack(77, 1))
    await conn.expect_request_error(ErrorCode.UNKNOWN_SUBSCRIPTION, FrameType.ACK, 77)
    await conn.roundtrip()


@case(
    "AR-07",
    "UNSUBSCRIBED.last_seq is the last delivered sequence on an at-least-once subscription",
    category=CAT,
    requirements=("PW-SUB-15",),
)
async def unsubscribed_alo(ctx: CaseContext) -> None:
    """Delivered, not acknowledged, is what UNSUBSCRIBED reports."""
    conn, _, reply = await _alo(ctx, 4)
    await conn.send(F.Ack(2, 2), F.Unsubscribe(2))
    await conn.expect_type(F.Unsubscribed, sub_id=2, epoch=reply.epoch, last_seq=4)


@case(
    "AR-08",
    "The acknowledged level starts at start_seq - 1",
    category=CAT,
    requirements=("PW-ACK-4", "PW-ACK-2"),
)
async def ack_level_start(ctx: CaseContext) -> None:
    """Resuming at-least-once with AFTER(epoch, 5): ACK(5) is the current level (accepted,
    a no-op), ACK(4) is below it (INVALID_ACK)."""
    topic = ctx.topic()
    epoch, _ = await ctx.publish(topic, [f"{i}".encode() for i in range(1, 9)])
    conn = await ctx.connect()
    reply = await ctx.subscribe(
        conn, topic, sub_id=2, since=SinceKind.AFTER, epoch=epoch, seq=5, at_least_once=True
    )
    if reply.start_seq != 6:
        raise CaseFailed("SUBSCRIBED(start_seq=6)", describe(reply))
    await ctx.receive(conn, topic, 3)
    await conn.send(F.Ack(2, 5))
    await conn.roundtrip()
    await conn.send(F.Ack(2, 4))
    await _invalid_ack(conn, 2)
