"""The scenarios: one script per edge case a client must survive, with its checks."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from functools import partial
from itertools import pairwise
from typing import Any

import trio

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import (
    MAX_MAX_FRAME_SIZE,
    FrameType,
    Outcome,
    SinceKind,
    SlowConsumerPolicy,
)
from pushwire.server.testserver.patterns import PATTERN_SCENARIOS
from pushwire.server.testserver.results import ScenarioRun
from pushwire.server.testserver.script import Ctx, Scenario, Script


def _msgs(seqs: range) -> list[tuple[Any, ...]]:
    return [("msg", s) for s in seqs]


async def _split_frames(c: Ctx) -> None:
    await c.subscribed(bytewise=True)
    if await c.deliver(range(1, 11), bytewise=True):
        await c.finish_ok(10)


async def _coalesced(c: Ctx) -> None:
    n = min(50, c.sub.initial_credit)
    batch = [codec.encode_frame(F.Subscribed(c.sub.sub_id, Outcome.NEW, c.epoch(), 1, 0))]
    batch += [
        codec.encode_frame(F.Message(c.epoch(), s, c.sub.topic, b"msg-%d" % s))
        for s in range(1, n + 1)
    ]
    c.peer.credit[c.sub.sub_id] -= n
    c.peer.delivered[c.sub.sub_id] = n
    await c.peer.send_raw(b"".join(batch) + codec.encode_frame(F.Ping(0xC0A1)))
    if n < 50 and not await c.deliver(range(n + 1, 51)):
        return
    await c.finish_ok(50)


async def _max_frame(c: Ctx) -> None:
    hello = c.peer.hello
    assert hello is not None
    limit = min(hello.max_frame_size, MAX_MAX_FRAME_SIZE)
    c.run.notes.append(f"client limit {hello.max_frame_size} bytes")
    await c.subscribed()
    topic = c.sub.topic
    size = limit - codec.payload_size(codec.encode_frame(F.Message(0, 0, topic, b"")))
    ok = await c.peer.deliver(
        c.sub.sub_id,
        c.epoch(),
        c.sub.topic,
        range(1, 2),
        timeout=c.timeout,
        payload=lambda s: b"M" * size,
    )
    if ok and await c.peer.wait_until(lambda: c.peer.credit.get(c.sub.sub_id, 0) > 0, c.timeout):
        empty = F.MessageBatch(0, 0, topic, (F.Record(b""),))
        body = limit - codec.payload_size(codec.encode_frame(empty))
        frame = F.MessageBatch(c.epoch(), 2, topic, (F.Record(b"B" * body),))
        data = codec.encode_frame(frame)
        c.run.check(
            "the batch frame is exactly the client's limit", (), codec.payload_size(data) == limit
        )
        c.peer.credit[c.sub.sub_id] -= 1
        await c.peer.send_raw(data)
        c.peer.delivered[c.sub.sub_id] = 2
        await c.finish_ok(2)


def _fatal(frame_bytes: Callable[[Ctx], bytes], code: ErrorCode, reqs: tuple[str, ...]) -> Script:
    async def script(c: Ctx) -> None:
        await c.subscribed()
        if await c.deliver(range(1, 2)):
            await c.peer.send_raw(frame_bytes(c))
            await c.expect_error_close(code, reqs)

    return script


def _too_large(c: Ctx) -> bytes:
    assert c.peer.hello is not None
    return codec.encode_header(c.peer.hello.max_frame_size + 1, FrameType.MESSAGE, 0)


_raw = codec.encode_raw_frame
#: A connection code no version defines yet (unknown-code, goaway-unknown-code).
UNKNOWN_CODE = 0x00F7


async def _unknown_ignorable(c: Ctx) -> None:
    await c.subscribed()
    if not await c.deliver(range(1, 2)):
        return
    await c.peer.send_raw(_raw(0xB3, 0xFF, os.urandom(100)) + _raw(0x80, 0, b""))
    if await c.deliver(range(2, 3)):
        await c.peer.send_raw(_raw(0xFE, 0x01, b"\x00" * 7))
        if await c.deliver(range(3, 4)):
            await c.finish_ok(3)


async def _gap(c: Ctx) -> None:
    await c.subscribed()
    if not await c.deliver(range(1, 6)):
        return
    await c.peer.send(F.Gap(c.sub.sub_id, c.epoch(), 6, 10, ErrorCode.SLOW_CONSUMER))
    c.peer.delivered[c.sub.sub_id] = 10
    if await c.deliver(range(11, 16)):
        await c.finish_ok(15)


async def _sequence_hole(c: Ctx) -> None:
    """Messages 1 and 2, then 4: no GAP says 3 is gone, so the client must not go on as if
    nothing were missing."""
    await c.subscribed()
    if await c.deliver(range(1, 3)) and await c.deliver(range(4, 5)):
        await c.expect_error_close(ErrorCode.PROTOCOL_ERROR, ("PW-ORDER-7",))


async def _next_epoch(c: Ctx, key: str) -> int:
    """Switch the subscription to a new epoch (the topic was reset while subscribed): let
    the client settle first, so its ACKs of the old epoch are in."""
    await c.peer.settle(c.sub.sub_id, c.timeout)
    c.peer.restart_acks(c.sub.sub_id)
    return c.epoch(key)


async def _epoch_reset_live(c: Ctx) -> None:
    """Epoch A 1..3; epoch B 1..3 (MESSAGEs); epoch C: GAP 1..2, then 3..4. Each new epoch
    starts at sequence 1, as PW-ORDER-12 makes a server do, so the client must accept it."""
    sid = c.sub.sub_id
    reqs = ("PW-ORDER-13", "PW-RESUME-4")
    await c.subscribed()
    if not await c.deliver(range(1, 4)):
        return
    second = await _next_epoch(c, "new-epoch")
    if not await c.deliver(range(1, 4), epoch=second, reqs=reqs):
        return
    rtt = await c.peer.ping(0xE90C, c.timeout)
    if not c.run.check(
        "the client accepts a new epoch whose first MESSAGE has sequence 1",
        reqs,
        rtt is not None and c.peer.closed_at is None,
        "" if rtt is not None else f"no PONG; client ERROR: {c.peer.client_error}",
    ):
        c.run.finish()
        return
    third = await _next_epoch(c, "third-epoch")
    await c.peer.send(F.Gap(sid, third, 1, 2, ErrorCode.SLOW_CONSUMER))
    c.peer.delivered[sid] = 2
    if await c.deliver(range(3, 5), epoch=third, reqs=reqs):
        await c.finish_ok(4)


async def _epoch_reset_bad_start(c: Ctx) -> None:
    """Epoch A 1..3, then a MESSAGE of epoch B with sequence 4: the numbers look
    contiguous, but a new epoch starts at 1, and sequences of two epochs are never
    compared."""
    await c.subscribed()
    if not await c.deliver(range(1, 4)):
        return
    second = await _next_epoch(c, "new-epoch")
    if await c.deliver(range(4, 5), epoch=second):
        await c.expect_error_close(ErrorCode.PROTOCOL_ERROR, ("PW-ORDER-13", "PW-RESUME-4"))


async def _first_then_drop(
    c: Ctx, last: int, *, goaway_ms: int | None = None, code: int = ErrorCode.SHUTTING_DOWN
) -> None:
    """Connection 1 of a resume scenario: messages 1..last, let the client settle, then
    the connection ends (abruptly, or with GOAWAY and a reconnect hint)."""
    await c.subscribed()
    if not await c.deliver(range(1, last + 1)):
        return
    await c.peer.settle(c.sub.sub_id, c.timeout)
    at = c.record_resume()
    if goaway_ms is not None:
        jitter = c.server.goaway_jitter_ms
        pos = F.Position(c.sub.sub_id, c.epoch(), at)
        await c.peer.send(F.Goaway(code, goaway_ms, jitter, (pos,), "scenario"))
        c.peer.goaway_sent_at = c.run.goaway_at = trio.current_time()
        await c.peer.wait_closed(1.0)  # drain: the client may ACK, GOAWAY and close
        c.run.check(
            "after GOAWAY the client sends no SUBSCRIBE, PUBLISH or PUBLISH_BATCH",
            ("PW-GOAWAY-6",),
            not c.peer.after_goaway,
            ", ".join(c.peer.after_goaway),
        )
    await c.peer.close()
    c.server.expect_reconnect(c.run, c.timeout + c.server.reconnect_wait + (goaway_ms or 0) / 1000)


async def _recover(c: Ctx, at: int, head: int) -> None:
    """Answer a resume after ``at`` with RECOVERED and deliver the rest up to ``head``: the
    common end of a scenario that goes on on the client's next connection."""
    await c.subscribed(Outcome.RECOVERED, at + 1, head)
    c.peer.delivered[c.sub.sub_id] = at
    if await c.deliver(range(at + 1, head + 1)):
        await c.finish_ok(head)


async def _resume_recovered(c: Ctx, head: int, reqs: tuple[str, ...] = ("PW-RESUME-1",)) -> None:
    """A later connection: the client must resume from a position connection 1 left it
    (checked against ``reqs``); then :func:`_recover` up to ``head`` from there."""
    await _recover(c, c.check_resume(c.epoch(), reqs), head)


async def _resume_gap(c: Ctx) -> None:
    if c.attempt == 1:
        return await _first_then_drop(c, 5)
    at = c.check_resume(c.epoch())
    await c.subscribed(Outcome.GAP, 11, 12, gap=(at + 1, 10, ErrorCode.HISTORY_EXPIRED))
    c.peer.delivered[c.sub.sub_id] = 10
    if await c.deliver(range(11, 13)):
        await c.finish_ok(12)


async def _epoch_change(c: Ctx) -> None:
    if c.attempt == 1:
        return await _first_then_drop(c, 5)
    c.check_resume(c.epoch())
    new = c.epoch("new-epoch")
    await c.subscribed(Outcome.EPOCH_CHANGED, 1, 3, epoch=new)
    c.peer.delivered[c.sub.sub_id] = 0
    if await c.deliver(range(1, 4), epoch=new):
        await c.finish_ok(3)


def _check_goaway_delay(c: Ctx, after_ms: int, reqs: tuple[str, ...]) -> None:
    """A connection that follows a GOAWAY: it opened no earlier than the GOAWAY's delay."""
    if c.run.goaway_at is None:
        raise RuntimeError("the client reconnected before the scenario sent GOAWAY")
    waited = c.peer.opened_at - c.run.goaway_at
    c.run.check(
        f"the client reconnects no earlier than reconnect_after_ms ({after_ms} ms)",
        reqs,
        waited >= after_ms / 1000 - 0.02,
        f"reconnected after {waited * 1000:.0f} ms",
    )


def _goaway_then_resume(code: int, reqs: tuple[str, ...]) -> Script:
    """GOAWAY(code) with the reconnect hint after 10 messages; the client must come back no
    earlier than the hint and resume from its own position."""

    async def script(c: Ctx) -> None:
        if c.attempt == 1:
            return await _first_then_drop(c, 10, goaway_ms=c.server.goaway_after_ms, code=code)
        _check_goaway_delay(c, c.server.goaway_after_ms, reqs)
        await _resume_recovered(c, 15)

    return script


_goaway = _goaway_then_resume(ErrorCode.SHUTTING_DOWN, ("PW-GOAWAY-7",))


async def _redelivery(c: Ctx) -> None:
    if not c.sub.at_least_once:
        c.run.not_applicable = "the client subscribed at-most-once; run it at-least-once"
        c.run.finish()
        return
    if c.attempt == 1:
        return await _first_then_drop(c, 10)
    await _resume_recovered(c, 12, ("PW-RESUME-1", "PW-ACK-6"))


async def _heartbeat(c: Ctx) -> None:
    await c.subscribed()
    if not await c.deliver(range(1, 3)):
        return
    rtt = await c.peer.ping(0x4842, min(2.0, c.timeout))
    c.run.check(
        "PING is answered with PONG (same opaque) promptly",
        ("PW-HB-2",),
        rtt is not None,
        "no PONG" if rtt is None else f"{rtt * 1000:.0f} ms",
    )
    start = trio.current_time()
    await trio.sleep(3 * c.h)
    times = [start] + [t for t in c.peer.received_times if t > start] + [trio.current_time()]
    worst = max(b - a for a, b in pairwise(times))
    c.run.check(
        f"the client sends a frame at least every heartbeat interval ({c.h * 1000:.0f} ms)",
        ("PW-HB-1",),
        worst <= 1.5 * c.h + 0.25,
        f"longest silence {worst * 1000:.0f} ms",
    )
    await c.finish_ok(2)


async def _heartbeat_silence(c: Ctx) -> None:
    if c.attempt > 1:
        return await _resume_recovered(c, 4)
    await c.subscribed()
    if not await c.deliver(range(1, 3)):
        return
    await c.peer.settle(c.sub.sub_id, c.timeout)
    c.record_resume()
    c.peer.silent = True
    start = trio.current_time()
    closed = await c.peer.wait_closed(4 * c.h + c.timeout)
    elapsed = (c.peer.closed_at or trio.current_time()) - start
    c.run.check(
        f"the client closes after 3 silent heartbeat intervals ({3 * c.h:.2f} s)",
        ("PW-HB-3",),
        closed,
        f"closed after {elapsed:.2f} s" if closed else "never closed",
    )
    c.run.check(
        "the client does not give up much before 3 intervals",
        ("PW-HB-3",),
        elapsed >= 2.5 * c.h,
        f"closed after {elapsed:.2f} s",
        level="SHOULD",
    )
    times = [start] + [t for t in c.peer.received_times if t > start]
    if c.peer.closed_at:
        times.append(c.peer.closed_at)
    worst = max((b - a for a, b in pairwise(times)), default=0.0)
    c.run.check(
        "while the server is silent the client still sends a frame every interval (PING)",
        ("PW-HB-1",),
        worst <= 1.5 * c.h + 0.25,
        f"longest silence {worst * 1000:.0f} ms",
    )
    err = c.peer.client_error
    if err is not None:
        c.run.check(
            "the client's ERROR is HEARTBEAT_TIMEOUT",
            ("PW-HB-3",),
            err.code == ErrorCode.HEARTBEAT_TIMEOUT,
            str(err),
        )
    c.server.expect_reconnect(
        c.run, c.timeout + c.server.reconnect_wait, level="SHOULD", reqs=("PW-ERR-10",)
    )


async def _credit(c: Ctx) -> None:
    initial = c.sub.initial_credit
    if initial > 1000:
        c.run.not_applicable = f"initial credit {initial} > 1000: exhaustion takes too long"
        c.run.finish()
        return
    total = min(3 * initial + 5, 3000) if initial else 20
    await c.subscribed()
    sid = c.sub.sub_id
    worst = 0

    async def watch() -> None:
        nonlocal worst
        while True:
            outstanding = initial + c.peer.granted.get(sid, 0) - c.peer.delivered.get(sid, 0)
            worst = max(worst, outstanding)
            await c.peer.wait_until(lambda: False, 0.01)

    async with trio.open_nursery() as n:
        n.start_soon(watch)
        ok = await c.deliver(range(1, total + 1))
        n.cancel_scope.cancel()
    c.run.check(
        f"credit is granted only as messages are consumed (outstanding never above the "
        f"initial {initial})",
        ("PW-FLOW-7",),
        worst <= max(initial, 1),
        f"outstanding credit reached {worst}",
        level="SHOULD",
    )
    if ok:
        await c.finish_ok(total)


async def _over_credit(c: Ctx) -> None:
    """A MESSAGE_BATCH one record larger than the credit the client has granted, followed
    by a PING. The credit granted for the batch is what the client sent before the batch's
    first byte arrived (PW-FLOW-5), which is at most what the server has received by the
    PONG that follows the batch: so however TCP splits the stream, a batch larger than that
    is a violation, and a client that topped up in time is given another, larger one."""
    initial = c.sub.initial_credit
    if initial > 1000:
        c.run.not_applicable = f"initial credit {initial} > 1000"
        c.run.finish()
        return
    await c.subscribed()
    if not await c.deliver(range(1, 3)):
        return
    sid, epoch, topic = c.sub.sub_id, c.epoch(), c.sub.topic
    for attempt in range(3):
        await c.peer.settle(sid, c.timeout)
        remaining = c.peer.credit.get(sid, 0)
        granted = c.peer.granted.get(sid, 0)
        first = c.peer.delivered.get(sid, 0) + 1
        count = remaining + 1
        records = tuple(F.Record(b"msg-%d" % s) for s in range(first, first + count))
        opaque = 0x0C4E_D170 + attempt
        c.run.credit = first - 1  # what the application may see: everything before it
        c.peer.credit[sid] = remaining - count
        c.peer.delivered[sid] = first + count - 1
        await c.peer.send(F.MessageBatch(epoch, first, topic, records), F.Ping(opaque))
        await c.peer.wait_until(
            lambda o=opaque: o in c.peer.pongs or c.peer.closed_at is not None,  # type: ignore[misc]
            c.timeout,
        )
        if opaque not in c.peer.pongs:
            break
        extra = c.peer.granted_at_pong[opaque].get(sid, 0) - granted
        if count > remaining + extra:
            c.run.check(
                "the client refuses a push beyond the credit it granted before the push arrived",
                ("PW-FLOW-5",),
                False,
                f"accepted a batch of {count} with {remaining} credit granted, and at most "
                f"{extra} more sent before the batch arrived",
            )
            c.run.finish()
            return
        c.run.notes.append(f"batch {attempt + 1} was within credit: the client topped up in time")
    await c.expect_error_close(ErrorCode.FLOW_CONTROL_ERROR, ("PW-FLOW-5",))


async def _no_reconnect(c: Ctx, what: str, reqs: tuple[str, ...]) -> None:
    """After a terminal ending: the client must not come back. The window ends early when
    the client command exits, which is what a command-line client does."""
    await c.peer.close()
    seen = c.run.connections
    with trio.move_on_after(c.timeout):
        async with trio.open_nursery() as nursery:

            async def either(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(either, c.run.client_exited)
            nursery.start_soon(either, c.run.reconnected)
    c.run.check(
        f"the client does not reconnect automatically after {what}",
        reqs,
        c.run.connections == seen,
        "" if c.run.connections == seen else "it reconnected",
    )
    c.run.finish()


def _reconnected_after_terminal(c: Ctx, reqs: tuple[str, ...]) -> bool:
    """A later connection of a no-reconnect scenario is itself the failure."""
    if c.attempt == 1:
        return False
    c.run.check("the client does not reconnect automatically after a terminal code", reqs, False)
    c.run.finish()
    return True


async def _terminal_error(c: Ctx) -> None:
    reqs = ("PW-CLIENT-1", "PW-ERR-10")
    if _reconnected_after_terminal(c, reqs):
        return
    await c.subscribed()
    if not await c.deliver(range(1, 2)):
        return
    await c.peer.settle(c.sub.sub_id, c.timeout)
    await c.peer.send(F.Error(ErrorCode.PROTOCOL_ERROR, 0, 0, "scenario: a terminal code"))
    await _no_reconnect(c, "ERROR(PROTOCOL_ERROR) from the server", reqs)


async def _own_terminal(c: Ctx) -> None:
    reqs = ("PW-CLIENT-1",)
    if _reconnected_after_terminal(c, reqs):
        return
    await c.subscribed()
    if not (await c.deliver(range(1, 2)) and await c.deliver(range(3, 4))):
        return
    closed = await c.peer.wait_closed(c.timeout)
    err = c.peer.client_error
    c.run.check(
        "the client closes with ERROR(PROTOCOL_ERROR) on a sequence hole",
        ("PW-ORDER-7",),
        closed and (err is None or err.code == ErrorCode.PROTOCOL_ERROR),
        f"closed: {closed}; its ERROR: {err}",
    )
    await _no_reconnect(c, "its own ERROR(PROTOCOL_ERROR)", reqs)


async def _cut_then_resume(c: Ctx, last: int, error: F.Error) -> None:
    """Deliver up to ``last``, let the client settle, record its resume point, then end the
    connection with ``error`` and expect a reconnect."""
    sid = c.sub.sub_id
    if not await c.deliver(range(c.peer.delivered.get(sid, 0) + 1, last + 1)):
        return
    await c.peer.settle(sid, c.timeout)
    c.record_resume()
    await c.peer.send(error)
    await c.peer.close()
    c.server.expect_reconnect(
        c.run, c.timeout + c.server.reconnect_wait, reqs=("PW-CLIENT-2", "PW-ERR-10")
    )


async def _unknown_code(c: Ctx) -> None:
    if c.attempt == 1:
        await c.subscribed()
        error = F.Error(UNKNOWN_CODE, 0, 0, "scenario: a newer code")
        return await _cut_then_resume(c, 2, error)
    await _resume_recovered(c, 4, ("PW-CLIENT-2", "PW-RESUME-1"))


async def _error_behind_messages(c: Ctx) -> None:
    """SUBSCRIBED, messages 1..3 and ERROR(SHUTTING_DOWN) in one write: the messages are
    valid and delivered; the client resumes after them."""
    sid = c.sub.sub_id
    if c.attempt == 1:
        if c.sub.initial_credit < 3:
            c.run.not_applicable = "needs an initial credit of 3 or more"
            c.run.finish()
            return
        frames: list[F.Frame] = [F.Subscribed(sid, Outcome.NEW, c.epoch(), 1, 0)]
        frames += [F.Message(c.epoch(), s, c.sub.topic, b"msg-%d" % s) for s in range(1, 4)]
        frames.append(F.Error(ErrorCode.SHUTTING_DOWN, 0, 0, "scenario: restarting"))
        c.peer.credit[sid] -= 3
        c.peer.delivered[sid] = 3
        c.run.delivered = 3
        await c.peer.send(*frames)
        await c.peer.close()
        c.server.expect_reconnect(
            c.run, c.timeout + c.server.reconnect_wait, reqs=("PW-ERR-10",), level="SHOULD"
        )
        return
    s = c.sub
    # At-least-once nothing can be acknowledged after the ERROR, so the client resumes
    # after what its application processed of 1..3, which the wire does not show (§8.4).
    low = 0 if s.at_least_once else 3
    c.run.check(
        "the client resumes after the messages that preceded the ERROR"
        + (" (at-least-once: after those its application processed)" if s.at_least_once else ""),
        ("PW-CLIENT-13", "PW-RESUME-1"),
        s.since_kind == SinceKind.AFTER and s.since_epoch == c.epoch() and low <= s.since_seq <= 3,
        f"since_kind {SinceKind(s.since_kind).name} epoch {s.since_epoch} seq {s.since_seq}",
    )
    await _recover(c, s.since_seq if s.since_kind == SinceKind.AFTER else 0, 5)


#: How many times admit-and-cut admits the client and cuts it at once.
CUTS = 5


async def _admit_and_cut(c: Ctx) -> None:
    """WELCOME, then EOF as soon as the SUBSCRIBE arrives, five times: a client that resets
    its backoff on WELCOME comes back at once every time."""
    c.run.opened.append(c.peer.opened_at)
    if c.attempt <= CUTS:
        await c.peer.close()
        c.server.expect_reconnect(
            c.run, c.timeout + c.server.reconnect_wait, reqs=("PW-CLIENT-5", "PW-ERR-10")
        )
        return
    gaps = [b - a for a, b in pairwise(c.run.opened)]
    c.run.notes.append("delays between attempts: " + ", ".join(f"{g * 1000:.0f} ms" for g in gaps))
    c.run.check(
        "the delay between attempts grows while every connection is cut at once (the "
        "backoff does not reset on WELCOME)",
        ("PW-CLIENT-6", "PW-CLIENT-7"),
        gaps[-1] >= 2 * gaps[0] and gaps[-1] >= 0.04,
        f"first {gaps[0] * 1000:.0f} ms, last {gaps[-1] * 1000:.0f} ms",
    )
    await c.subscribed()
    if await c.deliver(range(1, 3)):
        await c.finish_ok(2)


async def _ack_through_gap(c: Ctx) -> None:
    """At-least-once: messages 1..2, GAP 3..5, then the stream stops (far from half the
    window); later message 6. Each time the client must acknowledge within about one
    heartbeat interval, through the gap."""
    if not c.sub.at_least_once:
        c.run.not_applicable = "the client subscribed at-most-once; run it at-least-once"
        c.run.finish()
        return
    sid = c.sub.sub_id
    await c.subscribed()
    if not await c.deliver(range(1, 3)):
        return
    await c.peer.send(F.Gap(sid, c.epoch(), 3, 5, ErrorCode.SLOW_CONSUMER))
    c.peer.delivered[sid] = 5
    bound = c.h + 1.0
    ok = await c.peer.wait_until(lambda: c.peer.last_ack(sid) >= 5, bound)
    c.run.check(
        f"the client acknowledges through the GAP (ACK 5) within one heartbeat interval "
        f"of the stream stopping ({bound:.1f} s)",
        ("PW-CLIENT-10", "PW-CLIENT-11"),
        ok,
        f"last ACK {c.peer.last_ack(sid)}",
        level="SHOULD",
    )
    if not await c.deliver(range(6, 7)):
        return
    ok = await c.peer.wait_until(lambda: c.peer.last_ack(sid) >= 6, bound)
    c.run.check(
        f"a lone message is acknowledged within one heartbeat interval ({bound:.1f} s)",
        ("PW-CLIENT-11",),
        ok,
        f"last ACK {c.peer.last_ack(sid)}",
        level="SHOULD",
    )
    await c.finish_ok(6)


#: resume-disconnect: messages per connection, connections cut with SLOW_CONSUMER.
PER_CUT, SLOW_CUTS = 5, 3


async def _resume_disconnect(c: Ctx) -> None:
    """Each later connection resumes with a backlog, gets 5 messages and is cut with
    ERROR(SLOW_CONSUMER), as a DISCONNECT server that judges lag from the subscription's
    start does (PW-SLOW-6): the client must come back each time from further on."""
    sid = c.sub.sub_id
    head = PER_CUT * (SLOW_CUTS + 1)
    welcome = c.peer.welcome
    if welcome is None or welcome.slow_consumer_policy != SlowConsumerPolicy.DISCONNECT:
        c.run.not_applicable = (
            "its connection was welcomed with another slow-consumer policy than DISCONNECT "
            "(several scenarios at once without --client-command): run it alone"
        )
        c.run.finish()
        return
    if c.attempt == 1:
        await c.subscribed()  # then the backlog builds up while the client is away
    else:
        at = c.check_resume(c.epoch(), ("PW-RESUME-1", "PW-ERR-10"))
        c.run.check(
            "each reconnection resumes further on (progress under DISCONNECT)",
            ("PW-RESUME-1",),
            at >= (c.attempt - 1) * PER_CUT,
            f"resumed after {at}",
        )
        await c.subscribed(Outcome.RECOVERED, at + 1, head)
        c.peer.delivered[sid] = at
    if c.attempt <= SLOW_CUTS:
        error = F.Error(ErrorCode.SLOW_CONSUMER, 0, 0, "scenario: lag exceeds max_lag")
        await _cut_then_resume(c, c.attempt * PER_CUT, error)
        return
    if await c.deliver(range(c.peer.delivered.get(sid, 0) + 1, head + 1)):
        await c.finish_ok(head)


async def _bad_version(c: Ctx) -> None:
    """Connection 1 arms the testserver: the client's next connection gets a server preface
    with version 0; it must close without sending anything more."""
    await c.subscribed()
    await c.deliver(range(1, 2))
    await c.peer.settle(c.sub.sub_id, c.timeout)
    c.server.armed = c.run
    await c.peer.send(F.Goaway(ErrorCode.SHUTTING_DOWN, 50, 0, (), "scenario: reconnect"))
    c.peer.goaway_sent_at = trio.current_time()
    await c.peer.wait_closed(1.0)
    await c.peer.close()
    c.server.expect_reconnect(c.run, c.timeout + c.server.reconnect_wait)


# -- client behaviour over time (SPEC.md §8.9) -----------------------------------------------


async def _goaway_terminal(c: Ctx) -> None:
    """GOAWAY(NO_ERROR) after message 1: a terminal code, so no automatic reconnect, even
    though a GOAWAY normally asks the client to come back."""
    reqs = ("PW-CLIENT-3",)
    if _reconnected_after_terminal(c, reqs):
        return
    await c.subscribed()
    if not await c.deliver(range(1, 2)):
        return
    await c.peer.settle(c.sub.sub_id, c.timeout)
    pos = F.Position(c.sub.sub_id, c.epoch(), c.resume_point(c.sub.sub_id))
    await c.peer.send(F.Goaway(ErrorCode.NO_ERROR, 0, 0, (pos,), "scenario: for good"))
    c.peer.goaway_sent_at = trio.current_time()
    await c.peer.wait_closed(1.0)
    await _no_reconnect(c, "GOAWAY(NO_ERROR)", reqs)


#: goaway-linger: the reconnect hint, long enough to tell a client that closes as soon as it
#: has acknowledged from one that keeps the old connection until it reconnects.
LINGER_AFTER_MS = 2500
#: How soon after GOAWAY a client that has nothing left to acknowledge closes (SHOULD).
LINGER_CLOSE_S = 1.0
#: Scheduling slack between a client's close of one connection and its next connect.
CLOSE_SLACK_S = 0.5


async def _goaway_linger(c: Ctx) -> None:
    """Messages 1..5 and GOAWAY in one write; the testserver then never closes. The client
    must close that connection by the time it opens the next (MUST), and should close it
    as soon as it has processed and acknowledged 1..5, without waiting for the server."""
    sid = c.sub.sub_id
    reqs = ("PW-CLIENT-4",)
    if c.attempt > 1:
        with trio.move_on_after(CLOSE_SLACK_S * 2):
            while c.run.resume_at is None:
                await trio.sleep(0.02)
        _check_goaway_delay(c, LINGER_AFTER_MS, ("PW-GOAWAY-7",))
        if c.run.goaway_closed:
            await _resume_recovered(c, 8)
        return
    if c.sub.initial_credit < 5:
        c.run.not_applicable = "needs an initial credit of 5 or more"
        c.run.finish()
        return
    frames: list[F.Frame] = [F.Subscribed(sid, Outcome.NEW, c.epoch(), 1, 0)]
    frames += [F.Message(c.epoch(), s, c.sub.topic, b"msg-%d" % s) for s in range(1, 6)]
    pos = F.Position(sid, c.epoch(), 0 if c.sub.at_least_once else 5)  # acknowledged: none
    frames.append(F.Goaway(ErrorCode.SHUTTING_DOWN, LINGER_AFTER_MS, 0, (pos,), "scenario"))
    c.peer.credit[sid] -= 5
    c.peer.delivered[sid] = 5
    c.run.delivered = 5
    await c.peer.send(*frames)
    c.peer.goaway_sent_at = c.run.goaway_at = sent = trio.current_time()
    seen = c.run.connections
    within = LINGER_AFTER_MS / 1000 + c.timeout + c.server.reconnect_wait
    await _first_of(within, partial(c.peer.wait_closed, within), c.run.reconnected.wait)
    if c.run.connections > seen:  # its FIN and its next SYN may be read in either order
        await c.peer.wait_closed(CLOSE_SLACK_S)
    closed = c.peer.closed_at
    c.run.goaway_closed = closed is not None
    c.run.check(
        "the client closes the connection that sent GOAWAY no later than it opens the next",
        reqs,
        closed is not None,
        ""
        if closed is not None
        else "it opened another connection with this one still open"
        if c.run.connections > seen
        else "it never closed it",
    )
    c.run.check(
        f"the client closes it within {LINGER_CLOSE_S:.1f} s of GOAWAY, once it has "
        "processed what preceded it, without waiting for the server",
        ("PW-CLIENT-4", "PW-GOAWAY-12"),
        closed is not None and closed - sent <= LINGER_CLOSE_S,
        "" if closed is None else f"closed after {(closed - sent) * 1000:.0f} ms",
        level="SHOULD",
    )
    if c.sub.at_least_once:
        c.run.check(
            "at-least-once: it acknowledges the messages before the GOAWAY before closing",
            ("PW-GOAWAY-12",),
            c.peer.last_ack(sid) >= 5,
            f"last ACK {c.peer.last_ack(sid)}",
            level="SHOULD",
        )
    c.record_resume()
    await c.peer.close()
    if c.run.connections == seen:
        c.server.expect_reconnect(c.run, c.timeout + c.server.reconnect_wait)
    elif not c.run.goaway_closed:
        c.run.finish()


async def _next_subscribe(c: Ctx, within: float) -> F.Subscribe | None:
    """The client's next SUBSCRIBE on this connection, or None (it closed, or none came)."""
    deadline = trio.current_time() + within
    while (left := deadline - trio.current_time()) > 0:
        frame = await c.peer.next(left)
        if frame is None or isinstance(frame, F.Subscribe):
            return frame
    return None


async def _first_of(within: float, *waits: Callable[[], Awaitable[object]]) -> None:
    """Wait until the first of ``waits`` returns, for at most ``within`` seconds."""
    with trio.move_on_after(within):
        async with trio.open_nursery() as nursery:

            async def one(wait: Callable[[], Awaitable[object]]) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            for wait in waits:
                nursery.start_soon(one, wait)


async def _reconnects(c: Ctx, within: float) -> bool:
    """After the client closed: True when it opens another connection within ``within``,
    False when it does not, or when its command exits first."""
    seen = c.run.connections
    await _first_of(within, c.run.client_exited.wait, c.run.reconnected.wait)
    return c.run.connections > seen


async def _accept_retry(c: Ctx, sub: F.Subscribe) -> None:
    """The repeated SUBSCRIBE succeeds: messages 1..2 on it."""
    c.sub = sub
    c.peer.take_subscribe(sub)
    c.run.delivered = 2
    await c.subscribed()
    if await c.deliver(range(1, 3)):
        await c.finish_ok(2)


def _gave_up(c: Ctx, what: str) -> None:
    c.run.notes.append(
        f"the client did not repeat the SUBSCRIBE {what}; it may report the refusal to its "
        "application instead"
    )
    c.run.finish()


#: rate-limited: how often the SUBSCRIBE is refused before it is accepted (four, so the last
#: wait, drawn from 4..8 base, is at least twice the first, from 0.5..1 base, with room for
#: scheduling), and the least wait before a repeat that a backoff delay can be (far below
#: RECOMMENDED base / 2 = 50 ms; a client that repeats at once takes well under a
#: millisecond on loopback).
REFUSALS, AT_ONCE_S = 4, 0.01


async def _rate_limited(c: Ctx) -> None:
    """The SUBSCRIBE is refused with RATE_LIMITED four times, then accepted. A repeat,
    on this connection or the next, must wait a backoff delay that grows."""
    reqs = ("PW-CLIENT-8",)
    sub: F.Subscribe | None = c.sub
    while sub is not None:
        if c.run.refused:
            waited = trio.current_time() - c.run.refused[-1]
            c.run.waits.append(waited)
            c.run.check(
                "the client does not repeat a SUBSCRIBE refused with RATE_LIMITED at once",
                reqs,
                waited >= AT_ONCE_S,
                f"repeated after {waited * 1000:.1f} ms",
            )
        if len(c.run.refused) == REFUSALS:
            waits = c.run.waits
            c.run.notes.append("waits: " + ", ".join(f"{w * 1000:.0f} ms" for w in waits))
            c.run.check(
                "the waits before repeating grow as a backoff delay does",
                ("PW-CLIENT-8", "PW-CLIENT-6"),
                waits[-1] >= 2 * waits[0] and waits[-1] >= 0.04,
                f"first {waits[0] * 1000:.0f} ms, last {waits[-1] * 1000:.0f} ms",
            )
            return await _accept_retry(c, sub)
        c.run.refused.append(trio.current_time())
        error = F.Error(ErrorCode.RATE_LIMITED, FrameType.SUBSCRIBE, sub.sub_id, "scenario")
        await c.peer.send(error)
        sub = await _next_subscribe(c, c.timeout)
    if c.peer.closed_at is not None and await _reconnects(c, c.timeout):
        return  # the next connection goes on
    _gave_up(c, f"within {c.timeout:.1f} s")


async def _too_many_subscriptions(c: Ctx) -> None:
    """The SUBSCRIBE is refused with TOO_MANY_SUBSCRIPTIONS. None of the client's
    subscriptions on this connection can end (it has no other), so it must not repeat the
    SUBSCRIBE there; on a new connection it may."""
    if c.attempt > 1:
        return await _accept_retry(c, c.sub)
    error = F.Error(ErrorCode.TOO_MANY_SUBSCRIPTIONS, FrameType.SUBSCRIBE, c.sub.sub_id, "full")
    await c.peer.send(error)
    sent = trio.current_time()
    within = min(c.timeout, 4 * c.h)
    repeat = await _next_subscribe(c, within)
    c.run.check(
        "the client does not repeat, on the same connection, a SUBSCRIBE refused with "
        "TOO_MANY_SUBSCRIPTIONS while none of its subscriptions there has ended",
        ("PW-CLIENT-8",),
        repeat is None,
        "" if repeat is None else f"repeated after {(trio.current_time() - sent) * 1000:.0f} ms",
    )
    if repeat is not None:
        c.run.finish()
    elif c.peer.closed_at is None or not await _reconnects(c, c.timeout):
        _gave_up(c, "on that connection")


#: trickle-frame: the pieces of the MESSAGE and the pause between them, in heartbeat
#: intervals: 5 pauses of 0.8 H, so no whole frame arrives for 4 H, above the 3 H timeout.
TRICKLE_PIECES, TRICKLE_PAUSE = 6, 0.8


async def _trickle_frame(c: Ctx) -> None:
    """Message 1, then message 2 in six pieces 0.8 heartbeat intervals apart (no PING, no
    PONG meanwhile): bytes keep arriving, a whole frame does not for 4 intervals."""
    sid = c.sub.sub_id
    reqs = ("PW-HB-4", "PW-CLIENT-14")
    await c.subscribed()
    if not await c.deliver(range(1, 2)):
        return
    await c.peer.settle(sid, c.timeout)
    if not await c.peer.wait_until(lambda: c.peer.credit.get(sid, 0) > 0, c.timeout):
        c.run.check("the client grants credit for message 2", ("PW-FLOW-7",), False, "credit 0")
        c.run.finish()
        return
    data = codec.encode_frame(F.Message(c.epoch(), 2, c.sub.topic, b"trickled " * 4))
    cuts = [len(data) * i // TRICKLE_PIECES for i in range(TRICKLE_PIECES + 1)]
    c.peer.silent = True  # a PING or PONG must not land inside the frame
    start = trio.current_time()
    for i, (a, b) in enumerate(pairwise(cuts)):
        if i:
            await trio.sleep(TRICKLE_PAUSE * c.h)
        if not await c.peer.send_raw(data[a:b]) or c.peer.closed_at is not None:
            break
    c.peer.silent = False
    c.peer.credit[sid] -= 1
    c.peer.delivered[sid] = 2
    took = trio.current_time() - start
    err = c.peer.client_error
    c.run.check(
        f"the client does not time out while a frame's bytes keep arriving ({took:.2f} s "
        f"without a whole frame, timeout {3 * c.h:.2f} s)",
        reqs,
        c.peer.closed_at is None and err is None,
        f"its ERROR: {err}; closed: {c.peer.closed_at is not None}",
    )
    await c.finish_ok(2)


async def _subscribed_start_zero(c: Ctx) -> None:
    await c.subscribed(start=0)
    await c.expect_error_close(ErrorCode.PROTOCOL_ERROR, ("PW-CLIENT-16",))


async def _invalid_position(c: Ctx) -> None:
    """Connection 1: messages 1..5, then cut. The resume on connection 2 is refused with
    INVALID_POSITION, a terminal request code: the client must not subscribe from that
    position again, on that connection or a later one. Reporting the refusal, or a new
    start the application chose, is what it may do instead."""
    reqs = ("PW-CLIENT-9",)
    if c.attempt == 1:
        return await _first_then_drop(c, 5)
    if c.attempt == 2:
        c.check_resume(c.epoch())  # where it resumed from is the position refused
    at = c.resume_at()
    refused = (SinceKind.AFTER, c.epoch(), at)
    if c.attempt == 2:
        sub_id = c.sub.sub_id
        await c.peer.send(F.Error(ErrorCode.INVALID_POSITION, FrameType.SUBSCRIBE, sub_id, "no"))
        repeat = await _next_subscribe(c, min(c.timeout, 4 * c.h))
        if repeat is None:
            if c.peer.closed_at is not None and await _reconnects(c, c.timeout):
                return  # the next connection's SUBSCRIBE is judged there
            c.run.check(
                "the client does not subscribe again from a position refused with INVALID_POSITION",
                reqs,
                True,
            )
            c.run.finish()
            return
    else:
        repeat = c.sub
    same = (repeat.since_kind, repeat.since_epoch, repeat.since_seq) == refused
    c.run.check(
        "the client does not subscribe again from a position refused with INVALID_POSITION",
        reqs,
        not same,
        f"SUBSCRIBE AFTER(epoch {c.epoch()}, seq {at}) again" if same else "",
    )
    c.run.finish()


def _refused_app(r: ScenarioRun) -> list[tuple[Any, ...]]:
    return _msgs(range(1, 3)) if r.delivered else [("error",)]


def _or(value: int | None, default: int) -> int:
    """A recorded value, or what the expected view assumes when the run never recorded it."""
    return default if value is None else value


def _app_resume(r: ScenarioRun) -> list[tuple[Any, ...]]:
    return _msgs(range(1, _or(r.delivered, 5) + 1))


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "split-frames",
            "Every byte of SUBSCRIBED and 10 MESSAGEs in its own TCP segment",
            ("PW-FRAME-1",),
            "reassemble frames from any split; deliver messages 1..10; answer the final PING",
            "messages 1..10 in order",
            _split_frames,
            app=lambda r: _msgs(range(1, 11)),
        ),
        Scenario(
            "coalesced-frames",
            "SUBSCRIBED, up to 50 MESSAGEs and a PING in one TCP segment",
            ("PW-FRAME-1", "PW-HB-2"),
            "process every frame of one read; PONG the PING; deliver messages 1..50",
            "messages 1..50 in order",
            _coalesced,
            app=lambda r: _msgs(range(1, 51)),
        ),
        Scenario(
            "max-frame",
            "A MESSAGE and a MESSAGE_BATCH exactly at the client's max_frame_size",
            ("PW-FRAME-10",),
            "accept frames exactly as large as its HELLO.max_frame_size",
            "messages 1 and 2 (large payloads)",
            _max_frame,
            app=lambda r: _msgs(range(1, 3)),
        ),
        Scenario(
            "too-large-frame",
            "A frame header declaring max_frame_size + 1 bytes",
            ("PW-FRAME-2",),
            "ERROR(FRAME_TOO_LARGE) from the header alone, then close",
            "message 1, then a connection error",
            _fatal(_too_large, ErrorCode.FRAME_TOO_LARGE, ("PW-FRAME-2",)),
            app=lambda r: [("msg", 1), ("error",)],
        ),
        Scenario(
            "unknown-ignorable",
            "Unknown frame types 0xB3, 0x80, 0xFE (ignorable) between messages",
            ("PW-FRAME-8",),
            "skip unknown frames whose type has bit 7 set, whatever their flags",
            "messages 1..3",
            _unknown_ignorable,
            app=lambda r: _msgs(range(1, 4)),
        ),
        Scenario(
            "unknown-fatal",
            "Unknown frame type 0x7D (not ignorable)",
            ("PW-FRAME-5",),
            "ERROR(UNKNOWN_FRAME_TYPE), then close",
            "message 1, then a connection error",
            _fatal(lambda c: _raw(0x7D, 0, b"\x01"), ErrorCode.UNKNOWN_FRAME_TYPE, ("PW-FRAME-5",)),
            app=lambda r: [("msg", 1), ("error",)],
        ),
        Scenario(
            "reserved-bits",
            "A MESSAGE with an undefined flag bit (0x02)",
            ("PW-FRAME-3",),
            "ERROR(RESERVED_BITS_SET), then close",
            "message 1, then a connection error",
            _fatal(
                lambda c: _raw(
                    FrameType.MESSAGE,
                    0x02,
                    codec.encode_payload(F.Message(c.epoch(), 2, c.sub.topic, b"x")),
                ),
                ErrorCode.RESERVED_BITS_SET,
                ("PW-FRAME-3",),
            ),
            app=lambda r: [("msg", 1), ("error",)],
        ),
        Scenario(
            "malformed",
            "A PING whose payload is 7 bytes instead of 8",
            ("PW-FRAME-4",),
            "ERROR(MALFORMED_FRAME), then close",
            "message 1, then a connection error",
            _fatal(
                lambda c: _raw(FrameType.PING, 0, b"\x00" * 7),
                ErrorCode.MALFORMED_FRAME,
                ("PW-FRAME-4",),
            ),
            app=lambda r: [("msg", 1), ("error",)],
        ),
        Scenario(
            "unexpected-frame",
            "The server sends a SUBSCRIBE (a frame only clients send)",
            ("PW-FRAME-13",),
            "ERROR(UNEXPECTED_FRAME), then close",
            "message 1, then a connection error",
            _fatal(
                lambda c: codec.encode_frame(F.Subscribe(sub_id=1, topic="x")),
                ErrorCode.UNEXPECTED_FRAME,
                ("PW-FRAME-13",),
            ),
            app=lambda r: [("msg", 1), ("error",)],
        ),
        Scenario(
            "gap",
            "Messages 1..5, GAP(6..10, SLOW_CONSUMER), messages 11..15",
            ("PW-PUB-13", "PW-ERR-6"),
            "report the gap 6..10 to the application and go on with 11..15 (at-least-once: "
            "ACK up to 15, through the gap: PW-CLIENT-10)",
            "messages 1..5, gap 6..10, messages 11..15",
            _gap,
            app=lambda r: [*_msgs(range(1, 6)), ("gap", 6, 10), *_msgs(range(11, 16))],
        ),
        Scenario(
            "sequence-hole",
            "Messages 1, 2, then 4: a hole without a GAP",
            ("PW-ORDER-7", "PW-ERR-1"),
            "ERROR(PROTOCOL_ERROR), then close: never deliver 4 as if 3 had not existed",
            "messages 1..2, then a connection error (never message 4)",
            _sequence_hole,
            app=lambda r: [*_msgs(range(1, 3)), ("error",)],
        ),
        Scenario(
            "epoch-reset-live",
            "Mid-subscription the topic continues in a new epoch at seq 1 (twice; the "
            "second time starting with GAP 1..2)",
            ("PW-ORDER-13", "PW-RESUME-4"),
            "accept a push of a new epoch that starts at sequence 1 (MESSAGE or GAP), "
            "restart its position at (new epoch, 0) and tell the application; stay connected",
            "messages 1..3, epoch change, messages 1..3, epoch change, gap 1..2, messages 3..4",
            _epoch_reset_live,
            app=lambda r: [
                *_msgs(range(1, 4)),
                ("epoch",),
                *_msgs(range(1, 4)),
                ("epoch",),
                ("gap", 1, 2),
                *_msgs(range(3, 5)),
            ],
        ),
        Scenario(
            "epoch-reset-bad-start",
            "Messages 1..3, then a MESSAGE of a new epoch with sequence 4",
            ("PW-ORDER-13", "PW-RESUME-4"),
            "ERROR(PROTOCOL_ERROR), then close: a new epoch must start at sequence 1",
            "messages 1..3, then a connection error (no epoch change, never message 4)",
            _epoch_reset_bad_start,
            app=lambda r: [*_msgs(range(1, 4)), ("error",)],
        ),
        Scenario(
            "resume-gap",
            "Connection dropped after 5 messages; the resume gets outcome GAP",
            ("PW-RESUME-1", "PW-RESUME-2"),
            "reconnect, SUBSCRIBE AFTER(epoch, its recorded position), report the gap, go on",
            "messages 1..5, gap (resume point+1)..10, messages 11..12",
            _resume_gap,
            app=lambda r: [
                *_app_resume(r),
                ("gap", _or(r.resume_at, 5) + 1, 10),
                *_msgs(range(11, 13)),
            ],
        ),
        Scenario(
            "epoch-change",
            "Connection dropped after 5 messages; the resume gets EPOCH_CHANGED",
            ("PW-RESUME-1", "PW-RESUME-3"),
            "reconnect, resume with AFTER(old epoch, position), adopt the new epoch, tell the "
            "application, deliver seqs 1..3 of the new epoch",
            "messages 1..5, epoch change, messages 1..3",
            _epoch_change,
            app=lambda r: [*_app_resume(r), ("epoch",), *_msgs(range(1, 4))],
        ),
        Scenario(
            "goaway",
            "GOAWAY(SHUTTING_DOWN) after 10 messages with a reconnect hint",
            ("PW-GOAWAY-6", "PW-GOAWAY-7", "PW-RESUME-1"),
            "send no new requests after GOAWAY, reconnect no earlier than reconnect_after_ms, "
            "resume from its own position, deliver 11..15",
            "messages 1..15, no duplicates",
            _goaway,
            app=lambda r: _msgs(range(1, 16)),
        ),
        Scenario(
            "heartbeat",
            "PING from the server; then an idle connection for 3 intervals",
            ("PW-HB-1", "PW-HB-2"),
            "PONG every PING promptly; send a frame at least every heartbeat interval",
            "messages 1..2",
            _heartbeat,
            app=lambda r: _msgs(range(1, 3)),
        ),
        Scenario(
            "heartbeat-silence",
            "The server goes completely silent after 2 messages",
            ("PW-HB-1", "PW-HB-3", "PW-ERR-10"),
            "keep PINGing, close after 3 silent intervals (ERROR(HEARTBEAT_TIMEOUT)), reconnect "
            "and resume from its position",
            "messages 1..4 (the connection is replaced in between)",
            _heartbeat_silence,
            app=lambda r: _msgs(range(1, 5)),
        ),
        Scenario(
            "credit",
            "More messages than the initial credit (3 x credit + 5)",
            ("PW-FLOW-7",),
            "grant more credit as the application consumes, never far ahead of it",
            "every message, in order",
            _credit,
            app=lambda r: [],
        ),
        Scenario(
            "over-credit",
            "A MESSAGE_BATCH one record beyond the credit granted before it arrived",
            ("PW-FLOW-5",),
            "ERROR(FLOW_CONTROL_ERROR), then close",
            "the messages within credit, then a connection error",
            _over_credit,
            app=lambda r: [*_msgs(range(1, _or(r.credit, 0) + 1)), ("error",)],
        ),
        Scenario(
            "redelivery",
            "At-least-once: connection dropped after 10 messages; resume from what was processed",
            ("PW-RESUME-1", "PW-ACK-6"),
            "resume with AFTER(epoch, S), S processed and not below the last ACK: what was not "
            "processed comes again",
            "messages 1..12 (some may come twice)",
            _redelivery,
            mode="at-least-once",
            app=lambda r: [],
        ),
        Scenario(
            "terminal-error",
            "ERROR(PROTOCOL_ERROR), a terminal code, after message 1",
            ("PW-CLIENT-1", "PW-ERR-10"),
            "close and not reconnect automatically (a command-line client exits non-zero)",
            "message 1, then a terminal error",
            _terminal_error,
            app=lambda r: [("msg", 1), ("error",)],
        ),
        Scenario(
            "own-terminal",
            "Messages 1, then 3: the client's own PROTOCOL_ERROR is terminal too",
            ("PW-CLIENT-1", "PW-ORDER-7"),
            "ERROR(PROTOCOL_ERROR), close, and not reconnect automatically",
            "message 1, then a terminal error",
            _own_terminal,
            app=lambda r: [("msg", 1), ("error",)],
        ),
        Scenario(
            "unknown-code",
            "ERROR with connection code 0x00f7, which no version defines yet",
            ("PW-CLIENT-2", "PW-ERR-6"),
            "treat the unknown code as temporary: reconnect with backoff, resume, deliver 3..4",
            "messages 1..4",
            _unknown_code,
            app=lambda r: _msgs(range(1, 5)),
        ),
        Scenario(
            "error-behind-messages",
            "SUBSCRIBED, messages 1..3 and ERROR(SHUTTING_DOWN) in one TCP segment",
            ("PW-CLIENT-13", "PW-ERR-10"),
            "deliver messages 1..3 (they precede the ERROR), then reconnect and resume after "
            "them (at-most-once) or after those its application processed (at-least-once)",
            "messages 1..3, then 4..5 after the reconnect",
            _error_behind_messages,
            app=lambda r: _msgs(range(1, 4)),
        ),
        Scenario(
            "admit-and-cut",
            f"WELCOME, then EOF at the SUBSCRIBE, {CUTS} times in a row",
            ("PW-CLIENT-5", "PW-CLIENT-6", "PW-CLIENT-7"),
            "reconnect after each cut with a growing delay: WELCOME alone does not reset "
            "the backoff; then deliver messages 1..2",
            "messages 1..2",
            _admit_and_cut,
            app=lambda r: _msgs(range(1, 3)),
        ),
        Scenario(
            "ack-through-gap",
            "At-least-once: messages 1..2, GAP 3..5, a pause, message 6, a pause",
            ("PW-CLIENT-10", "PW-CLIENT-11", "PW-PUB-13"),
            "report the gap; ACK 5 (through the gap) and later ACK 6, each within about one "
            "heartbeat interval although far less than half the window was used",
            "messages 1..2, gap 3..5, message 6",
            _ack_through_gap,
            mode="at-least-once",
            app=lambda r: [*_msgs(range(1, 3)), ("gap", 3, 5), ("msg", 6)],
        ),
        Scenario(
            "resume-disconnect",
            f"A backlog of {PER_CUT * (SLOW_CUTS + 1)}; each connection gets {PER_CUT} "
            f"messages and ERROR(SLOW_CONSUMER), {SLOW_CUTS} times",
            ("PW-RESUME-1", "PW-ERR-10", "PW-SLOW-6"),
            "reconnect after each SLOW_CONSUMER (temporary) and resume from its own position, "
            "so every connection makes progress",
            f"messages 1..{PER_CUT * (SLOW_CUTS + 1)}",
            _resume_disconnect,
            app=lambda r: _msgs(range(1, PER_CUT * (SLOW_CUTS + 1) + 1)),
            slow_consumer=SlowConsumerPolicy.DISCONNECT,
        ),
        Scenario(
            "bad-version",
            "After a GOAWAY, the reconnect gets a server preface with version 0",
            ("PW-PREFACE-7",),
            "report UNSUPPORTED_VERSION and close without sending anything after its HELLO",
            "message 1, then a terminal error (no further reconnects)",
            _bad_version,
            app=lambda r: [("msg", 1), ("error",)],
        ),
        Scenario(
            "goaway-terminal",
            "GOAWAY(NO_ERROR), a terminal code, after message 1",
            ("PW-CLIENT-3",),
            "close and not reconnect automatically: the GOAWAY's code is terminal",
            "message 1, then a terminal error",
            _goaway_terminal,
            app=lambda r: [("msg", 1)],
        ),
        Scenario(
            "goaway-unknown-code",
            "GOAWAY with connection code 0x00f7, which no version defines yet, after 10 "
            "messages, with a reconnect hint",
            ("PW-CLIENT-2", "PW-CLIENT-3", "PW-GOAWAY-7"),
            "treat the unknown code as temporary: reconnect no earlier than "
            "reconnect_after_ms (not after its own backoff), resume, deliver 11..15",
            "messages 1..15, no duplicates",
            _goaway_then_resume(UNKNOWN_CODE, ("PW-CLIENT-2", "PW-CLIENT-3", "PW-GOAWAY-7")),
            app=lambda r: _msgs(range(1, 16)),
        ),
        Scenario(
            "goaway-linger",
            f"Messages 1..5 and GOAWAY(SHUTTING_DOWN, {LINGER_AFTER_MS} ms) in one segment; "
            "the testserver never closes that connection",
            ("PW-CLIENT-4", "PW-GOAWAY-12"),
            "close the old connection before opening the next (and soon after acknowledging "
            "1..5, without waiting for the server); resume and deliver 6..8",
            "messages 1..8",
            _goaway_linger,
            app=lambda r: _msgs(range(1, 9)),
        ),
        Scenario(
            "rate-limited",
            f"The SUBSCRIBE refused with RATE_LIMITED {REFUSALS} times, then accepted",
            ("PW-CLIENT-8",),
            "repeat the SUBSCRIBE only after a backoff delay, growing with each refusal (or "
            "report the refusal and not repeat it); messages 1..2 once accepted",
            "messages 1..2 (or the refusal)",
            _rate_limited,
            app=_refused_app,
        ),
        Scenario(
            "too-many-subscriptions",
            "The SUBSCRIBE refused with TOO_MANY_SUBSCRIPTIONS",
            ("PW-CLIENT-8",),
            "not repeat it on that connection, where none of its subscriptions can end (a new "
            "connection may repeat it: messages 1..2)",
            "the refusal (or messages 1..2 on a new connection)",
            _too_many_subscriptions,
            app=_refused_app,
        ),
        Scenario(
            "trickle-frame",
            f"A MESSAGE in {TRICKLE_PIECES} pieces {TRICKLE_PAUSE} heartbeat intervals apart: "
            "bytes, but no whole frame, for 4 intervals",
            ("PW-HB-4", "PW-CLIENT-14"),
            "count bytes, not whole frames, as received: no HEARTBEAT_TIMEOUT; deliver 1..2",
            "messages 1..2",
            _trickle_frame,
            app=lambda r: _msgs(range(1, 3)),
        ),
        Scenario(
            "subscribed-twice",
            "A second SUBSCRIBED for the same SUBSCRIBE, after message 1",
            ("PW-CLIENT-16",),
            "ERROR(PROTOCOL_ERROR), then close",
            "message 1, then a connection error",
            _fatal(
                lambda c: codec.encode_frame(
                    F.Subscribed(c.sub.sub_id, Outcome.NEW, c.epoch(), 2, 1)
                ),
                ErrorCode.PROTOCOL_ERROR,
                ("PW-CLIENT-16",),
            ),
            app=lambda r: [("msg", 1), ("error",)],
        ),
        Scenario(
            "subscribed-unknown-id",
            "A SUBSCRIBED for a sub_id the client never used, after message 1",
            ("PW-CLIENT-16",),
            "ERROR(PROTOCOL_ERROR), then close",
            "message 1, then a connection error",
            _fatal(
                lambda c: codec.encode_frame(
                    F.Subscribed(c.sub.sub_id ^ 0x8000_0000, Outcome.NEW, c.epoch(), 1, 0)
                ),
                ErrorCode.PROTOCOL_ERROR,
                ("PW-CLIENT-16",),
            ),
            app=lambda r: [("msg", 1), ("error",)],
        ),
        Scenario(
            "subscribed-start-zero",
            "The SUBSCRIBED (outcome NEW) has start_seq 0",
            ("PW-CLIENT-16",),
            "ERROR(PROTOCOL_ERROR), then close",
            "a connection error, no message",
            _subscribed_start_zero,
            app=lambda r: [("error",)],
        ),
        Scenario(
            "invalid-position",
            "Messages 1..5, the connection cut; the resume is refused with INVALID_POSITION",
            ("PW-CLIENT-9",),
            "report the refusal (or let the application choose a new start); never "
            "subscribe from the refused position again",
            "messages 1..5, then the refusal",
            _invalid_position,
            app=lambda r: [*_msgs(range(1, _or(r.delivered, 5) + 1)), ("error",)],
        ),
    )
}

# Scenarios for clients that subscribe to patterns (n/a for the others): after the rest.
SCENARIOS |= {s.name: s for s in PATTERN_SCENARIOS}

#: Width of the scenario-name column in the text reports.
NAME_WIDTH = max(len(name) for name in SCENARIOS)


# -- the server ----------------------------------------------------------------------------
