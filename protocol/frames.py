"""Frames as frozen, slotted dataclasses: what the codec returns and accepts.

construct ``Container`` objects stop at the codec boundary; the rest of the code sees only
these. Field names follow the construct declarations in ``layouts.py``; flags that change the
layout appear as fields (``headers is None`` means HAS_HEADERS is clear) so that decoding then
encoding a frame gives back the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pushwire.protocol.layouts import FrameType, Outcome, SinceKind

#: Message headers (§9.2): ordered (key, value) pairs; keys may repeat.
Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Hello:
    TYPE: ClassVar[FrameType] = FrameType.HELLO
    max_frame_size: int
    heartbeat_ms: int
    client_name: str
    auth_token: bytes


@dataclass(frozen=True, slots=True)
class Welcome:
    TYPE: ClassVar[FrameType] = FrameType.WELCOME
    connection_id: int
    heartbeat_ms: int
    max_frame_size: int
    max_subscriptions: int
    max_lag: int
    slow_consumer_policy: int
    server_name: str


@dataclass(frozen=True, slots=True)
class Ping:
    TYPE: ClassVar[FrameType] = FrameType.PING
    opaque: int


@dataclass(frozen=True, slots=True)
class Pong:
    TYPE: ClassVar[FrameType] = FrameType.PONG
    opaque: int


@dataclass(frozen=True, slots=True)
class Position:
    """A subscription's last position, as GOAWAY reports it (§8.6)."""

    sub_id: int
    epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class TopicPosition:
    """The last message a client has of one topic a pattern matches (§6.7)."""

    topic: str
    epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class Goaway:
    TYPE: ClassVar[FrameType] = FrameType.GOAWAY
    code: int
    reconnect_after_ms: int
    reconnect_jitter_ms: int
    positions: tuple[Position, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Error:
    TYPE: ClassVar[FrameType] = FrameType.ERROR
    code: int
    request_type: int
    request_id: int
    message: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE (§6.1). Only the ``since_*`` fields of ``since_kind`` are on the wire; the
    others are zero."""

    TYPE: ClassVar[FrameType] = FrameType.SUBSCRIBE
    sub_id: int
    topic: str
    since_kind: int = SinceKind.NEW
    since_epoch: int = 0
    since_seq: int = 0
    since_count: int = 0
    initial_credit: int = 0
    at_least_once: bool = False
    #: ``None``: ``topic`` is a name. A tuple (flag PATTERN): ``topic`` is a pattern and
    #: these are the positions of the topics the client has seen (§6.7).
    positions: tuple[TopicPosition, ...] | None = None

    @property
    def is_pattern(self) -> bool:
        return self.positions is not None


@dataclass(frozen=True, slots=True)
class Subscribed:
    """SUBSCRIBED (§6.2). The ``gap_*`` fields are on the wire only for outcome GAP."""

    TYPE: ClassVar[FrameType] = FrameType.SUBSCRIBED
    sub_id: int
    outcome: int
    epoch: int
    start_seq: int
    head_seq: int
    gap_first: int = 0
    gap_last: int = 0
    gap_reason: int = 0
    #: ``None``: the reply to a SUBSCRIBE. A name (flag TOPIC_STATUS): the outcome for one
    #: topic of a pattern subscription (§6.7).
    topic: str | None = None

    @property
    def is_gap(self) -> bool:
        return self.outcome == Outcome.GAP


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    TYPE: ClassVar[FrameType] = FrameType.UNSUBSCRIBE
    sub_id: int


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    TYPE: ClassVar[FrameType] = FrameType.UNSUBSCRIBED
    sub_id: int
    epoch: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class Credit:
    TYPE: ClassVar[FrameType] = FrameType.CREDIT
    sub_id: int
    increment: int


@dataclass(frozen=True, slots=True)
class Ack:
    TYPE: ClassVar[FrameType] = FrameType.ACK
    sub_id: int
    seq: int


@dataclass(frozen=True, slots=True)
class Gap:
    TYPE: ClassVar[FrameType] = FrameType.GAP
    sub_id: int
    epoch: int
    first: int
    last: int
    reason: int


@dataclass(frozen=True, slots=True)
class Message:
    TYPE: ClassVar[FrameType] = FrameType.MESSAGE
    epoch: int
    seq: int
    topic: str
    payload: bytes
    headers: Headers | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """One message inside a batch (§7.2). In one batch either every record has headers
    (HAS_HEADERS set) or none has (``None``)."""

    payload: bytes
    headers: Headers | None = None


@dataclass(frozen=True, slots=True)
class MessageBatch:
    TYPE: ClassVar[FrameType] = FrameType.MESSAGE_BATCH
    epoch: int
    base_seq: int
    topic: str
    records: tuple[Record, ...]

    @property
    def count(self) -> int:
        return len(self.records)

    @property
    def last_seq(self) -> int:
        return self.base_seq + len(self.records) - 1


@dataclass(frozen=True, slots=True)
class Publish:
    TYPE: ClassVar[FrameType] = FrameType.PUBLISH
    request_id: int
    topic: str
    payload: bytes
    headers: Headers | None = None


@dataclass(frozen=True, slots=True)
class PublishBatch:
    TYPE: ClassVar[FrameType] = FrameType.PUBLISH_BATCH
    request_id: int
    topic: str
    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class Puback:
    TYPE: ClassVar[FrameType] = FrameType.PUBACK
    request_id: int
    epoch: int
    first_seq: int
    count: int


@dataclass(frozen=True, slots=True)
class Unknown:
    """A frame of a type this implementation does not know, with the ignorable bit set
    (§3.3): the receiver skips it. Also lets tests and fuzzers build arbitrary frames."""

    type: int
    flags: int
    payload: bytes


Frame = (
    Hello
    | Welcome
    | Ping
    | Pong
    | Goaway
    | Error
    | Subscribe
    | Subscribed
    | Unsubscribe
    | Unsubscribed
    | Credit
    | Ack
    | Gap
    | Message
    | MessageBatch
    | Publish
    | PublishBatch
    | Puback
    | Unknown
)

FRAME_CLASSES: dict[FrameType, type] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Welcome,
        Ping,
        Pong,
        Goaway,
        Error,
        Subscribe,
        Subscribed,
        Unsubscribe,
        Unsubscribed,
        Credit,
        Ack,
        Gap,
        Message,
        MessageBatch,
        Publish,
        PublishBatch,
        Puback,
    )
}
