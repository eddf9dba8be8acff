"""resume-history: SUBSCRIBE positions (AFTER, LAST, OLDEST), the four outcomes, epochs and
history expiry (SPEC.md §6.1, §6.2, §7.4).

History expiry cannot be asked for over the wire, so the cases cause it: they publish until
the server's history no longer starts at seq 1 (``CaseContext.expire_history``).
"""

from __future__ import annotations

from pushwire.client.conformance.registry import NEEDS_RESET, case
from pushwire.client.conformance.runner import CaseContext
from pushwire.client.conformance.wire import CaseFailed, describe
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import FrameType, Outcome, SinceKind

CAT = "resume-history"


def _want(reply: F.Subscribed, what: str, **fields: int) -> None:
    if any(getattr(reply, k) != v for k, v in fields.items()):
        raise CaseFailed(what, describe(reply))


@case(
    "RH-01",
    "AFTER(epoch, S) inside the history: RECOVERED, S+1..head replayed, then live",
    category=CAT,
    requirements=("PW-SUB-9", "PW-ORDER-5", "PW-ORDER-6"),
)
async def after_recovered(ctx: CaseContext) -> None:
    """The core of resume: a client that saw up to S gets exactly S+1 onwards."""
    topic = ctx.topic()
    epoch, _ = await ctx.publish(topic, [f"{i}".encode() for i in range(1, 11)])
    sub = await ctx.connect()
    reply = await ctx.subscribe(sub, topic, since=SinceKind.AFTER, epoch=epoch, seq=4)
    _want(
        reply,
        f"SUBSCRIBED(RECOVERED, epoch={epoch}, start_seq=5, head_seq=10)",
        outcome=Outcome.RECOVERED,
        epoch=epoch,
        start_seq=5,
        head_seq=10,
    )
    await ctx.receive_seqs(sub, topic, range(5, 11), "replay")
    await ctx.publish(topic, [b"11"])
    await ctx.receive_seqs(sub, topic, [11], "live")


@case(
    "RH-02",
    "AFTER(epoch, head): RECOVERED with start_seq head+1 and nothing replayed",
    category=CAT,
    requirements=("PW-SUB-9",),
)
async def after_head(ctx: CaseContext) -> None:
    """A client that is up to date resumes without duplicates."""
    topic = ctx.topic()
    epoch, _ = await ctx.publish(topic, [b"a", b"b", b"c"])
    sub = await ctx.connect()
    reply = await ctx.subscribe(sub, topic, since=SinceKind.AFTER, epoch=epoch, seq=3)
    _want(
        reply,
        "SUBSCRIBED(RECOVERED, start_seq=4, head_seq=3)",
        outcome=Outcome.RECOVERED,
        start_seq=4,
        head_seq=3,
    )
    await sub.expect_silence(ctx.quiet, "no replay when resuming at the head")


@case(
    "RH-03",
    "LAST(N): RECOVERED with the last N messages, then live",
    category=CAT,
    requirements=("PW-SUB-12",),
)
async def last_n(ctx: CaseContext) -> None:
    """LAST(3) after 8 messages replays 6, 7, 8."""
    topic = ctx.topic()
    await ctx.publish(topic, [f"{i}".encode() for i in range(1, 9)])
    sub = await ctx.connect()
    reply = await ctx.subscribe(sub, topic, since=SinceKind.LAST, count=3)
    _want(
        reply,
        "SUBSCRIBED(RECOVERED, start_seq=6, head_seq=8)",
        outcome=Outcome.RECOVERED,
        start_seq=6,
        head_seq=8,
    )
    await ctx.receive_seqs(sub, topic, range(6, 9), "replay")


@case(
    "RH-04",
    "AFTER(epoch, 0) with the whole history retained: RECOVERED from seq 1",
    category=CAT,
    requirements=("PW-SUB-9",),
)
async def after_zero(ctx: CaseContext) -> None:
    """Sequence 0 means 'before the first message'."""
    topic = ctx.topic()
    epoch, _ = await ctx.publish(topic, [b"1", b"2"])
    sub = await ctx.connect()
    reply = await ctx.subscribe(sub, topic, since=SinceKind.AFTER, epoch=epoch, seq=0)
    _want(reply, "SUBSCRIBED(RECOVERED, start_seq=1)", outcome=Outcome.RECOVERED, start_seq=1)
    await ctx.receive_seqs(sub, topic, [1, 2], "replay")


@case(
    "RH-05",
    "AFTER(other epoch, S): EPOCH_CHANGED with the current epoch, delivery from its oldest",
    category=CAT,
    requirements=("PW-SUB-11",),
)
async def epoch_changed(ctx: CaseContext) -> None:
    """A position from another epoch (e.g. before a server restart) says nothing about the
    current one: the server names the current epoch and restarts delivery in it."""
    topic = ctx.topic()
    epoch, _ = await ctx.publish(topic, [b"1", b"2", b"3"])
    other = epoch ^ 0x5A5A_5A5A_5A5A_5A5A or 1
    sub = await ctx.connect()
    reply = await ctx.subscribe(sub, topic, since=SinceKind.AFTER, epoch=other, seq=2)
    _want(
        reply,
        f"SUBSCRIBED(EPOCH_CHANGED, epoch={epoch}, start_seq=1, head_seq=3)",
        outcome=Outcome.EPOCH_CHANGED,
        epoch=epoch,
        start_seq=1,
        head_seq=3,
    )
    await ctx.receive_seqs(sub, topic, [1, 2, 3], "new-epoch delivery")


@case(
    "RH-06",
    "AFTER(epoch, S) beyond the head is ERROR(INVALID_POSITION, 0x10, sub_id)",
    category=CAT,
    requirements=("PW-SUB-5", "PW-ERR-4"),
)
async def position_beyond_head(ctx: CaseContext) -> None:
    """A position the current epoch never reached is the client's bug, not a gap."""
    topic = ctx.topic()
    epoch, _ = await ctx.publish(topic, [b"1", b"2"])
    sub = await ctx.connect()
    await sub.send(
        F.Subscribe(
            sub_id=7, topic=topic, since_kind=SinceKind.AFTER, since_epoch=epoch, since_seq=9
        )
    )
    await sub.expect_request_error(ErrorCode.INVALID_POSITION, FrameType.SUBSCRIBE, 7)
    await sub.roundtrip()


@case(
    "RH-07",
    "AFTER(epoch, S) before the retained history: GAP(S+1..oldest-1, HISTORY_EXPIRED)",
    category=CAT,
    requirements=("PW-SUB-10", "PW-SUB-7", "PW-FRAME-16"),
)
async def after_expired(ctx: CaseContext) -> None:
    """A lost range is reported, never skipped silently: outcome GAP names exactly the
    missing sequences, then delivery starts at the oldest retained one."""
    topic = ctx.topic()
    epoch, oldest, head = await ctx.expire_history(topic)
    sub = await ctx.connect()
    reply = await ctx.subscribe(sub, topic, since=SinceKind.AFTER, epoch=epoch, seq=1, credit=5)
    _want(
        reply,
        f"SUBSCRIBED(GAP, start_seq={oldest}, gap {2}..{oldest - 1} HISTORY_EXPIRED)",
        outcome=Outcome.GAP,
        epoch=epoch,
        start_seq=oldest,
        head_seq=head,
        gap_first=2,
        gap_last=oldest - 1,
        gap_reason=ErrorCode.HISTORY_EXPIRED,
    )
    await ctx.receive_seqs(sub, topic, range(oldest, oldest + 5), "after the gap")


@case(
    "RH-08",
    "AFTER(epoch, oldest-1): exactly at the edge of the history is RECOVERED",
    category=CAT,
    requirements=("PW-SUB-9",),
)
async def after_edge(ctx: CaseContext) -> None:
    """The boundary of the GAP rule: nothing is missing, so no gap."""
    topic = ctx.topic()
    epoch, oldest, head = await ctx.expire_history(topic)
    sub = await ctx.connect()
    reply = await ctx.subscribe(
        sub, topic, since=SinceKind.AFTER, epoch=epoch, seq=oldest - 1, credit=3
    )
    _want(
        reply,
        f"SUBSCRIBED(RECOVERED, start_seq={oldest}, head_seq={head})",
        outcome=Outcome.RECOVERED,
        start_seq=oldest,
        head_seq=head,
    )
    await ctx.receive_seqs(sub, topic, range(oldest, oldest + 3), "replay")


@case(
    "RH-09",
    "LAST(N) reaching before the retained history: GAP outcome",
    category=CAT,
    requirements=("PW-SUB-12", "PW-SUB-10"),
)
async def last_expired(ctx: CaseContext) -> None:
    """LAST(N) behaves like AFTER(head-N): missing ones are reported as a GAP."""
    topic = ctx.topic()
    epoch, oldest, head = await ctx.expire_history(topic)
    n = head - oldest + 3  # two more than retained
    sub = await ctx.connect()
    reply = await ctx.subscribe(sub, topic, since=SinceKind.LAST, count=n, credit=2)
    first = head - n + 1
    _want(
        reply,
        f"SUBSCRIBED(GAP, start_seq={oldest}, gap {first}..{oldest - 1})",
        outcome=Outcome.GAP,
        epoch=epoch,
        start_seq=oldest,
        gap_first=first,
        gap_last=oldest - 1,
    )
    await ctx.receive_seqs(sub, topic, [oldest, oldest + 1], "after the gap")


@case(
    "RH-10",
    "OLDEST after expiry: RECOVERED from the oldest retained message, no gap",
    category=CAT,
    requirements=("PW-SUB-13",),
)
async def oldest_after_expiry(ctx: CaseContext) -> None:
    """OLDEST asks for 'whatever is retained', so nothing is missing."""
    topic = ctx.topic()
    _, oldest, head = await ctx.expire_history(topic)
    sub = await ctx.connect()
    reply = await ctx.subscribe(sub, topic, since=SinceKind.OLDEST, credit=2)
    _want(
        reply,
        f"SUBSCRIBED(RECOVERED, start_seq={oldest}, head_seq={head})",
        outcome=Outcome.RECOVERED,
        start_seq=oldest,
        head_seq=head,
    )
    await ctx.receive_seqs(sub, topic, [oldest, oldest + 1], "replay")


@case(
    "RH-11",
    "Resume on a new connection continues exactly where the old one stopped",
    category=CAT,
    requirements=("PW-SUB-9", "PW-ORDER-6"),
)
async def reconnect_resume(ctx: CaseContext) -> None:
    """An at-most-once client resumes with AFTER(epoch, last delivered): no loss, no
    duplicate, across a dropped connection."""
    topic = ctx.topic()
    first = await ctx.connect()
    reply = await ctx.subscribe(first, topic)
    await ctx.publish(topic, [f"{i}".encode() for i in range(1, 6)])
    msgs = await ctx.receive(first, topic, 5)
    await first.aclose()
    await ctx.publish(topic, [f"{i}".encode() for i in range(6, 9)])
    second = await ctx.connect()
    again = await ctx.subscribe(
        second, topic, since=SinceKind.AFTER, epoch=reply.epoch, seq=msgs[-1].seq
    )
    _want(again, "SUBSCRIBED(RECOVERED, start_seq=6)", outcome=Outcome.RECOVERED, start_seq=6)
    await ctx.receive_seqs(second, topic, [6, 7, 8], "resumed")


@case(
    "RH-12",
    "A topic reset while subscribed: delivery continues at seq 1 of the new epoch",
    category=CAT,
    requirements=("PW-ORDER-12", "PW-ORDER-2", "PW-ACK-4"),
    needs=(NEEDS_RESET,),
)
async def live_epoch_change(ctx: CaseContext) -> None:
    """After the operator resets the topic (``--reset-command``), the next push of a live
    at-least-once subscription carries a new non-zero epoch and starts at sequence 1, and
    the acknowledged level restarts at 0 (ACK(1) in the new epoch is valid)."""
    assert ctx.target.reset is not None
    topic = ctx.topic()
    sub = await ctx.connect()
    reply = await ctx.subscribe(sub, topic, sub_id=2, at_least_once=True)
    await ctx.publish(topic, [b"1", b"2", b"3"])
    await ctx.receive(sub, topic, 3)
    await sub.send(F.Ack(2, 3))
    await sub.roundtrip()
    await ctx.target.reset(topic)
    new_epoch, seqs = await ctx.publish(topic, [b"new-1", b"new-2"])
    if new_epoch in (0, reply.epoch) or seqs != [1, 2]:
        raise CaseFailed(
            f"PUBACK in a new non-zero epoch (not {reply.epoch}) from seq 1",
            f"epoch {new_epoch}, seqs {seqs}",
        )
    msgs = await ctx.receive(sub, topic, 2)
    if [(m.epoch, m.seq) for m in msgs] != [(new_epoch, 1), (new_epoch, 2)]:
        raise CaseFailed(
            f"(epoch {new_epoch}, seq 1), (epoch {new_epoch}, seq 2)",
            ", ".join(f"(epoch {m.epoch}, seq {m.seq})" for m in msgs),
        )
    await sub.send(F.Ack(2, 1))
    await sub.roundtrip()
