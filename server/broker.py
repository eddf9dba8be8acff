"""The broker: per-topic sequence numbers, epochs and history, behind a small interface.

Theory of operation
-------------------
A publish is turned into its push frame (MESSAGE or MESSAGE_BATCH) exactly once, here, and
appended to the topic's :class:`~pushwire.protocol.log.TopicLog`: fixed-size segments of
encoded frames and an array of where each sequence starts. Subscribers never get a copy of
their own: each connection *pulls* from the log when it has credit and room in its outbound
budget, and sends slices of the very same segments every other subscriber sends. A
subscriber that cannot keep up costs nothing but its cursor (a sequence number); it lags in
the log until the log no longer holds its next message, and then the session applies the
slow-consumer policy. Publishing never waits for a subscriber.

Wake-ups are per topic, not per message: a writer that has caught up with a topic and has
credit parks a callback with :meth:`Topic.wait`; an append calls the parked callbacks once
and forgets them, so a burst of appends between two turns of the event loop wakes each
waiting writer once, and a subscription without credit (which parks nothing) is never woken
by publishes at all. Under the DISCONNECT policy a subscription that is not draining
registers *watches* instead: "call me when head passes ``next_seq - 1 + max_lag``" and "when
the oldest retained sequence passes ``next_seq``". The topic keeps them in two heaps and an
append looks only at their tops, so the lag of a stalled subscription is judged by the very
append that makes it too large, at O(log n) per subscription that trips, O(1) otherwise.

The async methods (``publish``, ``read``, ``resolve``...) are the interface a different
backend would implement; sessions use the synchronous fast path (:meth:`Broker.append`,
:meth:`Broker.attach`) that a backend mirroring its topics into local logs provides.

Bounds (ServerConfig): each topic keeps at most ``history_count`` messages and
``history_bytes`` bytes of encoded frames, but always its newest frame; what its log holds
beyond that (partly filled segment, arrays, bookkeeping) is bounded by
:attr:`TopicLog.memory`, reported in :meth:`Broker.stats`. Topics nobody subscribes to are
evicted least recently used first once there are ``max_topics``, in O(1).
"""

from __future__ import annotations

import abc
import heapq
import itertools
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import FrameType, Outcome, SinceKind
from pushwire.protocol.log import MAX_SEGMENT, TopicLog
from pushwire.server.topic_index import PatternIndex, TopicIndex

__all__ = [
    "Broker",
    "BrokerUnavailable",
    "Entry",
    "InvalidPosition",
    "LocalTopics",
    "MemoryBroker",
    "NoRoom",
    "ReadResult",
    "Resolution",
    "Topic",
    "TopicPosition",
    "TopicStats",
    "batch_body",
    "message_body",
    "read_log",
    "resolve_since",
]

log_ = logging.getLogger("pushwire.server.broker")


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
        return codec.payload_size(self.frame)

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
    listeners: int  # subscriptions attached plus listen() callbacks
    memory: int = 0  # bytes the topic's log holds (segments, arrays, bookkeeping)


class InvalidPosition(Exception):
    """AFTER(epoch, seq) names a sequence beyond the head of the current epoch (§6.2)."""

    code = ErrorCode.INVALID_POSITION


class NoRoom(Exception):
    """The server's memory budget has no room for a publish even after trimming every
    topic's oldest history and evicting unheld topics; nothing was appended (§13)."""

    code = ErrorCode.RESOURCE_EXHAUSTED


class BrokerUnavailable(Exception):
    """A remote broker cannot be reached: nothing was stored; the request may be retried
    (SPEC.md §15)."""

    code = ErrorCode.BROKER_UNAVAILABLE


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


def read_log(log: TopicLog, from_seq: int, max_count: int, max_bytes: int) -> list[Entry]:
    """What :meth:`Broker.read` returns from a topic's local log (every backend that keeps
    one: the in-memory broker, a remote backend's cache)."""
    out: list[Entry] = []
    if from_seq <= log.head and max_count > 0:
        seq = max(from_seq, log.oldest)
        size = count = 0
        while seq <= log.head:
            first, n, view = log.frame(seq)
            if out and (size + len(view) > max_bytes or count >= max_count):
                break
            frame = bytes(view)
            batch = codec.decode_header(frame).type == _BATCH
            offsets = codec.batch_record_offsets(frame) if batch else ()
            out.append(Entry(log.epoch, first, n, frame, offsets))
            size += len(frame)
            count += first + n - max(from_seq, first)
            seq = first + n
    return out


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
#: A parked writer or a watch: called once, inside the appending task; quick, never raises.
Wakeup = Callable[[], None]


def _new_epoch(previous: int = 0) -> int:
    """A nonzero random 63-bit epoch, different from ``previous``: a restarted in-memory
    server therefore never presents an old epoch with new contents."""
    while True:
        epoch = secrets.randbits(63)
        if epoch and epoch != previous:
            return epoch


_tokens = itertools.count()
#: The watch heap of a topic nobody watches, shared and never written: most topics are never
#: watched (only DISCONNECT subscriptions that stall watch), and two empty lists per topic
#: are a seventh of what an empty topic costs.
_NO_WATCHES: list[tuple[int, int, Wakeup]] = []


class Topic:
    """One topic: its current log (replaced by a reset), the writers parked on it and the
    DISCONNECT watches. Sessions hold it from :meth:`Broker.attach` to
    :meth:`Broker.detach`."""

    __slots__ = (
        "_head_watch",
        "_oldest_watch",
        "attached",
        "charged",
        "listeners",
        "log",
        "name",
        "owner",
        "plan",
        "waiters",
    )

    def __init__(self, name: str, log: TopicLog) -> None:
        self.name = name
        self.log = log
        self.attached = 0
        #: the log's memory as last added to the broker's running total
        self.charged = 0
        #: the identity whose publish made the topic retain messages ("": none, or the
        #: server); see Broker.claim
        self.owner = ""
        self.waiters: dict[object, Wakeup] = {}
        self.listeners: dict[int, Listener] = {}
        #: the sessions' shared plan for this topic (see server.session.SharedPlan)
        self.plan: Any = None
        self._head_watch = _NO_WATCHES
        self._oldest_watch = _NO_WATCHES

    def wait(self, key: object, wakeup: Wakeup) -> None:
        """Call ``wakeup`` once, at the next append or reset (one per ``key``)."""
        self.waiters[key] = wakeup

    def unwait(self, key: object) -> None:
        """Forget what ``key`` parked (a subscription that went away)."""
        self.waiters.pop(key, None)

    def watch_head(self, seq: int, wakeup: Wakeup) -> None:
        """Call ``wakeup`` once, when the head passes ``seq`` (or at a reset)."""
        if self._head_watch is _NO_WATCHES:
            self._head_watch = []
        heapq.heappush(self._head_watch, (seq, next(_tokens), wakeup))
        self._bound_watches()

    def watch_oldest(self, seq: int, wakeup: Wakeup) -> None:
        """Call ``wakeup`` once, when the oldest retained sequence passes ``seq`` (or at a
        reset)."""
        if self._oldest_watch is _NO_WATCHES:
            self._oldest_watch = []
        heapq.heappush(self._oldest_watch, (seq, next(_tokens), wakeup))
        self._bound_watches()

    def _bound_watches(self) -> None:
        # callers register at most one watch of each kind per subscription at a time, but a
        # subscription may go away with its watches still here: fire the stale ones early
        # (a wake-up is harmless) so that churn cannot grow the heaps without bound
        limit = 2 * self.attached + 16
        if len(self._head_watch) + len(self._oldest_watch) > 2 * limit:
            self.fire_all_watches()

    def appended(self) -> None:
        """After an append: run the parked writers and the watches that came due."""
        if self.waiters:
            waiters, self.waiters = self.waiters, {}
            for wakeup in waiters.values():
                wakeup()
        log = self.log
        watch = self._head_watch
        while watch and watch[0][0] < log.head:
            heapq.heappop(watch)[2]()
        watch = self._oldest_watch
        while watch and watch[0][0] < log.oldest:
            heapq.heappop(watch)[2]()

    def fire_all_watches(self) -> None:
        watches = self._head_watch + self._oldest_watch
        self._head_watch = self._oldest_watch = _NO_WATCHES
        waiters, self.waiters = self.waiters, {}
        for _, _, wakeup in watches:
            wakeup()
        for wakeup in waiters.values():
            wakeup()

    @property
    def position(self) -> TopicPosition:
        log = self.log
        return TopicPosition(log.epoch, log.head, log.oldest)


class Broker(abc.ABC):
    """What a session needs from a broker. Implementations must keep, per topic, sequences
    contiguous from 1 within an epoch and never reuse an epoch.

    The async methods are the portable interface (a Redis Streams backend could implement
    them: XADD assigns the sequence, XRANGE reads, the epoch is a key set with NX at topic
    creation). Sessions use the synchronous fast path, :meth:`append`,
    :meth:`append_batch` and :meth:`attach`, whose :class:`Topic` carries a local
    :class:`~pushwire.protocol.log.TopicLog`; a remote backend would mirror into it.

    A *remote* backend (``remote = True``) stores asynchronously: sessions publish through
    :meth:`publish` and :meth:`publish_batch` and send the PUBACK after they return."""

    #: True: publishes go through the async methods (the synchronous ones may not work).
    remote = False

    @abc.abstractmethod
    def append(self, topic: str, flags: int, body: bytes | memoryview) -> tuple[int, int]:
        """Append one message; ``body`` is a PUBLISH body after request_id. Returns
        (epoch, seq) and wakes the topic's parked writers."""

    @abc.abstractmethod
    def append_batch(
        self,
        topic: str,
        flags: int,
        body: bytes | memoryview,
        records_start: int,
        record_ends: list[int] | tuple[int, ...],
    ) -> tuple[int, int]:
        """Append a batch atomically (consecutive sequences); returns (epoch, first_seq)."""

    @abc.abstractmethod
    def attach(self, topic: str) -> Topic:
        """The topic, held (never evicted) until :meth:`detach`."""

    @abc.abstractmethod
    def detach(self, topic: Topic) -> None:
        """Release what :meth:`attach` returned."""

    def append_many(
        self, topic: str, data: bytes | memoryview, spans: list[tuple[int, int, int]]
    ) -> tuple[int, int]:
        """For each (start, end, count): the publish body ``data[start:end]`` (flags 0) as a
        MESSAGE (count 0) or a batch of ``count`` records, in order; returns (epoch, first
        seq). Backends may wake the topic once for all of them."""
        with memoryview(data) as view:
            first = self.append_span(topic, view, spans[0])
            for span in spans[1:]:
                self.append_span(topic, view, span)
        return first

    def append_span(
        self, topic: str, view: memoryview, span: tuple[int, int, int]
    ) -> tuple[int, int]:
        """One (start, end, count) of :meth:`append_many` through :meth:`append` or
        :meth:`append_batch`."""
        start, end, count = span
        if not count:
            return self.append(topic, 0, view[start:end])
        body = view[start:end]
        offsets = codec.body_record_offsets(0, body)
        return self.append_batch(topic, 0, body, offsets[0], offsets[1:])

    async def publish_many(
        self, topic: str, data: bytes | memoryview, spans: list[tuple[int, int, int]]
    ) -> tuple[int, int]:
        """:meth:`append_many`, for callers on the portable interface: one store for a run
        of publishes (a remote backend makes it one round trip)."""
        return self.append_many(topic, data, spans)

    async def publish(self, topic: str, flags: int, body: bytes) -> tuple[int, int]:
        """:meth:`append`, for callers on the portable interface."""
        return self.append(topic, flags, body)

    async def publish_batch(
        self, topic: str, flags: int, body: bytes, records_start: int, record_ends: list[int]
    ) -> tuple[int, int]:
        """:meth:`append_batch`, for callers on the portable interface."""
        return self.append_batch(topic, flags, body, records_start, record_ends)

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
        For monitoring: per append, unlike :meth:`Topic.wait`. The callback must be quick
        and must not raise. Returns the function that stops listening."""

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

    def claim(self, topic: str, owner: str) -> bool:
        """Before ``owner`` (an identity) publishes on ``topic``: True if it may as far as
        the topic quota goes. The first publisher of a topic that has none becomes its
        owner, and the topic counts against that owner's quota. Backends without quotas
        say True."""
        return True

    def charge(self, nbytes: int) -> None:
        """Count ``nbytes`` (negative: release them) of memory held outside the topics, such
        as a connection's outbound queue, against the broker's memory budget, if it has
        one."""
        return  # a backend without a budget has nothing to count

    def topics_matching(self, pattern: str) -> list[str]:
        """The existing topics ``pattern`` matches (SPEC.md §9.4). A backend without a
        topic index does not offer pattern subscriptions."""
        raise NotImplementedError("this broker has no topic index")

    def listen_pattern(self, pattern: str, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(name)`` when a topic ``pattern`` matches comes into existence,
        before anything is appended to it. The callback must be quick and must not raise.
        Returns the function that stops listening."""
        raise NotImplementedError("this broker has no topic index")


# -- the in-memory broker ---------------------------------------------------------------------


class LocalTopics(Broker):
    """The topics this process holds, each with its local
    :class:`~pushwire.protocol.log.TopicLog`, and their bookkeeping: creation, the topic
    index for patterns, the memory budget's running total, reclaiming and eviction. The
    in-memory broker keeps its history here; a remote backend keeps its local cache here
    (:mod:`pushwire.server.redis_broker`), so both bound memory and topics alike.

    Subclasses say what a new topic is (:meth:`_new_topic`), what naming and forgetting one
    means beyond this process (:meth:`_named`, :meth:`_dropped`)."""

    def __init__(
        self,
        *,
        history_count: int = 10_000,
        history_bytes: int = 16 << 20,
        max_topics: int = 100_000,
        memory_limit: int | None = None,
        max_topics_per_owner: int | None = None,
    ) -> None:
        if history_count < 1 or history_bytes < 1 or max_topics < 1:
            raise ValueError("history_count, history_bytes and max_topics must be at least 1")
        if memory_limit is not None and memory_limit < 1 << 20:
            raise ValueError("memory_limit must be at least 1 MiB")
        self.history_count = history_count
        self.history_bytes = history_bytes
        self.max_topics = max_topics
        self.memory_limit = memory_limit
        self.max_topics_per_owner = max_topics_per_owner
        #: owner -> the topics it owns, oldest claim first
        self._owned: dict[str, OrderedDict[str, None]] = {}
        #: bytes held: every topic's log memory plus what charge() added
        self.memory = 0
        self._topics: dict[str, Topic] = {}
        # unheld topics, least recent first: those that retain messages, and those that
        # retain none (placeholders), which are evicted first
        self._idle: OrderedDict[str, None] = OrderedDict()
        self._idle_empty: OrderedDict[str, None] = OrderedDict()
        self._listener_ids = 0
        self.evicted = 0
        self.reclaimed = 0  # bytes the memory budget freed by trimming and evicting
        self.refused = 0  # appends refused for want of memory (NoRoom)
        #: Topic names in a trie, and the patterns waiting for new topics in another: a new
        #: topic or a new pattern subscription walks segments, not every topic.
        self._index = TopicIndex()
        self._pattern_index = PatternIndex()
        self._pattern_callbacks: dict[int, Callable[[str], None]] = {}

    def _log(self, previous_epoch: int = 0) -> TopicLog:
        return TopicLog(
            _new_epoch(previous_epoch), max_count=self.history_count, max_bytes=self.history_bytes
        )

    def _topic(self, name: str) -> Topic:
        topic = self._topics.get(name)
        if topic is None:
            if len(self._topics) >= self.max_topics:
                self._evict()
            topic = self._topics[name] = self._new_topic(name)
            topic.charged = topic.log.held
            self.memory += topic.charged
            self._idle_empty[name] = None
            self._named(name)
        elif not topic.attached and not topic.listeners:
            if name in self._idle:
                self._idle.move_to_end(name)
            else:
                self._idle_empty.move_to_end(name)
        return topic

    def _new_topic(self, name: str) -> Topic:
        """A topic that was not here: a fresh epoch with an empty history."""
        return Topic(name, self._log())

    def _named(self, name: str) -> None:
        """A topic came into existence here: index it, and tell the patterns that match."""
        self._index.add(name)
        if len(self._pattern_index):
            self._created(name)

    def _dropped(self, topic: Topic) -> None:
        """An evicted topic is gone: patterns no longer find it."""
        self._index.remove(topic.name)

    def _settle(self, topic: Topic) -> None:
        """After the topic's log changed: bring the running total up to date, and file an
        unheld topic that now retains messages with those that do."""
        memory = topic.log.held
        self.memory += memory - topic.charged
        topic.charged = memory
        if (
            topic.log.frames
            and not topic.attached
            and not topic.listeners
            and topic.name in self._idle_empty
        ):
            del self._idle_empty[topic.name]
            self._idle[topic.name] = None

    def _evict(self) -> None:
        """Forget one topic nobody holds [PW-LIMIT-5]: one that retains no message if there
        is one, else the least recently used; if it is named again it starts over with a new
        epoch. When every topic is held, the server grows past max_topics rather than stall."""
        for idle in (self._idle_empty, self._idle):
            if idle:
                name, _ = idle.popitem(last=False)
                self._forget(name)
                return

    def _forget(self, name: str) -> None:
        """Drop an unheld topic (already out of the idle tables) and what it counts for."""
        topic = self._topics.pop(name)
        self._dropped(topic)
        self.memory -= topic.charged
        self.evicted += 1
        if topic.owner:
            owned = self._owned[topic.owner]
            del owned[name]
            if not owned:
                del self._owned[topic.owner]

    def _created(self, name: str) -> None:
        for key in self._pattern_index.match(name):
            callback = self._pattern_callbacks.get(key) if isinstance(key, int) else None
            if callback is None:
                continue
            try:
                callback(name)
            except Exception:  # a listener must never break the publisher
                log_.exception("pattern listener failed")

    def topics_matching(self, pattern: str) -> list[str]:
        return list(self._index.match(pattern))

    def listen_pattern(self, pattern: str, callback: Callable[[str], None]) -> Callable[[], None]:
        self._listener_ids += 1
        key = self._listener_ids
        self._pattern_callbacks[key] = callback
        self._pattern_index.add(pattern, key)

        def stop() -> None:
            if self._pattern_callbacks.pop(key, None) is not None:
                self._pattern_index.remove(pattern, key)

        return stop

    def _hold(self, topic: Topic) -> None:
        self._idle.pop(topic.name, None)
        self._idle_empty.pop(topic.name, None)

    def _release(self, topic: Topic) -> None:
        if not topic.attached and not topic.listeners and self._topics.get(topic.name) is topic:
            (self._idle if topic.log.frames else self._idle_empty)[topic.name] = None

    def charge(self, nbytes: int) -> None:
        self.memory += nbytes

    def _reclaim(self, keep: Topic, amount: int, *, spare: bool = False) -> None:
        """Free at least ``amount`` bytes if possible, cheapest first, never evicting
        ``keep`` (and with ``spare``, not trimming it either)."""
        goal = self.memory - amount
        before = self.memory
        idle = self._idle_empty
        while self.memory > goal and idle and self._evict_from(idle, keep):
            pass
        # trim the largest histories first, each down towards the next largest
        heap = [
            (-t.charged, i, t)
            for i, t in enumerate(self._topics.values())
            if t.log.frames > 1 and not (spare and t is keep)
        ]
        heapq.heapify(heap)
        while self.memory > goal and heap:
            _, i, topic = heapq.heappop(heap)
            log = topic.log
            level = -heap[0][0] if heap else 0
            step = max(min(self.memory - goal, topic.charged - level), topic.charged >> 3)
            log.shed(step)
            self._settle(topic)
            topic.appended()  # GAP for subscriptions whose next message went
            if log.frames > 1:
                heapq.heappush(heap, (-topic.charged, i, topic))
        while self.memory > goal and self._evict_from(self._idle, keep):
            pass
        self.reclaimed += before - self.memory
        if before != self.memory:
            log_.info(
                "memory budget: freed %d bytes (%d held of %s)",
                before - self.memory,
                self.memory,
                self.memory_limit,
            )

    def _evict_from(self, idle: OrderedDict[str, None], keep: Topic) -> bool:
        for name in idle:
            if name == keep.name:
                continue
            del idle[name]
            self._forget(name)
            return True
        return False

    def attach(self, topic: str) -> Topic:
        t = self._topic(topic)
        t.attached += 1
        self._hold(t)
        return t

    def detach(self, topic: Topic) -> None:
        topic.attached -= 1
        self._release(topic)

    def _notify(self, topic: Topic, count: int = 0, size: int = 0) -> None:
        log = topic.log
        for callback in list(topic.listeners.values()):
            try:
                callback(log.epoch, log.head, count, size)
            except Exception:  # a listener must never break the publisher
                log_.exception("topic listener failed")

    def listen(self, topic: str, callback: Listener) -> Callable[[], None]:
        t = self._topic(topic)
        self._hold(t)
        self._listener_ids += 1
        key = self._listener_ids
        t.listeners[key] = callback

        def stop() -> None:
            if t.listeners.pop(key, None) is not None:
                self._release(t)

        return stop

    def stats(self) -> dict[str, TopicStats]:
        return {
            name: TopicStats(
                t.log.epoch,
                t.log.head,
                t.log.oldest,
                t.log.frames,
                t.log.frame_bytes,
                t.log.frames_appended,
                t.attached + len(t.listeners),
                t.log.memory,
            )
            for name, t in self._topics.items()
        }


class MemoryBroker(LocalTopics):
    """History in process memory, bounded per topic by ``history_count`` messages and
    ``history_bytes`` bytes of frames (the newest frame is always kept), and as a whole by
    ``memory_limit`` bytes. Epochs are random, so a restart changes every topic's epoch
    (clients see EPOCH_CHANGED).

    The memory budget: :attr:`memory` is a running total of every log's
    :attr:`TopicLog.held` (segments, arrays, per-topic overhead: an upper bound of
    :attr:`TopicLog.memory` that is cheap to read) plus what :meth:`charge`
    added (connections' queues), updated at each append, trim, reset and eviction, never by
    walking the topics. An append that would take it past ``memory_limit`` first reclaims a
    sixteenth of the budget more than it needs, cheapest first: unheld topics that retain
    nothing (a SUBSCRIBE alone makes such a placeholder), then the oldest history of the
    topics that hold the most (their subscribers get GAP(HISTORY_EXPIRED)), then unheld
    topics with history, least recently used first (a resume gets EPOCH_CHANGED). When that
    cannot make room, or the publish alone is more than an eighth of the budget, the append
    raises :class:`NoRoom` and nothing is stored [PW-LIMIT-7]. Reclaiming walks the topics
    once per sixteenth of the budget appended, not per append.
    """

    def claim(self, topic: str, owner: str) -> bool:
        """See :meth:`Broker.claim`. At the quota, the owner's own oldest unheld topic is
        evicted to make room, so an identity's churn costs its own topics, never another
        identity's; False when every topic it owns is held."""
        t = self._topics.get(topic)
        if t is not None and t.owner:
            return True
        owned = self._owned.get(owner)
        limit = self.max_topics_per_owner
        if owned is not None and limit is not None and len(owned) >= limit:
            for name in owned:
                held = self._topics[name]
                if name != topic and not held.attached and not held.listeners:
                    self._idle.pop(name, None)
                    self._idle_empty.pop(name, None)
                    self._forget(name)
                    break
            else:
                return False
        t = self._topic(topic)
        t.owner = owner
        self._owned.setdefault(owner, OrderedDict())[topic] = None
        return True

    def _make_room(self, topic: Topic, size: int) -> None:
        """Raise NoRoom unless a frame of ``size`` bytes fits in the memory budget, after
        reclaiming what it takes (see the class docstring)."""
        limit = self.memory_limit
        if limit is None:
            return
        if size <= limit >> 3:
            if self.memory + size + _APPEND_SLACK <= limit:
                return  # far from the limit: no need to estimate closely
            need = topic.log.append_cost(size)
            if self.memory + need <= limit:
                return
            self._reclaim(topic, self.memory + need - (limit - (limit >> 4)))
            if self.memory + need <= limit:
                return
        need = topic.log.append_cost(size)
        self.refused += 1
        raise NoRoom(
            f"memory budget of {limit} bytes reached: {self.memory} held, {need} more needed"
        )

    def append(self, topic: str, flags: int, body: bytes | memoryview) -> tuple[int, int]:
        t = self._topic(topic)
        if self.memory_limit is not None:
            self._make_room(t, codec.PUSH_OVERHEAD + len(body))
        log = t.log
        seq = log.append_push(flags, body)
        self._settle(t)
        t.appended()
        if t.listeners:
            self._notify(t, 1, codec.PUSH_OVERHEAD + len(body))
        return log.epoch, seq

    def append_many(
        self, topic: str, data: bytes | memoryview, spans: list[tuple[int, int, int]]
    ) -> tuple[int, int]:
        """For each (start, end, count): the publish body ``data[start:end]`` (no headers)
        as a MESSAGE (count 0) or a MESSAGE_BATCH of ``count`` records, in order, waking the
        topic once for all of them: what one read of a publisher's socket holds. Returns
        (epoch, first seq); the rest follow it. Raises NoRoom (nothing appended) when the
        memory budget has no room for all of them."""
        t = self._topic(topic)
        if self.memory_limit is not None:
            size = sum(end - start for start, end, _ in spans)
            self._make_room(t, size + codec.PUSH_OVERHEAD * len(spans))
        log = t.log
        first = log.head + 1
        with memoryview(data) as view:
            if t.listeners:  # they hear of every append
                for span in spans:
                    self.append_span(topic, view, span)
                return log.epoch, first
            log.append_pushes(0, view, spans)
        self._settle(t)
        t.appended()
        return log.epoch, first

    def append_batch(
        self,
        topic: str,
        flags: int,
        body: bytes | memoryview,
        records_start: int,
        record_ends: list[int] | tuple[int, ...],
    ) -> tuple[int, int]:
        t = self._topic(topic)
        if self.memory_limit is not None:
            self._make_room(t, codec.PUSH_OVERHEAD + len(body))
        log = t.log
        count = len(record_ends)
        first = log.append_push(flags, body, count)
        self._settle(t)
        t.appended()
        if t.listeners:
            self._notify(t, count, codec.PUSH_OVERHEAD + len(body))
        return log.epoch, first

    async def position(self, topic: str) -> TopicPosition:
        return self._topic(topic).position

    def position_nowait(self, topic: str) -> TopicPosition:
        return self._topic(topic).position

    async def read(
        self, topic: str, from_seq: int, *, max_count: int, max_bytes: int
    ) -> ReadResult:
        t = self._topic(topic)
        return ReadResult(t.position, read_log(t.log, from_seq, max_count, max_bytes))

    async def reset_topic(self, topic: str) -> int:
        t = self._topic(topic)
        t.log = self._log(t.log.epoch)
        self._settle(t)
        if self._idle.pop(topic, 0) is None:  # unheld, and now retains nothing
            self._idle_empty[topic] = None
        t.fire_all_watches()
        self._notify(t)
        return t.log.epoch


_BATCH = int(FrameType.MESSAGE_BATCH)
#: More than an append can add besides its frame: a fresh segment (the arrays' growth is
#: within what TopicLog.held already counts for them). Appends further than this below the
#: memory budget skip the closer estimate (TopicLog.append_cost).
_APPEND_SLACK = 2 * MAX_SEGMENT
