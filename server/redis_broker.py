"""A broker whose history lives in Redis Streams, shared by any number of server nodes.

Theory of operation
-------------------
Redis is the single source of truth for every topic; each node keeps the in-memory
:class:`~pushwire.protocol.log.TopicLog` of :mod:`pushwire.server.broker` as a *local
cache*, so that sessions fan out exactly as they do over the in-memory broker (they read
``topic.log``, park on ``topic.wait``, register watches): per-node fan-out cost does not
change, only where a sequence number comes from.

Per topic ``T`` (``{T}`` is a hash tag, so both keys live in one Cluster slot)::

    pw:{T}:m   hash    epoch (decimal u63, never 0), seq (last assigned sequence)
    pw:{T}:s   stream  one entry per push frame, ID "<first seq>-0",
                       fields e (epoch), f (flags), n (records; 0: a MESSAGE), b (body)

``b`` is the PUBLISH body after request_id; the push frame is a pure function of
(flags, body, epoch, seq) (SPEC.md §7.8), so every node builds byte-identical frames from
an entry and no node re-encodes anything per subscriber.

*Publishing* is one Lua script (:data:`PUBLISH_SCRIPT`): it reads the topic's epoch and
sequence, checks that the history is still there (see below), then XADDs one entry per
frame with the explicit ID ``first-0`` and ``MAXLEN`` (the history bound), and stores the
new sequence. Scripts run atomically, so sequences are contiguous across nodes and a batch
stays one entry. The PUBACK is sent after the script returned: Redis has the message (how
durably depends on its persistence, see SPEC.md §15).

*Losing history* shows as a new epoch, never as a silent gap. Both scripts take what the
calling node last saw (its cached epoch and head) and start a new epoch (random, non-zero,
stream deleted) when the hash is missing (FLUSHALL, eviction, a restart without
persistence), when the stream is missing although sequences were assigned, or when the
hash is at the node's epoch but *behind* its head (a restart that lost the last writes, as
AOF ``everysec`` may). Subscribers then get what a topic reset gives them: the new epoch
from sequence 1, and EPOCH_CHANGED when they resume.

*Reading*: one task per topic per node follows the stream with ``XREAD BLOCK`` from the
local head and appends what it reads to the local log, waking the parked writers once per
read (not per entry, not per subscriber). On first use of a topic the node loads what
Redis retains (XRANGE) into a new local log; a frame that does not follow the local head
(the reader fell behind a trim) starts the local log over at that frame, so subscribers
behind it get GAP. Between reads the reader asks for the epoch (:data:`ENSURE_SCRIPT`).

*Topic names* for pattern subscriptions (SPEC.md §6.7): every node adds the names of the
topics it loads to a set, ``pw:{#}:names``, and announces a name that was not there yet on
a stream, ``pw:{#}:new`` (entries ``i`` = the set's size after the add, ``t`` = the name;
``#`` cannot be part of a topic name, so these keys never meet a topic's). One task per
node reads the set once, then follows the stream; an ``i`` that does not follow the last
one read (a trim, or Redis lost data) makes it read the set again. Names learned so feed
the same :class:`~pushwire.server.topic_index.TopicIndex` as the in-memory broker's; a name
a live pattern matches is loaded here, and the patterns hear of it once its local log is
loaded, so a pattern subscriber starts at sequence 1 of the topic's real epoch.

*The local cache* is bounded like the in-memory broker's history (per topic, ``max_topics``
and the memory budget: :class:`~pushwire.server.broker.LocalTopics`), but what it trims or
evicts stays in Redis: a topic evicted here keeps its epoch, and a SUBSCRIBE or resume whose
position is older than the cache holds, but still in the stream, first extends the cache
back to it from Redis (XRANGE; under a memory budget by at most a quarter of the budget,
the rest being a GAP). The extended log keeps its larger bounds only until as many bytes
have been appended as it gained. A live subscriber that falls behind the cache is a slow
consumer, as on one server: the session reads only the local log.

*Redis unreachable*: publishes fail fast with :class:`BrokerUnavailable` (the session
refuses them with the temporary BROKER_UNAVAILABLE); readers retry with exponential
backoff (:data:`BACKOFF_MIN` .. :data:`BACKOFF_MAX`) and check the epoch when Redis is
back; subscribers stay connected and resolve against the local cache meanwhile.

*Connecting* (:func:`open_redis_clients`): one Redis, the primary that Sentinels name
(coredis finds the new one after a failover), or a Redis Cluster; every script touches the
keys of one hash tag, so each runs on one shard.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import coredis
import coredis.exceptions
import trio
from coredis.connection import TCPLocation

from pushwire.protocol.layouts import Outcome, SinceKind
from pushwire.protocol.log import TopicLog, segment_size_for
from pushwire.server.broker import (
    BrokerUnavailable,
    LocalTopics,
    ReadResult,
    Resolution,
    Topic,
    TopicPosition,
    _new_epoch,
    read_log,
    resolve_since,
)

__all__ = [
    "BrokerUnavailable",
    "RedisBroker",
    "open_redis_broker",
    "open_redis_clients",
    "redis_url_problem",
]

log = logging.getLogger("pushwire.server.redis")

#: Reconnect backoff: doubles from 50 ms up to 5 s (a Sentinel failover takes seconds).
BACKOFF_MIN = 0.05
BACKOFF_MAX = 5.0
#: XREAD BLOCK timeout: how often an idle topic's reader checks its epoch.
BLOCK_MS = 500
#: Connections of the readers' pool: one per topic this node follows (a blocking XREAD
#: holds its connection), so this bounds the topics a node can follow at once.
READER_CONNECTIONS = 10_000
#: Seconds to open a connection to Redis (or a Sentinel) before it counts as unreachable.
CONNECT_TIMEOUT = 2.0
#: Entries per XREAD / XRANGE round trip.
READ_COUNT = 1024
#: How long a SUBSCRIBE waits for the local cache to reach the head Redis reported.
CATCH_UP_TIMEOUT = 2.0

#: KEYS: hash, stream. ARGV: new epoch, known epoch, known head, maxlen.
_CHECK = """
local meta, stream = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch')
local seq = tonumber(redis.call('HGET', meta, 'seq') or '0')
if (not epoch)
   or (seq > 0 and redis.call('EXISTS', stream) == 0)
   or (epoch == ARGV[2] and seq < tonumber(ARGV[3])) then
  epoch = ARGV[1]
  seq = 0
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'epoch', epoch, 'seq', '0')
end
"""

#: Returns {epoch, seq}: the topic's epoch (created or replaced as :data:`_CHECK` says) and
#: its last sequence.
ENSURE_SCRIPT = _CHECK + "return {epoch, string.format('%d', seq)}\n"

#: ARGV after the four of :data:`_CHECK`: (flags, records, body) per frame. Returns
#: {epoch, first seq}.
PUBLISH_SCRIPT = (
    _CHECK
    + """
local first = seq + 1
for i = 5, #ARGV, 3 do
  local n = tonumber(ARGV[i + 1])
  redis.call('XADD', stream, 'MAXLEN', ARGV[4], string.format('%d-0', seq + 1),
             'e', epoch, 'f', ARGV[i], 'n', ARGV[i + 1], 'b', ARGV[i + 2])
  seq = seq + math.max(n, 1)
end
redis.call('HSET', meta, 'seq', string.format('%d', seq))
return {epoch, string.format('%d', first)}
"""
)

#: KEYS: the set of names, the stream of new names. ARGV: name, approximate stream length.
ANNOUNCE_SCRIPT = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
             'i', redis.call('SCARD', KEYS[1]), 't', ARGV[1])
end
return 0
"""
#: Entries the stream of new names keeps, about: a node that falls further behind reads
#: the set again.
NAMES_STREAM_LENGTH = 100_000

_ERRORS = (
    coredis.exceptions.ConnectionError,
    OSError,  # TimeoutError among them
    trio.TooSlowError,
)


class _RedisTopic(Topic):
    __slots__ = ("announced", "loaded", "moved", "pinned", "reader")

    def __init__(self, name: str, log: TopicLog) -> None:
        super().__init__(name, log)
        self.loaded = False
        #: the name is in Redis' set and the patterns here have heard of the topic
        self.announced = False
        #: held until its first load, because a pattern wants it (see _learned)
        self.pinned = False
        self.reader: trio.CancelScope | None = None
        self.moved = trio.Event()  # set and replaced at each change of the local log


class RedisBroker(LocalTopics):
    """Topics in Redis Streams (see the module docstring); make it with
    :func:`open_redis_broker`, which owns the client and the readers' tasks."""

    remote = True

    def __init__(
        self,
        client: coredis.Redis[bytes],
        nursery: trio.Nursery,
        *,
        readers: coredis.Redis[bytes] | None = None,
        history_count: int = 10_000,
        history_bytes: int = 16 << 20,
        max_topics: int = 100_000,
        memory_limit: int | None = None,
        prefix: str = "pw:",
    ) -> None:
        super().__init__(
            history_count=max(1, history_count),
            history_bytes=max(1, history_bytes),
            max_topics=max_topics,
            memory_limit=memory_limit,
        )
        self.client = client
        #: The client of the topics' blocking readers: each XREAD BLOCK holds a connection
        #: of its pool for its duration, so they get a pool of their own and can never take
        #: every connection from the publishes.
        self.readers = readers or client
        self.prefix = prefix
        self._nursery = nursery
        self._topics: dict[str, _RedisTopic] = {}  # type: ignore[assignment]
        self._publish = client.register_script(PUBLISH_SCRIPT)
        self._ensure = client.register_script(ENSURE_SCRIPT)
        self._announce = client.register_script(ANNOUNCE_SCRIPT)
        #: False after a failed round trip, True after a good one (for stats and logs).
        self.available = True
        #: Set once the names Redis knows have been read (see open_redis_broker).
        self.names_read = trio.Event()
        nursery.start_soon(self._follow_names)

    # -- keys and local topics ---------------------------------------------------------------

    def _keys(self, topic: str) -> list[str]:
        base = f"{self.prefix}{{{topic}}}"
        return [base + ":m", base + ":s"]

    def _names_keys(self) -> list[str]:
        base = f"{self.prefix}{{#}}"
        return [base + ":names", base + ":new"]

    def _new_log(self, epoch: int, first_seq: int = 1) -> TopicLog:
        return TopicLog(
            epoch,
            max_count=self.history_count,
            max_bytes=self.history_bytes,
            first_seq=max(1, first_seq),
        )

    def _new_topic(self, name: str) -> Topic:
        # a placeholder until the reader has loaded what Redis holds
        t = _RedisTopic(name, self._new_log(_new_epoch()))
        scope = t.reader = trio.CancelScope()
        self._nursery.start_soon(self._follow, t, scope)
        return t

    def _named(self, name: str) -> None:
        """Nothing yet: the index learns the name when the topic is loaded (or announced),
        and the patterns hear of it once its log is loaded."""

    def _dropped(self, topic: Topic) -> None:
        """The local cache of an evicted topic goes, with its reader; the topic itself
        lives on in Redis, and so does its name in the index."""
        assert isinstance(topic, _RedisTopic)
        if topic.reader is not None:
            topic.reader.cancel()

    def _learned(self, name: str) -> None:
        """A topic name read from Redis' set or stream of names. A name new here that a live
        pattern matches is loaded (and held until then, so eviction cannot lose it): its
        first load tells the patterns, which follow it from sequence 1 [PW-SUB-29]."""
        size = len(self._index)
        self._index.add(name)
        if len(self._index) == size or name in self._topics:
            return
        if any(True for _ in self._pattern_index.match(name)):
            t = self.attach(name)
            assert isinstance(t, _RedisTopic)
            t.pinned = True

    def _moved(self, t: _RedisTopic) -> None:
        t.moved.set()
        t.moved = trio.Event()

    def _replace(self, t: _RedisTopic, new: TopicLog, *, spare: bool = False) -> None:
        """The local log starts over (new epoch, a jump past a trim, or extended back)."""
        epoch_changed = new.epoch != t.log.epoch
        t.log = new
        t.plan = None
        t.fire_all_watches()
        if epoch_changed:
            self._notify(t)
        self._cached(t, spare=spare)
        self._moved(t)

    def _cached(self, t: _RedisTopic, *, spare: bool = False) -> None:
        """After the local log of ``t`` changed: count it in the memory budget, and bring
        the cache back within the budget if it went over, trimming or evicting cache only
        (Redis keeps the messages, see :meth:`_backfill`); with ``spare``, the other
        topics' caches first."""
        if self._topics.get(t.name) is not t:
            return
        self._settle(t)
        limit = self.memory_limit
        if limit is not None and self.memory > limit:
            goal = limit - (limit >> 4)
            if spare:
                self._reclaim(t, self.memory - goal, spare=True)
            if self.memory > limit:
                self._reclaim(t, self.memory - goal)

    # -- Redis round trips -------------------------------------------------------------------

    async def _ensure_epoch(self, t: _RedisTopic) -> tuple[int, int]:
        log_ = t.log
        known_epoch = str(log_.epoch) if t.loaded else "0"
        reply: Any = await self._ensure(
            keys=self._keys(t.name),
            args=[str(_new_epoch(log_.epoch)), known_epoch, str(log_.head), "1"],
        )
        return int(reply[0]), int(reply[1])

    async def _load(self, t: _RedisTopic) -> None:
        """Replace the local log with what Redis retains of the current epoch; the first
        time, add the topic's name to Redis' set of names and tell the patterns here."""
        epoch, head = await self._ensure_epoch(t)
        if not t.announced:
            await self._announce(keys=self._names_keys(), args=[t.name, str(NAMES_STREAM_LENGTH)])
        stream = self._keys(t.name)[1]
        entries: list[Any] = []
        start = "-"
        while True:
            chunk = await self.client.xrange(stream, start, "+", count=READ_COUNT)
            entries.extend(chunk)
            if len(chunk) < READ_COUNT:
                break
            start = "(" + str(_first_seq(chunk[-1])) + "-0"
        first = _first_seq(entries[0]) if entries else head + 1
        new = self._new_log(epoch, first)
        for entry in entries:
            fields = entry.field_values
            if int(fields[b"e"]) != epoch or _first_seq(entry) != new.head + 1:
                break  # written under another epoch after our look: the reader reloads
            new.append_push(int(fields[b"f"]), fields[b"b"], int(fields[b"n"]))
        t.loaded = True
        self._replace(t, new)
        if not t.announced:
            t.announced = True
            self._index.add(t.name)
            if len(self._pattern_index):
                self._created(t.name)
            if t.pinned:
                t.pinned = False
                self.detach(t)

    def _apply(self, t: _RedisTopic, entries: tuple[Any, ...]) -> bool:
        """Append entries read from the stream to the local log; False when the log must be
        reloaded (another epoch)."""
        appended = 0
        count = size = 0
        for entry in entries:
            fields = entry.field_values
            log_ = t.log
            if int(fields[b"e"]) != log_.epoch:
                return False
            first = _first_seq(entry)
            if first <= log_.head:
                continue
            if first > log_.head + 1:  # we fell behind a trim: continue past it (GAP)
                self._replace(t, self._new_log(log_.epoch, first))
                log_ = t.log
            n = int(fields[b"n"])
            body = fields[b"b"]
            log_.append_push(int(fields[b"f"]), body, n)
            appended += 1
            count += max(n, 1)
            size += len(body)
        if appended:
            log_ = t.log
            if log_.max_bytes > self.history_bytes or log_.max_count > self.history_count:
                # an extended log (see _backfill) shrinks back as new messages come
                log_.max_bytes = max(self.history_bytes, log_.max_bytes - size)
                log_.max_count = max(self.history_count, log_.max_count - count)
            t.appended()
            if t.listeners:
                self._notify(t, count, size)
            self._cached(t)
            self._moved(t)
        return True

    async def _follow(self, t: _RedisTopic, scope: trio.CancelScope) -> None:
        """The topic's one reader on this node: load, then follow the stream."""
        backoff = BACKOFF_MIN
        stream = self._keys(t.name)[1]
        with scope:
            while True:
                try:
                    if not t.loaded:
                        await self._load(t)
                    reply = await self.readers.xread(
                        {stream: f"{t.log.head}-0"}, count=READ_COUNT, block=BLOCK_MS
                    )
                    entries = reply.get(stream.encode(), ()) if reply else ()
                    if not entries or not self._apply(t, entries):
                        epoch, head = await self._ensure_epoch(t)
                        if epoch != t.log.epoch or head < t.log.head:
                            t.loaded = False
                    self._reachable()
                    backoff = BACKOFF_MIN
                except _ERRORS as exc:
                    self._unreachable(exc)
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)

    async def _follow_names(self) -> None:
        """The node's one reader of topic names (see the module docstring)."""
        names, new = self._names_keys()
        backoff = BACKOFF_MIN
        last_id: str | None = None  # None: read the set (again)
        last_i = 0
        while True:
            try:
                if last_id is None:
                    # the stream's end first, then the set: a name added in between is in
                    # both, none is in neither
                    tail = await self.client.xrevrange(new, "+", "-", count=1)
                    last_id = _text(tail[0].identifier) if tail else "0-0"
                    last_i = int(tail[0].field_values[b"i"]) if tail else 0
                    async for name in self.client.sscan_iter(names, count=READ_COUNT):
                        self._learned(_text(name))
                    self.names_read.set()
                reply = await self.readers.xread({new: last_id}, count=READ_COUNT, block=BLOCK_MS)
                for entry in reply.get(new.encode(), ()) if reply else ():
                    fields = entry.field_values
                    i = int(fields[b"i"])
                    last_id = _text(entry.identifier)
                    self._learned(_text(fields[b"t"]))
                    if i != last_i + 1:
                        last_id = None  # some were missed: read the set again
                        break
                    last_i = i
                self._reachable()
                backoff = BACKOFF_MIN
            except _ERRORS as exc:
                self._unreachable(exc)
                last_id = None
                await trio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _reachable(self) -> None:
        if not self.available:
            log.warning("Redis reachable again")
        self.available = True

    def _unreachable(self, exc: BaseException) -> None:
        if self.available:
            log.warning("Redis unreachable (%s); retrying with backoff", str(exc))
        self.available = False

    async def _run(self, t: _RedisTopic, frames: list[tuple[int, int, bytes]]) -> tuple[int, int]:
        args: list[str | bytes | int] = [
            str(_new_epoch(t.log.epoch)),
            str(t.log.epoch) if t.loaded else "0",
            str(t.log.head),
            str(self.history_count),
        ]
        for flags, count, body in frames:
            args += [str(flags), str(count), body]
        try:
            reply: Any = await self._publish(keys=self._keys(t.name), args=args)
        except _ERRORS as exc:
            self.available = False
            raise BrokerUnavailable(f"Redis unreachable: {exc}") from exc
        self.available = True
        return int(reply[0]), int(reply[1])

    def _may_have_older(self, t: _RedisTopic) -> bool:
        """Whether Redis may retain messages older than the local cache: the stream keeps
        up to history_count entries (MAXLEN), the cache may keep fewer (its byte bound, the
        memory budget, a jump past a trim)."""
        log_ = t.log
        return t.loaded and log_.oldest > 1 and log_.frames < self.history_count

    async def _backfill(self, t: _RedisTopic, want: int) -> None:
        """Extend the local log back towards the entry holding ``want`` (``want`` <= 1: the
        oldest Redis retains), from the stream, newest first and, under a memory budget, by
        at most a quarter of it (the other topics' caches give way first). Leaves the log as
        it is when the entries read do not join it (another epoch meanwhile, or the stream
        trimmed past them)."""
        stream = self._keys(t.name)[1]
        cap = None if self.memory_limit is None else self.memory_limit >> 2
        for _ in range(3):  # again if the cache moved while we read
            log_ = t.log
            end = log_.oldest
            if want >= end or end <= 1:
                return
            entries: list[Any] = []  # newest first
            size = 0
            top = str(end - 1)
            full = False
            while not full:
                chunk = await self.client.xrevrange(stream, top, "-", count=READ_COUNT)
                for entry in chunk:
                    size += len(entry.field_values[b"b"])
                    if cap is not None and size > cap:
                        full = True
                        break
                    entries.append(entry)
                    if _first_seq(entry) <= want:
                        full = True
                        break
                if len(chunk) < READ_COUNT:
                    break
                top = "(" + _text(chunk[-1].identifier)
            if t.log is not log_ or log_.oldest != end:
                continue
            if not entries:
                return
            entries.reverse()
            new = TopicLog(
                log_.epoch,
                max_count=1 << 62,
                max_bytes=1 << 62,
                segment_size=segment_size_for(self.history_bytes),
                first_seq=_first_seq(entries[0]),
            )
            for entry in entries:
                fields = entry.field_values
                if int(fields[b"e"]) != log_.epoch or _first_seq(entry) != new.head + 1:
                    return
                new.append_push(int(fields[b"f"]), fields[b"b"], int(fields[b"n"]))
            if new.head + 1 != end:
                return
            seq = end
            while seq <= log_.head:
                _, n, view = log_.frame(seq)
                new.append(bytes(view), n)
                seq += n
            new.max_count = max(self.history_count, new.head - new.oldest + 1)
            new.max_bytes = max(self.history_bytes, new.frame_bytes)
            self._replace(t, new, spare=True)
            return

    # -- the portable interface --------------------------------------------------------------

    async def publish(self, topic: str, flags: int, body: bytes) -> tuple[int, int]:
        return await self._run(self._redis_topic(topic), [(flags, 0, bytes(body))])

    async def publish_batch(
        self, topic: str, flags: int, body: bytes, records_start: int, record_ends: list[int]
    ) -> tuple[int, int]:
        return await self._run(self._redis_topic(topic), [(flags, len(record_ends), bytes(body))])

    async def publish_many(
        self, topic: str, data: bytes | memoryview, spans: list[tuple[int, int, int]]
    ) -> tuple[int, int]:
        """A run of publishes in one script call: one round trip, one atomic append."""
        with memoryview(data) as view:
            frames = [(0, count, bytes(view[start:end])) for start, end, count in spans]
        return await self._run(self._redis_topic(topic), frames)

    def append(self, topic: str, flags: int, body: bytes | memoryview) -> tuple[int, int]:
        raise RuntimeError("RedisBroker stores asynchronously: use publish()")

    def append_batch(
        self,
        topic: str,
        flags: int,
        body: bytes | memoryview,
        records_start: int,
        record_ends: list[int] | tuple[int, ...],
    ) -> tuple[int, int]:
        raise RuntimeError("RedisBroker stores asynchronously: use publish_batch()")

    def _redis_topic(self, name: str) -> _RedisTopic:
        t = self._topic(name)
        assert isinstance(t, _RedisTopic)
        return t

    async def _synced(self, topic: str) -> _RedisTopic:
        """The topic with its local log at least as far as Redis was when asked; the local
        cache as it is when Redis cannot be reached (or does not answer in time)."""
        t = self._redis_topic(topic)
        with trio.move_on_after(CATCH_UP_TIMEOUT):
            try:
                epoch, head = await self._ensure_epoch(t)
            except _ERRORS:
                return t
            while not t.loaded or t.log.epoch != epoch or t.log.head < head:
                await t.moved.wait()
        return t

    async def position(self, topic: str) -> TopicPosition:
        return (await self._synced(topic)).position

    async def resolve(
        self,
        topic: str,
        since_kind: int,
        since_epoch: int = 0,
        since_seq: int = 0,
        since_count: int = 0,
    ) -> Resolution:
        """As :func:`resolve_since` on the topic as Redis holds it: a start before the local
        cache (a GAP, EPOCH_CHANGED or OLDEST answered from the cache alone) first extends
        the cache from Redis, so only what Redis no longer has is reported missing."""
        t = await self._synced(topic)
        res = resolve_since(t.position, since_kind, since_epoch, since_seq, since_count)
        if res.outcome == Outcome.GAP:
            want = res.gap_first
        elif res.outcome == Outcome.EPOCH_CHANGED or since_kind == SinceKind.OLDEST:
            want = 1
        else:
            return res
        if self._may_have_older(t):
            with trio.move_on_after(CATCH_UP_TIMEOUT):
                try:
                    await self._backfill(t, want)
                except _ERRORS:
                    pass  # answered from the cache
            res = resolve_since(t.position, since_kind, since_epoch, since_seq, since_count)
        return res

    async def read(
        self, topic: str, from_seq: int, *, max_count: int, max_bytes: int
    ) -> ReadResult:
        t = await self._synced(topic)
        return ReadResult(t.position, read_log(t.log, from_seq, max_count, max_bytes))

    async def reset_topic(self, topic: str) -> int:
        """A new epoch in Redis (every node's reader follows)."""
        t = self._topic(topic)
        meta, stream = self._keys(topic)
        epoch = _new_epoch(t.log.epoch)
        try:
            await self.client.delete([stream])
            await self.client.hset(meta, {"epoch": str(epoch), "seq": "0"})
        except _ERRORS as exc:
            raise BrokerUnavailable(f"Redis unreachable: {exc}") from exc
        return epoch


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _first_seq(entry: Any) -> int:
    return int(entry.identifier.split(b"-", 1)[0])


@asynccontextmanager
async def open_redis_broker(
    url: str,
    *,
    history_count: int = 10_000,
    history_bytes: int = 16 << 20,
    max_topics: int = 100_000,
    memory_limit: int | None = None,
) -> AsyncIterator[RedisBroker]:
    """A :class:`RedisBroker` on ``url`` (see :func:`open_redis_clients`) for the duration
    of the block. Waits at most CATCH_UP_TIMEOUT for Redis (to learn the existing topic
    names, so that a pattern subscription on a node just started finds them): a node starts
    and serves subscribers while Redis is down, and publishes are refused until it is up."""
    async with open_redis_clients(url) as (client, readers), trio.open_nursery() as nursery:
        broker = RedisBroker(
            client,
            nursery,
            readers=readers,
            history_count=history_count,
            history_bytes=history_bytes,
            max_topics=max_topics,
            memory_limit=memory_limit,
        )
        with trio.move_on_after(CATCH_UP_TIMEOUT):
            await broker.names_read.wait()
        try:
            yield broker
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_redis_clients(
    url: str,
) -> AsyncIterator[tuple[coredis.Redis[bytes], coredis.Redis[bytes]]]:
    """The broker's two clients (publishes and round trips; blocking reads) for ``url``:

    - ``redis://HOST:PORT/DB``, ``rediss://`` for TLS, ``unix://PATH``: one Redis;
    - ``redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]``: the primary that these
      Sentinels name for SERVICE, found again after a failover;
    - ``redis+cluster://HOST:PORT[,HOST:PORT...]``: a Redis Cluster, from these startup
      nodes (every script touches one topic's keys, which share a slot).

    Raises ValueError for a URL of another form."""
    scheme, _, rest = url.partition("://")
    if scheme == "redis+sentinel":
        hosts, service, db = _sentinel_parts(rest)
        sentinels = [TCPLocation(host, port) for host, port in hosts]
        async with coredis.Sentinel(sentinels, decode_responses=False) as sentinel:
            client = sentinel.primary_for(service, db=db, connect_timeout=CONNECT_TIMEOUT)
            readers = sentinel.primary_for(
                service, db=db, connect_timeout=CONNECT_TIMEOUT, max_connections=READER_CONNECTIONS
            )
            async with client, readers:
                yield client, readers
    elif scheme == "redis+cluster":
        nodes = [TCPLocation(host, port) for host, port in _hosts(rest.rstrip("/"))]
        cluster: Any = coredis.RedisCluster(
            startup_nodes=nodes, decode_responses=False, connect_timeout=CONNECT_TIMEOUT
        )
        cluster_readers: Any = coredis.RedisCluster(
            startup_nodes=nodes,
            decode_responses=False,
            connect_timeout=CONNECT_TIMEOUT,
            max_connections=READER_CONNECTIONS,
        )
        async with cluster, cluster_readers:
            yield cluster, cluster_readers
    else:
        single: coredis.Redis[bytes] = coredis.Redis.from_url(
            url, decode_responses=False, connect_timeout=CONNECT_TIMEOUT
        )
        single_readers: coredis.Redis[bytes] = coredis.Redis.from_url(
            url,
            decode_responses=False,
            connect_timeout=CONNECT_TIMEOUT,
            max_connections=READER_CONNECTIONS,
        )
        async with single, single_readers:
            yield single, single_readers


def redis_url_problem(url: str) -> str | None:
    """Why :func:`open_redis_clients` would refuse ``url``, or None."""
    scheme, sep, rest = url.partition("://")
    try:
        if scheme == "redis+sentinel":
            _sentinel_parts(rest)
        elif scheme == "redis+cluster":
            _hosts(rest.rstrip("/"))
        elif not sep or scheme not in ("redis", "rediss", "unix"):
            return (
                f"{url!r} is not redis://, rediss://, unix://, redis+sentinel:// "
                "or redis+cluster://"
            )
    except ValueError as exc:
        return str(exc)
    return None


def _hosts(text: str) -> list[tuple[str, int]]:
    """``HOST:PORT[,HOST:PORT...]`` (a port is required: Sentinels and Cluster nodes have
    no common default)."""
    out = []
    for item in text.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{item!r} is not HOST:PORT")
        out.append((host.strip("[]"), int(port)))
    return out


def _sentinel_parts(rest: str) -> tuple[list[tuple[str, int]], str, int]:
    hosts, _, path = rest.partition("/")
    parts = [part for part in path.split("/") if part]
    if not 1 <= len(parts) <= 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError("redis+sentinel:// needs HOST:PORT[,HOST:PORT...]/SERVICE[/DB]")
    return _hosts(hosts), parts[0], int(parts[1]) if len(parts) == 2 else 0
