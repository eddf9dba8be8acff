"""Faulty reference servers, for proving that the conformance kit's cases can fail.

Each fault breaks exactly one promise of SPEC.md. None of them ships in the product: the
ones the sans-I/O machine would make are subclasses of
:class:`~pushwire.protocol.server_conn.ServerConnection`, handed to the server through its
``connection_factory``; the ones the trio shell would make (the order and completeness of
what goes on the wire) are a :class:`~pushwire.server.session.Session` subclass, handed
through ``session_factory``, that rewrites the session's outgoing frames.

Some faults need the broker too (a server that does not notice its history moved, one
that reports the topic's head where the subscription's position belongs): the broker is
the server's third documented seam (``Server(..., broker=)``), and those faults wrap the
in-memory broker through its abstract interface only.

``server_options(fault, config)`` gives the keyword arguments for ``Server`` /
``open_server``: a fresh set per server (a broker holds state).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import trio

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.events import Event, Sentinel
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
    ServerState,
)
from pushwire.server import ServerConfig
from pushwire.server.broker import MemoryBroker
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

    def flush(self) -> bytes:
        """The bytes of a header still held back (at EOF)."""
        held = bytes(self._header)
        self._header.clear()
        return held

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
        if not data:  # EOF: a header cut short is passed on as it is, for the codec to judge
            if held := self._clear.flush():
                super().receive_data(held, now)
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

    def consume_credit(
        self, sub_id: int, count: int, *, epoch: int, last_seq: int, topic: str | None = None
    ) -> None:
        sub = self.subscription(sub_id)
        if sub is not None and count > sub.credit:
            sub.credit = count
        super().consume_credit(sub_id, count, epoch=epoch, last_seq=last_seq, topic=topic)


def _heartbeat_after(factor: float) -> type[ServerConnection]:
    """A server whose receive timeout is ``factor`` intervals instead of 3 (PW-HB-3)."""

    class _Beat(Heartbeat):
        def timed_out(self, now: float) -> bool:
            return self.interval > 0 and now - self.last_received >= factor * self.interval

        def next_deadline(self) -> float | None:
            if self.interval <= 0:
                return None
            return min(self.last_sent + self.interval, self.last_received + factor * self.interval)

    class HeartbeatAfter(ServerConnection):
        def __init__(self, limits: ServerLimits | None = None, *, now: float = 0.0) -> None:
            super().__init__(limits, now=now)
            self._heartbeat = _Beat(interval=0.0)

    HeartbeatAfter.__name__ = f"HeartbeatAfter{factor:g}Intervals"
    return HeartbeatAfter


class _FrameBeat(Heartbeat):
    """Counts only complete frames as received traffic."""

    def received(self, now: float) -> None:
        pass

    def frame_received(self, now: float) -> None:
        self.last_received = now


class FramesOnlyLiveness(ServerConnection):
    """Restarts the receive timer on complete frames only, not on every byte (PW-HB-4)."""

    def __init__(self, limits: ServerLimits | None = None, *, now: float = 0.0) -> None:
        super().__init__(limits, now=now)
        self._heartbeat = _FrameBeat(interval=0.0)

    def next_event(self) -> Event | Sentinel:
        event = super().next_event()
        if not isinstance(event, Sentinel):  # a frame came out whole
            assert isinstance(self._heartbeat, _FrameBeat)
            self._heartbeat.frame_received(self._last_received)
        return event


class DropGapSaysHistoryExpired(ServerConnection):
    """Gives the slow-consumer GAP of policy DROP the reason HISTORY_EXPIRED (PW-SLOW-3)."""

    def gap(self, sub_id: int, epoch: int, first: int, last: int, reason: ErrorCode) -> bytes:
        if reason is ErrorCode.SLOW_CONSUMER:
            reason = ErrorCode.HISTORY_EXPIRED
        return super().gap(sub_id, epoch, first, last, reason)


class LimitBeforeAlreadySubscribed(ServerConnection):
    """Checks the subscription limit before ALREADY_SUBSCRIBED (PW-SUB-6)."""

    def _on_subscribe_limit_first(self, frame: F.Subscribe, raw: bytes | None) -> Any:
        full = len(self._subs) >= self.limits.max_subscriptions
        if full and self.state is ServerState.OPEN and "//" not in frame.topic:
            return self._refuse(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS, FrameType.SUBSCRIBE, frame.sub_id, "limit"
            )
        return self._on_subscribe(frame, raw)

    _HANDLERS = {**ServerConnection._HANDLERS, FrameType.SUBSCRIBE: _on_subscribe_limit_first}


class TopicBeforeGoingAway(ServerConnection):
    """Checks a publish's topic before GOING_AWAY while draining (PW-PUB-6)."""

    def _check_publish(self, request_type: FrameType, request_id: int, topic: str) -> Any:
        if self.state is ServerState.DRAINING and "//" in topic:
            return self._refuse(ErrorCode.INVALID_TOPIC, request_type, request_id, "empty level")
        return super()._check_publish(request_type, request_id, topic)


class SilentShutdownInHandshake(ServerConnection):
    """Closes a connection still in the handshake at shutdown without ERROR(SHUTTING_DOWN)
    (PW-GOAWAY-13)."""

    def close_with_error(self, code: ErrorCode, message: str = "") -> bytes:
        in_handshake = self.state is ServerState.AWAIT_HELLO
        data = super().close_with_error(code, message)
        return b"" if in_handshake and code is ErrorCode.SHUTTING_DOWN else data


def _config_broker(config: ServerConfig) -> MemoryBroker:
    """The in-memory broker the server would build from ``config`` (a mutant reads it)."""
    return MemoryBroker(
        history_count=config.history_count,
        history_bytes=config.history_bytes,
        max_topics=config.max_topics,
    )


def _unsubscribed_reports_head(config: ServerConfig) -> dict[str, Any]:
    """UNSUBSCRIBED carries the topic's head instead of the position (PW-SUB-15)."""
    broker = _config_broker(config)

    class UnsubscribedReportsHead(ServerConnection):
        def unsubscribed(self, sub_id: int) -> bytes:
            sub = self.subscription(sub_id)
            frame = super().unsubscribed(sub_id)
            if sub is None:
                return frame
            reply = codec.decode_body(FrameType.UNSUBSCRIBED, 0, frame[HEADER_SIZE:])
            assert isinstance(reply, F.Unsubscribed)
            head = broker.position_nowait(sub.topic).head_seq
            return codec.encode_frame(dataclasses.replace(reply, last_seq=head))

    return {"broker": broker, "connection_factory": UnsubscribedReportsHead}


class _IgnoresHistoryLoss(Session):
    """Skips silently past messages that left the history, instead of closing."""

    def _slow(self, cur: Any, why: str) -> None:
        if "left the history" in why and cur.handle is not None:
            cur.next_seq = cur.handle.log.oldest  # no ERROR, no GAP: a silent loss
            self._wake_writer(pull=True)
            return
        super()._slow(cur, why)


def _ignores_history_loss(config: ServerConfig) -> dict[str, Any]:
    """Under DISCONNECT, judges lag only: a subscriber whose next message left a history
    shorter than max_lag is neither closed nor told (PW-SLOW-2)."""
    return {"session_factory": _IgnoresHistoryLoss}


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


def _drop_batch_too_large() -> Rewrite:
    """Drops GAP(FRAME_TOO_LARGE) for records of a batch (once the connection has carried a
    MESSAGE_BATCH): a single oversized MESSAGE still gets its GAP (PW-PUB-11)."""
    batches = False

    def rewrite(frames: list[bytes]) -> list[bytes]:
        nonlocal batches
        batches = batches or any(
            codec.decode_header(f).type == FrameType.MESSAGE_BATCH for f in frames
        )
        out = []
        for frame in frames:
            if batches and codec.decode_header(frame).type == FrameType.GAP:
                gap = codec.decode_body(FrameType.GAP, 0, frame[HEADER_SIZE:])
                assert isinstance(gap, F.Gap)
                if gap.reason == ErrorCode.FRAME_TOO_LARGE:
                    continue
            out.append(frame)
        return out

    return rewrite


def _pattern_skip_as_gap() -> Rewrite:
    """Tells a pattern topic's skip with a GAP frame, which names no topic, instead of
    SUBSCRIBED(TOPIC_STATUS) with outcome GAP (PW-SUB-30)."""

    def rewrite(frames: list[bytes]) -> list[bytes]:
        out = []
        for frame in frames:
            header = codec.decode_header(frame)
            if header.type == FrameType.SUBSCRIBED:
                reply = codec.decode_body(header.type, header.flags, frame[HEADER_SIZE:])
                assert isinstance(reply, F.Subscribed)
                if reply.topic is not None and reply.outcome == Outcome.GAP:
                    frame = codec.encode_frame(
                        F.Gap(
                            reply.sub_id,
                            reply.epoch,
                            reply.gap_first,
                            reply.gap_last,
                            reply.gap_reason,
                        )
                    )
            out.append(frame)
        return out

    return rewrite


def _pattern_reset_unannounced() -> Rewrite:
    """Leaves out SUBSCRIBED(TOPIC_STATUS) with outcome EPOCH_CHANGED: a pattern topic's
    restart shows only as pushes in a new epoch (PW-SUB-30)."""

    def rewrite(frames: list[bytes]) -> list[bytes]:
        out = []
        for frame in frames:
            header = codec.decode_header(frame)
            if header.type == FrameType.SUBSCRIBED:
                reply = codec.decode_body(header.type, header.flags, frame[HEADER_SIZE:])
                assert isinstance(reply, F.Subscribed)
                if reply.topic is not None and reply.outcome == Outcome.EPOCH_CHANGED:
                    continue
            out.append(frame)
        return out

    return rewrite


def _crashes_at_shutdown() -> type[Session]:
    """A session that raises once it is the last one to end during a shutdown: the server
    "crashes on its way out" after every GOAWAY and drain went right."""
    live: set[int] = set()

    class CrashesAtShutdown(Session):
        async def run(self) -> None:
            live.add(self.connection_id)
            try:
                await super().run()
            finally:
                live.discard(self.connection_id)
            if self.server.shutting_down and not live:
                raise RuntimeError("crashed at shutdown")

    return CrashesAtShutdown


Reorder = rewriting_frames(_reorder)
SkipGap = rewriting_frames(_skip_gap)


#: fault name -> the keyword arguments that give a server that fault (from its config)
FAULTS: dict[str, Callable[[ServerConfig], dict[str, Any]]] = {
    "no-pong": lambda c: {"connection_factory": NoPong},
    "no-heartbeat-timeout": lambda c: {"connection_factory": NoHeartbeatTimeout},
    "ignore-reserved-bits": lambda c: {"connection_factory": IgnoreReservedBits},
    "accept-oversized": lambda c: {"connection_factory": AcceptOversized},
    "ignore-credit": lambda c: {"connection_factory": IgnoreCredit},
    "reorder": lambda c: {"session_factory": Reorder},
    "skip-gap": lambda c: {"session_factory": SkipGap},
    "heartbeat-timeout-after-2": lambda c: {"connection_factory": _heartbeat_after(2)},
    "heartbeat-timeout-after-6": lambda c: {"connection_factory": _heartbeat_after(6)},
    "frames-only-liveness": lambda c: {"connection_factory": FramesOnlyLiveness},
    "drop-gap-says-history-expired": lambda c: {"connection_factory": DropGapSaysHistoryExpired},
    "limit-before-already-subscribed": lambda c: {
        "connection_factory": LimitBeforeAlreadySubscribed
    },
    "topic-before-going-away": lambda c: {"connection_factory": TopicBeforeGoingAway},
    "unsubscribed-reports-head": _unsubscribed_reports_head,
    "ignores-history-loss": _ignores_history_loss,
    "drops-too-large-batch-record": lambda c: {
        "session_factory": rewriting_frames(_drop_batch_too_large)
    },
    "crashes-at-shutdown": lambda c: {"session_factory": _crashes_at_shutdown()},
    "pattern-skip-as-gap": lambda c: {"session_factory": rewriting_frames(_pattern_skip_as_gap)},
    "pattern-reset-unannounced": lambda c: {
        "session_factory": rewriting_frames(_pattern_reset_unannounced)
    },
    "silent-shutdown-in-handshake": lambda c: {"connection_factory": SilentShutdownInHandshake},
}


def server_options(fault: str, config: ServerConfig | None = None) -> dict[str, Any]:
    """``Server(config, **server_options(fault, config))``; KeyError for an unknown fault."""
    return FAULTS[fault](config if config is not None else ServerConfig())
