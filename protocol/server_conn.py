"""The server side of a pushwire connection as a sans-I/O state machine (SPEC.md §4-§8).

Theory of operation
-------------------
Bytes go in with :meth:`ServerConnection.receive_data` (``b""`` is EOF); events come out of
:meth:`ServerConnection.next_event`; every method named after a frame the server sends
(:meth:`~ServerConnection.accept`, :meth:`~ServerConnection.subscribed`, ...) returns the
bytes to put on the wire. Automatic output that no caller asked for -- PONG, the request
errors this module can decide alone (INVALID_TOPIC, ALREADY_SUBSCRIBED, ...), the ERROR
before a close -- collects in :meth:`~ServerConnection.data_to_send`. Nothing here does I/O
or reads a clock: time comes in as ``now`` (seconds, any monotonic origin).

Which frame may arrive in which state is data (:data:`RECEIVE_TRANSITIONS`), as is which
frame we may send in which state (:data:`SEND_TRANSITIONS`), both ``state -> {frame type:
next state}`` as in h11's ``_state.py`` and in the client's machine: anything not in the
tables is UNEXPECTED_FRAME (peer) or LocalProtocolError (caller). The prefaces are not
frames and precede both tables; a connection-level ERROR of ours
(:meth:`~ServerConnection.close_with_error`) closes from any state.

:meth:`next_event` returns :data:`~pushwire.protocol.events.NEED_DATA` when it needs more
bytes and :data:`~pushwire.protocol.events.PAUSED` after the preface and after HELLO until
the caller answers them (and once CLOSED), so a HELLO pipelined behind the preface is
parsed with the right limits, and nothing behind HELLO is parsed before WELCOME.

A peer that breaks the protocol makes :meth:`next_event` raise
:class:`~pushwire.protocol.errors.RemoteProtocolError` carrying the registry code; the
connection is then CLOSED and :meth:`data_to_send` holds the ERROR frame (or nothing, for a
bad preface; or a version-0 preface, when no version is shared). See
:mod:`pushwire.protocol.events` for the conventions both machines share.

This module keeps per subscription only what the protocol itself judges: credit (never
exceeded, never above 2^32-1), the last sequence delivered and acknowledged (ACK rules,
UNSUBSCRIBED.last_seq, GOAWAY positions). Where a subscription reads from, and which
messages exist, is the broker's business, in the trio shell.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder, choose_version, encode_preface, parse_preface
from pushwire.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from pushwire.protocol.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Event,
    GoawayReceived,
    PeerError,
    Sentinel,
    code_of,
)
from pushwire.protocol.heartbeat import Heartbeat
from pushwire.protocol.layouts import (
    HAS_HEADERS,
    HEADER_SIZE,
    INITIAL_MAX_FRAME_SIZE,
    MAGIC,
    MAX_MAX_FRAME_SIZE,
    MIN_MAX_FRAME_SIZE,
    POSITION_SIZE,
    PREFACE_SIZE,
    PUBLISH_PREFIX_SIZE,
    SUPPORTED_VERSIONS,
    FrameType,
    Outcome,
    SinceKind,
    SlowConsumerPolicy,
)
from pushwire.protocol.topics import (
    pattern_matches,
    pattern_problem,
    patterns_overlap,
    topic_problem,
)

__all__ = [
    "RECEIVE_TRANSITIONS",
    "SEND_TRANSITIONS",
    "Acked",
    "ConnectionClosed",
    "CreditGranted",
    "Event",
    "GoawayReceived",
    "HelloReceived",
    "PatternSubscribeRequested",
    "PeerError",
    "PingReceived",
    "PongReceived",
    "PrefaceReceived",
    "PublishBatchRequested",
    "PublishRequested",
    "RequestRefused",
    "ServerConnection",
    "ServerLimits",
    "ServerState",
    "ServerSubscription",
    "SubscribeRequested",
    "UnsubscribeRequested",
]

#: WELCOME.heartbeat_ms must lie in 1..MAX_HEARTBEAT_MS (SPEC.md §5.2, PW-HS-8).
MAX_HEARTBEAT_MS = 600_000
#: Credit is a u32 on the wire; outstanding credit above this is FLOW_CONTROL_ERROR (§8.1).
MAX_CREDIT = 0xFFFF_FFFF
#: ERROR and GOAWAY texts are cut to this many UTF-8 bytes so that the frame always fits in
#: INITIAL_MAX_FRAME_SIZE, the smallest limit a client can advertise.
MAX_REASON_BYTES = 1024


class ServerState(enum.Enum):
    """Where the server side of a connection is (SPEC.md §4)."""

    AWAIT_PREFACE = "await-preface"  # nothing received yet
    SEND_PREFACE = "send-preface"  # paused: the caller answers PrefaceReceived
    AWAIT_HELLO = "await-hello"  # our preface is out; the next frame must be HELLO
    SEND_WELCOME = "send-welcome"  # paused: the caller accepts or rejects HelloReceived
    OPEN = "open"
    DRAINING = "draining"  # we sent GOAWAY: no new requests are taken
    CLOSED = "closed"


_S = ServerState
_T = FrameType


def _established(state: ServerState) -> dict[FrameType, ServerState]:
    """The requests and connection frames an established connection receives (§3.3
    CLIENT_SENDS minus HELLO), each leaving ``state`` as it is, except that the client's
    own GOAWAY or ERROR ends the connection."""
    requests = (_T.SUBSCRIBE, _T.UNSUBSCRIBE, _T.CREDIT, _T.ACK, _T.PUBLISH, _T.PUBLISH_BATCH)
    row = {t: state for t in (_T.PING, _T.PONG, *requests)}
    return row | {_T.GOAWAY: _S.CLOSED, _T.ERROR: _S.CLOSED}


#: state -> {frame type the client may send in that state: next state}. Anything missing is
#: UNEXPECTED_FRAME. A state without frames parses none (the preface is not a frame; the
#: paused states wait for the caller; CLOSED reads nothing).
RECEIVE_TRANSITIONS: dict[ServerState, dict[FrameType, ServerState]] = {
    _S.AWAIT_PREFACE: {},
    _S.SEND_PREFACE: {},
    _S.AWAIT_HELLO: {_T.HELLO: _S.SEND_WELCOME},
    _S.SEND_WELCOME: {},
    _S.OPEN: _established(_S.OPEN),
    _S.DRAINING: _established(_S.DRAINING),
    _S.CLOSED: {},
}


def _replies(state: ServerState) -> dict[FrameType, ServerState]:
    """What an established connection sends, leaving ``state`` as it is: replies
    (SUBSCRIBED, UNSUBSCRIBED, PUBACK, a request ERROR), pushes (MESSAGE, MESSAGE_BATCH,
    GAP) and PING."""
    replies = (_T.SUBSCRIBED, _T.UNSUBSCRIBED, _T.PUBACK, _T.ERROR)
    return {t: state for t in (*replies, _T.MESSAGE, _T.MESSAGE_BATCH, _T.GAP, _T.PING)}


#: state -> {frame type we may send in that state: next state}, the same shape as
#: RECEIVE_TRANSITIONS. Anything missing is a LocalProtocolError: a bug in the caller,
#: nothing goes on the wire. ERROR in a handshake state is a rejection, which closes; in an
#: established state it answers one request. (A connection-level ERROR, close_with_error(),
#: is legal in every state and closes.)
SEND_TRANSITIONS: dict[ServerState, dict[FrameType, ServerState]] = {
    _S.AWAIT_PREFACE: {},
    _S.SEND_PREFACE: {},  # our preface (not a frame) moves us to AWAIT_HELLO
    _S.AWAIT_HELLO: {_T.ERROR: _S.CLOSED},
    _S.SEND_WELCOME: {_T.WELCOME: _S.OPEN, _T.ERROR: _S.CLOSED},
    # GOAWAY only once per connection [PW-GOAWAY-11]
    _S.OPEN: _replies(_S.OPEN) | {_T.GOAWAY: _S.DRAINING},
    _S.DRAINING: _replies(_S.DRAINING),
    _S.CLOSED: {},
}

_GOING_AWAY_TYPES = frozenset({_T.SUBSCRIBE, _T.PUBLISH, _T.PUBLISH_BATCH})


# -- limits -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What a server advertises in WELCOME and enforces (SPEC.md §5.2).

    The heartbeat interval is the client's preference clamped to ``heartbeat_min_ms`` ..
    ``heartbeat_max_ms``, or ``heartbeat_ms`` when the client leaves the choice to us (0).
    """

    max_frame_size: int = 1 << 20
    max_subscriptions: int = 1024
    max_lag: int = 10_000
    slow_consumer_policy: SlowConsumerPolicy = SlowConsumerPolicy.DROP
    heartbeat_ms: int = 5000
    heartbeat_min_ms: int = 1000
    heartbeat_max_ms: int = 60_000
    handshake_timeout: float = 10.0
    #: Once a frame has begun to arrive, the rest must follow within this many seconds
    #: (PW-SEC-7): heartbeats alone would let a peer trickle one byte per interval forever.
    #: 60 s lets a 16 MiB frame through a 2 Mbit/s link.
    frame_timeout: float = 60.0
    #: Pattern subscriptions per connection (§6.7, TOO_MANY_PATTERNS beyond it). Each one
    #: is matched against every new topic (a walk over a trie of patterns), so the bound
    #: keeps that walk short.
    max_patterns: int = 64
    #: Topics one pattern subscription follows (§6.7, TOO_MANY_TOPICS beyond it): each is
    #: one cursor of the connection, as one exact subscription is.
    max_pattern_topics: int = 10_000

    def __post_init__(self) -> None:
        if not MIN_MAX_FRAME_SIZE <= self.max_frame_size <= MAX_MAX_FRAME_SIZE:
            raise ValueError(
                f"max_frame_size must be {MIN_MAX_FRAME_SIZE}-{MAX_MAX_FRAME_SIZE}, "
                f"not {self.max_frame_size}"
            )
        if not 1 <= self.heartbeat_min_ms <= self.heartbeat_ms <= self.heartbeat_max_ms:
            raise ValueError("need 1 <= heartbeat_min_ms <= heartbeat_ms <= heartbeat_max_ms")
        if self.heartbeat_max_ms > MAX_HEARTBEAT_MS:
            raise ValueError(f"heartbeat_max_ms must be at most {MAX_HEARTBEAT_MS} [PW-HS-8]")
        for name in ("max_subscriptions", "max_lag"):
            if not 0 <= getattr(self, name) <= 0xFFFF_FFFF:
                raise ValueError(f"{name} must fit in a u32")

    def heartbeat_for(self, preference_ms: int) -> int:
        if preference_ms == 0:
            return self.heartbeat_ms
        return min(max(preference_ms, self.heartbeat_min_ms), self.heartbeat_max_ms)


# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrefaceReceived(Event):
    """A valid client preface sharing a version with us; answer with ``send_preface()``."""

    min_version: int
    max_version: int
    version: int  # the highest common version


@dataclass(frozen=True, slots=True)
class HelloReceived(Event):
    """A valid HELLO; answer with ``accept()`` or ``reject()`` (auth is the caller's call)."""

    client_name: str
    auth_token: bytes = field(repr=False)
    max_frame_size: int
    heartbeat_ms: int


@dataclass(frozen=True, slots=True)
class SubscribeRequested(Event):
    """A SUBSCRIBE that passed every check this module can make. Answer with
    ``subscribed()`` or ``request_error()`` (FORBIDDEN, INVALID_POSITION)."""

    sub_id: int
    topic: str
    since_kind: int
    since_epoch: int
    since_seq: int
    since_count: int
    at_least_once: bool
    initial_credit: int


@dataclass(frozen=True, slots=True)
class PatternSubscribeRequested(Event):
    """A SUBSCRIBE with PATTERN (§6.7) that passed every check this module can make.
    The caller checks FORBIDDEN, then :meth:`position_problem` (INVALID_POSITION), then the
    broker's positions and TOO_MANY_TOPICS, and answers with ``pattern_subscribed()`` and
    one ``topic_status()`` per position, or with ``request_error()``."""

    sub_id: int
    pattern: str
    since_kind: int
    since_count: int
    positions: tuple[F.TopicPosition, ...]
    initial_credit: int

    def position_problem(self) -> str | None:
        """Why the positions are INVALID_POSITION regardless of the topics' heads [PW-SUB-26]."""
        if self.since_kind == SinceKind.AFTER:
            return "a pattern has no single position: list positions per topic instead"
        seen: set[str] = set()
        for pos in self.positions:
            if pos.topic in seen:
                return f"topic {pos.topic!r} is listed twice"
            seen.add(pos.topic)
        return None


@dataclass(frozen=True, slots=True)
class UnsubscribeRequested(Event):
    """An UNSUBSCRIBE of an active subscription; answer with ``unsubscribed()``."""

    sub_id: int
    topic: str


@dataclass(frozen=True, slots=True)
class CreditGranted(Event):
    sub_id: int
    increment: int
    credit: int  # the subscription's credit now


@dataclass(frozen=True, slots=True)
class Acked(Event):
    sub_id: int
    seq: int


@dataclass(frozen=True, slots=True)
class PublishRequested(Event):
    """A PUBLISH on a syntactically valid topic. ``body`` is the PUBLISH body after
    request_id (topic, headers, payload): a MESSAGE is its header + epoch + seq + ``body``,
    with the same ``flags`` (SPEC.md §7.1), so the server never re-encodes a message."""

    request_id: int
    topic: str
    flags: int
    body: bytes = field(repr=False)
    payload: bytes = field(repr=False)
    headers: F.Headers | None


@dataclass(frozen=True, slots=True)
class PublishBatchRequested(Event):
    """A PUBLISH_BATCH; ``body`` as for :class:`PublishRequested` (topic, count, records).

    ``record_ends[i]`` is the offset in ``body`` just after record ``i``, and
    ``records_start`` where record 0 begins, so a push can be sliced without parsing again.
    """

    request_id: int
    topic: str
    flags: int
    body: bytes = field(repr=False)
    records: tuple[F.Record, ...] = field(repr=False)
    records_start: int
    record_ends: tuple[int, ...] = field(repr=False)

    @property
    def count(self) -> int:
        return len(self.records)


@dataclass(frozen=True, slots=True)
class PingReceived(Event):
    """Informational: the PONG is already in ``data_to_send()``."""

    opaque: int


@dataclass(frozen=True, slots=True)
class PongReceived(Event):
    opaque: int


@dataclass(frozen=True, slots=True)
class RequestRefused(Event):
    """Informational: this module answered a request with ERROR itself (already in
    ``data_to_send()``); the connection stays up."""

    code: ErrorCode
    request_type: int
    request_id: int
    message: str


# -- subscriptions ----------------------------------------------------------------------------


@dataclass(slots=True)
class ServerSubscription:
    """What the protocol remembers about one subscription (SPEC.md §6, §8).

    ``delivered`` is the last sequence sent *or skipped by a GAP*; ``acked`` the last
    cumulative ACK (at-least-once). Both restart when the topic's epoch changes under a
    live subscription.
    """

    sub_id: int
    topic: str
    at_least_once: bool
    credit: int
    active: bool = False  # False while the caller decides on the SUBSCRIBE
    epoch: int = 0
    delivered: int = 0
    acked: int = 0
    #: A pattern subscription (§6.7): ``topic`` is the pattern, and the position of each
    #: topic pushed so far is in ``topics`` (name -> (epoch, last sequence)).
    pattern: bool = False
    topics: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def position(self) -> int:
        """What GOAWAY reports (§8.6): the last ack (at-least-once) or last delivery."""
        return self.acked if self.at_least_once else self.delivered


# -- frame reading ----------------------------------------------------------------------------

#: The frames whose received bytes the server keeps: it forwards their bodies (§7.8).
_FORWARDED_TYPES = frozenset((int(FrameType.PUBLISH), int(FrameType.PUBLISH_BATCH)))


def _truncate(text: str, limit: int = MAX_REASON_BYTES) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


# -- the publish hot path ---------------------------------------------------------------------

_HEADER = struct.Struct(">IBB")  # layouts.Header
_PUB_HEAD = struct.Struct(">IB")  # layouts: PUBLISH request_id, topic length
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_PUBLISH = int(FrameType.PUBLISH)
_PUBLISH_BATCH = int(FrameType.PUBLISH_BATCH)
_PUB_MIN = HEADER_SIZE + _PUB_HEAD.size  # where a PUBLISH's topic bytes start
_PUB_BODY = HEADER_SIZE + PUBLISH_PREFIX_SIZE  # where its body after request_id starts
#: Topic names one connection remembers as valid: publishers use few topics; one that
#: cycles through more only pays the check again.
TOPIC_CACHE = 256


# -- the connection ---------------------------------------------------------------------------


class ServerConnection:
    """One client connection, seen from the server. See the module docstring."""

    def __init__(
        self,
        limits: ServerLimits | None = None,
        *,
        now: float = 0.0,
    ) -> None:
        self.limits = limits if limits is not None else ServerLimits()
        self.state = ServerState.AWAIT_PREFACE
        #: Why the connection closed (ours or the peer's code); None while it is up.
        self.close_code: ErrorCode | None = None
        #: The accepted HELLO, once there is one.
        self.client: HelloReceived | None = None
        self.version = 0
        self.connection_id = 0
        self.heartbeat_ms = 0
        self._reader = FrameDecoder(INITIAL_MAX_FRAME_SIZE, raw_types=_FORWARDED_TYPES)
        self._heartbeat = Heartbeat(interval=0.0)
        self._handshake_deadline = now + self.limits.handshake_timeout
        self._preface: tuple[int, int, int] | None = None
        self._out: list[bytes] = []
        # (a list: an empty deque holds a 64-slot block, a cost per idle connection)
        self._events: list[Event] = []
        self._subs: dict[int, ServerSubscription] = {}
        self._topics: dict[str, int] = {}
        self._patterns: dict[str, int] = {}  # pattern -> sub_id of its subscription
        self._eof_reported = False
        self._last_received = now
        self._partial_since: float | None = None  # when the frame now arriving began
        self._topic_cache: dict[bytes, str] = {}  # valid topic names seen (take_publishes)

    # -- bytes in, events out ---------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Buffer bytes from the peer (``b""``: the peer closed its side). Never raises;
        problems surface from :meth:`next_event`."""
        if self.state is ServerState.CLOSED or self._reader.eof:
            return
        if data:
            self._heartbeat.received(now)
            self._last_received = now
            if self._partial_since is None:
                self._partial_since = now
        self._reader.feed(data)

    def next_event(self) -> Event | Sentinel:
        """The next event; NEED_DATA when more bytes are needed; PAUSED when the caller must
        answer first (a preface, a HELLO) or the connection is CLOSED. Raises
        RemoteProtocolError when the peer broke the protocol; the connection is then CLOSED
        and :meth:`data_to_send` holds what to send before closing."""
        if self._events:
            return self._events.pop(0)
        if self.state is ServerState.CLOSED:
            return PAUSED
        try:
            event = self._parse_next()
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise
        if isinstance(event, Sentinel) and self._events:
            return self._events.pop(0)
        return event

    def events(self) -> Iterator[Event]:
        """The events available now, one :meth:`next_event` at a time up to the first
        sentinel (so the caller may answer one before the next is parsed); raises as
        :meth:`next_event` does."""
        while not isinstance(event := self.next_event(), Sentinel):
            yield event

    def data_to_send(self) -> bytes:
        """Bytes this module produced on its own since the last call (PONG, automatic
        request errors, the ERROR or preface before a close)."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    @property
    def buffered(self) -> int:
        """Received bytes not yet turned into events."""
        return self._reader.buffered

    def take_publishes(self) -> tuple[bytes, list[tuple[int, str, int, int, int]]] | None:
        """The publisher's hot path: every whole PUBLISH and PUBLISH_BATCH without headers
        at the front of the buffer, in one pass, as ``(data, [(request_id, topic, start,
        end, count), ...])``, where ``data[start:end]`` is each publish body after its
        request_id (what :func:`codec.body_to_message` and
        :func:`codec.body_to_message_batch` take) and ``count`` is a batch's record count
        (0 for a PUBLISH). ``None`` when the next frame is anything else, or a publish
        this path does not judge (a topic that is not valid, a frame that is not well
        formed): :meth:`next_event` then handles it as usual, with the same outcome.

        Only in OPEN with no event pending, so order is kept. A valid topic is decoded
        and checked once per connection (up to :data:`TOPIC_CACHE` names); a batch's
        records are walked by their length prefixes only."""
        if self.state is not ServerState.OPEN or self._events:
            return None
        reader = self._reader
        buf = reader.buffer
        size = len(buf)
        limit = reader.max_frame_size
        topics = self._topic_cache
        u32 = _U32.unpack_from
        spans: list[tuple[int, str, int, int, int]] = []
        last_name, last_topic = b"\xff", ""  # never a topic's bytes: 0xff is not UTF-8
        offset = 0
        while offset + _PUB_MIN <= size:
            length, type_, flags = _HEADER.unpack_from(buf, offset)
            end = offset + HEADER_SIZE + length
            if (type_ != _PUBLISH and type_ != _PUBLISH_BATCH) or flags:
                break
            if length > limit or end > size:
                break
            request_id, n = _PUB_HEAD.unpack_from(buf, offset + HEADER_SIZE)
            topic_end = offset + _PUB_MIN + n
            if topic_end > end:
                break
            count = 0
            if type_ == _PUBLISH_BATCH:
                if topic_end + 2 > end:
                    break
                count = _U16.unpack_from(buf, topic_end)[0]
                at = topic_end + 2
                if not count or count * _U32.size > end - at:
                    break  # empty, or too short for its records: next_event says so
                # A walk by the length prefixes alone: one that reaches past the frame only
                # makes ``at`` overshoot (or runs off the buffer), and the walk is bounded
                # by the frame's size, since every record takes at least its prefix.
                try:
                    for _ in range(count):
                        at += 4 + u32(buf, at)[0]
                except struct.error:
                    break
                if at != end:
                    break  # not well formed: next_event says what is wrong
            if n == len(last_name) and buf.startswith(last_name, offset + _PUB_MIN):
                topic = last_topic  # the previous frame's topic: no copy, no look-up
                spans.append((request_id, topic, offset + _PUB_BODY, end, count))
                offset = end
                continue
            name = bytes(buf[offset + _PUB_MIN : topic_end])
            cached = topics.get(name)
            if cached is not None:
                topic = cached
            else:
                try:
                    topic = name.decode("utf-8")
                except UnicodeDecodeError:
                    break
                if topic_problem(topic) is not None:
                    break
                if len(topics) >= TOPIC_CACHE:
                    topics.clear()
                topics[name] = topic
            last_name, last_topic = name, topic
            spans.append((request_id, topic, offset + _PUB_BODY, end, count))
            offset = end
        if not spans:
            return None
        data = bytes(buf[:offset])
        reader.discard(offset)
        self._partial_since = self._last_received if reader.buffered else None
        return data, spans

    # -- handshake ---------------------------------------------------------------------------

    def send_preface(self, version: int | None = None) -> bytes:
        """Our 8-byte preface (§2.2) with ``version`` (default: the highest common one)."""
        if self.state is not ServerState.SEND_PREFACE:
            raise LocalProtocolError(
                f"cannot send a preface in state {self.state.name}", code=ErrorCode.PROTOCOL_ERROR
            )
        assert self._preface is not None
        chosen = self._preface[2] if version is None else version
        if not self._preface[0] <= chosen <= self._preface[1] or chosen not in SUPPORTED_VERSIONS:
            raise LocalProtocolError(
                f"version {chosen} is not one both sides speak", code=ErrorCode.UNSUPPORTED_VERSION
            )
        self.state = ServerState.AWAIT_HELLO
        self.version = chosen
        return encode_preface(chosen, max(SUPPORTED_VERSIONS))

    def accept(self, connection_id: int, server_name: str, now: float) -> bytes:
        """WELCOME (§5.2): the connection is OPEN, our receive limit becomes
        ``limits.max_frame_size`` and heartbeats start."""
        self._check(FrameType.WELCOME)
        assert self.client is not None
        self._transition(FrameType.WELCOME)
        limits = self.limits
        self.connection_id = connection_id
        self.heartbeat_ms = limits.heartbeat_for(self.client.heartbeat_ms)
        self._reader.max_frame_size = limits.max_frame_size
        self._heartbeat.start(self.heartbeat_ms / 1000, now)
        return codec.encode_frame(
            F.Welcome(
                connection_id=connection_id,
                heartbeat_ms=self.heartbeat_ms,
                max_frame_size=limits.max_frame_size,
                max_subscriptions=limits.max_subscriptions,
                max_lag=limits.max_lag,
                slow_consumer_policy=int(limits.slow_consumer_policy),
                server_name=_truncate(server_name, 255),
            )
        )

    def reject(self, code: ErrorCode, message: str = "") -> bytes:
        """Refuse the connection during the handshake (UNAUTHENTICATED,
        TOO_MANY_CONNECTIONS, ...): ERROR(code, 0, 0) and CLOSED."""
        if self.state not in (ServerState.AWAIT_HELLO, ServerState.SEND_WELCOME):
            raise LocalProtocolError(
                f"cannot reject in state {self.state.name}: rejecting ends a handshake",
                code=ErrorCode.PROTOCOL_ERROR,
            )
        self._transition(FrameType.ERROR)
        self.close_code = code
        return self._error_frame(code, 0, 0, message)

    # -- replies -----------------------------------------------------------------------------

    def subscribed(
        self,
        sub_id: int,
        outcome: Outcome,
        epoch: int,
        start_seq: int,
        head_seq: int,
        gap_first: int = 0,
        gap_last: int = 0,
        gap_reason: int = 0,
    ) -> bytes:
        """SUBSCRIBED (§6.2): the subscription becomes active at ``start_seq``; credit
        granted so far stays."""
        self._transition(FrameType.SUBSCRIBED)
        sub = self._pending(sub_id)
        sub.active = True
        sub.epoch = epoch
        sub.delivered = sub.acked = start_seq - 1
        return codec.encode_frame(
            F.Subscribed(
                sub_id=sub_id,
                outcome=int(outcome),
                epoch=epoch,
                start_seq=start_seq,
                head_seq=head_seq,
                gap_first=gap_first if outcome == Outcome.GAP else 0,
                gap_last=gap_last if outcome == Outcome.GAP else 0,
                gap_reason=gap_reason if outcome == Outcome.GAP else 0,
            )
        )

    def pattern_subscribed(self, sub_id: int) -> bytes:
        """The SUBSCRIBED that opens a pattern subscription (§6.7): outcome NEW, zeros;
        each position then gets its ``topic_status()`` before any push of its topic."""
        self._transition(FrameType.SUBSCRIBED)
        sub = self._pending(sub_id)
        if not sub.pattern:
            raise LocalProtocolError(
                f"sub {sub_id} is not a pattern", code=ErrorCode.PROTOCOL_ERROR
            )
        sub.active = True
        return codec.encode_frame(F.Subscribed(sub_id, int(Outcome.NEW), 0, 0, 0))

    def topic_status(
        self,
        sub_id: int,
        topic: str,
        outcome: Outcome,
        epoch: int,
        start_seq: int,
        head_seq: int,
        gap_first: int = 0,
        gap_last: int = 0,
        gap_reason: int = 0,
    ) -> bytes:
        """SUBSCRIBED(TOPIC_STATUS) (§6.7): one topic of a pattern subscription resumes,
        skips or restarts at ``start_seq`` of ``epoch``. Uses no credit."""
        self._transition(FrameType.SUBSCRIBED)
        sub = self._active(sub_id)
        if not sub.pattern or not pattern_matches(sub.topic, topic):
            raise LocalProtocolError(
                f"sub {sub_id} is not a pattern matching {topic!r}", code=ErrorCode.PROTOCOL_ERROR
            )
        sub.topics[topic] = (epoch, start_seq - 1)
        gap = outcome == Outcome.GAP
        return codec.encode_frame(
            F.Subscribed(
                sub_id,
                int(outcome),
                epoch,
                start_seq,
                head_seq,
                gap_first if gap else 0,
                gap_last if gap else 0,
                gap_reason if gap else 0,
                topic,
            )
        )

    def end_pattern(self, sub_id: int, message: str = "") -> bytes:
        """ERROR(TOO_MANY_TOPICS, SUBSCRIBE, sub_id) ending a live pattern subscription
        whose new topic would exceed ``max_pattern_topics`` [PW-SUB-31]; the sub_id is free."""
        self._transition(FrameType.ERROR)
        sub = self._active(sub_id)
        self._forget(sub)
        return self._error_frame(ErrorCode.TOO_MANY_TOPICS, FrameType.SUBSCRIBE, sub_id, message)

    def request_error(
        self, code: ErrorCode, request_type: int, request_id: int, message: str = ""
    ) -> bytes:
        """ERROR answering one request (§8.7); a refused SUBSCRIBE frees its sub_id."""
        if self.state not in (ServerState.OPEN, ServerState.DRAINING):
            raise LocalProtocolError(
                f"cannot answer a request in state {self.state.name}",
                code=ErrorCode.PROTOCOL_ERROR,
            )
        self._transition(FrameType.ERROR)
        if request_type == FrameType.SUBSCRIBE:
            sub = self._subs.get(request_id)
            if sub is not None and not sub.active:
                self._forget(sub)
        return self._error_frame(code, request_type, request_id, message)

    def unsubscribed(self, sub_id: int) -> bytes:
        """UNSUBSCRIBED (§6.4) with the last sequence delivered; the sub_id is free again."""
        self._transition(FrameType.UNSUBSCRIBED)
        sub = self._active(sub_id)
        self._forget(sub)
        if sub.pattern:  # positions are per topic and live with the client [PW-SUB-32]
            return codec.encode_frame(F.Unsubscribed(sub_id, 0, 0))
        return codec.encode_frame(F.Unsubscribed(sub_id, sub.epoch, sub.delivered))

    def puback(self, request_id: int, epoch: int, first_seq: int, count: int) -> bytes:
        self._transition(FrameType.PUBACK)
        return codec.encode_frame(F.Puback(request_id, epoch, first_seq, count))

    def pubacks(self, epoch: int, acks: list[tuple[int, int, int]]) -> bytes:
        """PUBACK(request_id, epoch, first_seq, count) for each (request_id, first_seq,
        count) whose request_id is not 0: many :meth:`puback` in one go."""
        self._transition(FrameType.PUBACK)
        return codec.encode_pubacks(epoch, acks)

    def goaway(
        self,
        code: ErrorCode = ErrorCode.SHUTTING_DOWN,
        reconnect_after_ms: int = 0,
        reconnect_jitter_ms: int = 0,
        reason: str = "",
    ) -> bytes:
        """GOAWAY (§8.6) with every active subscription's position; the connection is
        DRAINING: new SUBSCRIBE/PUBLISH are answered GOING_AWAY from now on."""
        self._transition(FrameType.GOAWAY)
        reason = _truncate(reason)
        peer_max = self.client.max_frame_size if self.client else INITIAL_MAX_FRAME_SIZE
        # positions are informational: keep as many as fit the client's frame limit, each
        # adding one Position to the GOAWAY without any
        bare = codec.encode_frame(F.Goaway(int(code), 0, 0, (), reason))
        room = (peer_max - (len(bare) - HEADER_SIZE)) // POSITION_SIZE
        positions = tuple(
            F.Position(s.sub_id, s.epoch, s.position)
            for s in self._subs.values()
            if s.active and not s.pattern  # [PW-SUB-32]
        )[: max(0, min(room, 0xFFFF))]
        return codec.encode_frame(
            F.Goaway(int(code), reconnect_after_ms, reconnect_jitter_ms, positions, reason)
        )

    def close_with_error(self, code: ErrorCode, message: str = "") -> bytes:
        """A connection-level error of ours (§8.7): ERROR(code, 0, 0) and CLOSED. Returns
        ``b""`` when nothing can be said (before our preface, or already closed)."""
        if self.state is ServerState.CLOSED:
            return b""
        can_speak = self.state not in (ServerState.AWAIT_PREFACE, ServerState.SEND_PREFACE)
        self.state = ServerState.CLOSED
        self.close_code = code
        return self._error_frame(code, 0, 0, message) if can_speak else b""

    # -- pushes and credit -------------------------------------------------------------------

    def subscription(self, sub_id: int) -> ServerSubscription | None:
        """A read-only look at one subscription (do not modify it)."""
        return self._subs.get(sub_id)

    @property
    def subscriptions(self) -> dict[int, ServerSubscription]:
        """Every known subscription by sub_id (a copy)."""
        return dict(self._subs)

    def credit(self, sub_id: int) -> int:
        """How many messages may be pushed to ``sub_id`` now (§8.1)."""
        return self._active(sub_id).credit

    def can_send(self, sub_id: int, count: int = 1) -> bool:
        return self.credit(sub_id) >= count

    def consume_credit(
        self, sub_id: int, count: int, *, epoch: int, last_seq: int, topic: str | None = None
    ) -> None:
        """Record that ``count`` messages ending at ``last_seq`` of ``epoch`` go to
        ``sub_id`` (of ``topic``, for a pattern subscription: one credit pool for all its
        topics [PW-FLOW-9]). LocalProtocolError(FLOW_CONTROL_ERROR) beyond the credit: the
        caller must ask :meth:`can_send` first and split batches (§8.1)."""
        self._transition(FrameType.MESSAGE)
        sub = self._active(sub_id)
        if count > sub.credit:
            raise LocalProtocolError(
                f"sub {sub_id}: {count} messages exceed credit {sub.credit}",
                code=ErrorCode.FLOW_CONTROL_ERROR,
            )
        sub.credit = max(0, sub.credit - count)
        if sub.pattern:
            if topic is None:
                raise LocalProtocolError(
                    f"sub {sub_id} is a pattern: name the topic", code=ErrorCode.PROTOCOL_ERROR
                )
            sub.topics[topic] = (epoch, last_seq)
            return
        self._advance(sub, epoch, last_seq)

    def take_credit(self, sub_id: int, count: int, epoch: int, last_seq: int) -> int:
        """:meth:`consume_credit` for a plain (not pattern) subscription, without asking
        :meth:`credit` first: the credit left, or -1 and nothing recorded when ``sub_id``
        is not an active plain subscription with at least ``count`` credit. One call
        instead of three where it runs once per subscriber for each append of a fan-out."""
        sub = self._subs.get(sub_id)
        if sub is None or not sub.active or sub.pattern or sub.credit < count:
            return -1
        self._transition(FrameType.MESSAGE)
        sub.credit -= count
        self._advance(sub, epoch, last_seq)
        return sub.credit

    def gap(self, sub_id: int, epoch: int, first: int, last: int, reason: ErrorCode) -> bytes:
        """GAP (§7.4): ``first..last`` of ``epoch`` will never come; uses no credit."""
        self._transition(FrameType.GAP)
        sub = self._active(sub_id)
        if sub.pattern:  # GAP has no topic: topic_status() says it [PW-SUB-30]
            raise LocalProtocolError(
                f"sub {sub_id} is a pattern: use topic_status()", code=ErrorCode.PROTOCOL_ERROR
            )
        if not 1 <= first <= last:
            raise LocalProtocolError(
                f"GAP range {first}..{last} is empty", code=ErrorCode.FIELD_OUT_OF_RANGE
            )
        self._advance(sub, epoch, last)
        return codec.encode_frame(F.Gap(sub_id, epoch, first, last, int(reason)))

    # -- time --------------------------------------------------------------------------------

    def tick(self, now: float) -> bytes:
        """What time demands at ``now``: a PING when we were idle for an interval, an
        ERROR(HEARTBEAT_TIMEOUT) after three intervals of silence, ERROR(HANDSHAKE_TIMEOUT)
        when HELLO is late. Check :attr:`state` afterwards: CLOSED means close now."""
        state = self.state
        if state is ServerState.CLOSED:
            return b""
        if state not in (ServerState.OPEN, ServerState.DRAINING):
            if now >= self._handshake_deadline:
                return self.close_with_error(
                    ErrorCode.HANDSHAKE_TIMEOUT,
                    f"no HELLO within {self.limits.handshake_timeout:g} s",
                )
            return b""
        hb = self._heartbeat
        if self._trickling(now):
            return self.close_with_error(
                ErrorCode.HEARTBEAT_TIMEOUT,
                f"a frame took more than {self.limits.frame_timeout:g} s to arrive",
            )
        if hb.timed_out(now):
            return self.close_with_error(
                ErrorCode.HEARTBEAT_TIMEOUT,
                f"nothing received for {now - hb.last_received:.3f} s",
            )
        if hb.ping_due(now):
            hb.sent(now)
            return codec.encode_frame(F.Ping(hb.next_opaque()))
        return b""

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (``None``: never)."""
        state = self.state
        if state is ServerState.CLOSED:
            return None
        if state not in (ServerState.OPEN, ServerState.DRAINING):
            return self._handshake_deadline
        deadline = self._heartbeat.next_deadline() or math.inf
        if self._partial_since is not None:
            deadline = min(deadline, self._partial_since + self.limits.frame_timeout)
        return deadline

    def _trickling(self, now: float) -> bool:
        """A frame began to arrive ``frame_timeout`` ago and is still incomplete."""
        return (
            self._partial_since is not None
            and now - self._partial_since >= self.limits.frame_timeout
            and self._reader.buffered > 0
            and not self._reader.holds_a_frame()
        )

    def data_sent(self, now: float) -> None:
        """Tell the heartbeat that bytes went out at ``now`` (a PING is due only after an
        idle interval)."""
        self._heartbeat.sent(now)

    # -- internals ---------------------------------------------------------------------------

    def _check(self, sent: FrameType) -> ServerState:
        """The state sending ``sent`` leads to; LocalProtocolError when SEND_TRANSITIONS
        does not allow it in the current state."""
        try:
            return SEND_TRANSITIONS[self.state][sent]
        except KeyError:
            raise LocalProtocolError(
                f"cannot send {sent.name} in state {self.state.name}",
                code=ErrorCode.PROTOCOL_ERROR,
            ) from None

    def _transition(self, sent: FrameType) -> None:
        self.state = self._check(sent)

    def _fail(self, exc: RemoteProtocolError) -> None:
        """Close because the peer broke the protocol; queue what to say about it."""
        if exc.code is ErrorCode.UNSUPPORTED_VERSION:
            self._out.append(encode_preface(0, max(SUPPORTED_VERSIONS)))
            self.state = ServerState.CLOSED
            self.close_code = exc.code
        elif self.state in (ServerState.AWAIT_PREFACE, ServerState.SEND_PREFACE):
            self.state = ServerState.CLOSED  # a client without a valid preface gets nothing
            self.close_code = exc.code
        else:
            self._out.append(self.close_with_error(exc.code, str(exc)))

    def _error_frame(
        self, code: ErrorCode, request_type: int, request_id: int, message: str
    ) -> bytes:
        return codec.encode_frame(F.Error(int(code), request_type, request_id, _truncate(message)))

    def _refuse(self, code: ErrorCode, request_type: int, request_id: int, message: str) -> Event:
        self._out.append(self._error_frame(code, request_type, request_id, message))
        return RequestRefused(code, request_type, request_id, message)

    def _pending(self, sub_id: int) -> ServerSubscription:
        sub = self._subs.get(sub_id)
        if sub is None or sub.active:
            raise LocalProtocolError(
                f"sub {sub_id} has no SUBSCRIBE waiting for an answer",
                code=ErrorCode.PROTOCOL_ERROR,
            )
        return sub

    def _active(self, sub_id: int) -> ServerSubscription:
        sub = self._subs.get(sub_id)
        if sub is None or not sub.active:
            raise LocalProtocolError(
                f"sub {sub_id} is not an active subscription",
                code=ErrorCode.UNKNOWN_SUBSCRIPTION,
            )
        return sub

    def _forget(self, sub: ServerSubscription) -> None:
        del self._subs[sub.sub_id]
        del (self._patterns if sub.pattern else self._topics)[sub.topic]

    @staticmethod
    def _advance(sub: ServerSubscription, epoch: int, last_seq: int) -> None:
        if epoch != sub.epoch:  # the topic was reset under a live subscription
            sub.epoch = epoch
            sub.acked = 0
        sub.delivered = last_seq

    def _parse_next(self) -> Event | Sentinel:
        state = self.state
        if state is ServerState.AWAIT_PREFACE:
            return self._parse_preface()
        if state in (ServerState.SEND_PREFACE, ServerState.SEND_WELCOME):
            return PAUSED  # waiting for the caller to answer
        table = RECEIVE_TRANSITIONS[state]
        item = self._reader.next_frame_with_raw()
        if item is None:
            if self._reader.eof and not self._eof_reported:
                self._eof_reported = True
                self.state = ServerState.CLOSED
                self.close_code = ErrorCode.NO_ERROR
                return ConnectionClosed()
            return NEED_DATA
        frame, raw = item
        self._partial_since = self._last_received if self._reader.buffered else None
        assert not isinstance(frame, F.Unknown)  # the reader skips unknown types
        ftype = frame.TYPE
        if ftype not in table:
            if ftype not in RECEIVE_TRANSITIONS[ServerState.OPEN] and ftype != FrameType.HELLO:
                why = f"a server never receives {ftype.name}"
            else:
                why = f"{ftype.name} is not allowed in state {state.name}"
            raise RemoteProtocolError(
                why,
                code=ErrorCode.UNEXPECTED_FRAME,
                requirement="PW-HS-3" if state is ServerState.AWAIT_HELLO else "PW-FRAME-13",
            )
        nxt = table[ftype]
        event = self._HANDLERS[ftype](self, frame, raw)
        self.state = nxt
        if nxt is ServerState.CLOSED and self.close_code is None:
            self.close_code = ErrorCode.NO_ERROR
        return event

    def _parse_preface(self) -> Event | Sentinel:
        reader = self._reader
        head = reader.peek(PREFACE_SIZE)
        if not MAGIC.startswith(head[: len(MAGIC)]):
            raise RemoteProtocolError(
                f"preface starts with {head[: len(MAGIC)].hex()}, not {MAGIC.hex()}",
                code=ErrorCode.BAD_PREFACE,
                requirement="PW-PREFACE-1",
            )
        if len(head) < PREFACE_SIZE:
            if reader.eof and not self._eof_reported:
                self._eof_reported = True
                self.state = ServerState.CLOSED
                self.close_code = ErrorCode.NO_ERROR
                return ConnectionClosed()
            return NEED_DATA
        min_v, max_v = parse_preface(head)
        version = choose_version(min_v, max_v)
        if version is None:
            raise RemoteProtocolError(
                f"client speaks versions {min_v}-{max_v}; server speaks "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))}",
                code=ErrorCode.UNSUPPORTED_VERSION,
                requirement="PW-PREFACE-6",
            )
        reader.take(PREFACE_SIZE)
        self._preface = (min_v, max_v, version)
        self.state = ServerState.SEND_PREFACE
        return PrefaceReceived(min_v, max_v, version)

    # frame handlers: (self, frame, raw body) -> event; each one runs only in a state that
    # RECEIVE_TRANSITIONS allows for its type.

    def _on_hello(self, frame: F.Hello, raw: bytes | None) -> Event:
        if not MIN_MAX_FRAME_SIZE <= frame.max_frame_size <= MAX_MAX_FRAME_SIZE:
            raise RemoteProtocolError(
                f"HELLO max_frame_size {frame.max_frame_size} is outside "
                f"{MIN_MAX_FRAME_SIZE}-{MAX_MAX_FRAME_SIZE}",
                code=ErrorCode.FIELD_OUT_OF_RANGE,
                requirement="PW-HS-5",
            )
        self.client = HelloReceived(
            frame.client_name, frame.auth_token, frame.max_frame_size, frame.heartbeat_ms
        )
        return self.client

    def _on_ping(self, frame: F.Ping, raw: bytes | None) -> Event:
        self._out.append(codec.encode_frame(F.Pong(frame.opaque)))
        return PingReceived(frame.opaque)

    def _on_pong(self, frame: F.Pong, raw: bytes | None) -> Event:
        return PongReceived(frame.opaque)

    def _on_goaway(self, frame: F.Goaway, raw: bytes | None) -> Event:
        self.close_code = ErrorCode.NO_ERROR
        return GoawayReceived(code_of(frame.code), frame.reason)

    def _on_error(self, frame: F.Error, raw: bytes | None) -> Event:
        try:
            self.close_code = ErrorCode(frame.code)
        except ValueError:
            self.close_code = ErrorCode.PROTOCOL_ERROR
        return PeerError(code_of(frame.code), frame.message)

    def _on_subscribe(self, frame: F.Subscribe, raw: bytes | None) -> Event:
        t, sid = FrameType.SUBSCRIBE, frame.sub_id
        if self.state is ServerState.DRAINING:
            return self._refuse(ErrorCode.GOING_AWAY, t, sid, "server is going away")
        if frame.positions is not None:
            return self._on_pattern_subscribe(frame, frame.positions)
        problem = topic_problem(frame.topic)
        if problem is not None:
            return self._refuse(ErrorCode.INVALID_TOPIC, t, sid, problem)
        if sid in self._subs:
            return self._refuse(ErrorCode.ALREADY_SUBSCRIBED, t, sid, f"sub_id {sid} is in use")
        overlap = self._overlapping(frame.topic)
        if overlap is not None:  # [PW-SUB-23]
            return self._refuse(
                ErrorCode.ALREADY_SUBSCRIBED,
                t,
                sid,
                f"topic is matched by pattern {overlap!r} (sub_id {self._patterns[overlap]})",
            )
        if frame.topic in self._topics:
            return self._refuse(
                ErrorCode.ALREADY_SUBSCRIBED,
                t,
                sid,
                f"topic already subscribed as sub_id {self._topics[frame.topic]}",
            )
        if len(self._subs) >= self.limits.max_subscriptions:
            return self._refuse(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                t,
                sid,
                f"limit is {self.limits.max_subscriptions} subscriptions per connection",
            )
        self._subs[sid] = ServerSubscription(
            sid, frame.topic, frame.at_least_once, frame.initial_credit
        )
        self._topics[frame.topic] = sid
        return SubscribeRequested(
            sid,
            frame.topic,
            frame.since_kind,
            frame.since_epoch,
            frame.since_seq,
            frame.since_count,
            frame.at_least_once,
            frame.initial_credit,
        )

    def _overlapping(self, topic_or_pattern: str) -> str | None:
        """An existing pattern sharing a topic with ``topic_or_pattern``, if any."""
        for pattern in self._patterns:
            if patterns_overlap(pattern, topic_or_pattern):
                return pattern
        return None

    def _on_pattern_subscribe(
        self, frame: F.Subscribe, positions: tuple[F.TopicPosition, ...]
    ) -> Event:
        """The checks of §6.7 this module can make, in the order of §6.1."""
        t, sid, pattern = FrameType.SUBSCRIBE, frame.sub_id, frame.topic
        problem = pattern_problem(pattern)
        if problem is not None:
            return self._refuse(ErrorCode.INVALID_TOPIC, t, sid, problem)
        for pos in positions:  # [PW-SUB-22]
            problem = topic_problem(pos.topic)
            if problem is None and not pattern_matches(pattern, pos.topic):
                problem = f"position topic {pos.topic!r} does not match {pattern!r}"
            if problem is not None:
                return self._refuse(ErrorCode.INVALID_TOPIC, t, sid, problem)
        if sid in self._subs:
            return self._refuse(ErrorCode.ALREADY_SUBSCRIBED, t, sid, f"sub_id {sid} is in use")
        clash = self._overlapping(pattern)
        if clash is None:
            clash = next((n for n in self._topics if pattern_matches(pattern, n)), None)
        if clash is not None:  # [PW-SUB-23]
            return self._refuse(
                ErrorCode.ALREADY_SUBSCRIBED, t, sid, f"pattern shares topics with {clash!r}"
            )
        if len(self._subs) >= self.limits.max_subscriptions:
            return self._refuse(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                t,
                sid,
                f"limit is {self.limits.max_subscriptions} subscriptions per connection",
            )
        if len(self._patterns) >= self.limits.max_patterns:  # [PW-SUB-24]
            return self._refuse(
                ErrorCode.TOO_MANY_PATTERNS,
                t,
                sid,
                f"limit is {self.limits.max_patterns} pattern subscriptions per connection",
            )
        self._subs[sid] = ServerSubscription(
            sid, pattern, False, frame.initial_credit, pattern=True
        )
        self._patterns[pattern] = sid
        return PatternSubscribeRequested(
            sid, pattern, frame.since_kind, frame.since_count, positions, frame.initial_credit
        )

    def _on_unsubscribe(self, frame: F.Unsubscribe, raw: bytes | None) -> Event:
        sub = self._subs.get(frame.sub_id)
        if sub is None or not sub.active:
            return self._refuse(
                ErrorCode.UNKNOWN_SUBSCRIPTION,
                FrameType.UNSUBSCRIBE,
                frame.sub_id,
                f"no active subscription {frame.sub_id}",
            )
        return UnsubscribeRequested(sub.sub_id, sub.topic)

    def _on_credit(self, frame: F.Credit, raw: bytes | None) -> Event:
        sub = self._subs.get(frame.sub_id)
        if sub is None:
            return self._refuse(
                ErrorCode.UNKNOWN_SUBSCRIPTION,
                FrameType.CREDIT,
                frame.sub_id,
                f"no subscription {frame.sub_id}",
            )
        total = sub.credit + frame.increment
        if total > MAX_CREDIT:
            raise RemoteProtocolError(
                f"sub {frame.sub_id}: credit {sub.credit} + {frame.increment} exceeds 2^32-1",
                code=ErrorCode.FLOW_CONTROL_ERROR,
                requirement="PW-FLOW-4",
            )
        sub.credit = total
        return CreditGranted(frame.sub_id, frame.increment, total)

    def _on_ack(self, frame: F.Ack, raw: bytes | None) -> Event:
        t, sid, seq = FrameType.ACK, frame.sub_id, frame.seq
        sub = self._subs.get(sid)
        if sub is None:
            return self._refuse(ErrorCode.UNKNOWN_SUBSCRIPTION, t, sid, f"no subscription {sid}")
        if not sub.at_least_once:
            return self._refuse(ErrorCode.INVALID_ACK, t, sid, "subscription is at-most-once")
        if seq > sub.delivered:
            return self._refuse(
                ErrorCode.INVALID_ACK, t, sid, f"ack {seq} is above last delivered {sub.delivered}"
            )
        if seq < sub.acked:
            return self._refuse(
                ErrorCode.INVALID_ACK, t, sid, f"ack {seq} is below previous ack {sub.acked}"
            )
        sub.acked = seq
        return Acked(sid, seq)

    def _check_publish(self, request_type: FrameType, request_id: int, topic: str) -> Event | None:
        if self.state is ServerState.DRAINING:
            return self._refuse(
                ErrorCode.GOING_AWAY, request_type, request_id, "server is going away"
            )
        problem = topic_problem(topic)
        if problem is not None:
            return self._refuse(ErrorCode.INVALID_TOPIC, request_type, request_id, problem)
        return None

    # The flags of a publish event come from the decoded frame, not from the received byte,
    # so a push never forwards a bit that decoding did not judge.

    def _on_publish(self, frame: F.Publish, raw: bytes | None) -> Event:
        refused = self._check_publish(FrameType.PUBLISH, frame.request_id, frame.topic)
        if refused is not None:
            return refused
        assert raw is not None
        _, body = codec.publish_body(raw)
        flags = HAS_HEADERS if frame.headers is not None else 0
        return PublishRequested(
            frame.request_id, frame.topic, flags, body, frame.payload, frame.headers
        )

    def _on_publish_batch(self, frame: F.PublishBatch, raw: bytes | None) -> Event:
        refused = self._check_publish(FrameType.PUBLISH_BATCH, frame.request_id, frame.topic)
        if refused is not None:
            return refused
        assert raw is not None
        _, body = codec.publish_body(raw)
        flags = HAS_HEADERS if frame.records[0].headers is not None else 0
        offsets = codec.body_record_offsets(flags, body)
        return PublishBatchRequested(
            frame.request_id, frame.topic, flags, body, frame.records, offsets[0], offsets[1:]
        )

    _HANDLERS: ClassVar[dict[FrameType, Callable[[Any, Any, bytes | None], Event]]] = {
        FrameType.HELLO: _on_hello,
        FrameType.PING: _on_ping,
        FrameType.PONG: _on_pong,
        FrameType.GOAWAY: _on_goaway,
        FrameType.ERROR: _on_error,
        FrameType.SUBSCRIBE: _on_subscribe,
        FrameType.UNSUBSCRIBE: _on_unsubscribe,
        FrameType.CREDIT: _on_credit,
        FrameType.ACK: _on_ack,
        FrameType.PUBLISH: _on_publish,
        FrameType.PUBLISH_BATCH: _on_publish_batch,
    }
