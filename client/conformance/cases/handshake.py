"""preface-handshake: the 8-byte prefaces, version choice, HELLO/WELCOME and what may come
before them (SPEC.md §2, §5)."""

from __future__ import annotations

from pushwire.client.conformance.registry import NEEDS_MAX_CONNECTIONS, NEEDS_TOKEN, case
from pushwire.client.conformance.runner import CaseContext
from pushwire.client.conformance.wire import (
    EOF,
    RESET,
    CaseFailed,
    Closed,
    NotApplicable,
    WireConnection,
    chooses_version,
    describe,
    preface_fields,
)
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import Preface, encode_preface
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import (
    INITIAL_MAX_FRAME_SIZE,
    MAGIC,
    MAX_MAX_FRAME_SIZE,
    MIN_MAX_FRAME_SIZE,
    FrameType,
)

CAT = "preface-handshake"


def _hello(
    ctx: CaseContext, *, max_frame_size: int = 1 << 20, auth_token: bytes | None = None
) -> F.Hello:
    """The kit's usual HELLO (the target's token unless another is given)."""
    token = ctx.target.token if auth_token is None else auth_token
    return F.Hello(max_frame_size, 0, "pushwire-conformance", token)


async def _expect_server_preface(conn: WireConnection, version: int) -> Preface:
    got = await conn.read_preface()
    want = f"server preface {MAGIC.hex()} version={version} reserved=0"
    fields = preface_fields(got)
    if fields is None:
        raise CaseFailed(want, describe(got))
    if not fields.valid or fields.first != version:
        raise CaseFailed(want, describe(got))
    return fields


async def _preface_and(
    ctx: CaseContext, data: bytes, *, bytewise: bool = False
) -> tuple[WireConnection, Preface]:
    """A new connection that sends the client preface (offering version 1) and ``data``
    right behind it; returns the connection and the server preface, which must choose 1."""
    conn = await ctx.open()
    sent = encode_preface(1, 1) + data
    if bytewise:
        await conn.send_bytewise(sent)
    else:
        await conn.send_raw(sent)
    return conn, await _expect_server_preface(conn, 1)


async def _refused(ctx: CaseContext, data: bytes, code: ErrorCode) -> None:
    """The client preface and ``data``: the server preface, then ERROR(code, 0, 0) and the
    close."""
    conn, _ = await _preface_and(ctx, data)
    await conn.expect_error_close(code)


@case(
    "PH-01",
    "Valid preface and HELLO get the server preface (version 1) and a sane WELCOME",
    category=CAT,
    requirements=("PW-PREFACE-6", "PW-HS-2", "PW-HS-6", "PW-HS-8", "PW-FRAME-11", "PW-FRAME-16"),
)
async def valid_handshake(ctx: CaseContext) -> None:
    """The server answers a client preface offering version 1 with MAGIC, version 1, its
    max version (>= 1) and zero reserved bytes, then HELLO with WELCOME whose limits lie in
    the ranges SPEC.md allows."""
    conn, pre = await _preface_and(ctx, codec.encode_frame(_hello(ctx)))
    if pre.second < 1:
        raise CaseFailed("server max_version >= 1", f"max_version {pre.second}")
    w = await conn.next_frame()
    if not isinstance(w, F.Welcome):
        raise CaseFailed("WELCOME", describe(w))
    if not MIN_MAX_FRAME_SIZE <= w.max_frame_size <= MAX_MAX_FRAME_SIZE:
        raise CaseFailed(
            f"WELCOME.max_frame_size in {MIN_MAX_FRAME_SIZE}..{MAX_MAX_FRAME_SIZE}",
            str(w.max_frame_size),
        )
    if not 1 <= w.heartbeat_ms <= 600_000:
        raise CaseFailed("WELCOME.heartbeat_ms in 1..600000", str(w.heartbeat_ms))
    ctx.note(f"WELCOME: {w}")


@case(
    "PH-02",
    "Preface and HELLO sent one byte per segment still complete the handshake",
    category=CAT,
    requirements=("PW-FRAME-1", "PW-HS-2"),
)
async def split_handshake(ctx: CaseContext) -> None:
    """TCP is a byte stream: a server must assemble the preface and HELLO from any split."""
    conn, _ = await _preface_and(ctx, codec.encode_frame(_hello(ctx)), bytewise=True)
    await conn.expect_type(F.Welcome)


@case(
    "PH-03",
    "A bad magic closes the connection without a single byte sent",
    category=CAT,
    requirements=("PW-PREFACE-1",),
)
async def bad_magic(ctx: CaseContext) -> None:
    """Something that is not pushwire (here an HTTP request line) must not get a pushwire
    preface back: the server closes at once (BAD_PREFACE is only logged)."""
    conn = await ctx.open()
    await conn.send_raw(b"GET / HT")  # exactly one preface's worth, so no RST race
    got = await conn.read_preface()
    if got not in (EOF, RESET):
        raise CaseFailed("close with nothing sent (BAD_PREFACE)", describe(got))


@case(
    "PH-04",
    "Non-zero reserved bytes in the client preface close the connection",
    category=CAT,
    requirements=("PW-PREFACE-2",),
)
async def preface_reserved(ctx: CaseContext) -> None:
    """The preface's reserved u16 must be zero; a server must not negotiate on a preface
    that breaks that rule (RESERVED_BITS_SET, the connection is closed)."""
    conn = await ctx.open()
    await conn.send_raw(MAGIC + bytes((1, 1, 0, 1)))
    got = await conn.read_preface()
    if got not in (EOF, RESET):
        raise CaseFailed("close with nothing sent (RESERVED_BITS_SET)", describe(got))


@case(
    "PH-05",
    "No common version: server preface with version 0, then close",
    category=CAT,
    requirements=("PW-PREFACE-6",),
)
async def no_common_version(ctx: CaseContext) -> None:
    """A client offering only versions 2..9 learns that the server speaks none of them
    (version 0 and the server's max version) before the close (UNSUPPORTED_VERSION)."""
    conn = await ctx.open()
    await conn.send_raw(encode_preface(2, 9))
    pre = await _expect_server_preface(conn, 0)
    ctx.note(f"server max_version {pre.second}")
    await conn.expect_close()


@case(
    "PH-16",
    "Bytes behind an unsupported client preface are not interpreted: version 0, then close",
    category=CAT,
    requirements=("PW-PREFACE-9", "PW-PREFACE-6"),
)
async def nothing_read_before_the_version(ctx: CaseContext) -> None:
    """The server chooses the version from the preface alone and reads nothing behind it
    first: a HELLO and a PING right behind a preface that offers only versions 2..9 get no
    WELCOME, PONG or ERROR, only the server preface with version 0 and the close."""
    conn = await ctx.open()
    behind = codec.encode_frame(_hello(ctx)) + codec.encode_frame(F.Ping(0x5052_4546))
    await conn.send_raw(encode_preface(2, 9) + behind)
    got = await conn.read_preface()
    if got is RESET:
        # A server that closes with our bytes unread resets the connection, and the reset
        # may destroy its preface before we read it: nothing left to judge.
        raise NotApplicable("the connection was reset before the server preface arrived")
    if not chooses_version(got, 0):
        raise CaseFailed("server preface with version 0", describe(got))
    await conn.expect_close()


@case(
    "PH-06",
    "A frame other than HELLO first is UNEXPECTED_FRAME",
    category=CAT,
    requirements=("PW-HS-3",),
)
async def frame_before_hello(ctx: CaseContext) -> None:
    """Until HELLO only HELLO is allowed: a PING right after the preface is answered with
    ERROR(UNEXPECTED_FRAME) and the close."""
    await _refused(ctx, codec.encode_frame(F.Ping(1)), ErrorCode.UNEXPECTED_FRAME)


@case(
    "PH-07",
    "A second HELLO is UNEXPECTED_FRAME",
    category=CAT,
    requirements=("PW-FRAME-13",),
)
async def second_hello(ctx: CaseContext) -> None:
    """HELLO is valid exactly once per connection."""
    conn = await ctx.connect()
    await conn.send(_hello(ctx))
    await conn.expect_error_close(ErrorCode.UNEXPECTED_FRAME)


@case(
    "PH-08",
    "HELLO.max_frame_size below 16384 is FIELD_OUT_OF_RANGE",
    category=CAT,
    requirements=("PW-HS-5",),
)
async def hello_small_limit(ctx: CaseContext) -> None:
    """A client may not advertise a receive limit below the initial limit (16384)."""
    hello = _hello(ctx, max_frame_size=MIN_MAX_FRAME_SIZE - 1)
    await _refused(ctx, codec.encode_frame(hello), ErrorCode.FIELD_OUT_OF_RANGE)


@case(
    "PH-09",
    "HELLO.max_frame_size above 2^24 is FIELD_OUT_OF_RANGE",
    category=CAT,
    requirements=("PW-HS-5",),
)
async def hello_large_limit(ctx: CaseContext) -> None:
    """Nor above 2^24."""
    hello = _hello(ctx, max_frame_size=MAX_MAX_FRAME_SIZE + 1)
    await _refused(ctx, codec.encode_frame(hello), ErrorCode.FIELD_OUT_OF_RANGE)


@case(
    "PH-10",
    "No HELLO within the handshake timeout: ERROR(HANDSHAKE_TIMEOUT) and close",
    category=CAT,
    requirements=("PW-HS-14", "PW-HB-6"),
    extra_time=lambda ctx: ctx.target.handshake_timeout,
)
async def handshake_timeout(ctx: CaseContext) -> None:
    """A connection that sends its preface and then nothing must not hold a server slot
    forever. Waits the server's handshake timeout (``--handshake-timeout``, default 10 s)
    plus the reply timeout."""
    conn, _ = await _preface_and(ctx, b"")
    conn.auto_pong = False  # a PING before WELCOME is itself a failure (PW-HB-6)
    await conn.expect_error_close(
        ErrorCode.HANDSHAKE_TIMEOUT, timeout=ctx.target.handshake_timeout + ctx.timeout
    )


@case(
    "PH-14",
    "A connection that sends nothing is closed after the handshake timeout",
    category=CAT,
    requirements=("PW-SEC-6", "PW-HS-14"),
    extra_time=lambda ctx: ctx.target.handshake_timeout,
)
async def silent_from_accept(ctx: CaseContext) -> None:
    """The handshake timeout runs from accept: a peer that never even sends its preface
    is cut off too, with nothing sent (no version was agreed, so no ERROR frame)."""
    conn = await ctx.open()
    got = await conn.read_preface(timeout=ctx.target.handshake_timeout + ctx.timeout)
    if got not in (EOF, RESET):
        raise CaseFailed(
            f"close with nothing sent within {ctx.target.handshake_timeout + ctx.timeout:.1f} s",
            describe(got),
        )


@case(
    "PH-15",
    "One connection above the server's limit gets ERROR(TOO_MANY_CONNECTIONS)",
    category=CAT,
    requirements=("PW-HS-12", "PW-LIMIT-1"),
    needs=(NEEDS_MAX_CONNECTIONS,),
)
async def too_many_connections(ctx: CaseContext) -> None:
    """With ``--max-connections N`` (the limit the operator configured, and no other
    client connected), N connections complete the handshake and connection N+1 is refused
    with ERROR(TOO_MANY_CONNECTIONS, 0, 0) and closed (after its preface or its HELLO)."""
    limit = ctx.target.max_connections
    assert limit is not None
    if limit > 2000:
        raise NotApplicable(f"--max-connections {limit}: the kit opens at most 2000")
    ctx.allow(limit * 0.05 + 4 * ctx.timeout)
    for _ in range(limit):
        await ctx.connect()
    await _refused(ctx, codec.encode_frame(_hello(ctx)), ErrorCode.TOO_MANY_CONNECTIONS)


@case(
    "PH-11",
    "A wrong auth token is ERROR(UNAUTHENTICATED) and close",
    category=CAT,
    requirements=("PW-HS-11",),
    needs=(NEEDS_TOKEN,),
)
async def bad_token(ctx: CaseContext) -> None:
    """With authentication configured (the operator passed ``--token``), a HELLO with a token
    the server does not accept, or with none, gets ERROR(UNAUTHENTICATED, 0, 0) instead of
    WELCOME (assumes the server gives anonymous clients no access)."""
    for token in (ctx.target.token + b"-not-the-token", b""):
        hello = _hello(ctx, auth_token=token)
        await _refused(ctx, codec.encode_frame(hello), ErrorCode.UNAUTHENTICATED)


@case(
    "PH-12",
    "HELLO larger than the initial 16384-byte limit is FRAME_TOO_LARGE from its header",
    category=CAT,
    requirements=("PW-FRAME-2", "PW-FRAME-10"),
)
async def oversized_hello(ctx: CaseContext) -> None:
    """Before WELCOME the limit is INITIAL_MAX_FRAME_SIZE whatever the server will announce;
    only the header is sent, so the server must decide from the header alone."""
    header = codec.encode_header(INITIAL_MAX_FRAME_SIZE + 1, FrameType.HELLO, 0)
    await _refused(ctx, header, ErrorCode.FRAME_TOO_LARGE)


@case(
    "PH-13",
    "The server waits for the client: nothing is sent before the client preface",
    category=CAT,
    requirements=("PW-PREFACE-4",),
)
async def server_speaks_second(ctx: CaseContext) -> None:
    """The client speaks first (its preface carries the version range); a server that
    greets first cannot have chosen a version."""
    conn = await ctx.open()
    got = await conn.read_preface(timeout=ctx.quiet)
    if got is not Closed.TIMEOUT:
        raise CaseFailed("silence until the client preface", describe(got))
