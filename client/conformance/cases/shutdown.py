"""shutdown: GOAWAY in both directions (SPEC.md §8.6).

A server sends GOAWAY only when its operator shuts it down, which no frame can ask for.
These cases are therefore "not applicable" unless the operator gives the kit a way to do it
(``--shutdown-command 'kill -TERM 1234'``, or ``Target.shutdown`` from Python). The one
shutdown is observed once, from three connections, and judged by several cases; it runs
after every other case because the target is gone afterwards. SD-01 (a client's GOAWAY)
needs no operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from pushwire.client.conformance.registry import NEEDS_SHUTDOWN, case
from pushwire.client.conformance.runner import CaseContext
from pushwire.client.conformance.wire import (
    EOF,
    RESET,
    TIMEOUT,
    CaseFailed,
    Observation,
    WireConnection,
    describe,
)
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import FrameType

CAT = "shutdown"


def _drain_extra(ctx: CaseContext) -> float:
    return ctx.target.drain_timeout + 4 * ctx.target.timeout


@case(
    "SD-01",
    "A client's GOAWAY(NO_ERROR) makes the server close the connection",
    category=CAT,
    requirements=("PW-GOAWAY-10",),
)
async def client_goaway(ctx: CaseContext) -> None:
    """A client leaving deliberately says so; the server closes without an error and
    ignores positions a client should not have put in (sent here on purpose)."""
    conn = await ctx.connect()
    await ctx.subscribe(conn, ctx.topic(), sub_id=1)
    await conn.send(F.Goaway(ErrorCode.NO_ERROR, 0, 0, (F.Position(1, 1, 0),), "conformance: done"))
    obs = await conn.next_frame()
    if obs not in (EOF, RESET):
        raise CaseFailed("the server to close the connection (no ERROR)", describe(obs))


@dataclass
class ShutdownObservation:
    epoch_a: int = 0
    epoch_b: int = 0
    goaway: dict[str, Observation | None] = field(default_factory=dict)
    after_goaway: list[Observation] = field(default_factory=list)
    pong_after_goaway: bool = False
    closed_after: dict[str, float | None] = field(default_factory=dict)
    #: MESSAGE / MESSAGE_BATCH / GAP frames seen after GOAWAY, per connection
    pushes_after: dict[str, list[str]] = field(default_factory=dict)
    #: GOAWAY frames seen per connection
    goaway_count: dict[str, int] = field(default_factory=dict)


_PUSH = (F.Message, F.MessageBatch, F.Gap)


async def _first_goaway(conn: WireConnection, timeout: float) -> Observation:
    deadline = trio.current_time() + timeout
    while True:
        obs = await conn.next_frame(max(0.0, deadline - trio.current_time()))
        if isinstance(obs, (*_PUSH, F.Pong)):
            continue
        return obs


async def _observe(ctx: CaseContext) -> ShutdownObservation:
    """Three connections in known states, then the operator's shutdown.

    a: at-most-once, credit 5, 8 published (5 delivered, 3 waiting for credit);
    b: at-least-once, 5 delivered, ACK(3); idle: handshake only. After a's GOAWAY the kit
    grants credit (which must not release the 3 waiting messages), sends SUBSCRIBE and
    PUBLISH (GOING_AWAY each) and PING (PONG), then waits for the server to close.
    """
    assert ctx.target.shutdown is not None
    out = ShutdownObservation()
    ta, tb = ctx.topic("amo"), ctx.topic("alo")
    a, b, idle = await ctx.connect(), await ctx.connect(), await ctx.connect()
    conns = {"a": a, "b": b, "idle": idle}
    ra = await ctx.subscribe(a, ta, sub_id=1, credit=5)
    rb = await ctx.subscribe(b, tb, sub_id=2, at_least_once=True)
    out.epoch_a, out.epoch_b = ra.epoch, rb.epoch
    await ctx.publish(ta, [f"{i}".encode() for i in range(8)])
    await ctx.publish(tb, [f"{i}".encode() for i in range(5)])
    await ctx.receive(a, ta, 5)
    await ctx.receive(b, tb, 5)
    await b.send(F.Ack(2, 3))
    await b.roundtrip()
    await a.roundtrip()
    wait = ctx.target.timeout + 2.0
    for name in conns:
        out.pushes_after[name] = []
        out.goaway_count[name] = 0

    def after(name: str, obs: Observation) -> None:
        if isinstance(obs, _PUSH):
            out.pushes_after[name].append(describe(obs))
        elif isinstance(obs, F.Goaway):
            out.goaway_count[name] += 1

    async with trio.open_nursery() as nursery:
        nursery.cancel_scope.deadline = trio.current_time() + _drain_extra(ctx)

        async def shutdown() -> None:
            assert ctx.target.shutdown is not None
            await ctx.target.shutdown()

        nursery.start_soon(shutdown)
        for name, conn in conns.items():
            out.goaway[name] = await _first_goaway(conn, wait)
            if isinstance(out.goaway[name], F.Goaway):
                out.goaway_count[name] = 1
        if isinstance(out.goaway["a"], F.Goaway):
            await a.send(
                F.Credit(1, 10),
                F.Subscribe(sub_id=9, topic=ctx.topic("late"), initial_credit=1),
                F.Publish(44, ta, b"late"),
                F.Ping(0x60A),
            )
            while not out.pong_after_goaway:
                obs = await a.next_frame()
                if isinstance(obs, F.Pong) and obs.opaque == 0x60A:
                    out.pong_after_goaway = True
                elif isinstance(obs, F.Error):
                    out.after_goaway.append(obs)
                elif isinstance(obs, (*_PUSH, F.Goaway)):
                    after("a", obs)
                else:
                    out.after_goaway.append(obs)
                    break
        # the server closes by itself within its drain time; the kit does not close first
        start = trio.current_time()
        for name, conn in conns.items():
            deadline = start + ctx.target.drain_timeout + ctx.timeout
            end = None
            while (left := deadline - trio.current_time()) > 0:
                got = await conn.next_frame(left)
                if got in (EOF, RESET):
                    end = trio.current_time() - start
                    break
                if got is TIMEOUT:
                    break
                after(name, got)
            out.closed_after[name] = end
    return out


async def _obs(ctx: CaseContext) -> ShutdownObservation:
    result: ShutdownObservation = await ctx.once("shutdown", lambda: _observe(ctx))
    return result


@case(
    "SD-02",
    "On shutdown every connection gets GOAWAY(SHUTTING_DOWN)",
    category=CAT,
    requirements=("PW-GOAWAY-1", "PW-GOAWAY-11"),
    needs=(NEEDS_SHUTDOWN,),
    extra_time=_drain_extra,
)
async def goaway_everyone(ctx: CaseContext) -> None:
    """Subscribers, and idle connections too, are told before the server goes: they can
    reconnect elsewhere or later instead of detecting a dead socket."""
    obs = await _obs(ctx)
    for name, g in obs.goaway.items():
        if not isinstance(g, F.Goaway) or g.code != ErrorCode.SHUTTING_DOWN:
            raise CaseFailed(f"GOAWAY(SHUTTING_DOWN) on connection {name!r}", describe(g))
    for name, n in obs.goaway_count.items():
        if n != 1:
            raise CaseFailed(f"exactly one GOAWAY on connection {name!r}", f"{n} GOAWAY frames")


@case(
    "SD-03",
    "GOAWAY positions: last delivered (at-most-once), last acked (at-least-once)",
    category=CAT,
    requirements=("PW-GOAWAY-2",),
    needs=(NEEDS_SHUTDOWN,),
    extra_time=_drain_extra,
)
async def goaway_positions(ctx: CaseContext) -> None:
    """Connection a was sent 5 messages at-most-once (3 more wait for credit); b got 5
    at-least-once and acked 3; the idle connection has no subscription."""
    obs = await _obs(ctx)
    want = {
        "a": (F.Position(1, obs.epoch_a, 5),),
        "b": (F.Position(2, obs.epoch_b, 3),),
        "idle": (),
    }
    for name, positions in want.items():
        g = obs.goaway.get(name)
        if not isinstance(g, F.Goaway):
            raise CaseFailed(f"GOAWAY on connection {name!r}", describe(g))
        if tuple(g.positions) != positions:
            raise CaseFailed(f"{name}: positions {positions}", f"positions {g.positions}")


@case(
    "SD-04",
    "After GOAWAY new requests get GOING_AWAY (SUBSCRIBE 0x10, PUBLISH 0x22)",
    category=CAT,
    requirements=("PW-GOAWAY-3", "PW-PUB-6"),
    needs=(NEEDS_SHUTDOWN,),
    extra_time=_drain_extra,
)
async def going_away(ctx: CaseContext) -> None:
    """A draining server finishes what it has but starts nothing new, and says so per
    request so the client retries them on its next connection."""
    obs = await _obs(ctx)
    want = [
        (ErrorCode.GOING_AWAY, FrameType.SUBSCRIBE, 9),
        (ErrorCode.GOING_AWAY, FrameType.PUBLISH, 44),
    ]
    got = [
        (o.code, o.request_type, o.request_id) if isinstance(o, F.Error) else None
        for o in obs.after_goaway
    ]
    if got != want:
        raise CaseFailed(
            "ERROR(GOING_AWAY, 0x10, 9) and ERROR(GOING_AWAY, 0x22, 44)",
            ", ".join(describe(o) for o in obs.after_goaway) or "nothing",
        )


@case(
    "SD-05",
    "After GOAWAY the server closes the connection within its drain time",
    category=CAT,
    requirements=("PW-GOAWAY-5",),
    needs=(NEEDS_SHUTDOWN,),
    extra_time=_drain_extra,
)
async def closes_after_drain(ctx: CaseContext) -> None:
    """Draining is bounded: the kit never closes first, the server must (within
    ``--drain-timeout`` + the reply timeout)."""
    obs = await _obs(ctx)
    for name, t in obs.closed_after.items():
        if t is None:
            raise CaseFailed(
                f"connection {name!r} closed by the server within "
                f"{ctx.target.drain_timeout + ctx.timeout:.1f} s",
                "still open",
            )


@case(
    "SD-06",
    "A draining connection still answers PING",
    category=CAT,
    requirements=("PW-GOAWAY-3",),
    level="SHOULD",
    needs=(NEEDS_SHUTDOWN,),
    extra_time=_drain_extra,
)
async def pong_while_draining(ctx: CaseContext) -> None:
    """Until it closes, the connection is alive and keeps the heartbeat rules."""
    obs = await _obs(ctx)
    if not obs.pong_after_goaway:
        raise CaseFailed("PONG after GOAWAY", "no PONG before the close")


@case(
    "SD-07",
    "After GOAWAY no MESSAGE, MESSAGE_BATCH or GAP is sent, even when credit is granted",
    category=CAT,
    requirements=("PW-GOAWAY-4", "PW-GOAWAY-2"),
    needs=(NEEDS_SHUTDOWN,),
    extra_time=_drain_extra,
)
async def no_pushes_after_goaway(ctx: CaseContext) -> None:
    """GOAWAY positions are exact only if delivery stops at GOAWAY: connection a had 3
    messages waiting for credit and grants 10 after GOAWAY; none of them may come."""
    obs = await _obs(ctx)
    for name, pushes in obs.pushes_after.items():
        if pushes:
            raise CaseFailed(f"no pushes after GOAWAY on {name!r}", ", ".join(pushes[:5]))
