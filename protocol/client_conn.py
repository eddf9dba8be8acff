"""The client side of a pushwire connection as a sans-I/O state machine (SPEC.md §5-§8).

Theory of operation
-------------------
:class:`ClientConnection` owns no socket, no task and no clock. The application (the trio
shell in ``pushwire.client``, or a test) moves bytes and time through it:

* calls that put something on the wire (:meth:`~ClientConnection.initiate`,
  :meth:`~ClientConnection.subscribe`, :meth:`~ClientConnection.publish`,
  :meth:`~ClientConnection.tick`, ...) *return* the bytes to send;
* :meth:`~ClientConnection.receive_data` buffers what the socket produced (``b""`` is EOF);
  :meth:`~ClientConnection.next_event` parses it into events, returning
  :data:`~pushwire.protocol.events.NEED_DATA` when it needs more bytes and
  :data:`~pushwire.protocol.events.PAUSED` once CLOSED (or before :meth:`initiate`); replies
  the protocol makes on its own (PONG, the ERROR that precedes a close) are collected in
  :meth:`~ClientConnection.data_to_send`.

So a single writer can own every outgoing byte, and heartbeats are tested by passing ``now``.

A pipelining publisher has a bulk path on both sides. :meth:`~ClientConnection.publish_run`
returns the PUBLISH frames of many payloads on one topic as one piece of bytes, and their
answers collect in the returned :class:`PublishRun`, not as events.
:meth:`~ClientConnection.take_pubacks`, called before :meth:`next_event`, takes the whole
PUBACKs at the front of the buffer that answer run publishes in one pass; anything else
(or a PUBACK that breaks a rule) is left to :meth:`next_event`, which handles run answers
the same way and raises the same errors. ``run_answers`` counts the answers of both paths,
so a caller can tell whether a read answered any.

The client trusts nothing it receives. Besides what the decoder checks (layout, UTF-8, frame
size from the header), the state machine verifies the server's promises and ends the
connection with the matching registry code when one is broken:

* a frame type that the current state does not allow → UNEXPECTED_FRAME (§5, §3.3);
* per subscription, messages carry the SUBSCRIBED epoch and sequences start_seq, start_seq+1,
  ... without holes, unless a GAP frame skips explicitly from the next expected sequence
  → PROTOCOL_ERROR (§7.3, §7.4);
* a MESSAGE or batch never exceeds the credit granted so far → FLOW_CONTROL_ERROR (§8.1);
* messages arrive only for topics with an active subscription; those for a topic whose
  UNSUBSCRIBE is in flight are dropped silently, as §6.3 allows → PROTOCOL_ERROR otherwise;
* replies (SUBSCRIBED, UNSUBSCRIBED, PUBACK, request ERRORs) match an outstanding request and
  agree with what was asked → PROTOCOL_ERROR.

Each violation makes :meth:`~ClientConnection.next_event` raise the
:class:`~pushwire.protocol.errors.RemoteProtocolError` carrying the code, after putting
ERROR(code) in :meth:`~ClientConnection.data_to_send` (best effort, SPEC.md §8.7) and moving
to CLOSED (:attr:`~ClientConnection.close_code` says why); later input is ignored. Three
silent heartbeat intervals end the connection the same way from :meth:`tick`, which returns
the ERROR: check :attr:`~ClientConnection.state` afterwards. Mistakes of the *caller*
(subscribing before the handshake, acking beyond what was delivered, an oversized publish)
raise :class:`LocalProtocolError` and send nothing. These are the server machine's
conventions too (:mod:`pushwire.protocol.events`).

State transitions are data (:data:`RECEIVE_TRANSITIONS`, :data:`SEND_TRANSITIONS`), both
``state -> {frame type: next state}`` as in h11's tables and in the server's machine: a
frame type absent from the current state's row is illegal. The prefaces are not frames and
precede both tables.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder, encode_preface, parse_preface
from pushwire.protocol.errors import (
    REGISTRY,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
)
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
from pushwire.protocol.flow import CreditLedger
from pushwire.protocol.heartbeat import Heartbeat
from pushwire.protocol.layouts import (
    HEADER_SIZE,
    INITIAL_MAX_FRAME_SIZE,
    MAX_MAX_FRAME_SIZE,
    MIN_MAX_FRAME_SIZE,
    PREFACE_SIZE,
    SUPPORTED_VERSIONS,
    FrameType,
    Outcome,
    SinceKind,
    SlowConsumerPolicy,
)
from pushwire.protocol.topics import check_pattern, check_topic, pattern_matches

__all__ = [
    "RECEIVE_TRANSITIONS",
    "SEND_TRANSITIONS",
    "ClientConnection",
    "ClientState",
    "ConnectionClosed",
    "EpochReset",
    "Event",
    "GapReceived",
    "GoawayReceived",
    "MessageReceived",
    "PeerError",
    "PublishAcked",
    "PublishRun",
    "RequestFailed",
    "Since",
    "SubStatus",
    "SubscriptionConfirmed",
    "SubscriptionView",
    "TopicStatusReceived",
    "UnsubscribeConfirmed",
    "Welcomed",
]

U32_MAX: Final = 0xFFFF_FFFF
#: A batch holds 1-65535 records (layouts.MessageBatch ``count`` is a u16).
MAX_BATCH_RECORDS: Final = 0xFFFF
#: WELCOME.heartbeat_ms range (PW-HS-7): wide, because tests lower the server's clamp.
MAX_HEARTBEAT_MS: Final = 600_000
#: A push is 12 bytes longer than its publish (the u32 request_id becomes the u64 epoch and
#: u64 seq, §7.8); advertising 1 MiB + 12 receives everything a server with the common 1 MiB
#: limit accepts (PW-PUB-15).
PUSH_GROWTH: Final = 8 + 8 - 4
DEFAULT_MAX_FRAME_SIZE: Final = (1 << 20) + PUSH_GROWTH
#: ERROR.message is Text16; we keep ours short so the frame always fits the peer's limit.
_MAX_ERROR_MESSAGE_CHARS: Final = 1000


class ClientState(enum.Enum):
    """Client connection states (SPEC.md §5)."""

    IDLE = "IDLE"  # nothing sent yet
    PREFACE_SENT = "PREFACE_SENT"  # preface and HELLO sent; waiting for the server's preface
    HELLO_SENT = "HELLO_SENT"  # server preface accepted; waiting for WELCOME
    OPEN = "OPEN"  # handshake done
    DRAINING = "DRAINING"  # GOAWAY received: no new requests, data still flows
    CLOSED = "CLOSED"  # closed by error, EOF, or our own GOAWAY; input is ignored


_S = ClientState
_T = FrameType

#: For each state: frame type received -> next state. Anything missing is UNEXPECTED_FRAME.
#: Before WELCOME only WELCOME or a rejecting ERROR may come (§5.2); the server never sends
#: client-only types (layouts.SERVER_SENDS). An ERROR with request_type 0 closes the
#: connection whatever the row says (§8.7); that is decided in ``_on_error``.
_OPEN_ROW: Final = {
    _T.PING: _S.OPEN,
    _T.PONG: _S.OPEN,
    _T.GOAWAY: _S.DRAINING,
    _T.ERROR: _S.OPEN,
    _T.SUBSCRIBED: _S.OPEN,
    _T.UNSUBSCRIBED: _S.OPEN,
    _T.GAP: _S.OPEN,
    _T.MESSAGE: _S.OPEN,
    _T.MESSAGE_BATCH: _S.OPEN,
    _T.PUBACK: _S.OPEN,
}
RECEIVE_TRANSITIONS: Final[dict[ClientState, dict[FrameType, ClientState]]] = {
    _S.IDLE: {},
    _S.PREFACE_SENT: {},  # only the 8-byte server preface is acceptable here
    _S.HELLO_SENT: {_T.WELCOME: _S.OPEN, _T.ERROR: _S.CLOSED},
    _S.OPEN: _OPEN_ROW,
    # After GOAWAY the server sends no pushes and no second GOAWAY (PW-GOAWAY-4, -11).
    _S.DRAINING: {
        t: _S.DRAINING
        for t in _OPEN_ROW
        if t not in (_T.GOAWAY, _T.MESSAGE, _T.MESSAGE_BATCH, _T.GAP)
    },
    _S.CLOSED: {},
}

#: For each state: frame type the caller may send -> next state; the same shape as
#: RECEIVE_TRANSITIONS. The preface and HELLO go out together from IDLE (initiate()).
#: Nothing goes out between HELLO and WELCOME (PW-HS-16). New requests stop at GOAWAY
#: (PW-GOAWAY-6); acks, credit and unsubscribes are still processed by a draining server
#: (PW-GOAWAY-3), so they stay allowed. Our own GOAWAY closes.
_REQUESTS: Final = (_T.SUBSCRIBE, _T.UNSUBSCRIBE, _T.CREDIT, _T.ACK, _T.PUBLISH, _T.PUBLISH_BATCH)
SEND_TRANSITIONS: Final[dict[ClientState, dict[FrameType, ClientState]]] = {
    _S.IDLE: {_T.HELLO: _S.PREFACE_SENT},
    _S.PREFACE_SENT: {},
    _S.HELLO_SENT: {},
    _S.OPEN: {t: _S.OPEN for t in (*_REQUESTS, _T.PING)} | {_T.GOAWAY: _S.CLOSED},
    _S.DRAINING: {t: _S.DRAINING for t in (_T.UNSUBSCRIBE, _T.CREDIT, _T.ACK, _T.PING)}
    | {_T.GOAWAY: _S.CLOSED},
    _S.CLOSED: {},
}

_PUBACK_FRAME: Final = codec.PUBACK_FRAME
_PUBACK_LENGTH: Final = _PUBACK_FRAME.size - HEADER_SIZE
_PUBACK_TYPE: Final = int(FrameType.PUBACK)

#: Request frame types that an ERROR's request_type may name (§8.7).
_REQUEST_TYPES: Final = frozenset(_REQUESTS)


# -- where a subscription starts ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Since:
    """The starting point of a SUBSCRIBE (SPEC.md §6.1)."""

    kind: SinceKind
    epoch: int = 0
    seq: int = 0
    count: int = 0

    @classmethod
    def new(cls) -> Since:
        return cls(SinceKind.NEW)

    @classmethod
    def oldest(cls) -> Since:
        return cls(SinceKind.OLDEST)

    @classmethod
    def after(cls, epoch: int, seq: int) -> Since:
        return cls(SinceKind.AFTER, epoch=epoch, seq=seq)

    @classmethod
    def last(cls, count: int) -> Since:
        return cls(SinceKind.LAST, count=count)


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcomed(Event):
    """The handshake completed (WELCOME, §5.2)."""

    connection_id: int
    heartbeat_ms: int
    max_frame_size: int
    max_subscriptions: int
    max_lag: int
    slow_consumer_policy: SlowConsumerPolicy
    server_name: str
    version: int


@dataclass(frozen=True, slots=True)
class SubscriptionConfirmed(Event):
    """The server answered a SUBSCRIBE with SUBSCRIBED (§6.2): messages follow from
    ``start_seq``. ``gap_*`` are meaningful only for outcome GAP."""

    sub_id: int
    topic: str
    outcome: Outcome
    epoch: int
    start_seq: int
    head_seq: int
    gap_first: int = 0
    gap_last: int = 0
    gap_reason: ErrorCode | int = 0


@dataclass(frozen=True, slots=True)
class TopicStatusReceived(Event):
    """SUBSCRIBED(TOPIC_STATUS) (§6.7): one topic of the pattern subscription ``sub_id``
    resumed (RECOVERED), lost ``gap_first..gap_last`` (GAP) or restarted in a new epoch
    (EPOCH_CHANGED); its pushes continue at ``start_seq`` of ``epoch``."""

    sub_id: int
    pattern: str
    topic: str
    outcome: Outcome
    epoch: int
    start_seq: int
    head_seq: int
    gap_first: int = 0
    gap_last: int = 0
    gap_reason: ErrorCode | int = 0


@dataclass(frozen=True, slots=True)
class MessageReceived(Event):
    """One message; a MESSAGE_BATCH yields one per record, sequence base_seq + i (§7.2)."""

    sub_id: int
    topic: str
    epoch: int
    seq: int
    headers: F.Headers | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class GapReceived(Event):
    """The server skipped ``first..last`` explicitly (GAP, §7.4)."""

    sub_id: int
    topic: str
    epoch: int
    first: int
    last: int
    reason: ErrorCode | int


@dataclass(frozen=True, slots=True)
class EpochReset(Event):
    """The topic's history was reset while subscribed (§6.5): delivery continues at
    sequence 1 of ``new_epoch``; the following event is that push (a message or a GAP)."""

    sub_id: int
    topic: str
    old_epoch: int
    new_epoch: int


@dataclass(frozen=True, slots=True)
class UnsubscribeConfirmed(Event):
    """The server answered an UNSUBSCRIBE with UNSUBSCRIBED (§6.4): nothing more comes for
    ``sub_id``, whose last sequence sent was ``last_seq``."""

    sub_id: int
    topic: str
    epoch: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class PublishAcked(Event):
    """PUBACK (§7.7): the publish got sequences first_seq .. first_seq + count - 1."""

    request_id: int
    topic: str
    epoch: int
    first_seq: int
    count: int


@dataclass(frozen=True, slots=True)
class RequestFailed(Event):
    """A request-level ERROR (§8.7); the connection stays open."""

    code: ErrorCode | int
    request_type: FrameType | int  # an int when it names no request type we know
    request_id: int
    message: str
    topic: str | None = None  # None when the ERROR matches no request of ours


# -- subscription bookkeeping ---------------------------------------------------------------


class SubStatus(enum.Enum):
    PENDING = "PENDING"  # SUBSCRIBE sent, no SUBSCRIBED yet
    ACTIVE = "ACTIVE"  # messages flow
    CLOSING = "CLOSING"  # UNSUBSCRIBE sent; messages for it are dropped


@dataclass(slots=True)
class _Sub:
    sub_id: int
    topic: str
    since: Since
    at_least_once: bool
    ledger: CreditLedger  # credit granted, as the server could have seen it (PW-FLOW-5)
    answered: bool = False  # SUBSCRIBED or a SUBSCRIBE error arrived
    closing: bool = False  # UNSUBSCRIBE sent (possibly before the SUBSCRIBE was answered)
    epoch: int = 0
    next_seq: int = 0  # the only sequence the server may send next
    last_delivered: int = 0  # the subscription's position (§8.4): sent in a push or a GAP
    last_acked: int = 0
    #: A pattern subscription (§6.7): ``topic`` is the pattern; each topic pushed or given
    #: a TOPIC_STATUS has its own [epoch, next_seq, last_delivered] here.
    pattern: bool = False
    seen: dict[str, list[int]] | None = None

    @property
    def credit(self) -> int:
        """What the server may still send once it has read every CREDIT sent."""
        return self.ledger.remaining

    @property
    def status(self) -> SubStatus:
        if self.closing:
            return SubStatus.CLOSING
        return SubStatus.ACTIVE if self.answered else SubStatus.PENDING


@dataclass(frozen=True, slots=True)
class SubscriptionView:
    """A read-only snapshot of one subscription's state in the machine."""

    sub_id: int
    topic: str
    status: SubStatus
    at_least_once: bool
    epoch: int
    next_seq: int
    credit: int
    last_delivered: int
    last_acked: int


@dataclass(slots=True, eq=False)
class PublishRun:
    """The publishes of one :meth:`ClientConnection.publish_run`, as the machine answers
    them: ``answers[i]`` is the first_seq of ``request_ids[i]``'s PUBACK, or the
    :class:`RequestFailed` of its request ERROR. The machine appends; the caller reads.

    One object per run instead of one event per PUBACK: that is what lets a pipelining
    publisher keep up with the server. Every answer is still checked: it must be for the
    run's oldest unanswered request (PW-ORDER-10), and within an epoch a PUBACK must not
    assign a sequence at or before an earlier PUBACK's of the run (PW-ORDER-8)."""

    topic: str
    request_ids: list[int]
    answers: list[int | RequestFailed] = field(default_factory=list)
    epoch: int = 0  # of the run's last PUBACK
    next_seq: int = 0  # the lowest sequence the run's next PUBACK may assign in ``epoch``

    @property
    def done(self) -> bool:
        """Every publish of the run is answered."""
        return len(self.answers) == len(self.request_ids)


@dataclass(frozen=True, slots=True)
class _PendingPublish:
    topic: str
    count: int
    request_type: FrameType
    run: PublishRun | None = None


def _violation(
    message: str, code: ErrorCode = ErrorCode.PROTOCOL_ERROR, *, requirement: str | None = None
) -> RemoteProtocolError:
    return RemoteProtocolError(message, code=code, requirement=requirement)


class ClientConnection:
    """One client connection's protocol state; see the module docstring."""

    def __init__(self, *, min_version: int = 1, max_version: int = 1) -> None:
        if not min_version <= max_version or not set(SUPPORTED_VERSIONS) & set(
            range(min_version, max_version + 1)
        ):
            raise LocalProtocolError(
                f"version range {min_version}..{max_version} has no supported version",
                code=ErrorCode.UNSUPPORTED_VERSION,
            )
        self._min_version = min_version
        self._max_version = max_version
        self._state = ClientState.IDLE
        #: Why the connection closed (ours or the peer's code); None while it is up.
        self.close_code: ErrorCode | int | None = None
        self._decoder = FrameDecoder(INITIAL_MAX_FRAME_SIZE)
        self._events: deque[Event] = deque()
        self._outgoing = bytearray()
        self._heartbeat = Heartbeat(0.0)
        self._now = 0.0
        self._our_max_frame_size = INITIAL_MAX_FRAME_SIZE
        self._peer_max_frame_size = INITIAL_MAX_FRAME_SIZE
        self.version = 0
        self.welcome: Welcomed | None = None
        self.goaway_received: GoawayReceived | None = None
        self._subs: dict[int, _Sub] = {}
        #: topic -> subscriptions on it, oldest first; only the last may be non-CLOSING.
        self._topics: dict[str, list[_Sub]] = {}
        #: Patterns with a subscription in ``_topics`` (they are keys there too).
        self._patterns: dict[str, None] = {}
        self._next_sub_id = 1
        self._publishes: dict[int, _PendingPublish] = {}
        self._next_request_id = 1
        #: Answers (PUBACK or request ERROR) added to PublishRuns so far: compare two
        #: readings to learn whether a read answered any run publish.
        self.run_answers = 0
        self._handlers = self._handler_table()
        #: Bytes received so far, and the stream offset of the frame being handled: credit
        #: is counted against the byte a push started at (PW-FLOW-5, protocol.flow).
        self._received_total = 0
        self._frame_offset = 0

    # -- introspection -----------------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def peer_max_frame_size(self) -> int:
        """The largest frame payload the server accepts (WELCOME.max_frame_size)."""
        return self._peer_max_frame_size

    def subscription(self, sub_id: int) -> SubscriptionView | None:
        sub = self._subs.get(sub_id)
        if sub is None:
            return None
        return SubscriptionView(
            sub.sub_id,
            sub.topic,
            sub.status,
            sub.at_least_once,
            sub.epoch,
            sub.next_seq,
            sub.credit,
            sub.last_delivered,
            sub.last_acked,
        )

    def outstanding_publishes(self) -> frozenset[int]:
        return frozenset(self._publishes)

    # -- the two byte streams ---------------------------------------------------------------

    def initiate(
        self,
        client_name: str,
        auth_token: bytes = b"",
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        heartbeat_ms: int = 0,
        now: float = 0.0,
    ) -> bytes:
        """The preface and HELLO, to be sent back to back without waiting (§5.1)."""
        if self._state is not ClientState.IDLE:
            raise LocalProtocolError(
                f"initiate() in state {self._state.value}", code=ErrorCode.UNEXPECTED_FRAME
            )
        if not MIN_MAX_FRAME_SIZE <= max_frame_size <= MAX_MAX_FRAME_SIZE:
            raise LocalProtocolError(
                f"max_frame_size {max_frame_size} is outside "
                f"{MIN_MAX_FRAME_SIZE}..{MAX_MAX_FRAME_SIZE}",
                code=ErrorCode.FIELD_OUT_OF_RANGE,
            )
        hello = codec.encode_frame(
            F.Hello(max_frame_size, heartbeat_ms, client_name, bytes(auth_token))
        )
        self._our_max_frame_size = max_frame_size
        self._now = now
        self._state = SEND_TRANSITIONS[ClientState.IDLE][_T.HELLO]
        return encode_preface(self._min_version, self._max_version) + hello

    def data_to_send(self) -> bytes:
        """Bytes the machine produced on its own (PONG, ERROR before a close); drains."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Buffer bytes read from the transport; ``b""`` means the server closed (EOF).
        Never raises: the server's mistakes surface from :meth:`next_event`."""
        self._now = now
        if self._state in (ClientState.CLOSED, ClientState.IDLE) or self._decoder.eof:
            return
        if data:
            self._heartbeat.received(now)
            self._received_total += len(data)
        self._decoder.feed(data)

    def next_event(self) -> Event | Sentinel:
        """The next event; NEED_DATA when more bytes are needed; PAUSED before
        :meth:`initiate` and once CLOSED. Raises RemoteProtocolError when the server broke
        the protocol; the machine is then CLOSED and :meth:`data_to_send` holds the ERROR
        to send before closing."""
        if self._events:
            return self._events.popleft()
        if self._state in (ClientState.CLOSED, ClientState.IDLE):
            return PAUSED
        try:
            self._parse_next()
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise
        if self._events:
            return self._events.popleft()
        return PAUSED if self.state is ClientState.CLOSED else NEED_DATA

    def events(self) -> Iterator[Event]:
        """The events available now, one :meth:`next_event` at a time up to the first
        sentinel; raises as :meth:`next_event` does."""
        while not isinstance(event := self.next_event(), Sentinel):
            yield event

    def tick(self, now: float) -> bytes:
        """Heartbeat duties at time ``now`` (§8.5): PING when nothing was sent for one
        interval; after three silent intervals, ERROR(HEARTBEAT_TIMEOUT) and CLOSED (check
        :attr:`state` afterwards: CLOSED means close now)."""
        self._now = now
        if self._state not in (ClientState.OPEN, ClientState.DRAINING):
            return b""
        if self._heartbeat.timed_out(now):
            silent = now - self._heartbeat.last_received
            message = f"nothing received for {silent:.3f}s"
            self._state = ClientState.CLOSED
            self.close_code = ErrorCode.HEARTBEAT_TIMEOUT
            return self._error_bytes(ErrorCode.HEARTBEAT_TIMEOUT, message)
        if self._heartbeat.ping_due(now):
            return self._send(F.Ping(self._heartbeat.next_opaque()))
        return b""

    def timed_out(self, now: float) -> bool:
        """Whether :meth:`tick` at ``now`` would end the connection for silence. A shell
        asks first, so that it can read what its transport already holds before it gives up
        (PW-CLIENT-14): bytes fed through :meth:`receive_data` restart the timer."""
        return self._state in (ClientState.OPEN, ClientState.DRAINING) and (
            self._heartbeat.timed_out(now)
        )

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do; None before the handshake."""
        if self._state not in (ClientState.OPEN, ClientState.DRAINING):
            return None
        return self._heartbeat.next_deadline()

    # -- requests ----------------------------------------------------------------------------

    def _check_new_subscription(self, kind: str, name: str, initial_credit: int) -> None:
        """What SUBSCRIBE and a pattern SUBSCRIBE refuse alike before a sub_id is spent: a
        credit that is no u32, and a second subscription to one topic or pattern while the
        first is not being unsubscribed (the server would refuse it, §6.1)."""
        if not 0 <= initial_credit <= U32_MAX:
            raise LocalProtocolError(
                f"initial_credit {initial_credit} is not a u32", code=ErrorCode.FIELD_OUT_OF_RANGE
            )
        queue = self._topics.get(name, [])
        if queue and queue[-1].status is not SubStatus.CLOSING:
            raise LocalProtocolError(
                f"{kind} {name!r} already has subscription {queue[-1].sub_id}",
                code=ErrorCode.ALREADY_SUBSCRIBED,
            )

    def subscribe(
        self,
        topic: str,
        since: Since | None = None,
        *,
        at_least_once: bool = False,
        initial_credit: int = 64,
        now: float | None = None,
    ) -> tuple[int, bytes]:
        """SUBSCRIBE (§6.1). Returns the chosen sub_id and the bytes.

        A topic may be subscribed again while its previous subscription's UNSUBSCRIBE is in
        flight: messages on it belong to the old one (and are dropped) until UNSUBSCRIBED.
        """
        self._check_send(_T.SUBSCRIBE, now)
        check_topic(topic)
        since = since or Since.new()
        self._check_new_subscription("topic", topic, initial_credit)
        sub_id = self._allocate_sub_id()
        frame = F.Subscribe(
            sub_id=sub_id,
            topic=topic,
            since_kind=since.kind,
            since_epoch=since.epoch,
            since_seq=since.seq,
            since_count=since.count,
            initial_credit=initial_credit,
            at_least_once=at_least_once,
        )
        data = self._send(frame)
        sub = _Sub(sub_id, topic, since, at_least_once, CreditLedger(initial_credit))
        self._subs[sub_id] = sub
        self._topics.setdefault(topic, []).append(sub)
        return sub_id, data

    def subscribe_pattern(
        self,
        pattern: str,
        since: Since | None = None,
        *,
        positions: Sequence[F.TopicPosition] = (),
        initial_credit: int = 64,
        now: float | None = None,
    ) -> tuple[int, bytes]:
        """SUBSCRIBE with PATTERN (§6.7): every topic ``pattern`` matches, one credit pool.
        ``positions`` are the topics already seen (see :meth:`topic_positions`); ``since``
        (NEW, LAST or OLDEST) applies to the other topics. Returns the sub_id and the bytes."""
        self._check_send(_T.SUBSCRIBE, now)
        check_pattern(pattern)
        since = since or Since.new()
        if since.kind is SinceKind.AFTER:
            raise LocalProtocolError(
                "a pattern has no single position: pass positions per topic",
                code=ErrorCode.INVALID_POSITION,
            )
        for pos in positions:
            check_topic(pos.topic)
            if not pattern_matches(pattern, pos.topic):
                raise LocalProtocolError(
                    f"position topic {pos.topic!r} does not match {pattern!r}",
                    code=ErrorCode.INVALID_TOPIC,
                )
        self._check_new_subscription("pattern", pattern, initial_credit)
        sub_id = self._allocate_sub_id()
        frame = F.Subscribe(
            sub_id=sub_id,
            topic=pattern,
            since_kind=since.kind,
            since_count=since.count,
            initial_credit=initial_credit,
            positions=tuple(positions),
        )
        data = self._send(frame)
        sub = _Sub(
            sub_id, pattern, since, False, CreditLedger(initial_credit), pattern=True, seen={}
        )
        for pos in positions:  # until its TOPIC_STATUS, a topic continues where it was
            sub.seen[pos.topic] = [pos.epoch, pos.seq + 1, pos.seq]  # type: ignore[index]
        self._subs[sub_id] = sub
        self._topics.setdefault(pattern, []).append(sub)
        self._patterns[pattern] = None
        return sub_id, data

    def topic_positions(self, sub_id: int) -> tuple[F.TopicPosition, ...]:
        """Per topic of the pattern subscription ``sub_id``: the last sequence received (or
        skipped) in its epoch, what a later :meth:`subscribe_pattern` resumes from
        [PW-RESUME-6]. Empty for a subscription to one topic."""
        sub = self._require_sub(sub_id)
        if not sub.seen:
            return ()
        return tuple(F.TopicPosition(t, e, last) for t, (e, _, last) in sub.seen.items())

    def unsubscribe(self, sub_id: int, *, now: float | None = None) -> bytes:
        """UNSUBSCRIBE (§6.3). Messages still in flight for the topic are dropped."""
        self._check_send(_T.UNSUBSCRIBE, now)
        sub = self._require_sub(sub_id)
        if sub.status is SubStatus.CLOSING:
            raise LocalProtocolError(
                f"subscription {sub_id} is already being unsubscribed",
                code=ErrorCode.UNKNOWN_SUBSCRIPTION,
            )
        data = self._send(F.Unsubscribe(sub_id))
        sub.closing = True
        return data

    def grant_credit(self, sub_id: int, increment: int, *, now: float | None = None) -> bytes:
        """CREDIT (§8.1): let the server send ``increment`` more messages."""
        self._check_send(_T.CREDIT, now)
        sub = self._require_sub(sub_id)
        if sub.status is SubStatus.CLOSING:
            return b""  # pointless: nothing more will be delivered
        if increment < 1 or sub.credit + increment > U32_MAX:
            raise LocalProtocolError(
                f"credit {sub.credit} + {increment} is outside 1..{U32_MAX}",
                code=ErrorCode.FLOW_CONTROL_ERROR,
            )
        data = self._send(F.Credit(sub_id, increment))
        # It counts only for pushes whose first byte arrives after this point (PW-FLOW-5).
        sub.ledger.grant(increment, self._received_total)
        return data

    def ack(self, sub_id: int, seq: int, *, now: float | None = None) -> bytes:
        """ACK (§8.3): everything up to ``seq`` in the subscription's epoch is processed.

        Returns b"" when ``seq`` equals the last ack (nothing new to say). Acking an
        at-most-once subscription, going backwards, or beyond the last delivered message
        is the caller's bug (INVALID_ACK).
        """
        self._check_send(_T.ACK, now)
        sub = self._require_sub(sub_id)
        if not sub.at_least_once or sub.status is not SubStatus.ACTIVE:
            raise LocalProtocolError(
                f"subscription {sub_id} is not an active at-least-once subscription",
                code=ErrorCode.INVALID_ACK,
            )
        if not sub.last_acked <= seq <= sub.last_delivered:
            raise LocalProtocolError(
                f"ack {seq} is outside {sub.last_acked}..{sub.last_delivered}",
                code=ErrorCode.INVALID_ACK,
            )
        if seq == sub.last_acked:
            return b""
        data = self._send(F.Ack(sub_id, seq))
        sub.last_acked = seq
        return data

    def publish(
        self,
        topic: str,
        payload: bytes,
        headers: F.Headers | None = None,
        *,
        want_ack: bool = True,
        now: float | None = None,
    ) -> tuple[int, bytes]:
        """PUBLISH (§7.5). Returns (request_id, bytes); request_id 0 when no PUBACK is
        wanted. Raises FRAME_TOO_LARGE when the frame exceeds the server's limit."""
        self._check_send(_T.PUBLISH, now)
        check_topic(topic)
        request_id = self._allocate_request_id() if want_ack else 0
        data = self._send(F.Publish(request_id, topic, bytes(payload), headers))
        if want_ack:
            self._publishes[request_id] = _PendingPublish(topic, 1, _T.PUBLISH)
        return request_id, data

    def publish_run(
        self,
        topic: str,
        payloads: Sequence[bytes],
        headers: F.Headers | None = None,
        *,
        now: float | None = None,
    ) -> tuple[PublishRun, bytes]:
        """One PUBLISH per payload, each wanting a PUBACK, as one piece of bytes: what
        :meth:`publish` does for each, with the topic checked and encoded once. The answers
        collect in the returned :class:`PublishRun` (no :class:`PublishAcked` events; a
        request ERROR is both an answer there and a :class:`RequestFailed` event).
        :meth:`take_pubacks` reads their PUBACKs in bulk. Raises as :meth:`publish` does,
        before anything is allocated, when any payload's frame is too large."""
        self._check_send(_T.PUBLISH, now)
        check_topic(topic)
        if not payloads:
            raise LocalProtocolError(
                "a run holds at least one publish", code=ErrorCode.FIELD_OUT_OF_RANGE
            )
        empty = codec.encode_frame(F.Publish(1, topic, b"", headers))
        largest = len(empty) - HEADER_SIZE + max(map(len, payloads))
        if largest > self._peer_max_frame_size:
            raise LocalProtocolError(
                f"PUBLISH is {largest} bytes; the server accepts at most "
                f"{self._peer_max_frame_size}",
                code=ErrorCode.FRAME_TOO_LARGE,
            )
        publishes = self._publishes
        request_ids: list[int] = []
        rid = self._next_request_id
        for _ in payloads:
            while rid in publishes:
                rid = rid % U32_MAX + 1
            request_ids.append(rid)
            rid = rid % U32_MAX + 1
        data = codec.encode_publishes(topic, headers, request_ids, payloads)
        self._next_request_id = rid
        run = PublishRun(topic, request_ids)
        pending = _PendingPublish(topic, 1, _T.PUBLISH, run)
        publishes.update(dict.fromkeys(request_ids, pending))
        self._heartbeat.sent(self._now)
        return run, data

    def take_pubacks(self) -> int:
        """The pipelining publisher's hot path: every whole PUBACK at the front of the
        buffer that answers a :meth:`publish_run` publish, in one pass, each appended to its
        run's answers. Returns how many were taken (0 when the next frame is anything else,
        or a PUBACK this path does not judge; :meth:`next_event` then handles it as usual,
        with the same outcome, errors included).

        Only in a state whose row accepts PUBACK (RECEIVE_TRANSITIONS) and with no event
        pending, so the order of everything else is kept."""
        if self._events or _T.PUBACK not in RECEIVE_TRANSITIONS[self._state]:
            return 0
        decoder = self._decoder
        buf = decoder.buffer
        size = len(buf)
        publishes = self._publishes
        unpack = _PUBACK_FRAME.unpack_from
        frame_size = _PUBACK_FRAME.size
        offset = 0
        while offset + frame_size <= size:
            length, type_, flags, rid, epoch, first, count = unpack(buf, offset)
            if length != _PUBACK_LENGTH or type_ != _PUBACK_TYPE or flags:
                break
            pending = publishes.get(rid)
            if pending is None or (run := pending.run) is None:
                break
            answers = run.answers
            if (
                run.request_ids[len(answers)] != rid
                or count != 1
                or not first
                or not epoch
                or (epoch == run.epoch and first < run.next_seq)
            ):
                break  # the general path says what is wrong
            del publishes[rid]
            answers.append(first)
            run.epoch = epoch
            run.next_seq = first + 1
            offset += frame_size
        if not offset:
            return 0
        decoder.discard(offset)
        taken = offset // frame_size
        self.run_answers += taken
        return taken

    def publish_batch(
        self,
        topic: str,
        records: Sequence[bytes | tuple[bytes, F.Headers | None]],
        *,
        now: float | None = None,
    ) -> tuple[int, bytes]:
        """PUBLISH_BATCH (§7.6): 1-65535 records, sequenced atomically by the server.

        Records are payloads or (payload, headers); if any record has headers, those
        without get an empty header block (one flag covers the whole batch).
        """
        self._check_send(_T.PUBLISH_BATCH, now)
        check_topic(topic)
        if not 1 <= len(records) <= MAX_BATCH_RECORDS:
            raise LocalProtocolError(
                f"a batch holds 1-{MAX_BATCH_RECORDS} records, not {len(records)}",
                code=ErrorCode.FIELD_OUT_OF_RANGE,
            )
        pairs = [(r, None) if isinstance(r, bytes | bytearray) else r for r in records]
        with_headers = any(h is not None for _, h in pairs)
        built = tuple(F.Record(bytes(p), (h or ()) if with_headers else None) for p, h in pairs)
        request_id = self._allocate_request_id()
        data = self._send(F.PublishBatch(request_id, topic, built))
        self._publishes[request_id] = _PendingPublish(topic, len(built), _T.PUBLISH_BATCH)
        return request_id, data

    def goaway(self, reason: str = "", *, now: float | None = None) -> bytes:
        """GOAWAY(NO_ERROR) before closing deliberately (§8.6); the machine is CLOSED after."""
        if _T.GOAWAY not in SEND_TRANSITIONS[self._state]:
            self._state = ClientState.CLOSED  # before WELCOME nothing may follow HELLO
            self.close_code = self.close_code or ErrorCode.NO_ERROR
            return b""
        self._check_send(_T.GOAWAY, now)
        data = self._send(F.Goaway(ErrorCode.NO_ERROR, 0, 0, (), reason))
        self._state = SEND_TRANSITIONS[self._state][_T.GOAWAY]
        self.close_code = ErrorCode.NO_ERROR
        return data

    # -- internals: sending --------------------------------------------------------------------

    def _check_send(self, type_: FrameType, now: float | None) -> None:
        if now is not None:
            self._now = now
        if type_ not in SEND_TRANSITIONS[self._state]:
            code = (
                ErrorCode.GOING_AWAY
                if self._state is ClientState.DRAINING
                else ErrorCode.UNEXPECTED_FRAME
            )
            raise LocalProtocolError(
                f"cannot send {type_.name} in state {self._state.value}", code=code
            )

    def _send(self, frame: F.Frame) -> bytes:
        data = codec.encode_frame(frame)
        if len(data) - HEADER_SIZE > self._peer_max_frame_size:
            raise LocalProtocolError(
                f"{frame.TYPE.name if not isinstance(frame, F.Unknown) else 'frame'} is "
                f"{len(data) - HEADER_SIZE} bytes; the server accepts at most "
                f"{self._peer_max_frame_size}",
                code=ErrorCode.FRAME_TOO_LARGE,
            )
        self._heartbeat.sent(self._now)
        return data

    def _error_bytes(self, code: ErrorCode, message: str) -> bytes:
        frame = F.Error(code, 0, 0, message[:_MAX_ERROR_MESSAGE_CHARS])
        return codec.encode_frame(frame)

    def _allocate_sub_id(self) -> int:
        while True:
            sub_id = self._next_sub_id
            self._next_sub_id = sub_id % U32_MAX + 1
            if sub_id not in self._subs:
                return sub_id

    def _allocate_request_id(self) -> int:
        while True:
            request_id = self._next_request_id
            self._next_request_id = request_id % U32_MAX + 1
            if request_id not in self._publishes:
                return request_id

    def _require_sub(self, sub_id: int) -> _Sub:
        sub = self._subs.get(sub_id)
        if sub is None:
            raise LocalProtocolError(
                f"no subscription {sub_id}", code=ErrorCode.UNKNOWN_SUBSCRIPTION
            )
        return sub

    # -- internals: closing --------------------------------------------------------------------

    def _fail(self, exc: RemoteProtocolError) -> None:
        """The server broke a rule: queue ERROR(code) (best effort) and close (§8.7)."""
        if self._state is ClientState.CLOSED:
            return
        before_framing = self._state is ClientState.PREFACE_SENT
        self._state = ClientState.CLOSED
        self.close_code = exc.code
        message = str(exc.args[0]) if exc.args else exc.code.name
        if not before_framing:
            # No frame can be sent before both prefaces agree on a version (§2.3).
            self._outgoing += self._error_bytes(exc.code, message)

    def _close_eof(self, where: str = "") -> None:
        after_goaway = self.goaway_received is not None
        self._state = ClientState.CLOSED
        if after_goaway:
            assert self.goaway_received is not None
            code = self.goaway_received.code
            message = f"server closed the connection{where} after GOAWAY"
        else:
            code = ErrorCode.NO_ERROR
            message = f"server closed the connection{where} without GOAWAY"
        self.close_code = code
        self._events.append(ConnectionClosed(code, message, after_goaway))

    def _parse_next(self) -> None:
        """Parse until an event is queued, the input runs out, or the machine closes."""
        decoder = self._decoder
        while not self._events and self._state is not ClientState.CLOSED:
            if self._state is ClientState.PREFACE_SENT:
                head = decoder.peek(PREFACE_SIZE)
                if len(head) < PREFACE_SIZE:
                    if decoder.eof:
                        self._close_eof()
                    return
                decoder.take(PREFACE_SIZE)
                self._on_server_preface(head)
                continue
            try:
                frame = decoder.next_frame()
            except RemoteProtocolError as exc:
                if (
                    decoder.eof
                    and exc.code == ErrorCode.MALFORMED_FRAME
                    and not decoder.holds_a_frame()
                ):
                    # EOF inside a header, or inside a payload whose header passed the
                    # header checks: the decoder says MALFORMED_FRAME (§3.5), but the server
                    # has gone and proved nothing broken, so it is a lost connection: nothing
                    # is sent and the client reconnects (PW-CLIENT-5). A whole header that
                    # fails a header check keeps its (terminal) code.
                    self._close_eof(f" inside a frame ({decoder.buffered} bytes of it)")
                    return
                raise exc
            if frame is None:
                if decoder.eof:
                    self._close_eof()
                return
            self._frame_offset = self._received_total - decoder.buffered - decoder.last_size
            self._on_frame(frame)

    # -- internals: receiving ------------------------------------------------------------------

    def _on_server_preface(self, data: bytes) -> None:
        version, server_max = parse_preface(data)
        if version == 0:
            raise RemoteProtocolError(
                f"server shares no version with {self._min_version}..{self._max_version} "
                f"(it speaks up to {server_max})",
                code=ErrorCode.UNSUPPORTED_VERSION,
                requirement="PW-PREFACE-7",
            )
        if not self._min_version <= version <= self._max_version or (
            version not in SUPPORTED_VERSIONS
        ):
            raise RemoteProtocolError(
                f"server chose version {version}, outside the offered "
                f"{self._min_version}..{self._max_version}",
                code=ErrorCode.UNSUPPORTED_VERSION,
                requirement="PW-PREFACE-7",
            )
        self.version = version
        self._state = ClientState.HELLO_SENT

    def _on_frame(self, frame: F.Frame) -> None:
        if isinstance(frame, F.Unknown):  # pragma: no cover - the decoder skips these
            return
        type_ = frame.TYPE
        row = RECEIVE_TRANSITIONS[self._state]
        next_state = row.get(type_)
        if next_state is None:
            raise _violation(
                f"{type_.name} is not allowed in state {self._state.value}",
                ErrorCode.UNEXPECTED_FRAME,
                requirement=("PW-HS-3" if self._state is ClientState.HELLO_SENT else "PW-FRAME-13"),
            )
        # One handler per type (a dict lookup, not a chain of isinstance checks: this is the
        # per-message hot path).
        self._handlers[type_](frame)
        if self._state is not ClientState.CLOSED and type_ is not FrameType.ERROR:
            self._state = next_state  # ERROR handling sets the state itself

    def _handler_table(self) -> dict[FrameType, Callable[[Any], None]]:
        return {
            FrameType.WELCOME: self._on_welcome,
            FrameType.PING: self._on_ping,
            FrameType.PONG: self._on_pong,
            FrameType.GOAWAY: self._on_goaway,
            FrameType.ERROR: self._on_error,
            FrameType.SUBSCRIBED: self._on_subscribed,
            FrameType.UNSUBSCRIBED: self._on_unsubscribed,
            FrameType.GAP: self._on_gap,
            FrameType.MESSAGE: self._on_message,
            FrameType.MESSAGE_BATCH: self._on_message_batch,
            FrameType.PUBACK: self._on_puback,
        }

    def _on_ping(self, frame: F.Ping) -> None:
        self._outgoing += self._send(F.Pong(frame.opaque))  # PW-HB-2

    def _on_pong(self, frame: F.Pong) -> None:
        pass  # any received byte already restarted the receive timer (PW-HB-4, PW-HB-5)

    def _on_goaway(self, frame: F.Goaway) -> None:
        event = GoawayReceived(
            code_of(frame.code),
            frame.reason,
            reconnect_after_ms=frame.reconnect_after_ms,
            jitter_ms=frame.reconnect_jitter_ms,
            positions=frame.positions,
        )
        self.goaway_received = event
        self._events.append(event)

    def _on_message(self, frame: F.Message) -> None:
        self._on_messages(frame.topic, frame.epoch, frame.seq, ((frame.payload, frame.headers),))

    def _on_message_batch(self, frame: F.MessageBatch) -> None:
        records = tuple((r.payload, r.headers) for r in frame.records)
        self._on_messages(frame.topic, frame.epoch, frame.base_seq, records)

    def _on_welcome(self, frame: F.Welcome) -> None:
        if not MIN_MAX_FRAME_SIZE <= frame.max_frame_size <= MAX_MAX_FRAME_SIZE:
            raise _violation(
                f"WELCOME max_frame_size {frame.max_frame_size} is outside "
                f"{MIN_MAX_FRAME_SIZE}..{MAX_MAX_FRAME_SIZE}",
                ErrorCode.FIELD_OUT_OF_RANGE,
                requirement="PW-HS-7",
            )
        if not 1 <= frame.heartbeat_ms <= MAX_HEARTBEAT_MS:
            raise RemoteProtocolError(
                f"WELCOME heartbeat_ms {frame.heartbeat_ms} is outside 1..{MAX_HEARTBEAT_MS}",
                code=ErrorCode.FIELD_OUT_OF_RANGE,
                requirement="PW-HS-7",
            )
        event = Welcomed(
            frame.connection_id,
            frame.heartbeat_ms,
            frame.max_frame_size,
            frame.max_subscriptions,
            frame.max_lag,
            SlowConsumerPolicy(frame.slow_consumer_policy),
            frame.server_name,
            self.version,
        )
        self.welcome = event
        self._peer_max_frame_size = frame.max_frame_size
        self._decoder.max_frame_size = self._our_max_frame_size
        self._heartbeat.start(frame.heartbeat_ms / 1000, self._now)
        self._events.append(event)

    def _on_error(self, frame: F.Error) -> None:
        code = code_of(frame.code)
        if frame.request_type == 0:
            # A connection error or a handshake rejection: the server closes next and we
            # send nothing more (PW-ERR-3). Unknown codes are handled the same way (PW-ERR-6).
            self._state = ClientState.CLOSED
            self.close_code = code
            self._events.append(PeerError(code, frame.message))
            return
        if self._state is ClientState.HELLO_SENT:
            raise _violation(
                "a request-level ERROR before WELCOME",
                ErrorCode.UNEXPECTED_FRAME,
                requirement="PW-HS-3",
            )
        # From here on a request-level ERROR: it never ends the connection, even when it
        # matches no request (PW-ERR-12); it is reported and the state is left alone.
        topic: str | None = None
        pending: _PendingPublish | None = None
        request_type: FrameType | int = frame.request_type
        if frame.request_type in _REQUEST_TYPES:
            request_type = FrameType(frame.request_type)
        sub = self._subs.get(frame.request_id)
        if request_type in (_T.PUBLISH, _T.PUBLISH_BATCH):
            pending = self._publishes.get(frame.request_id)
            if pending is not None and pending.request_type is request_type:
                if pending.run is not None:
                    self._check_run_order(pending.run, frame.request_id, "ERROR")
                del self._publishes[frame.request_id]
                topic = pending.topic
        elif request_type is _T.SUBSCRIBE:
            if sub is not None and not sub.answered:
                topic = sub.topic
                sub.answered = True
                if not sub.closing:
                    self._forget(sub)
                # else: kept until its UNSUBSCRIBE is answered (with UNKNOWN_SUBSCRIPTION)
        elif request_type in (_T.UNSUBSCRIBE, _T.CREDIT, _T.ACK):
            # request_id is a sub_id; these can race an UNSUBSCRIBE (PW-FLOW-6, PW-ACK-5)
            topic = sub.topic if sub is not None else None
            if (
                request_type is _T.UNSUBSCRIBE
                and sub is not None
                and sub.closing
                and code == ErrorCode.UNKNOWN_SUBSCRIPTION
            ):
                self._forget(sub)
        failed = RequestFailed(code, request_type, frame.request_id, frame.message, topic)
        if topic is not None and pending is not None and pending.run is not None:
            pending.run.answers.append(failed)
            self.run_answers += 1
        self._events.append(failed)

    def _forget(self, sub: _Sub) -> None:
        del self._subs[sub.sub_id]
        queue = self._topics[sub.topic]
        queue.remove(sub)
        if not queue:
            del self._topics[sub.topic]
            self._patterns.pop(sub.topic, None)

    def _pattern_for(self, topic: str) -> _Sub | None:
        """The subscription whose pattern matches ``topic``, a live one if there is one
        (the server lets no two live subscriptions of a connection share a topic, PW-SUB-23)."""
        found = None
        for pattern in self._patterns:
            if pattern_matches(pattern, topic):
                # the oldest: pushes belong to it until its UNSUBSCRIBED, as for a name
                found = self._topics[pattern][0]
                if not found.closing:
                    return found
        return found

    def _on_subscribed(self, frame: F.Subscribed) -> None:
        if frame.topic is not None:
            self._on_topic_status(frame, frame.topic)
            return
        sub = self._subs.get(frame.sub_id)
        if sub is not None and sub.pattern and not sub.answered:
            if (frame.outcome, frame.epoch, frame.start_seq, frame.head_seq) != (0, 0, 0, 0):
                raise _violation(
                    f"SUBSCRIBED {frame.sub_id} of a pattern is not NEW with zeros",
                    requirement="PW-RESUME-5",
                )
            sub.answered = True
            self._events.append(SubscriptionConfirmed(sub.sub_id, sub.topic, Outcome.NEW, 0, 0, 0))
            return
        if sub is None or sub.answered:
            raise _violation(
                f"SUBSCRIBED for sub_id {frame.sub_id}, which is not pending",
                requirement="PW-SUB-2",
            )
        outcome = Outcome(frame.outcome)
        self._check_subscribed(sub.since, outcome, frame)
        sub.answered = True
        sub.epoch = frame.epoch
        sub.next_seq = frame.start_seq
        sub.last_delivered = sub.last_acked = frame.start_seq - 1  # PW-ACK-4
        self._events.append(
            SubscriptionConfirmed(
                sub.sub_id,
                sub.topic,
                outcome,
                frame.epoch,
                frame.start_seq,
                frame.head_seq,
                frame.gap_first,
                frame.gap_last,
                code_of(frame.gap_reason) if outcome is Outcome.GAP else 0,
            )
        )

    @staticmethod
    def _check_subscribed(since: Since, outcome: Outcome, frame: F.Subscribed) -> None:
        """SUBSCRIBED must answer the SUBSCRIBE that was sent (§6.2, PW-SUB-7..14)."""
        head, start = frame.head_seq, frame.start_seq

        def bad(why: str) -> RemoteProtocolError:
            return _violation(
                f"SUBSCRIBED {frame.sub_id} ({outcome.name}): {why}", requirement="PW-SUB-7"
            )

        if frame.epoch == 0:
            raise bad("epoch 0 is never sent (PW-ORDER-14)")
        if not 1 <= start <= head + 1:
            raise bad(f"start_seq {start} is outside 1..head+1 ({head + 1})")
        if outcome is Outcome.GAP and start != frame.gap_last + 1:
            raise bad(f"start_seq {start} does not follow the gap's last {frame.gap_last}")
        # The first sequence the request asked for, when the answer is in the same epoch.
        wanted: int | None = None
        allowed: set[Outcome]
        match since.kind:
            case SinceKind.NEW:
                allowed = {Outcome.NEW}
                if start != head + 1:
                    raise bad(f"a NEW subscription starts at head+1 ({head + 1}), not {start}")
            case SinceKind.AFTER:
                allowed = {Outcome.RECOVERED, Outcome.GAP, Outcome.EPOCH_CHANGED}
                if outcome is Outcome.EPOCH_CHANGED:
                    if frame.epoch == since.epoch:
                        raise bad("EPOCH_CHANGED names the epoch that was asked for")
                elif frame.epoch != since.epoch:
                    raise bad(f"epoch {frame.epoch} differs from the requested {since.epoch}")
                else:
                    wanted = since.seq + 1
            case SinceKind.LAST:
                allowed = {Outcome.RECOVERED, Outcome.GAP}
                wanted = max(0, head - since.count) + 1
            case _:  # OLDEST: everything retained; nothing before it is owed
                allowed = {Outcome.RECOVERED}
        if outcome not in allowed:
            raise bad(f"not an answer to since={since.kind.name}")
        if wanted is not None:
            if outcome is Outcome.RECOVERED and start != wanted:
                raise bad(f"start_seq {start} is not the requested {wanted}")
            if outcome is Outcome.GAP and frame.gap_first != wanted:
                raise bad(f"gap starts at {frame.gap_first}, not the requested {wanted}")

    def _on_topic_status(self, frame: F.Subscribed, topic: str) -> None:
        sub = self._subs.get(frame.sub_id)
        if sub is not None and sub.closing:
            return  # PW-SUB-17
        if sub is None or not sub.pattern or not sub.answered or sub.seen is None:
            raise _violation(
                f"TOPIC_STATUS for sub_id {frame.sub_id}, which is no answered pattern",
                requirement="PW-SUB-33",
            )
        if not pattern_matches(sub.topic, topic):
            raise _violation(
                f"TOPIC_STATUS for {topic!r}, which {sub.topic!r} does not match",
                requirement="PW-SUB-33",
            )
        outcome = Outcome(frame.outcome)
        if outcome is Outcome.NEW or not 1 <= frame.start_seq <= frame.head_seq + 1:
            raise _violation(
                f"TOPIC_STATUS {outcome.name} for {topic!r} starting at {frame.start_seq}",
                requirement="PW-SUB-7",
            )
        sub.seen[topic] = [frame.epoch, frame.start_seq, frame.start_seq - 1]
        self._events.append(
            TopicStatusReceived(
                sub.sub_id,
                sub.topic,
                topic,
                outcome,
                frame.epoch,
                frame.start_seq,
                frame.head_seq,
                frame.gap_first,
                frame.gap_last,
                code_of(frame.gap_reason) if outcome is Outcome.GAP else 0,
            )
        )

    def _on_unsubscribed(self, frame: F.Unsubscribed) -> None:
        sub = self._subs.get(frame.sub_id)
        if sub is None or not sub.closing:
            raise _violation(
                f"UNSUBSCRIBED for sub_id {frame.sub_id}, which is not being unsubscribed",
                requirement="PW-SUB-15",
            )
        self._forget(sub)
        self._events.append(
            UnsubscribeConfirmed(sub.sub_id, sub.topic, frame.epoch, frame.last_seq)
        )

    def _receiving_sub(self, sub: _Sub | None, what: str) -> _Sub | None:
        """The subscription a push belongs to; None when it is to be dropped."""
        if sub is None:
            raise _violation(f"{what} without a subscription", requirement="PW-SUB-18")
        if sub.closing:
            return None  # PW-SUB-17
        if not sub.answered:
            raise _violation(f"{what} before SUBSCRIBED", requirement="PW-ORDER-5")
        return sub

    def _check_next(self, sub: _Sub, epoch: int, first: int, what: str) -> None:
        """A push must continue the subscription exactly (PW-ORDER-7), or start a new epoch
        at sequence 1 (PW-ORDER-13); sequences of two epochs are never compared."""
        if epoch != sub.epoch:
            if first != 1:
                raise _violation(
                    f"{what} starts epoch {epoch} of {sub.topic!r} at {first}, not 1",
                    requirement="PW-ORDER-13",
                )
            self._events.append(EpochReset(sub.sub_id, sub.topic, sub.epoch, epoch))
            sub.epoch = epoch
            sub.next_seq = 1
            sub.last_delivered = sub.last_acked = 0  # PW-ACK-4
        elif first != sub.next_seq:
            raise _violation(
                f"{what} on {sub.topic!r} starts at {first}; expected {sub.next_seq} "
                "(out of order, duplicate, or a hole without GAP)",
                requirement="PW-ORDER-7",
            )

    def _on_gap(self, frame: F.Gap) -> None:
        sub = self._receiving_sub(self._subs.get(frame.sub_id), f"GAP for sub_id {frame.sub_id}")
        if sub is None:
            return
        if sub.pattern:
            raise _violation(
                f"GAP for pattern subscription {sub.sub_id} (TOPIC_STATUS says a topic's loss)",
                requirement="PW-SUB-30",
            )
        self._check_next(sub, frame.epoch, frame.first, f"GAP {frame.first}..{frame.last}")
        sub.next_seq = frame.last + 1
        sub.last_delivered = frame.last
        self._events.append(
            GapReceived(
                sub.sub_id, sub.topic, frame.epoch, frame.first, frame.last, code_of(frame.reason)
            )
        )

    def _on_messages(
        self,
        topic: str,
        epoch: int,
        first_seq: int,
        records: tuple[tuple[bytes, F.Headers | None], ...],
    ) -> None:
        queue = self._topics.get(topic)
        sub = queue[0] if queue else None
        if self._patterns and (sub is None or not sub.answered):
            # A name not answered yet has had no push (SUBSCRIBED comes first): a push on
            # its topic is a pattern's, delivered if the pattern is live, dropped if it is
            # being unsubscribed (the name's SUBSCRIBE went after that UNSUBSCRIBE).
            owner = self._pattern_for(topic)
            if owner is not None:
                if owner.answered and not owner.closing:
                    self._on_pattern_messages(owner, topic, epoch, first_seq, records)
                    return
                sub = owner
        if sub is None or sub.closing or not sub.answered:  # rare: decide slowly
            sub = self._receiving_sub(sub, f"message on topic {topic!r}")
            if sub is None:
                return
        count = len(records)
        if not sub.ledger.charge(count, self._frame_offset):
            granted = sub.ledger.usable_at(self._frame_offset)
            raise _violation(
                f"{count} message(s) on {topic!r} with only {granted} credit granted before "
                "the first byte arrived",
                ErrorCode.FLOW_CONTROL_ERROR,
                requirement="PW-FLOW-5",
            )
        if epoch != sub.epoch or first_seq != sub.next_seq:
            self._check_next(sub, epoch, first_seq, f"message seq {first_seq}")
        sub.next_seq = first_seq + count
        sub.last_delivered = first_seq + count - 1
        sub_id, append = sub.sub_id, self._events.append
        for i, (payload, headers) in enumerate(records):
            append(MessageReceived(sub_id, topic, epoch, first_seq + i, headers, payload))

    def _on_pattern_messages(
        self,
        sub: _Sub,
        topic: str,
        epoch: int,
        first_seq: int,
        records: tuple[tuple[bytes, F.Headers | None], ...],
    ) -> None:
        """Pushes of one topic of a pattern subscription: one credit pool (PW-FLOW-9), and
        per topic contiguity (PW-ORDER-15) from the first push or TOPIC_STATUS on."""
        count = len(records)
        if not sub.ledger.charge(count, self._frame_offset):
            granted = sub.ledger.usable_at(self._frame_offset)
            raise _violation(
                f"{count} message(s) on {topic!r} with only {granted} credit granted before "
                "the first byte arrived",
                ErrorCode.FLOW_CONTROL_ERROR,
                requirement="PW-FLOW-5",
            )
        assert sub.seen is not None
        state = sub.seen.get(topic)
        if state is not None and epoch == state[0] and first_seq != state[1]:
            raise _violation(
                f"message seq {first_seq} on {topic!r} of pattern {sub.topic!r}; expected "
                f"{state[1]} (out of order, duplicate, or a hole without TOPIC_STATUS)",
                requirement="PW-ORDER-15",
            )
        if state is not None and epoch != state[0]:
            if first_seq != 1:
                raise _violation(
                    f"message starts epoch {epoch} of {topic!r} at {first_seq}, not 1",
                    requirement="PW-ORDER-13",
                )
            # A server announces a topic's new epoch with TOPIC_STATUS first [PW-SUB-30],
            # which moves ``seen`` on; one that did not still restarts at 1, and the
            # application must hear of the change all the same [PW-ORDER-13].
            self._events.append(EpochReset(sub.sub_id, topic, state[0], epoch))
        sub.seen[topic] = [epoch, first_seq + count, first_seq + count - 1]
        sub_id, append = sub.sub_id, self._events.append
        for i, (payload, headers) in enumerate(records):
            append(MessageReceived(sub_id, topic, epoch, first_seq + i, headers, payload))

    def _on_puback(self, frame: F.Puback) -> None:
        pending = self._publishes.pop(frame.request_id, None)
        if pending is None:
            raise _violation(
                f"PUBACK for request {frame.request_id}, which is not outstanding",
                requirement="PW-PUB-3",
            )
        if frame.count != pending.count or frame.first_seq == 0 or frame.epoch == 0:
            raise _violation(
                f"PUBACK {frame.request_id}: epoch {frame.epoch} seqs {frame.first_seq}+"
                f"{frame.count} do not fit a publish of {pending.count} message(s)"
            )
        run = pending.run
        if run is not None:
            self._check_run_order(run, frame.request_id, "PUBACK")
            if frame.epoch == run.epoch and frame.first_seq < run.next_seq:
                raise _violation(
                    f"PUBACK {frame.request_id} on {run.topic!r} assigns sequence "
                    f"{frame.first_seq}, not after the previous PUBACK's "
                    f"{run.next_seq - 1} in epoch {frame.epoch}",
                    requirement="PW-ORDER-8",
                )
            run.answers.append(frame.first_seq)
            run.epoch = frame.epoch
            run.next_seq = frame.first_seq + 1
            self.run_answers += 1
            return
        self._events.append(
            PublishAcked(frame.request_id, pending.topic, frame.epoch, frame.first_seq, frame.count)
        )

    def _check_run_order(self, run: PublishRun, request_id: int, what: str) -> None:
        expected = run.request_ids[len(run.answers)]
        if request_id != expected:
            raise _violation(
                f"{what} for request {request_id} on {run.topic!r} overtakes request "
                f"{expected}, sent before it on the same topic",
                requirement="PW-ORDER-10",
            )


def is_terminal(code: ErrorCode | int) -> bool:
    """True when retrying cannot help (the registry marks the code not temporary, §11)."""
    info = REGISTRY.get(code) if isinstance(code, ErrorCode) else None
    return info is not None and not info.temporary
