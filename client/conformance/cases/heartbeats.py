"""heartbeats: PING/PONG, the idle PING the server owes, and the 3-interval receive timeout
(SPEC.md §8.5).

The kit asks for a short interval in HELLO (``--heartbeat-ms``, default 1000) and then
uses the interval H the server announces in WELCOME. Tolerances: the server may be late by
half an interval plus 250 ms (scheduling, a loaded CI machine), never by a whole one.
"""

from __future__ import annotations

import itertools
from types import UnionType

import trio

from pushwire.client.conformance.registry import case
from pushwire.client.conformance.runner import CaseContext
from pushwire.client.conformance.wire import (
    EOF,
    RESET,
    CaseFailed,
    Closed,
    WireConnection,
    describe,
)
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.heartbeat import TIMEOUT_FACTOR

CAT = "heartbeats"


def _late(h: float) -> float:
    return h / 2 + 0.25


def _hb_extra(ctx: CaseContext) -> float:
    return (TIMEOUT_FACTOR + 2) * ctx.target.heartbeat_ms / 1000


async def _connect_hb(ctx: CaseContext) -> tuple[WireConnection, float]:
    conn = await ctx.connect(heartbeat_ms=ctx.target.heartbeat_ms)
    assert conn.welcome is not None
    h = conn.welcome.heartbeat_ms / 1000
    if conn.welcome.heartbeat_ms != ctx.target.heartbeat_ms:
        ctx.note(
            f"asked for {ctx.target.heartbeat_ms} ms, server chose {conn.welcome.heartbeat_ms} ms"
        )
    ctx.allow((TIMEOUT_FACTOR + 2) * h + 2 * ctx.timeout)
    return conn, h


async def _stays_open(conn: WireConnection, start: float, until: float, what: str) -> None:
    """Until trio time ``until``, frames may come (they are not answered) but no ERROR and
    no close; a failure says how long after ``start`` the connection ended."""
    while (left := until - trio.current_time()) > 0:
        obs = await conn.next_frame(left)
        if (isinstance(obs, Closed) and obs is not Closed.TIMEOUT) or isinstance(obs, F.Error):
            raise CaseFailed(what, f"{describe(obs)} after {trio.current_time() - start:.2f} s")


async def _ping_answered(conn: WireConnection, opaque: int, *, skip: type | UnionType) -> None:
    """PING(opaque), then its PONG, passing over ``skip`` frames (the server's own PINGs,
    PONGs to earlier PINGs)."""
    await conn.send(F.Ping(opaque))
    await conn.expect(
        f"PONG(opaque=0x{opaque:X})",
        lambda o: isinstance(o, F.Pong) and o.opaque == opaque,
        skip=lambda o: isinstance(o, skip),
    )


@case(
    "HB-01",
    "PING is answered promptly with PONG carrying the same opaque",
    category=CAT,
    requirements=("PW-HB-2",),
)
async def ping_pong(ctx: CaseContext) -> None:
    """Opaque values 0, 1 and 2^64-1 come back unchanged, each within the reply timeout."""
    conn = await ctx.connect()
    for opaque in (0, 1, 0xFFFF_FFFF_FFFF_FFFF):
        await conn.send(F.Ping(opaque))
        await conn.expect_type(F.Pong, opaque=opaque)


@case(
    "HB-02",
    "An idle server sends a frame at least every heartbeat interval",
    category=CAT,
    requirements=("PW-HB-1",),
    extra_time=_hb_extra,
)
async def idle_server_pings(ctx: CaseContext) -> None:
    """With nothing to send, the server PINGs every H so the client can tell a quiet server
    from a dead one. Observed for 3 intervals after WELCOME; the kit answers each PING."""
    conn, h = await _connect_hb(ctx)
    conn.auto_pong = False
    last = start = trio.current_time()
    pings = 0
    while (now := trio.current_time()) - start < TIMEOUT_FACTOR * h:
        obs = await conn.next_frame(h + _late(h))
        now = trio.current_time()
        if isinstance(obs, Closed):
            raise CaseFailed(
                f"a frame at least every {h * 1000:.0f} ms (+{_late(h) * 1000:.0f} ms)",
                f"{describe(obs)} after {(now - last) * 1000:.0f} ms of silence",
            )
        if isinstance(obs, F.Ping):
            pings += 1
            await conn.send(F.Pong(obs.opaque))
        last = now
    if pings == 0:
        raise CaseFailed("PING frames while idle", "frames, but no PING")


@case(
    "HB-03",
    "A silent client is closed with ERROR(HEARTBEAT_TIMEOUT) after 3 intervals",
    category=CAT,
    requirements=("PW-HB-3",),
    extra_time=_hb_extra,
)
async def silent_client_times_out(ctx: CaseContext) -> None:
    """The kit answers nothing after WELCOME, not even PINGs. The server must give up after
    3xH (and not much later): dead peers must not hold resources."""
    conn, h = await _connect_hb(ctx)
    conn.auto_pong = False
    start = trio.current_time()
    limit = TIMEOUT_FACTOR * h + h + _late(h)
    while True:
        left = start + limit - trio.current_time()
        obs = await conn.next_frame(max(left, 0.0))
        if isinstance(obs, F.Ping):
            continue
        break
    elapsed = trio.current_time() - start
    want = f"ERROR(HEARTBEAT_TIMEOUT, 0, 0) and close within {limit:.2f} s"
    if isinstance(obs, F.Error) and (obs.code, obs.request_type, obs.request_id) == (
        ErrorCode.HEARTBEAT_TIMEOUT,
        0,
        0,
    ):
        after = await conn.next_frame()
        if after not in (EOF, RESET):
            raise CaseFailed(want, f"{describe(obs)}, then {describe(after)}")
        ctx.note(f"timed out after {elapsed:.2f} s (H = {h:.2f} s)")
        return
    raise CaseFailed(want, f"{describe(obs)} after {elapsed:.2f} s")


@case(
    "HB-04",
    "Any frame counts as liveness: a client that only sends its own PINGs is kept",
    category=CAT,
    requirements=("PW-HB-4",),
    extra_time=_hb_extra,
)
async def any_frame_is_liveness(ctx: CaseContext) -> None:
    """The kit ignores the server's PINGs but sends a PING every H/2 for 4xH: the
    connection must survive (the timeout is about silence, not about PONGs)."""
    conn, h = await _connect_hb(ctx)
    conn.auto_pong = False
    ctx.allow((TIMEOUT_FACTOR + 3) * h + 2 * ctx.timeout)
    start = trio.current_time()
    n = 0
    while trio.current_time() - start < (TIMEOUT_FACTOR + 1) * h:
        n += 1
        await conn.send(F.Ping(n))
        await _stays_open(
            conn,
            start,
            trio.current_time() + h / 2,
            "the connection to stay open while the client sends PINGs",
        )
    await _ping_answered(conn, 0xABCD, skip=F.Ping | F.Pong)


@case(
    "HB-05",
    "The server does not time out a client before 3 intervals of silence",
    category=CAT,
    requirements=("PW-HB-3",),
    level="SHOULD",
    extra_time=_hb_extra,
)
async def not_too_early(ctx: CaseContext) -> None:
    """A client that goes silent for 2xH and then speaks is still connected."""
    conn, h = await _connect_hb(ctx)
    conn.auto_pong = False
    start = trio.current_time()
    await _stays_open(conn, start, start + 2 * h, "no timeout within 2 heartbeat intervals")
    await _ping_answered(conn, 0xBEEF, skip=F.Ping)


@case(
    "HB-06",
    "A PONG nobody asked for is accepted",
    category=CAT,
    requirements=("PW-HB-5",),
)
async def unsolicited_pong(ctx: CaseContext) -> None:
    """PONGs with unknown opaques (late, duplicated, or unsolicited) are harmless."""
    conn = await ctx.connect()
    await conn.send(F.Pong(0x1234), F.Pong(0))
    await conn.roundtrip()


@case(
    "HB-07",
    "The heartbeat timeout falls at 3 intervals: not after 2, not much after 3",
    category=CAT,
    requirements=("PW-HB-3",),
    extra_time=_hb_extra,
)
async def timeout_bounds(ctx: CaseContext) -> None:
    """HB-03 with both bounds: the kit goes silent after WELCOME and measures when
    ERROR(HEARTBEAT_TIMEOUT) arrives; the window is [3H - H/2, 3H + H/2 + 250 ms]: a server that
    gives up after 2 intervals kills clients that lost one PING; one that waits 4 or more
    keeps dead peers too long. Measured from before the kit sent HELLO, so a slow
    handshake cannot make a correct server look early."""
    start = trio.current_time()
    conn, h = await _connect_hb(ctx)
    conn.auto_pong = False
    low, high = TIMEOUT_FACTOR * h - h / 2, TIMEOUT_FACTOR * h + _late(h)
    while True:
        obs = await conn.next_frame(max(start + high - trio.current_time(), 0.0))
        if not isinstance(obs, F.Ping):
            break
    elapsed = trio.current_time() - start
    want = f"ERROR(HEARTBEAT_TIMEOUT, 0, 0) between {low:.2f} s and {high:.2f} s (H = {h:.2f} s)"
    timed_out = isinstance(obs, F.Error) and obs.code == ErrorCode.HEARTBEAT_TIMEOUT
    if not timed_out or not low <= elapsed <= high:
        raise CaseFailed(want, f"{describe(obs)} after {elapsed:.2f} s")
    ctx.note(f"timed out after {elapsed:.2f} s (H = {h:.2f} s)")


@case(
    "HB-08",
    "Bytes of an unfinished frame restart the receive timer",
    category=CAT,
    requirements=("PW-HB-4",),
    extra_time=lambda ctx: (TIMEOUT_FACTOR + 4) * ctx.target.heartbeat_ms / 1000,
)
async def partial_frames_are_liveness(ctx: CaseContext) -> None:
    """A PING sent in four pieces 1.25xH apart: no silence ever lasts 3xH, but no frame
    completes for 5xH after WELCOME. The server must keep the connection and answer the
    PING once it is whole; a timer restarted only by complete frames times out at 3xH (a
    large frame on a slow link looks like that). A server bounding the time one frame may
    take (PW-SEC-7) must allow it more than 4xH for this case."""
    conn, h = await _connect_hb(ctx)
    conn.auto_pong = False
    ctx.allow((TIMEOUT_FACTOR + 4) * h + 2 * ctx.timeout)
    data = codec.encode_frame(F.Ping(0x7E1C))
    cuts = [0, 2, 5, 9, len(data)]
    start = trio.current_time()
    for a, b in itertools.pairwise(cuts):
        await _stays_open(
            conn,
            start,
            trio.current_time() + 1.25 * h,
            "the connection to stay open while a frame's bytes keep arriving",
        )
        await conn.send_raw(data[a:b])
    await conn.expect(
        "PONG(opaque=0x7E1C) once the trickled PING is whole",
        lambda o: isinstance(o, F.Pong) and o.opaque == 0x7E1C,
        skip=lambda o: isinstance(o, F.Ping),
    )
