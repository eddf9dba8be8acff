"""Faulty reference servers, for proving that the conformance kit's cases can fail.

Each fault breaks exactly one promise of SPEC.md. None of them ships in the product: the
ones the sans-I/O machine would make are subclasses of
:class:`~pushwire.protocol.server_conn.ServerConnection`, handed to the server through its
``connection_factory``; the ones the trio shell would make (the order and completeness of
what goes on the wire) are a :class:`~pushwire.server.session.Session` subclass, handed
through ``session_factory``, that rewrites the session's outgoing frames.

``server_options(fault)`` gives the keyword arguments for ``Server`` / ``open_server``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import trio

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.heartbeat import Heartbeat
from pushwire.protocol.layouts import (
    DEFINED_FLAGS,
    HEADER_SIZE,
    MAX_MAX_FRAME_SIZE,
    PREFACE_SIZE,
    FrameType,
    Outcome,
)
from pushwire.protocol.server_conn import (
    MAX_CREDIT,
    PingReceived,
    ServerConnection,
    ServerLimits,
)
from pushwire.server.session import Session, SessionHost

# -- faults of the sans-I/O machine ----------------------------------------------------------


class NoPong(ServerConnection):
    """Never answers PING (PW-HB-2)."""

    def _on_ping_silently(self, frame: F.Ping, raw: bytes | None) -> PingReceived:
        return PingReceived(frame.opaque)

    _HANDLERS = {**ServerConnection._HANDLERS, FrameType.PING: _on_ping_silently}


class _PatientHeartbeat(Heartbeat):
    """Pings when idle, never gives up on a silent peer."""

    def timed_out(self, now: float) -> bool:
        return False

    def next_deadline(self) -> float | None:
        return self.last_sent + self.interval if self.interval > 0 else None


class NoHeartbeatTimeout(ServerConnection):
    """Keeps a silent client forever (PW-HB-5)."""

    def __init__(self, limits: ServerLimits | None = None, *, now: float = 0.0) -> None:
        super().__init__(limits, now=now)
        self._heartbeat = _PatientHeartbeat(interval=0.0)


_DEFINED_FLAGS = {int(t): f for t, f in DEFINED_FLAGS.items()}


class _ClearReservedBits:
    """Passes a client's byte stream through, with the reserved flag bits of known frame
    types cleared in every header (unknown types keep theirs, for the codec to judge)."""

    def __init__(self) -> None:
        self._preface_left = PREFACE_SIZE
        self._header = bytearray()
        self._body_left = 0

    def __call__(self, data: bytes) -> bytes:
        out = bytearray()
        at = 0
        while at < len(data):
            if self._preface_left or self._body_left:
                n = min(self._preface_left or self._body_left, len(data) - at)
                out += data[at : at + n]
                if self._preface_left:
                    self._preface_left -= n
                else:
                    self._body_left -= n
                at += n
                continue
            n = min(HEADER_SIZE - len(self._header), len(data) - at)
            self._header += data[at : at + n]
            at += n
            if len(self._header) == HEADER_SIZE:
                header = codec.decode_header(self._header)
                flags = header.flags & _DEFINED_FLAGS.get(header.type, 0xFF)
                out += codec.encode_header(header.length, header.type, flags)
                self._body_left = header.length
                self._header.clear()
        return bytes(out)


class IgnoreReservedBits(ServerConnection):
    """Accepts frames with reserved flag bits set instead of refusing them (PW-FRAME-3)."""

    def __init__(self, limits: ServerLimits | None = None, *, now: float = 0.0) -> None:
        super().__init__(limits, now=now)
        self._clear = _ClearReservedBits()

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        if not data:
            super().receive_data(data, now)
            return
        cleared = self._clear(bytes(data))
        if cleared:  # a header still arriving is held back until it is whole
            super().receive_data(cleared, now)


class AcceptOversized(ServerConnection):
    """Takes frames beyond the advertised max_frame_size (PW-FRAME-2)."""

    def __init__(self, limits: ServerLimits | None = None, *, now: float = 0.0) -> None:
        super().__init__(limits, now=now)
        self._reader.max_frame_size = MAX_MAX_FRAME_SIZE

    def accept(self, connection_id: int, server_name: str, now: float) -> bytes:
        welcome = super().accept(connection_id, server_name, now)
        self._reader.max_frame_size = MAX_MAX_FRAME_SIZE
        return welcome


class IgnoreCredit(ServerConnection):
    """Pushes whatever there is, whatever the credit (PW-FLOW-5)."""

    def credit(self, sub_id: int) -> int:
        super().credit(sub_id)  # still refuses an unknown subscription
        return MAX_CREDIT

    def consume_credit(self, sub_id: int, count: int, *, epoch: int, last_seq: int) -> None:
        sub = self.subscription(sub_id)
        if sub is not None and count > sub.credit:
            sub.credit = count
        super().consume_credit(sub_id, count, epoch=epoch, last_seq=last_seq)


# -- faults of the trio shell ------------------------------------------------------------------

_PUSH_TYPES = (FrameType.MESSAGE, FrameType.MESSAGE_BATCH)

#: frames of one write -> the frames to write instead
Rewrite = Callable[[list[bytes]], list[bytes]]


def _frames(data: bytes) -> list[bytes]:
    """One write of a session split into its frames (a session writes whole frames)."""
    out = []
    at = 0
    while at < len(data):
        end = at + HEADER_SIZE + codec.decode_header(data[at:]).length
        out.append(data[at:end])
        at = end
    return out


class WrappedStream(trio.abc.HalfCloseableStream):
    """A session's stream whose every write goes through ``transform`` first (which may
    record it, or return other bytes)."""

    def __init__(self, stream: trio.abc.Stream, transform: Callable[[bytes], bytes]) -> None:
        self.wrapped = stream
        self._transform = transform

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.wrapped.send_all(self._transform(data))  # type: ignore[arg-type]

    async def wait_send_all_might_not_block(self) -> None:
        await self.wrapped.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.wrapped.receive_some(max_bytes)

    async def send_eof(self) -> None:
        if isinstance(self.wrapped, trio.abc.HalfCloseableStream):
            await self.wrapped.send_eof()

    async def aclose(self) -> None:
        await self.wrapped.aclose()


def wrapping_sessions(transform_for: Callable[[int], Callable[[bytes], bytes]]) -> type[Session]:
    """A Session class (a ``session_factory``) whose stream passes every write through
    ``transform_for(connection_id)``."""

    class WrappingSession(Session):
        def __init__(
            self,
            server: SessionHost,
            stream: trio.abc.Stream,
            connection_id: int,
            peer: str,
            *,
            accepted_at: float | None = None,
        ) -> None:
            wrapped = WrappedStream(stream, transform_for(connection_id))
            super().__init__(server, wrapped, connection_id, peer, accepted_at=accepted_at)

    return WrappingSession


def rewriting_frames(make_rewrite: Callable[[], Rewrite]) -> type[Session]:
    """A Session class whose writes after the server preface are rewritten frame by frame
    (the preface is not a frame) by a fresh ``make_rewrite()`` per connection."""

    def transform_for(connection_id: int) -> Callable[[bytes], bytes]:
        rewrite = make_rewrite()
        preface_left = PREFACE_SIZE

        def transform(data: bytes) -> bytes:
            nonlocal preface_left
            data = bytes(data)
            head = data[:preface_left]
            preface_left -= len(head)
            return head + b"".join(rewrite(_frames(data[len(head) :])))

        return transform

    return wrapping_sessions(transform_for)


def _reorder() -> Rewrite:
    """Swaps two consecutive pushes of a topic, once per topic (PW-ORDER-7)."""
    reordered: set[str] = set()

    def topic(frame: bytes) -> str | None:
        header = codec.decode_header(frame)
        if header.type not in _PUSH_TYPES:
            return None
        push = codec.decode_body(header.type, header.flags, frame[HEADER_SIZE:])
        assert isinstance(push, F.Message | F.MessageBatch)
        return push.topic

    def rewrite(frames: list[bytes]) -> list[bytes]:
        for i in range(len(frames) - 1):
            name = topic(frames[i])
            if name is not None and name not in reordered and topic(frames[i + 1]) == name:
                reordered.add(name)
                frames[i], frames[i + 1] = frames[i + 1], frames[i]
        return frames

    return rewrite


def _skip_gap() -> Rewrite:
    """Leaves holes unannounced: no GAP frames, and a SUBSCRIBED that would report GAP says
    RECOVERED (PW-ORDER-7, PW-SUB-7)."""

    def rewrite(frames: list[bytes]) -> list[bytes]:
        out = []
        for frame in frames:
            header = codec.decode_header(frame)
            if header.type == FrameType.GAP:
                continue
            if header.type == FrameType.SUBSCRIBED:
                reply = codec.decode_body(header.type, header.flags, frame[HEADER_SIZE:])
                assert isinstance(reply, F.Subscribed)
                if reply.outcome == Outcome.GAP:
                    frame = codec.encode_frame(
                        dataclasses.replace(
                            reply,
                            outcome=int(Outcome.RECOVERED),
                            gap_first=0,
                            gap_last=0,
                            gap_reason=0,
                        )
                    )
            out.append(frame)
        return out

    return rewrite


Reorder = rewriting_frames(_reorder)
SkipGap = rewriting_frames(_skip_gap)


#: fault name -> the keyword arguments that give a server that fault
FAULTS: dict[str, dict[str, Any]] = {
    "no-pong": {"connection_factory": NoPong},
    "no-heartbeat-timeout": {"connection_factory": NoHeartbeatTimeout},
    "ignore-reserved-bits": {"connection_factory": IgnoreReservedBits},
    "accept-oversized": {"connection_factory": AcceptOversized},
    "ignore-credit": {"connection_factory": IgnoreCredit},
    "reorder": {"session_factory": Reorder},
    "skip-gap": {"session_factory": SkipGap},
}


def server_options(fault: str) -> dict[str, Any]:
    """``Server(config, **server_options(fault))``; KeyError for an unknown fault."""
    return dict(FAULTS[fault])
