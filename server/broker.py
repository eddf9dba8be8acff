"""The broker: per-topic sequence numbers, epochs and history, behind a small async interface.

Theory of operation
-------------------
A publish is turned into its push frame (MESSAGE or MESSAGE_BATCH) exactly once, here, and
stored in the topic's history as an :class:`Entry`. Subscribers never get a copy of their
own: each connection *pulls* entries from the history when it has credit and room in its
outbound queue, and writes the very same ``bytes`` object that every other subscriber
writes. A subscriber that cannot keep up therefore costs nothing but its cursor (a sequence
number); it lags in the history until the history no longer holds its next message, and
then the session applies the slow-consumer policy. Publishing never waits for a subscriber.

The interface (:class:`Broker`) is deliberately small and async so that a Redis Streams
backend (one stream per topic; XADD assigns the sequence, XRANGE reads, the epoch is a key
set with NX at topic creation, a pub/sub channel or XREAD BLOCK drives :meth:`Broker.listen`)
can replace :class:`MemoryBroker` without touching the connection code. Sessions only ever
call the methods defined on :class:`Broker`.

Bounds (ServerConfig): each topic keeps at most ``history_count`` messages and
``history_bytes`` bytes of encoded frames, but always its newest entry, so a topic costs at
most ``history_bytes`` plus one frame (``max_frame_size`` + 12).
"""

from __future__ import annotations

import abc
import bisect
import itertools
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import HEADER_SIZE, Outcome, SinceKind

__all__ = [
    "Broker",
    "Entry",
    "InvalidPosition",
    "MemoryBroker",
    "ReadResult",
    "Resolution",
    "TopicPosition",
    "TopicStats",
    "batch_body",
    "message_body",
    "resolve_since",
]

log = logging.getLogger("pushwire.server.broker")


# -- what the broker stores and returns -------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Entry:
    """One history entry: a push frame encoded once and shared by every subscriber.

    For a MESSAGE_BATCH, ``offsets`` is ``codec.batch_record_offsets(frame)`` (where each
    record starts in ``frame``, then the frame's end), so that a subscriber whose credit or
    resume point falls inside the batch gets a sub-batch without parsing it again; it is
    empty for a MESSAGE.
    """

    epoch: int
    first_seq: int
    count: int
    frame: bytes
    offsets: tuple[int, ...] = ()

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1

    @property
    def is_batch(self) -> bool:
        return bool(self.offsets)

    @property
    def payload_size(self) -> int:
        """The frame's length field: what a receiver compares with its max_frame_size."""
        return len(self.frame) - HEADER_SIZE

    def sub_batch_size(self, first: int, stop: int) -> int:
        """Payload size of the MESSAGE_BATCH holding records ``first..stop-1``."""
        return codec.slice_batch_size(self.offsets, first, stop)

    def sub_batch(self, first: int, stop: int) -> bytes:
        """The MESSAGE_BATCH frame of records ``first..stop-1`` (indexes into the batch);
        all of them is ``frame`` itself."""
        return codec.slice_batch(self.frame, first, stop, self.offsets)


@dataclass(frozen=True, slots=True)
class TopicPosition:
    """Where a topic is: its epoch, last assigned sequence (0: none yet) and oldest retained
    sequence (``head_seq + 1`` when nothing is retained)."""

    epoch: int
    head_seq: int
    oldest_seq: int


@dataclass(frozen=True, slots=True)
class ReadResult:
    """One atomic look at a topic: its position and the entries read from it."""

    position: TopicPosition
    entries: list[Entry]


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where a new subscription starts: the fields of SUBSCRIBED (§6.2)."""

    outcome: Outcome
    epoch: int
    start_seq: int
    head_seq: int
    gap_first: int = 0
    gap_last: int = 0
    gap_reason: int = 0


@dataclass(frozen=True, slots=True)
class TopicStats:
    epoch: int
    head_seq: int
    oldest_seq: int
    entries: int
    bytes: int
    frames_encoded: int  # push frames built by publishes (one per publish, whatever the fan-out)
    listeners: int


class InvalidPosition(Exception):
    """AFTER(epoch, seq) names a sequence beyond the head of the current epoch (§6.2)."""

    code = ErrorCode.INVALID_POSITION


def resolve_since(
    position: TopicPosition,
    since_kind: int,
    since_epoch: int = 0,
    since_seq: int = 0,
    since_count: int = 0,
) -> Resolution:
    """The SUBSCRIBED outcome for a start position (SPEC.md §6.2), from the topic's
    position alone, so every backend answers alike. Raises InvalidPosition."""
    epoch, head, oldest = position.epoch, position.head_seq, position.oldest_seq
    if since_kind == SinceKind.NEW:
        return Resolution(Outcome.NEW, epoch, head + 1, head)
    if since_kind == SinceKind.OLDEST:
        return Resolution(Outcome.RECOVERED, epoch, oldest, head)
    if since_kind == SinceKind.AFTER and since_epoch != epoch:
        return Resolution(Outcome.EPOCH_CHANGED, epoch, oldest, head)
    if since_kind == SinceKind.AFTER:
        after = since_seq
        if after > head:
            raise InvalidPosition(f"seq {after} is beyond head {head} of epoch {epoch}")
    elif since_kind == SinceKind.LAST:
        after = max(0, head - since_count)
    else:
        raise ValueError(f"unknown since_kind {since_kind}")
    if after >= oldest - 1:
        return Resolution(Outcome.RECOVERED, epoch, after + 1, head)
    return Resolution(
        Outcome.GAP,
        epoch,
        oldest,
        head,
        gap_first=after + 1,
        gap_last=oldest - 1,
        gap_reason=ErrorCode.HISTORY_EXPIRED,
    )


def message_body(topic: str, payload: bytes, headers: F.Headers | None = None) -> tuple[int, bytes]:
    """(flags, PUBLISH body after request_id) for a publish made through the Python API, so
    it takes the same path as one that arrived on the wire."""
    return codec.publish_body(codec.encode_frame(F.Publish(0, topic, payload, headers)))


def batch_body(topic: str, records: tuple[F.Record, ...]) -> tuple[int, bytes, int, list[int]]:
    """(flags, body, records_start, record_ends) of a PUBLISH_BATCH body (offsets into body)."""
    flags, body = codec.publish_body(codec.encode_frame(F.PublishBatch(0, topic, records)))
    offsets = codec.body_record_offsets(flags, body)
    return flags, body, offsets[0], list(offsets[1:])


#: ``listener(epoch, head_seq, count, size)``: called after each append of ``count`` messages
#: in a frame of ``size`` bytes, and after a reset (head_seq, count and size 0).
Listener = Callable[[int, int, int, int], None]


class Broker(abc.ABC):
    """What a session needs from a broker. Small and async on purpose: a Redis Streams
    backend can implement it without touching the connection code (see the module
    docstring). Implementations must keep, per topic, sequences contiguous from 1 within an
    epoch and never reuse an epoch."""

    @abc.abstractmethod
    async def publish(self, topic: str, flags: int, body: bytes) -> tuple[int, int]:
        """Append one message; ``body`` is a PUBLISH body after request_id. Returns
        (epoch, seq) and wakes the topic's listeners."""

    @abc.abstractmethod
    async def publish_batch(
        self, topic: str, flags: int, body: bytes, records_start: int, record_ends: list[int]
    ) -> tuple[int, int]:
        """Append a batch atomically (consecutive sequences); returns (epoch, first_seq)."""

    @abc.abstractmethod
    async def position(self, topic: str) -> TopicPosition:
        """The topic's epoch, head and oldest retained sequence (creates the topic)."""

    @abc.abstractmethod
    async def read(
        self, topic: str, from_seq: int, *, max_count: int, max_bytes: int
    ) -> ReadResult:
        """Entries of the current epoch holding ``from_seq`` and after, in order: at most
        ``max_count`` messages' worth and ``max_bytes`` of frames, but at least one entry
        when any is there. The first entry may start before ``from_seq`` (a batch) or after
        it (``from_seq`` left the history: compare with ``position.oldest_seq``)."""

    @abc.abstractmethod
    def listen(self, topic: str, callback: Listener) -> Callable[[], None]:
        """Call ``callback(epoch, head_seq, count, size)`` after each append to ``topic``
        (``count`` messages in a push frame of ``size`` bytes) and after a reset (zeros).
        The callback must be quick and must not raise. Returns the function that stops
        listening."""

    @abc.abstractmethod
    async def reset_topic(self, topic: str) -> int:
        """Start a new epoch with an empty history; returns the new epoch."""

    async def resolve(
        self,
        topic: str,
        since_kind: int,
        since_epoch: int = 0,
        since_seq: int = 0,
        since_count: int = 0,
    ) -> Resolution:
        """Where a SUBSCRIBE starts (§6.2). Raises InvalidPosition."""
        position = await self.position(topic)
        return resolve_since(position, since_kind, since_epoch, since_seq, since_count)

    def stats(self) -> dict[str, TopicStats]:
        """Per-topic numbers for monitoring and tests (may be empty for remote backends)."""
        return {}


# -- the in-memory broker ---------------------------------------------------------------------


def _new_epoch(previous: int = 0) -> int:
    """A nonzero random 63-bit epoch, different from ``previous``: a restarted in-memory
    server therefore never presents an old epoch with new contents."""
    while True:
        epoch = secrets.randbits(63)
        if epoch and epoch != previous:
            return epoch


@dataclass(slots=True, eq=False)
class _Topic:
    epoch: int
    head: int = 0
    entries: list[Entry] = field(default_factory=list)
    firsts: list[int] = field(default_factory=list)  # entries[i].first_seq, for bisect
    start: int = 0  # index of the oldest live entry (trimmed ones are dropped lazily)
    bytes: int = 0
    frames_encoded: int = 0
    listeners: dict[int, Listener] = field(default_factory=dict)

    @property
    def oldest(self) -> int:
        if self.start < len(self.entries):
            return self.entries[self.start].first_seq
        return self.head + 1

    @property
    def position(self) -> TopicPosition:
        return TopicPosition(self.epoch, self.head, self.oldest)


class MemoryBroker(Broker):
    """History in process memory, bounded per topic by ``history_count`` messages and
    ``history_bytes`` bytes of frames (the newest entry is always kept). Epochs are random,
    so a restart changes every topic's epoch (clients see EPOCH_CHANGED)."""

    def __init__(
        self,
        *,
        history_count: int = 10_000,
        history_bytes: int = 16 << 20,
        max_topics: int = 100_000,
    ) -> None:
        if history_count < 1 or history_bytes < 1 or max_topics < 1:
            raise ValueError("history_count, history_bytes and max_topics must be at least 1")
        self.history_count = history_count
        self.history_bytes = history_bytes
        self.max_topics = max_topics
        self._topics: OrderedDict[str, _Topic] = OrderedDict()  # least recently used first
        self._listener_ids = 0
        self.evicted = 0

    def _topic(self, name: str, *, touch: bool = False) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            if len(self._topics) >= self.max_topics:
                self._evict()
            topic = self._topics[name] = _Topic(epoch=_new_epoch())
        elif touch:
            self._topics.move_to_end(name)
        return topic

    def _evict(self) -> None:
        """Forget the least recently used topic nobody listens to [PW-LIMIT-5]; if it is
        named again it starts over with a new epoch. Looks at a few candidates only, so a
        server whose topics are all subscribed grows past max_topics rather than stall."""
        for name, topic in itertools.islice(self._topics.items(), 16):
            if not topic.listeners:
                del self._topics[name]
                self.evicted += 1
                return

    def _append(self, topic: _Topic, entry: Entry) -> None:
        topic.entries.append(entry)
        topic.firsts.append(entry.first_seq)
        topic.bytes += len(entry.frame)
        topic.frames_encoded += 1
        entries = topic.entries
        while len(entries) - topic.start > 1 and (
            topic.head - entries[topic.start].first_seq + 1 > self.history_count
            or topic.bytes > self.history_bytes
        ):
            topic.bytes -= len(entries[topic.start].frame)
            topic.start += 1
        if topic.start > 64 and topic.start * 2 > len(entries):
            del entries[: topic.start]
            del topic.firsts[: topic.start]
            topic.start = 0

    def _notify(self, topic: _Topic, count: int = 0, size: int = 0) -> None:
        for callback in list(topic.listeners.values()):
            try:
                callback(topic.epoch, topic.head, count, size)
            except Exception:  # a listener must never break the publisher
                log.exception("topic listener failed")

    async def publish(self, topic: str, flags: int, body: bytes) -> tuple[int, int]:
        t = self._topic(topic, touch=True)
        seq = t.head + 1
        frame = codec.body_to_message(flags, body, t.epoch, seq)
        t.head = seq
        self._append(t, Entry(t.epoch, seq, 1, frame))
        self._notify(t, 1, len(frame))
        return t.epoch, seq

    async def publish_batch(
        self, topic: str, flags: int, body: bytes, records_start: int, record_ends: list[int]
    ) -> tuple[int, int]:
        t = self._topic(topic, touch=True)
        first = t.head + 1
        count = len(record_ends)
        frame = codec.body_to_message_batch(flags, body, t.epoch, first)
        shift = len(frame) - len(body)  # the body is the frame's tail
        offsets = (records_start + shift, *[end + shift for end in record_ends])
        t.head = first + count - 1
        self._append(t, Entry(t.epoch, first, count, frame, offsets))
        self._notify(t, count, len(frame))
        return t.epoch, first

    async def position(self, topic: str) -> TopicPosition:
        return self._topic(topic).position

    def position_nowait(self, topic: str) -> TopicPosition:
        return self._topic(topic).position

    async def read(
        self, topic: str, from_seq: int, *, max_count: int, max_bytes: int
    ) -> ReadResult:
        t = self._topic(topic)
        out: list[Entry] = []
        if from_seq <= t.head and max_count > 0:
            i = max(bisect.bisect_right(t.firsts, from_seq, lo=t.start) - 1, t.start)
            entries = t.entries
            size = 0
            count = 0
            while i < len(entries):
                entry = entries[i]
                if out and (size + len(entry.frame) > max_bytes or count >= max_count):
                    break
                out.append(entry)
                size += len(entry.frame)
                count += entry.last_seq - max(from_seq, entry.first_seq) + 1
                i += 1
        return ReadResult(t.position, out)

    def listen(self, topic: str, callback: Listener) -> Callable[[], None]:
        t = self._topic(topic, touch=True)
        self._listener_ids += 1
        key = self._listener_ids
        t.listeners[key] = callback

        def stop() -> None:
            t.listeners.pop(key, None)

        return stop

    async def reset_topic(self, topic: str) -> int:
        t = self._topic(topic)
        t.epoch = _new_epoch(t.epoch)
        t.head = 0
        t.entries.clear()
        t.firsts.clear()
        t.start = 0
        t.bytes = 0
        self._notify(t)
        return t.epoch

    def stats(self) -> dict[str, TopicStats]:
        return {
            name: TopicStats(
                t.epoch,
                t.head,
                t.oldest,
                len(t.entries) - t.start,
                t.bytes,
                t.frames_encoded,
                len(t.listeners),
            )
            for name, t in self._topics.items()
        }
