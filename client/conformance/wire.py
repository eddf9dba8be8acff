"""The raw-wire peer: a scriptable client side of one pushwire connection.

Theory of operation: a conformance case must be able to say things a well-behaved client
never says (a bad magic, reserved bits, a frame longer than the limit, silence) and to see
exactly what the implementation under test answers, including *how* it closes. So this is
not a client: it is a trio stream, the project's codec to build bytes, and the incremental
:class:`FrameDecoder` to read the answer. Every read is bounded by a timeout and returns an
observation (a frame, :data:`EOF`, :data:`RESET` or :data:`TIMEOUT`) rather than raising, so
that a case can compare expected and observed and write both into the report.

The same class is the raw peer of every other tool that talks to a server byte by byte:
the fuzzer's attacks and canary, the server benchmark's publishers and subscribers, and
the project's server tests (``tests/integration/server_peer.py``, over TCP, TLS or memory
streams). What they add is policy (assertions, counters), never bytes: every byte is built
and read by ``pushwire.protocol``.

Only the wire is used: nothing here knows about the reference server, which is what lets
the kit test a server written in any language.
"""

from __future__ import annotations

import enum
import math
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self, TypeVar

import trio

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder, Preface, encode_preface, read_preface
from pushwire.protocol.errors import ErrorCode, RemoteProtocolError
from pushwire.protocol.layouts import (
    INITIAL_MAX_FRAME_SIZE,
    MAGIC,
    PREFACE_SIZE,
    SERVER_SENDS,
    FrameType,
)

#: What we read per receive; bounded so one read never buffers more than this.
READ_SIZE = 65536


class Closed(enum.Enum):
    """How a read ended when it did not produce a frame."""

    EOF = "connection closed (EOF)"
    RESET = "connection reset"
    TIMEOUT = "nothing received in time"

    def __str__(self) -> str:
        return self.value


EOF, RESET, TIMEOUT = Closed.EOF, Closed.RESET, Closed.TIMEOUT

Observation = F.Frame | Closed
FrameT = TypeVar("FrameT", bound=F.Frame)


class CaseFailed(Exception):
    """The implementation did something other than what SPEC.md requires."""

    def __init__(self, expected: str, observed: str) -> None:
        super().__init__(f"expected {expected}; observed {observed}")
        self.expected = expected
        self.observed = observed


class NotApplicable(Exception):
    """The case cannot run against this target (a limit, a missing operator option)."""


class BadServerBytes(Exception):
    """The implementation sent bytes that do not decode as pushwire frames."""


def describe(obs: Observation | bytes | None) -> str:
    """A short, stable description of an observation for the report."""
    if obs is None:
        return "nothing"
    if isinstance(obs, Closed):
        return str(obs)
    if isinstance(obs, bytes | bytearray):
        return f"bytes {bytes(obs).hex()}" if obs else "no bytes"
    if isinstance(obs, F.Error):
        try:
            name = ErrorCode(obs.code).name
        except ValueError:
            name = f"0x{obs.code:04x}"
        return (
            f"ERROR({name}, request_type=0x{obs.request_type:02x}, "
            f"request_id={obs.request_id}, {obs.message!r})"
        )
    if isinstance(obs, F.Message | F.Publish):
        return f"{type(obs).__name__.upper()}(seq={getattr(obs, 'seq', '-')}, topic={obs.topic!r})"
    if isinstance(obs, F.MessageBatch):
        return f"MESSAGE_BATCH(seqs={obs.base_seq}..{obs.last_seq}, topic={obs.topic!r})"
    text = repr(obs)
    return text if len(text) <= 200 else text[:197] + "..."


def preface_fields(obs: Observation | bytes | None) -> Preface | None:
    """The fields of a whole preface the target sent, or None (a close, fewer bytes)."""
    if not isinstance(obs, bytes | bytearray) or len(obs) < PREFACE_SIZE:
        return None
    return read_preface(obs)


def chooses_version(obs: Observation | bytes | None, version: int) -> bool:
    """Whether ``obs`` is a server preface (MAGIC) choosing ``version`` (0: none)."""
    fields = preface_fields(obs)
    return fields is not None and fields.magic == MAGIC and fields.first == version


def error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"0x{code:04x}"


@dataclass
class WireConnection:
    """One connection to the target (any trio stream: TCP, TLS, memory), with a frame
    decoder on the receive side.

    ``timeout``: seconds any one send or read may take (``math.inf``: the caller's cancel
    scopes bound it). ``auto_pong``: answer the target's PINGs and hide them from
    :meth:`next_frame`, so cases that are not about heartbeats are not disturbed by them.
    ``received`` keeps the timestamped log of everything seen, for heartbeat cases and for
    failure reports, unless ``record`` is off (long runs: benchmarks, the fuzzer's canary).
    """

    stream: trio.abc.Stream
    timeout: float = math.inf
    auto_pong: bool = True
    decoder: FrameDecoder = field(default_factory=FrameDecoder)
    record: bool = True
    read_size: int = READ_SIZE
    received: list[tuple[float, Observation]] = field(default_factory=list)
    received_bytes: int = 0
    closed: Closed | None = None
    welcome: F.Welcome | None = None
    server_preface: bytes | None = None
    _raw: bytearray = field(default_factory=bytearray)

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    async def open(
        cls, host: str, port: int, *, timeout: float = math.inf, **fields: object
    ) -> Self:
        """A new TCP connection (TCP_NODELAY, so that a bytewise send is one segment per
        byte); ``fields`` are the other fields of the peer."""
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port)
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(stream=stream, timeout=timeout, **fields)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        with trio.move_on_after(1):
            await self.stream.aclose()

    # -- sending ---------------------------------------------------------------------------
    async def send_raw(self, data: bytes) -> bool:
        """Write bytes; False when the target already closed (a reset is an observation)."""
        try:
            with trio.fail_after(self.timeout):
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return False
        return True

    async def send(self, *frames: F.Frame) -> bool:
        return await self.send_raw(b"".join(codec.encode_frame(f) for f in frames))

    async def send_bytewise(self, data: bytes, pause: float = 0.0) -> bool:
        """Each byte in its own TCP segment (TCP_NODELAY is set), optionally paced."""
        for i in range(len(data)):
            if not await self.send_raw(data[i : i + 1]):
                return False
            if pause:
                await trio.sleep(pause)
        return True

    async def send_eof(self) -> None:
        if not isinstance(self.stream, trio.abc.HalfCloseableStream):
            return
        try:
            await self.stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    # -- receiving -------------------------------------------------------------------------
    async def _read(self, deadline: float) -> bytes | Closed:
        if self.closed is not None:
            return self.closed
        with trio.move_on_at(deadline):
            try:
                data = await self.stream.receive_some(self.read_size)
            except (trio.BrokenResourceError, OSError):
                self.closed = RESET
                return RESET
            except trio.ClosedResourceError:
                self.closed = EOF
                return EOF
            if not data:
                self.closed = EOF
                return EOF
            self.received_bytes += len(data)
            return bytes(data)
        return TIMEOUT

    async def receive_some(self, timeout: float | None = None) -> bytes | Closed:
        """The next bytes as they arrive, or how the wait ended: for a caller that decodes
        on its own (call it after :meth:`read_preface`, which feeds the decoder)."""
        deadline = trio.current_time() + (self.timeout if timeout is None else timeout)
        return await self._read(deadline)

    async def read_preface(self, timeout: float | None = None) -> bytes | Closed:
        """The target's 8-byte preface, fewer bytes if it closed early, or a Closed."""
        deadline = trio.current_time() + (self.timeout if timeout is None else timeout)
        while len(self._raw) < PREFACE_SIZE:
            chunk = await self._read(deadline)
            if isinstance(chunk, Closed):
                if self._raw:
                    data = bytes(self._raw)
                    self._raw.clear()
                    return data
                return chunk
            self._raw += chunk
        data = bytes(self._raw[:PREFACE_SIZE])
        rest = bytes(self._raw[PREFACE_SIZE:])
        self._raw.clear()
        if rest:  # feeding b"" would tell the decoder the stream ended
            self.decoder.feed(rest)
        return data

    async def next_frame(
        self, timeout: float | None = None, *, skip_pings: bool | None = None
    ) -> Observation:
        """The next frame from the target, or how the wait ended.

        Raises :class:`CaseFailed` when the target sends bytes that do not decode, or a
        frame type that a server never sends (SPEC.md §3.3): both are failures of the
        target whatever the case is about.
        """
        skip = self.auto_pong if skip_pings is None else skip_pings
        deadline = trio.current_time() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                frame = self.decoder.next_frame()
            except RemoteProtocolError as exc:
                raise CaseFailed("well-formed frames from the server", f"{exc}") from exc
            if frame is not None:
                if self.record:
                    self.received.append((trio.current_time(), frame))
                if isinstance(frame, F.Unknown):
                    continue
                if frame.TYPE not in SERVER_SENDS:
                    raise CaseFailed(
                        "only frame types a server sends (SPEC.md §3.3)",
                        f"{frame.TYPE.name} from the server",
                    )
                if skip and isinstance(frame, F.Ping):
                    await self.send(F.Pong(frame.opaque))
                    continue
                return frame
            chunk = await self._read(deadline)
            if isinstance(chunk, Closed):
                if chunk is not TIMEOUT:
                    if self.record:
                        self.received.append((trio.current_time(), chunk))
                    if self.decoder.buffered:
                        # bytes of an unfinished frame before the close
                        self.decoder.feed(b"")
                        try:
                            self.decoder.next_frame()
                        except RemoteProtocolError as exc:
                            raise CaseFailed("whole frames before the close", f"{exc}") from exc
                return chunk
            self.decoder.feed(chunk)

    async def expect(
        self,
        what: str,
        match: Callable[[Observation], bool],
        timeout: float | None = None,
        *,
        skip: Callable[[Observation], bool] | None = None,
    ) -> F.Frame:
        """The next observation, which must satisfy ``match`` (``skip`` ones are passed over)."""
        while True:
            obs = await self.next_frame(timeout)
            if not isinstance(obs, Closed) and match(obs):
                return obs
            if skip is not None and not isinstance(obs, Closed) and skip(obs):
                continue
            raise CaseFailed(what, describe(obs))

    async def expect_type(
        self, cls: type[FrameT], timeout: float | None = None, **fields: int
    ) -> FrameT:
        """The next frame, which must be a ``cls`` whose named fields have these values."""
        desc = cls.__name__.upper()
        if fields:
            desc += "(" + ", ".join(f"{k}={v}" for k, v in fields.items()) + ")"
        obs = await self.next_frame(timeout)
        if isinstance(obs, cls) and all(getattr(obs, k) == v for k, v in fields.items()):
            return obs
        raise CaseFailed(desc, describe(obs))

    async def expect_request_error(
        self, code: ErrorCode, request_type: int, request_id: int
    ) -> F.Error:
        """The next frame is the request error ERROR(code, request_type, request_id)."""
        obs = await self.next_frame()
        if isinstance(obs, F.Error) and (obs.code, obs.request_type, obs.request_id) == (
            code,
            request_type,
            request_id,
        ):
            return obs
        want = f"ERROR({code.name}, request_type=0x{request_type:02x}, request_id={request_id})"
        raise CaseFailed(want, describe(obs))

    async def expect_close(self, timeout: float | None = None) -> Closed:
        """No more frames, then the target closes (EOF or reset)."""
        obs = await self.next_frame(timeout)
        if obs in (EOF, RESET):
            assert isinstance(obs, Closed)
            return obs
        raise CaseFailed("the server to close the connection", describe(obs))

    async def expect_error_close(
        self,
        code: ErrorCode,
        timeout: float | None = None,
        *,
        allow_silent_close: bool = False,
        skip: Callable[[Observation], bool] | None = None,
    ) -> F.Error | None:
        """A connection-level ERROR(code, request_type=0, request_id=0), then the close.

        ``skip`` passes over frames the target may legitimately send before it notices the
        problem (messages, acknowledgements already queued).
        """
        want = f"ERROR({code.name}, request_type=0, request_id=0) then close"
        while True:
            obs = await self.next_frame(timeout)
            if skip is not None and not isinstance(obs, Closed) and skip(obs):
                continue
            break
        if isinstance(obs, F.Error):
            if (obs.code, obs.request_type, obs.request_id) != (code, 0, 0):
                raise CaseFailed(want, describe(obs))
            after = await self.next_frame(timeout)
            if after not in (EOF, RESET):
                raise CaseFailed(want, f"{describe(obs)}, then {describe(after)}")
            return obs
        if allow_silent_close and obs in (EOF, RESET):
            return None
        raise CaseFailed(want, describe(obs))

    async def expect_silence(self, duration: float, what: str) -> None:
        """Nothing but PINGs for ``duration`` seconds (and no close)."""
        deadline = trio.current_time() + duration
        while (left := deadline - trio.current_time()) > 0:
            obs = await self.next_frame(left)
            if obs is TIMEOUT:
                return
            raise CaseFailed(what, describe(obs))

    # -- handshake -------------------------------------------------------------------------
    async def handshake(
        self,
        *,
        max_frame_size: int = 1 << 20,
        heartbeat_ms: int = 0,
        client_name: str = "pushwire-conformance",
        auth_token: bytes = b"",
    ) -> F.Welcome:
        """Preface and HELLO back to back (SPEC allows it), then the server preface and
        WELCOME; anything else fails the case, whatever it is about."""
        hello = F.Hello(max_frame_size, heartbeat_ms, client_name, auth_token)
        await self.send_raw(encode_preface(1, 1) + codec.encode_frame(hello))
        preface = await self.read_preface()
        self.server_preface = preface if isinstance(preface, bytes) else None
        if not chooses_version(preface, 1):
            raise CaseFailed(
                f"server preface {encode_preface(1, 1).hex()} (version 1)", describe(preface)
            )
        welcome = await self.next_frame(skip_pings=True)
        if not isinstance(welcome, F.Welcome):
            raise CaseFailed("WELCOME after HELLO", describe(welcome))
        self.welcome = welcome
        self.decoder.max_frame_size = max_frame_size
        return welcome

    async def roundtrip(self, opaque: int = 0x5057_0001, timeout: float | None = None) -> None:
        """PING, then the matching PONG: proves the target still reads and answers in order,
        skipping anything else that arrives meanwhile (messages are not the point)."""
        await self.send(F.Ping(opaque))
        deadline = trio.current_time() + (self.timeout if timeout is None else timeout)
        while True:
            obs = await self.next_frame(max(0.0, deadline - trio.current_time()))
            if isinstance(obs, F.Pong) and obs.opaque == opaque:
                return
            if isinstance(obs, Closed | F.Error):
                raise CaseFailed(f"PONG(opaque={opaque}), connection still open", describe(obs))

    async def expect_still_open(self, after: str) -> None:
        """:meth:`roundtrip`, reported as "the connection to stay open after ``after``"."""
        try:
            await self.roundtrip()
        except CaseFailed as exc:
            raise CaseFailed(f"the connection to stay open after {after}", exc.observed) from exc


def frame_name(type_: int) -> str:
    try:
        return FrameType(type_).name
    except ValueError:
        return f"0x{type_:02x}"


__all__ = [
    "EOF",
    "INITIAL_MAX_FRAME_SIZE",
    "RESET",
    "TIMEOUT",
    "BadServerBytes",
    "CaseFailed",
    "Closed",
    "NotApplicable",
    "Observation",
    "WireConnection",
    "chooses_version",
    "describe",
    "error_name",
    "frame_name",
    "preface_fields",
]
