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
    Closed,
    Observation,
    WireConnection,
    chooses_version,
    describe,
)
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import encode_preface
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
    #: What a connection still in the handshake (prefaces exchanged, no HELLO) got:
    #: its first observation and the one after it
    handshaking: list[Observation] = field(default_factory=list)
    #: How the operator's shutdown ended: None when it succeeded, else what went wrong
    shutdown_problem: str | None = "it did not finish"


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

    # a fourth connection stays in the handshake: prefaces exchanged, HELLO never sent
    # (opened last, so that the server's handshake timeout does not end it first)
    hs = await ctx.open()
    await hs.send_raw(encode_preface(1, 1))
    hs_preface = await hs.read_preface()
    async with trio.open_nursery() as nursery:
        nursery.cancel_scope.deadline = trio.current_time() + _drain_extra(ctx)

        async def shutdown() -> None:
            assert ctx.target.shutdown is not None
            try:
                status = await ctx.target.shutdown()
            except Exception as exc:  # the operator's hook failed: that is the finding
                out.shutdown_problem = f"it raised {exc!r}"
                return
            out.shutdown_problem = None if not status else f"it exited with status {status}"

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
                *_late_requests(ctx),
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
        if chooses_version(hs_preface, 1):
            first = await hs.next_frame(wait)
            out.handshaking = [first]
            if not isinstance(first, Closed):
                out.handshaking.append(await hs.next_frame(wait))
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


#: Requests sent after GOAWAY that break a second rule: GOING_AWAY must win (§6.1, §7.5).
_LATE_BAD: tuple[tuple[FrameType, int, str], ...] = (
    (FrameType.SUBSCRIBE, 10, "an invalid topic"),
    (FrameType.PUBLISH, 45, "an invalid topic"),
    (FrameType.PUBLISH_BATCH, 46, "an invalid topic"),
    (FrameType.PUBLISH, 47, "a reserved ($) topic, FORBIDDEN otherwise"),
    (FrameType.SUBSCRIBE, 11, "--forbidden-topic"),
    (FrameType.PUBLISH, 48, "--forbidden-topic"),
)


def _late_requests(ctx: CaseContext) -> list[F.Frame]:
    reserved = "$conformance-reserved/" + ctx.topic("late").replace("/", "-")
    frames: list[F.Frame] = [
        F.Subscribe(sub_id=10, topic="bad//topic", initial_credit=1),
        F.Publish(45, "bad//topic", b"x"),
        F.PublishBatch(46, "bad//topic", (F.Record(b"x"),)),
        F.Publish(47, reserved, b"x"),
    ]
    if forbidden := ctx.target.forbidden_topic:
        frames += [
            F.Subscribe(sub_id=11, topic=forbidden, initial_credit=1),
            F.Publish(48, forbidden, b"x"),
        ]
    return frames


def _late_errors(obs: ShutdownObservation) -> dict[tuple[int, int], F.Error]:
    return {(o.request_type, o.request_id): o for o in obs.after_goaway if isinstance(o, F.Error)}


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
    errors = _late_errors(obs)
    want = [(FrameType.SUBSCRIBE, 9), (FrameType.PUBLISH, 44)]
    got = [errors.get(key) for key in want]
    others = [o for o in obs.after_goaway if not isinstance(o, F.Error)]
    if others or any(e is None or e.code != ErrorCode.GOING_AWAY for e in got):
        raise CaseFailed(
            "ERROR(GOING_AWAY, 0x10, 9) and ERROR(GOING_AWAY, 0x22, 44)",
            ", ".join(describe(o) for o in [*(e for e in got if e), *others]) or "nothing",
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


@case(
    "SD-08",
    "After GOAWAY, GOING_AWAY wins over INVALID_TOPIC and FORBIDDEN",
    category=CAT,
    requirements=("PW-GOAWAY-3", "PW-PUB-6", "PW-SUB-6"),
    needs=(NEEDS_SHUTDOWN,),
    extra_time=_drain_extra,
)
async def going_away_first(ctx: CaseContext) -> None:
    """GOING_AWAY is the first check for SUBSCRIBE (§6.1) and for publishes (§7.5): after
    GOAWAY, SUBSCRIBE, PUBLISH and PUBLISH_BATCH on an invalid topic, a PUBLISH on a
    reserved ($) topic and, with --forbidden-topic, requests on that topic are each
    ERROR(GOING_AWAY). A client retries GOING_AWAY on its next connection; it must not give
    up on a request for a reason the server had not even checked yet."""
    obs = await _obs(ctx)
    errors = _late_errors(obs)
    for request_type, request_id, what in _LATE_BAD:
        if "forbidden" in what and not ctx.target.forbidden_topic:
            continue
        err = errors.get((request_type, request_id))
        if err is None or err.code != ErrorCode.GOING_AWAY:
            raise CaseFailed(
                f"ERROR(GOING_AWAY, 0x{request_type:02x}, {request_id}) for {what}",
                describe(err),
            )


@case(
    "SD-09",
    "A graceful shutdown completes: the operator's shutdown reports success",
    category=CAT,
    requirements=("PW-GOAWAY-1", "PW-GOAWAY-5"),
    needs=(NEEDS_SHUTDOWN,),
    extra_time=_drain_extra,
)
async def shutdown_completes(ctx: CaseContext) -> None:
    """The GOAWAY and drain of SD-02..SD-07 are only worth something if the server then
    stops cleanly once its last connection closes, rather than crashing on the way out
    (and losing what a restart would need). Judged by the operator's shutdown action:
    --shutdown-command must exit 0, so make it wait for the server to exit and pass on its
    exit status (``docker stop X && exit $(docker wait X)``, ``systemctl stop``, ...)."""
    obs = await _obs(ctx)
    if obs.shutdown_problem is not None:
        raise CaseFailed(
            "the shutdown to complete successfully after the last connection closed",
            f"the shutdown action: {obs.shutdown_problem}",
        )


@case(
    "SD-10",
    "A connection still in the handshake gets ERROR(SHUTTING_DOWN), not GOAWAY",
    category=CAT,
    requirements=("PW-GOAWAY-13", "PW-HS-2"),
    needs=(NEEDS_SHUTDOWN,),
    extra_time=_drain_extra,
)
async def shutdown_during_handshake(ctx: CaseContext) -> None:
    """A connection that exchanged prefaces but sent no HELLO when the shutdown began is
    told ERROR(SHUTTING_DOWN, 0, 0) and closed: GOAWAY is for established connections
    (a server's first frame is WELCOME or an ERROR), and a silent close would leave the
    client to guess whether to retry."""
    obs = await _obs(ctx)
    got = obs.handshaking
    want = "ERROR(SHUTTING_DOWN, request_type=0, request_id=0), then the close"
    ok = (
        len(got) == 2
        and isinstance(got[0], F.Error)
        and (got[0].code, got[0].request_type, got[0].request_id) == (ErrorCode.SHUTTING_DOWN, 0, 0)
        and got[1] in (EOF, RESET)
    )
    if not ok:
        raise CaseFailed(want, ", then ".join(describe(o) for o in got) or "no server preface")
