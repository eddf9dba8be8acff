"""One client connection on trio: a reader and a writer around a ServerConnection.

Theory of operation
-------------------
Two tasks share one nursery per connection:

* the **reader** reads at most :data:`READ_SIZE` bytes at a time, feeds the sans-I/O
  :class:`~pushwire.protocol.server_conn.ServerConnection` and acts on its events (auth,
  broker calls). Replies go to the *control queue*. Before each event it waits until the
  control queue is below ``outbound_queue_bytes``: a client that does not read its replies
  stops being read (TCP pushes back on it), and the queue stays bounded.
* the **writer** is the only task that writes to the stream. Each round it takes the whole
  control queue, then *pulls* pushes for every subscription that has credit, straight from
  the topic's log -- :func:`~pushwire.protocol.delivery.plan_round` picks the range, which
  is one ``memoryview`` slice of segments every subscriber shares -- up to the outbound
  budget, and sends the round (joined into one ``send_all`` when small). When a
  subscription has caught up and has credit it parks on its topic, which wakes it once at
  the next append; without credit it parks nowhere, and CREDIT wakes it. A wake-up with no
  writer running plans and writes that round itself; the wake-ups caused by one read of a
  publisher are collected and each woken connection writes once after the read's appends.
  Control frames queued before a round go out before that round's pushes, so SUBSCRIBED
  precedes the first MESSAGE and every MESSAGE precedes UNSUBSCRIBED.
* time: the server's one timer task (:mod:`pushwire.server.timers`) calls
  :meth:`Session.on_timer` at the connection's next deadline (handshake, heartbeat, frame,
  drain), which hands the time to the connection; no task or timer per connection.

Backpressure, in three named places: TCP (``send_all`` blocks the writer), the outbound
budget (``outbound_queue_bytes``: the control queue plus one round of pulled pushes), and
the broker's history (a subscriber that cannot keep up only lags there; the slow-consumer
policy decides when it has lagged too far). A stalled subscriber never blocks a publisher.

Ending: every way out goes through :meth:`Session.finish`: the writer flushes what is
queued (ERROR last), shuts its write side, and the reader discards input until EOF or
``close_timeout`` (so the ERROR is not destroyed by a TCP reset).
"""

from __future__ import annotations

import contextvars
import functools
import logging
import math
import operator
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import trio

from pushwire.protocol import delivery
from pushwire.protocol import server_conn as sc
from pushwire.protocol.errors import ErrorCode, RemoteProtocolError
from pushwire.protocol.events import Event, Sentinel
from pushwire.protocol.layouts import FrameType, Outcome, SinceKind, SlowConsumerPolicy
from pushwire.protocol.log import TopicLog
from pushwire.server.admission import Admission
from pushwire.server.auth import Identity, Permissions
from pushwire.server.broker import Broker, BrokerUnavailable, InvalidPosition, NoRoom, Topic
from pushwire.server.metrics import Counters
from pushwire.server.timers import Timers

log = logging.getLogger("pushwire.server")

#: Bytes asked of the socket per receive: the connection buffers at most one frame plus this.
#: Publishing on ``$sys/reset/<topic>`` resets ``<topic>`` (SPEC.md §9.3).
RESET_PREFIX = "$sys/reset/"
READ_SIZE = 64 * 1024


class SessionConfig(Protocol):
    """The settings a session reads (:class:`~pushwire.server.serve.ServerConfig` has them)."""

    @property
    def close_timeout(self) -> float: ...
    @property
    def drain_timeout(self) -> float: ...
    @property
    def idle_timeout(self) -> float: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def max_lag(self) -> int: ...
    @property
    def outbound_queue_bytes(self) -> int: ...
    @property
    def server_name(self) -> str: ...
    @property
    def slow_consumer_policy(self) -> SlowConsumerPolicy: ...


class ConnectionFactory(Protocol):
    """Makes the sans-I/O machine of one connection: ``ServerConnection`` itself, or a
    subclass that observes or changes what the protocol does."""

    def __call__(self, limits: sc.ServerLimits, *, now: float) -> sc.ServerConnection: ...


class SessionHost(Protocol):
    """What a session needs from the server that runs it (:class:`~pushwire.server.serve.
    Server` is one). Declared here so that the session does not import the server, which
    imports the session."""

    @property
    def config(self) -> SessionConfig: ...
    @property
    def limits(self) -> sc.ServerLimits: ...
    @property
    def broker(self) -> Broker: ...
    @property
    def admission(self) -> Admission: ...
    @property
    def counters(self) -> Counters: ...
    @property
    def shutting_down(self) -> bool: ...
    @property
    def connection_factory(self) -> ConnectionFactory: ...
    @property
    def timers(self) -> Timers: ...
    def authenticate(self, token: bytes) -> Identity | None: ...
    def allowed(self, permissions: Permissions | None, action: str, topic: str) -> bool: ...
    def log_refusal(
        self, session: Session, code: ErrorCode, what: str, topic: str = "", reason: str = ""
    ) -> None: ...


#: A round whose pieces add up to at most this many bytes is joined into one ``send_all``
#: (one syscall); larger rounds send each shared slice as it is, without a copy.
JOIN_LIMIT = 16 * 1024
#: What one connection holds whatever it does, charged to the broker's memory budget while it
#: runs (its queued replies are charged as they come and go): the session, its connection
#: state machine and decoder, and the socket's user-space buffers: an estimate with room to
#: spare, not a measurement.
CONNECTION_OVERHEAD = 32 * 1024
#: Topics whose publish permission a connection remembers (cleared when full: a client that
#: publishes on ever new topics pays the check each time, nothing more).
_MAY_CACHE = 1024


#: One publish of a read, as ``ServerConnection.take_publishes`` gives it: (request_id,
#: topic, body start, body end, record count or 0).
Span = tuple[int, str, int, int, int]


class _Woken:
    """The subscriptions the appends of one publisher's read woke, by connection, so that
    each connection writes once for the whole read, not once per topic the read touched.

    A read holds up to :data:`READ_SIZE` bytes of publishes, often on many topics; a
    connection that follows many of them (one exact subscription per topic, or a pattern)
    would otherwise plan and write one small round per topic, one system call per delivered
    message. Set in :data:`_WOKEN` by the appending task for the length of the read's
    appends; the wake-ups run in that task, so they find it there.

    Only a read on two topics or more sets it: on one topic each connection is woken once
    per read anyway, and writes at once. Deferring then costs a dictionary per woken
    connection, held until the read's last append, and for a fan-out to ten thousand
    connections those ten thousand survivors are what starts a full collection."""

    __slots__ = ("sessions",)

    def __init__(self) -> None:
        self.sessions: dict[Session, dict[Cursor, None]] = {}

    def add(self, session: Session, cursor: Cursor) -> None:
        self.sessions.setdefault(session, {})[cursor] = None

    def flush(self) -> None:
        for session, cursors in self.sessions.items():
            session._write_woken(list(cursors))
        self.sessions.clear()


_WOKEN: contextvars.ContextVar[_Woken | None] = contextvars.ContextVar(
    "pushwire_woken", default=None
)


_TOPIC, _START, _END, _COUNT = (operator.itemgetter(i) for i in range(1, 5))


def _one_topic(spans: list[Span]) -> bool:
    """Whether every publish of a read is on one topic (the common case, counted in C)."""
    first = spans[0][1]
    return spans[-1][1] == first and list(map(_TOPIC, spans)).count(first) == len(spans)


def _topic_runs(spans: list[Span]) -> Iterator[tuple[str, list[Span]]]:
    """The spans grouped into runs of consecutive publishes on one topic, in order."""
    if _one_topic(spans):
        yield spans[0][1], spans
        return
    i, n = 0, len(spans)
    while i < n:
        topic = spans[i][1]
        j = i + 1
        while j < n and spans[j][1] == topic:
            j += 1
        yield topic, spans[i:j]
        i = j


def _nothing() -> None:
    pass


@dataclass(slots=True, eq=False)
class Cursor:
    """Where one subscription reads the topic's log: everything before ``next_seq`` of
    ``epoch`` was sent or skipped."""

    sub_id: int
    topic: str
    epoch: int
    next_seq: int
    handle: Topic | None = None
    #: One topic of a pattern subscription (§6.7): pushes name the topic for its credit,
    #: and skips and restarts go out as SUBSCRIBED(TOPIC_STATUS), not GAP.
    pattern: bool = False
    active: bool = True
    parked: bool = False  # a wake-up waits on the topic (caught up, with credit)
    watch_key: int = -1  # head sequence whose passing makes us judge the lag (DISCONNECT)
    #: The topic's head when the subscription was made (0 after an epoch change): lag is
    #: counted from here or the position, whichever is later, so the backlog a client asked
    #: for (OLDEST, LAST, a resume) never counts against max_lag [PW-SLOW-6].
    baseline: int = 0
    wakeup: Callable[[], None] = field(default=lambda: None)
    watched: Callable[[], None] = field(default=lambda: None)

    def counted_from(self) -> int:
        """The sequence lag is counted from: the next one to send, or the one after the
        head at SUBSCRIBE when that is later [PW-SLOW-6]."""
        return max(self.next_seq, self.baseline + 1)


@dataclass(frozen=True, slots=True)
class SharedPlan:
    """The last one-push plan on a topic that reached its head: subscribers at the same
    position with at least this credit and room get it as it is (a fan-out plans once per
    append, not once per subscriber). Kept on the topic, replaced by the next such plan."""

    log: TopicLog
    first: int
    head: int
    count: int
    size: int
    steps: list[delivery.Push | delivery.Gap]

    def fits(self, log: TopicLog, next_seq: int, room: int) -> bool:
        """Whether a subscriber at ``next_seq`` of ``log`` with ``room`` bytes of budget
        would be planned this very push (its credit and frame size are the caller's)."""
        return (
            self.log is log
            and self.first == next_seq
            and self.head == log.head
            and room >= self.size
        )


@dataclass(frozen=True, slots=True)
class SubscriptionStats:
    topic: str
    epoch: int
    next_seq: int
    credit: int
    at_least_once: bool
    acked: int


@dataclass(frozen=True, slots=True)
class SessionStats:
    connection_id: int
    peer: str
    client_name: str
    state: str
    queued_bytes: int  # control queue + the write in progress
    max_queued_bytes: int  # the most that was ever queued
    subscriptions: dict[int, SubscriptionStats]


class Session:
    """One connection. Created and run by :class:`~pushwire.server.serve.Server`."""

    # Slots: a server holds thousands of sessions, and an instance dict of this many
    # attributes is past CPython's key-sharing limit (about 1.5 KiB each, measured with
    # tracemalloc). A new attribute must be named here. Subclasses get a dict as usual.
    __slots__ = (
        "__weakref__",  # the server's timer heap holds sessions weakly (server/timers.py)
        "_again",
        "_broker",
        "_cancel_scope",
        "_carry",
        "_control",
        "_control_bytes",
        "_counters",
        "_cursors",
        "_deferred",
        "_drain_deadline",
        "_fd",
        "_finishing",
        "_goaway",
        "_inflight",
        "_last_request",
        "_may",
        "_nursery",
        "_pattern_cursors",
        "_pattern_pending",
        "_pattern_stops",
        "_publishing",
        "_pull_due",
        "_pulling",
        "_rate_key",
        "_reading",
        "_room",
        "_rotation",
        "_writing",
        "admitted",
        "bytes_in",
        "bytes_out",
        "close_code",
        "close_reason",
        "config",
        "conn",
        "connection_id",
        "expires_at",
        "identity_name",
        "max_queued_bytes",
        "messages_in",
        "messages_out",
        "peer",
        "permissions",
        "refuse_code",
        "server",
        "source",
        "stream",
        "timer_at",
    )

    def __init__(
        self,
        server: SessionHost,
        stream: trio.abc.Stream,
        connection_id: int,
        peer: str,
        *,
        accepted_at: float | None = None,
    ) -> None:
        config = server.config
        self.server = server
        self.config = config
        self.stream = stream
        self.connection_id = connection_id
        self.peer = peer
        # The handshake timeout runs from the TCP accept (PW-HS-14), which for a TLS
        # connection is before the TLS handshake that preceded this session.
        started = trio.current_time() if accepted_at is None else accepted_at
        self.conn = server.connection_factory(server.limits, now=started)
        self.close_code: ErrorCode | None = None
        self.close_reason = ""
        #: (code, reason) of the GOAWAY we sent, if any: when the client then closes, as
        #: asked, the connection ends for this reason, not for the client's
        self._goaway: tuple[ErrorCode, str] | None = None
        self._broker = server.broker
        self._control: list[bytes] = []
        self._control_bytes = 0
        self._inflight = 0
        self.max_queued_bytes = 0
        self._cursors: dict[int, Cursor] = {}
        #: Pattern subscriptions: sub_id -> topic -> cursor, and what stops each one's
        #: listening for new topics. Topics named before a subscription is answered wait in
        #: ``_pattern_pending``.
        self._pattern_cursors: dict[int, dict[str, Cursor]] = {}
        self._pattern_stops: dict[int, Callable[[], None]] = {}
        self._pattern_pending: dict[int, list[str]] = {}
        #: set when the control queue dropped below its bound (made when it reaches it)
        self._room: trio.Event | None = None
        #: when the server's timers will call on_timer (inf: not scheduled; see _arm)
        self.timer_at = math.inf
        self._nursery: trio.Nursery | None = None
        self._writing = False  # a writer task runs; it ends when it has nothing left
        self._again = False  # the running writer must do one more round
        self._reading = False  # the reader runs and calls _flush before it next yields
        self._deferred = False  # a writer wake-up waits for the reader's _flush
        self._pull_due = False  # a round must pull: credit, a new cursor, more waiting
        self._finishing = False
        self._pulling = True
        self._drain_deadline = math.inf
        self._cancel_scope: trio.CancelScope | None = None
        self._rotation = 0
        self._publishing = False  # this connection's own publish is being appended
        self._carry: list[bytes | memoryview] = []  # left unsent by a direct write
        #: the socket read and written directly (-1: not a plain TCP stream, never)
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self.permissions: Permissions | None = None
        #: Admission (set by the server before run): the source address the connection is
        #: counted under, the code to refuse it with (None: it may handshake), and whether
        #: its HELLO moved it to the admitted pool.
        self.source = peer
        self.refuse_code: ErrorCode | None = None
        self.admitted = False
        #: Who the HELLO token made us ("" while anonymous or in the handshake), the key of
        #: per-identity limits, and when a signed token stops being valid (trio clock).
        self.identity_name = ""
        self._rate_key = ""
        self.expires_at: float | None = None
        self._last_request = started
        #: Totals of this connection, for the close log line and the server's counters.
        self.bytes_in = self.bytes_out = 0
        self.messages_in = self.messages_out = 0
        self._counters = server.counters
        self._may: dict[str, bool] = {}  # publish permission per topic (fixed after HELLO)

    @property
    def subscription_count(self) -> int:
        return len(self._cursors) + len(self._pattern_stops)

    def totals(self) -> str:
        """This connection's traffic in a few words, for the close log line."""
        return (
            f"in {self.messages_in} msg {self.bytes_in} B, "
            f"out {self.messages_out} msg {self.bytes_out} B, "
            f"{self.subscription_count} subscription(s)"
        )

    def idle_since(self, now: float) -> float:
        """Seconds since the last request, or 0 while the connection holds a subscription
        or is still in the handshake (the handshake timeout covers that)."""
        if self._cursors or self._pattern_stops or not self.admitted:
            return 0.0
        return now - self._last_request

    def _refuse_request(
        self, code: ErrorCode, request_type: FrameType, request_id: int, topic: str, reason: str
    ) -> None:
        self.server.log_refusal(self, code, request_type.name, topic, reason)
        self._queue(self.conn.request_error(code, request_type, request_id, reason))

    def _within_rate(
        self,
        request_type: FrameType,
        request_id: int,
        topic: str,
        *,
        cost: int = 1,
        nbytes: int = 0,
    ) -> bool:
        """Charge a request (and ``nbytes`` of publish bodies) to the identity's rate
        buckets; False when it was refused (RATE_LIMITED has been queued)."""
        now = trio.current_time()
        self._last_request = now
        churn = request_type in (FrameType.SUBSCRIBE, FrameType.UNSUBSCRIBE)
        admission = self.server.admission
        if admission.request(self._rate_key, now, churn=churn, cost=cost, nbytes=nbytes):
            return True
        what = "subscription churn" if churn else "request rate or publish bytes"
        self._refuse_request(
            ErrorCode.RATE_LIMITED, request_type, request_id, topic, f"{what} limit reached"
        )
        return False

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it ends; never raises for protocol problems."""
        self._broker.charge(CONNECTION_OVERHEAD)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._cancel_scope = nursery.cancel_scope
                self._arm()
                if self._control or self._finishing:  # queued before the run began
                    self._start_writer()
                # The reader returns at EOF; a writer still flushing ends after its EOF.
                # finish() bounded both by close_timeout.
                await self._reader()
        finally:
            for cursor in self._cursors.values():
                self._release(cursor)
            self._cursors.clear()
            self._broker.charge(-CONNECTION_OVERHEAD - self._control_bytes)
            self._control_bytes = 0
            for sub_id in list(self._pattern_stops):
                self._end_pattern(sub_id)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)

    def finish(self, code: ErrorCode, reason: str = "", final: bytes = b"") -> None:
        """End the connection: queue ``final`` (normally an ERROR) as the last bytes, stop
        pulling, and give the whole session ``close_timeout`` more seconds at most."""
        if final:
            self._queue(final, force=True)
        if self._finishing:
            return
        self._finishing = True
        self._pulling = False
        if self._goaway is not None and code in (ErrorCode.NO_ERROR, self._goaway[0]):
            # the client closed while draining (as asked), or the drain time ran out
            drained = f"drained ({reason})" if code == ErrorCode.NO_ERROR else reason
            code, reason = self._goaway[0], f"{self._goaway[1]}: {drained}"
        self.close_code = code
        self.close_reason = reason
        if self._cancel_scope is not None:
            self._cancel_scope.deadline = min(
                self._cancel_scope.deadline, trio.current_time() + self.config.close_timeout
            )
        self._wake_writer()
        if self._room is not None:
            self._room.set()
        self.timer_at = -math.inf  # any scheduled entry is stale now

    def fail(self, code: ErrorCode, message: str) -> None:
        """A connection-level error of ours: ERROR(code) then close."""
        self.finish(code, message, self.conn.close_with_error(code, message))

    def goaway(self, code: ErrorCode, reconnect_after_ms: int, jitter_ms: int, reason: str) -> None:
        """Start draining (§8.6): GOAWAY with positions, no more pushes, new requests get
        GOING_AWAY; the session ends when the client closes or ``drain_timeout`` passes."""
        state = self.conn.state
        if self._finishing or state is sc.ServerState.CLOSED:
            return
        if state is sc.ServerState.OPEN:
            self._pulling = False
            self._queue(self.conn.goaway(code, reconnect_after_ms, jitter_ms, reason), force=True)
            self._goaway = (code, reason or code.name.lower().replace("_", " "))
            self._drain_deadline = trio.current_time() + self.config.drain_timeout
            self._arm()
        elif state is not sc.ServerState.DRAINING:  # still in the handshake
            self.finish(code, reason, self.conn.close_with_error(code, reason))

    # -- output ------------------------------------------------------------------------------

    def _queue(self, data: bytes, *, force: bool = False) -> None:
        if not data or (self._finishing and not force):
            return
        self._control.append(data)
        self._control_bytes += len(data)
        self._broker.charge(len(data))
        self.max_queued_bytes = max(self.max_queued_bytes, self.queued_bytes)
        if self._control_bytes >= self.config.outbound_queue_bytes and (
            self._room is None or self._room.is_set()
        ):
            self._room = trio.Event()
        self._wake_writer()

    def _wake_writer(self, *, pull: bool = False) -> None:
        """Have the writer do a round (``pull``: one that pulls pushes). A running writer
        does one more; the reader, between two yields, leaves it to its :meth:`_flush`;
        otherwise a writer task starts."""
        if pull:
            self._pull_due = True
        if self._writing:
            self._again = True
        elif self._reading:
            self._deferred = True
        else:
            self._start_writer()

    def _start_writer(self) -> None:
        self._deferred = False
        if self._writing or self._nursery is None:
            return  # (no nursery yet: run() starts it)
        self._writing = self._again = True
        try:
            self._nursery.start_soon(self._writer)
        except RuntimeError:  # the nursery is closed: the session is over
            self._writing = False

    def _flush(self) -> None:
        """The reader is about to yield: what it queued goes out now. Replies alone, on a
        plain TCP socket with no writer and nothing carried, are written right here, so an
        answer (a PONG, PUBACKs) costs no task; anything else starts the writer."""
        self._reading = False
        if not self._deferred:
            return
        self._deferred = False
        if (
            self._control
            and not self._pull_due
            and self._fd >= 0
            and not self._writing
            and not self._carry
            and not self._finishing
        ):
            control, self._control = self._control, []
            self._broker.charge(-self._control_bytes)
            self._control_bytes = 0
            if self._room is not None:
                self._room.set()
            self._write_now([control[0] if len(control) == 1 else b"".join(control)])
        else:
            self._start_writer()

    @property
    def queued_bytes(self) -> int:
        return self._control_bytes + self._inflight

    async def _writer(self) -> None:
        """The task that writes what cannot be written at once: rounds while there is work
        (:meth:`_wake_writer`), then it ends, so an idle connection has no writer."""
        conn = self.conn
        stream = self.stream
        eof = False
        try:
            while True:
                self._again = self._pull_due = False
                control, self._control = self._control, []
                self._broker.charge(-self._control_bytes)
                self._control_bytes = 0
                if self._room is not None:
                    self._room.set()
                # what a direct send left unsent goes first (it was sent as a whole before
                # anything else was queued: see _wakeup)
                pieces: list[bytes | memoryview]
                pieces, self._carry = self._carry, []
                if control:
                    pieces.append(control[0] if len(control) == 1 else b"".join(control))
                if self._pulling and conn.state in (sc.ServerState.OPEN, sc.ServerState.DRAINING):
                    # snapshot now: a cursor created after this point has its SUBSCRIBED in
                    # the next round, so its pushes must wait for that round too
                    self._pull(self._all_cursors(), pieces)
                if pieces:
                    total = sum(map(len, pieces))
                    self._inflight = total
                    self.max_queued_bytes = max(self.max_queued_bytes, self.queued_bytes)
                    if len(pieces) == 1:
                        await stream.send_all(pieces[0])
                    elif total <= JOIN_LIMIT:
                        await stream.send_all(b"".join(pieces))
                    else:
                        for piece in pieces:
                            await stream.send_all(piece)
                    self.bytes_out += total
                    self._counters.bytes_out += total
                    self._inflight = 0
                    conn.data_sent(trio.current_time())
                if self._finishing and not self._control:
                    eof = True
                    break
                if not self._again:
                    return
                if not pieces:
                    await trio.lowlevel.checkpoint()  # a round of nothing: let others run
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.finish(ErrorCode.NO_ERROR, f"peer went away while we wrote: {exc!r}")
            return
        finally:
            # Sending EOF, this stays the writer for good: send_eof yields, and a writer
            # started meanwhile (a second error's wake-up) would meet it on the stream
            # (BusyResourceError). Nothing may follow the EOF anyway.
            self._writing = eof
        try:
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    # -- pulling pushes from the topic logs --------------------------------------------------

    def _all_cursors(self) -> list[Cursor]:
        cursors = list(self._cursors.values())
        for topics in self._pattern_cursors.values():
            cursors.extend(topics.values())
        return cursors

    def _pull(self, cursors: list[Cursor], pieces: list[bytes | memoryview]) -> None:
        """Append pushes for ``cursors`` to ``pieces``, fairly, within the outbound budget;
        wake the writer again if any subscription still has something to send."""
        if not cursors:
            return
        budget = self.config.outbound_queue_bytes - sum(map(len, pieces))
        n = len(cursors)
        self._rotation = (self._rotation + 1) % n
        pending = False
        for i in range(n):
            cursor = cursors[(self._rotation + i) % n]
            share = max(budget // (n - i), 1)
            used, more = self._pull_one(cursor, pieces, share)
            budget -= used
            pending = pending or more
            if self._finishing:
                return
        if pending:
            self._wake_writer(pull=True)

    def _count_out(self, n: int) -> None:
        self.messages_out += n
        self._counters.messages_out += n

    def _pull_one(
        self, cur: Cursor, pieces: list[bytes | memoryview], budget: int
    ) -> tuple[int, bool]:
        """One round for one subscription, as :func:`delivery.plan_round` plans it: (bytes
        appended, more is waiting). Afterwards the cursor either waits on its topic (caught
        up, with credit) or, under DISCONNECT, is watched for lag."""
        handle = cur.handle
        if handle is not None:  # the fan-out case first: the topic's shared plan fits
            shared = handle.plan
            log = handle.log
            if (
                shared is not None
                and shared.fits(log, cur.next_seq, budget)
                and cur.epoch == log.epoch
                and cur.next_seq >= log.oldest
                and cur.active
                and not cur.pattern
            ):
                client = self.conn.client
                if client is not None and client.max_frame_size >= log.max_payload:
                    left = self.conn.take_credit(cur.sub_id, shared.count, log.epoch, log.head)
                    if left >= 0:
                        return self._push_shared(cur, handle, shared, pieces, left)
        conn = self.conn
        sub = conn.subscription(cur.sub_id)
        handle = cur.handle
        if not cur.active or sub is None or not sub.active or handle is None:
            return 0, False
        log = handle.log
        used = 0
        if log.epoch != cur.epoch:
            # the topic was reset under us: carry on at sequence 1 of the new epoch; if 1 is
            # gone already, the slow-consumer rules below say what happens [PW-ORDER-12]
            cur.epoch = log.epoch
            cur.next_seq = 1
            cur.watch_key = -1
            cur.baseline = 0
            if cur.pattern:  # told per topic [PW-SUB-30]
                cur.next_seq = max(1, min(log.oldest, log.head + 1))
                status = conn.topic_status(
                    cur.sub_id, cur.topic, Outcome.EPOCH_CHANGED, log.epoch, cur.next_seq, log.head
                )
                pieces.append(status)
                used += len(status)
        credit = conn.credit(cur.sub_id)
        policy = self.config.slow_consumer_policy
        late = delivery.behind(policy, cur.next_seq, log.oldest, credit)
        if late is not None:
            lost = late.lost
            if late.close:
                self._slow(cur, f"messages {lost[0]}..{lost[1]} left the history")
                return 0, False
            if late.gap is None:
                return 0, False  # the GAP goes out when there is credit to continue
            gap = self._gap(cur, lost[0], lost[1], ErrorCode.SLOW_CONSUMER, log.head)
            pieces.append(gap)
            used += len(gap)
            self._counters.gaps += 1
            self._counters.slow_consumer_events += 1
            cur.next_seq = log.oldest
        peer_max = conn.client.max_frame_size if conn.client else 0
        room = budget - used
        shared = handle.plan
        if (
            shared is not None
            and shared.fits(log, cur.next_seq, room)
            and credit >= shared.count
            and peer_max >= log.max_payload
        ):
            # the plan the previous subscriber at this position got, which reached the head
            # unlimited by credit or budget: this one would get the very same
            steps: list[delivery.Push | delivery.Gap] = shared.steps
            next_seq = log.head + 1
        else:
            steps, next_seq = delivery.plan_round(log, cur.next_seq, credit, room, peer_max)
            if (
                next_seq == log.head + 1
                and len(steps) == 1
                and isinstance(steps[0], delivery.Push)
                and peer_max >= log.max_payload
            ):
                push = steps[0]
                size = sum(map(len, push.data))
                handle.plan = SharedPlan(log, push.first, log.head, push.count, size, steps)
        start = len(pieces)
        pushed = 0
        for step in steps:
            if isinstance(step, delivery.Push):
                if cur.pattern:
                    conn.consume_credit(
                        cur.sub_id, step.count, epoch=cur.epoch, last_seq=step.last, topic=cur.topic
                    )
                else:
                    conn.consume_credit(cur.sub_id, step.count, epoch=cur.epoch, last_seq=step.last)
                credit -= step.count
                pushed += step.count
                pieces.extend(step.data)
            else:
                pieces.append(self._gap(cur, step.first, step.last, step.reason, log.head))
                self._counters.gaps += 1
        cur.next_seq = next_seq
        if pushed:
            self._count_out(pushed)
        used += sum(map(len, pieces[start:]))
        lag = delivery.lag(policy, log.head, cur.counted_from(), self.config.max_lag)
        if lag is not None:  # after queueing what we could [PW-SLOW-5]
            self._slow(cur, f"lag {lag} exceeds max_lag {self.config.max_lag}")
            return used, False
        more = cur.next_seq <= log.head and credit > 0
        if not more and credit > 0 and not cur.parked:
            cur.parked = True
            handle.wait(cur, cur.wakeup)
        if policy == SlowConsumerPolicy.DISCONNECT:
            self._watch(cur, handle, credit)
        return used, more

    def _push_shared(
        self,
        cur: Cursor,
        handle: Topic,
        shared: SharedPlan,
        pieces: list[bytes | memoryview],
        credit: int,
    ) -> tuple[int, bool]:
        """The end of :meth:`_pull_one` when the topic's shared plan was taken whole and its
        credit charged (``credit`` is what is left): what the general path does after the
        same plan, less what cannot apply. Nothing was behind the history, nothing is left
        to send, and with everything up to the head queued the lag is zero [PW-SLOW-5]."""
        push = shared.steps[0]
        assert isinstance(push, delivery.Push)  # a shared plan is one push
        pieces.extend(push.data)
        cur.next_seq = shared.head + 1
        self._count_out(shared.count)
        if credit > 0 and not cur.parked:
            cur.parked = True
            handle.wait(cur, cur.wakeup)
        if self.config.slow_consumer_policy == SlowConsumerPolicy.DISCONNECT:
            self._watch(cur, handle, credit)
        return shared.size, False

    def _gap(self, cur: Cursor, first: int, last: int, reason: ErrorCode, head: int) -> bytes:
        """GAP for one subscription, or for one topic of a pattern subscription its
        SUBSCRIBED(TOPIC_STATUS) with outcome GAP [PW-SUB-30]."""
        if not cur.pattern:
            return self.conn.gap(cur.sub_id, cur.epoch, first, last, reason)
        return self.conn.topic_status(
            cur.sub_id, cur.topic, Outcome.GAP, cur.epoch, last + 1, head, first, last, reason
        )

    def _wakeup(self, cur: Cursor) -> None:
        """Parked cursor's topic moved (run by the appending task).

        When the writer is idle with nothing queued, the round for this subscription is
        planned and written right here, with non-blocking writes on the socket: no task
        switch per subscriber per append, which is what a fan-out to many mostly costs.
        Whatever the socket does not take now becomes the writer's *carry*, sent before
        anything else, so the byte order is that of one round. Otherwise (writer busy,
        control frames queued, not a plain TCP socket) the writer is woken as usual. While
        a session appends the publishes of one read, the round waits for the end of that
        read (:class:`_Woken`), so a connection woken on many topics writes once."""
        cur.parked = False
        if not cur.active:
            return
        if not self._may_write_directly():
            self._wake_writer(pull=True)
            return
        woken = _WOKEN.get()
        if woken is not None:  # a publisher's read is being appended: write once at its end
            woken.add(self, cur)
            return
        pieces: list[bytes | memoryview] = []
        _, more = self._pull_one(cur, pieces, self.config.outbound_queue_bytes)
        if more or self._finishing:
            self._wake_writer(pull=True)
        if pieces:
            self._write_now(pieces)

    def _may_write_directly(self) -> bool:
        """Whether a wake-up may plan and write this connection's round itself (see
        :meth:`_wakeup`) instead of waking the writer."""
        return (
            self._fd >= 0
            and not self._writing
            and not self._control
            and not self._carry
            and self._pulling
            and not self._publishing  # its PUBACK is about to be queued: it goes first
        )

    def _write_woken(self, cursors: list[Cursor]) -> None:
        """The end of a publisher's read that woke ``cursors``: one round for all of them,
        written with non-blocking writes as :meth:`_wakeup` does, or by the writer when
        that is no longer possible."""
        if not self._may_write_directly() or self._finishing:
            self._wake_writer(pull=True)
            return
        pieces: list[bytes | memoryview] = []
        self._pull(cursors, pieces)  # wakes the writer when anything is left
        if self._finishing:
            self._wake_writer(pull=True)
        if len(pieces) > 1 and sum(map(len, pieces)) <= JOIN_LIMIT:
            pieces = [b"".join(pieces)]  # one system call, as the writer would make
        if pieces:
            self._write_now(pieces)

    def _can_write_now(self) -> bool:
        """Whether bytes may be written from outside the writer: a plain TCP socket, no
        writer running, nothing queued or carried (so nothing would be overtaken)."""
        return (
            self._fd >= 0
            and not self._writing
            and not self._control
            and not self._carry
            and not self._finishing
        )

    def _write_now(self, pieces: list[bytes | memoryview]) -> None:
        """Write ``pieces`` with non-blocking writes; what the socket does not take now
        becomes the writer's carry (see :meth:`_wakeup`). Only if :meth:`_can_write_now`."""
        for i, piece in enumerate(pieces):
            try:
                sent = os.write(self._fd, piece)
            except BlockingIOError:
                sent = 0
            except OSError:  # the writer meets the same error on its next send
                sent = 0
            self.bytes_out += sent
            self._counters.bytes_out += sent
            if sent < len(piece):
                self._carry = [memoryview(piece)[sent:], *pieces[i + 1 :]]
                self._wake_writer()
                return
        self.conn.data_sent(trio.current_time())

    def _queueable(self, cur: Cursor, credit: int) -> int:
        """How many of the messages from ``cur.next_seq`` the writer would queue first: up
        to the credit, as far as the room left in the outbound budget goes."""
        handle = cur.handle
        assert handle is not None
        log = handle.log
        room = self.config.outbound_queue_bytes - self.queued_bytes
        hi = min(log.head, cur.next_seq + credit - 1)
        if room <= 0 or hi < cur.next_seq or cur.next_seq < log.oldest:
            return 0
        return log.last_within(cur.next_seq, hi, room) - cur.next_seq + 1

    def _watch(self, cur: Cursor, handle: Topic, credit: int) -> None:
        """DISCONNECT: have the topic call us when an append could make this subscription's
        lag exceed max_lag, or trim its next message, so lag is judged at every append that
        matters without touching every subscription at every append [PW-SLOW-5]."""
        queued = self._queueable(cur, credit)
        key = max(cur.next_seq - 1 + queued, cur.baseline) + self.config.max_lag
        if cur.watch_key == -1 or key < cur.watch_key:
            cur.watch_key = key
            handle.watch_head(key, cur.watched)
            handle.watch_oldest(cur.next_seq, cur.watched)

    def _watched(self, cur: Cursor) -> None:
        """A watch came due (run by the appending task): judge the lag now."""
        cur.watch_key = -1
        handle = cur.handle
        if not cur.active or self._finishing or handle is None:
            return
        log = handle.log
        if log.epoch != cur.epoch:
            self._wake_writer(pull=True)
            return
        if cur.next_seq < log.oldest:
            self._slow(cur, f"messages {cur.next_seq}..{log.oldest - 1} left the history")
            return
        sub = self.conn.subscription(cur.sub_id)
        credit = self.conn.credit(cur.sub_id) if sub is not None and sub.active else 0
        queued = self._queueable(cur, credit)
        lag = delivery.lag(
            SlowConsumerPolicy.DISCONNECT,
            log.head,
            max(cur.next_seq + queued, cur.baseline + 1),
            self.config.max_lag,
        )
        if lag is not None:
            self._slow(cur, f"lag {lag} exceeds max_lag {self.config.max_lag}")
            return
        self._watch(cur, handle, credit)

    def _slow(self, cur: Cursor, why: str) -> None:
        self.fail(ErrorCode.SLOW_CONSUMER, f"subscription {cur.sub_id} on {cur.topic!r}: {why}")

    def _release(self, cur: Cursor) -> None:
        cur.active = False
        # the cursor's callbacks hold this session: without them a closed connection is
        # freed by reference counting, not left to a full collection of the whole heap
        cur.wakeup = cur.watched = _nothing
        if cur.handle is not None:
            cur.handle.unwait(cur)
            self._broker.detach(cur.handle)
            cur.handle = None
            self.server.admission.unsubscribe(self._rate_key)

    # -- reading and events ------------------------------------------------------------------

    async def _reader(self) -> None:
        """Reads until EOF. On a plain TCP socket it reads the descriptor itself and waits
        with ``wait_readable``: an idle connection is one task parked in four frames, and
        a read allocates no stream-method frames."""
        conn = self.conn
        fd = self._fd
        drained = False  # the last read got less than it asked for: wait before the next
        try:
            while True:
                if fd < 0:
                    data = await self.stream.receive_some(READ_SIZE)
                    waited = True
                else:
                    waited = False
                    while True:
                        if drained:
                            data = b""  # (not kept alive while we wait)
                            await trio.lowlevel.wait_readable(fd)
                            waited = True
                        try:
                            data = os.read(fd, READ_SIZE)
                            break
                        except BlockingIOError:
                            drained = True
                        except OSError as exc:  # a reset: what receive_some raises for it
                            raise trio.BrokenResourceError(exc) from exc
                    drained = len(data) < READ_SIZE
                self.bytes_in += len(data)
                self._counters.bytes_in += len(data)
                if self._finishing:
                    if not data:
                        return
                    continue  # lingering: discard until EOF so our ERROR is not reset away
                conn.receive_data(data, trio.current_time())
                await self._process_events()
                self._arm()  # a frame that began to arrive has a deadline of its own
                if not data:
                    if not self._finishing:
                        self.finish(conn.close_code or ErrorCode.NO_ERROR, "peer closed")
                    return
                if not waited:  # the bytes were there at once: let the others run too
                    await trio.lowlevel.checkpoint()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.finish(ErrorCode.NO_ERROR, f"peer went away: {exc!r}")

    async def _process_events(self) -> None:
        """Acts on everything the read made available. Between two yields the reader
        queues replies without waking anything; :meth:`_flush` before each await sends
        them (one write for the replies of a read, as the old writer wake-up gave)."""
        self._reading = True
        try:
            await self._process()
        finally:
            self._flush()

    async def _process(self) -> None:
        conn = self.conn
        try:
            while not self._finishing:
                if self._control_bytes >= self.config.outbound_queue_bytes:
                    self._flush()  # the writer (or a direct write) drains the queue
                    if self._room is not None and not self._room.is_set():
                        await self._room.wait()
                    self._reading = True
                    continue
                run = conn.take_publishes()
                if run is not None:
                    self._publishing = True
                    try:
                        if self._broker.remote:
                            self._flush()
                            reserved = await self._publish_run_remote(*run)
                            self._reading = True
                        elif _one_topic(run[1]):  # each woken connection writes once anyway
                            reserved = self._publish_run(*run)
                        else:
                            woken = _Woken()
                            token = _WOKEN.set(woken)
                            try:
                                reserved = self._publish_run(*run)
                            finally:
                                _WOKEN.reset(token)
                                woken.flush()
                    finally:
                        self._publishing = False
                    for topic in reserved:
                        self._flush()
                        await self._published(topic)
                        self._reading = True
                    continue
                event = conn.next_event()
                if isinstance(event, Sentinel):  # NEED_DATA, or PAUSED until we answer
                    break
                if type(event) is sc.PongReceived:
                    continue  # receiving it restarted the heartbeat timer; nothing else to do
                self._publishing = True  # (PUBLISH events; harmless for the others)
                self._flush()
                try:
                    await self._handle(event)
                finally:
                    self._publishing = False
                    self._reading = True
                self._queue(conn.data_to_send())
        except RemoteProtocolError as exc:
            log.info(
                "connection %d: protocol error from peer: %s",
                self.connection_id,
                exc,
                extra={"conn": self.connection_id, "peer": self.peer, "code": exc.code.name},
            )
            self.finish(exc.code, str(exc), conn.data_to_send())
            return
        except Exception as exc:
            log.exception(
                "connection %d: internal error",
                self.connection_id,
                extra={"conn": self.connection_id, "peer": self.peer, "code": "INTERNAL_ERROR"},
            )
            self.fail(ErrorCode.INTERNAL_ERROR, f"internal error: {type(exc).__name__}")
            return
        self._queue(conn.data_to_send())
        if conn.state is sc.ServerState.CLOSED and not self._finishing:
            self.finish(conn.close_code or ErrorCode.NO_ERROR, "connection closed")

    async def _handle(self, event: Event) -> None:
        conn = self.conn
        server = self.server
        match event:
            case sc.PrefaceReceived():
                self._queue(conn.send_preface())
                admission = server.admission
                if (
                    self.refuse_code is not None
                    or admission.admitted >= admission.limits.max_connections
                ):
                    self.finish(
                        ErrorCode.TOO_MANY_CONNECTIONS,
                        "connection limit reached",
                        conn.reject(
                            ErrorCode.TOO_MANY_CONNECTIONS,
                            "connection limit reached (server, source or handshake)",
                        ),
                    )
            case sc.HelloReceived():
                admission = server.admission
                delay = admission.hello_delay(self.source, trio.current_time())
                if delay is None:
                    self._reject(ErrorCode.AUTH_THROTTLED, "too many failed authentications")
                    return
                if delay:
                    await trio.sleep(delay)  # bounded by auth_max_delay; only this connection
                identity = server.authenticate(event.auth_token)
                if identity is None:
                    admission.auth_failed(self.source, trio.current_time())
                    reason = "auth token missing" if not event.auth_token else "auth token refused"
                    self._reject(ErrorCode.UNAUTHENTICATED, reason)
                    return
                if server.shutting_down:
                    self.finish(
                        ErrorCode.SHUTTING_DOWN,
                        "shutting down",
                        conn.reject(ErrorCode.SHUTTING_DOWN, "server is shutting down"),
                    )
                    return
                self.identity_name = identity.name
                if admission.admit(self.source, named=identity.named) is not None:
                    limit = self.config.max_connections
                    self._reject(
                        ErrorCode.TOO_MANY_CONNECTIONS,
                        f"server is at its limit of {limit} connections",
                    )
                    return
                self.admitted = True
                self.permissions = identity.permissions
                self._rate_key = identity.name or f"anon@{self.source}"
                if identity.expires_at is not None:
                    now = trio.current_time()
                    self.expires_at = now + max(0.0, identity.expires_at - time.time())
                self._last_request = trio.current_time()
                self._queue(
                    conn.accept(self.connection_id, self.config.server_name, trio.current_time())
                )
                self._arm()
                log.info(
                    "connection %d: %s opened as %r%s (heartbeat %d ms)",
                    self.connection_id,
                    self.peer,
                    event.client_name,
                    f" by {identity.name}" if identity.name else "",
                    conn.heartbeat_ms,
                    extra={
                        "conn": self.connection_id,
                        "peer": self.peer,
                        "identity": identity.name,
                    },
                )
            case sc.SubscribeRequested():
                if self._within_rate(FrameType.SUBSCRIBE, event.sub_id, event.topic):
                    await self._subscribe(event)
            case sc.PatternSubscribeRequested():
                if self._within_rate(FrameType.SUBSCRIBE, event.sub_id, event.pattern):
                    await self._subscribe_pattern(event)
            case sc.UnsubscribeRequested():
                if not self._within_rate(FrameType.UNSUBSCRIBE, event.sub_id, ""):
                    return
                self._end_pattern(event.sub_id)
                cursor = self._cursors.pop(event.sub_id, None)
                if cursor is not None:
                    self._release(cursor)
                    log.debug(
                        "connection %d: unsubscribed %d from %r",
                        self.connection_id,
                        event.sub_id,
                        cursor.topic,
                    )
                self._queue(conn.unsubscribed(event.sub_id))
            case sc.CreditGranted():
                self._wake_writer(pull=True)
            case sc.PublishRequested():
                if not self._within_rate(
                    FrameType.PUBLISH, event.request_id, event.topic, nbytes=len(event.body)
                ):
                    return
                if not self._may_publish(FrameType.PUBLISH, event.request_id, event.topic):
                    return
                if not self._claim(FrameType.PUBLISH, event.request_id, event.topic):
                    return
                try:
                    if self._broker.remote:
                        stored = await self._store(event)
                        if stored is None:
                            return
                        epoch, seq = stored
                    else:
                        epoch, seq = self._broker.append(event.topic, event.flags, event.body)
                except NoRoom as exc:
                    self._refuse_request(
                        exc.code, FrameType.PUBLISH, event.request_id, event.topic, str(exc)
                    )
                    return
                self.messages_in += 1
                self._counters.messages_in += 1
                await self._published(event.topic)
                if event.request_id and self._answering():
                    self._queue(conn.puback(event.request_id, epoch, seq, 1))
            case sc.PublishBatchRequested():
                if not self._within_rate(
                    FrameType.PUBLISH_BATCH,
                    event.request_id,
                    event.topic,
                    cost=event.count,
                    nbytes=len(event.body),
                ):
                    return
                if not self._may_publish(FrameType.PUBLISH_BATCH, event.request_id, event.topic):
                    return
                if not self._claim(FrameType.PUBLISH_BATCH, event.request_id, event.topic):
                    return
                try:
                    if self._broker.remote:
                        stored = await self._store(event)
                        if stored is None:
                            return
                        epoch, seq = stored
                    else:
                        epoch, seq = self._broker.append_batch(
                            event.topic,
                            event.flags,
                            event.body,
                            event.records_start,
                            list(event.record_ends),
                        )
                except NoRoom as exc:
                    self._refuse_request(
                        exc.code, FrameType.PUBLISH_BATCH, event.request_id, event.topic, str(exc)
                    )
                    return
                self.messages_in += event.count
                self._counters.messages_in += event.count
                await self._published(event.topic)
                if event.request_id and self._answering():
                    self._queue(conn.puback(event.request_id, epoch, seq, event.count))
            case sc.GoawayReceived():
                self.finish(
                    ErrorCode.NO_ERROR,
                    f"client GOAWAY: {event.reason}" if event.reason else "client GOAWAY",
                )
            case sc.PeerError():
                self.finish(
                    conn.close_code or ErrorCode.PROTOCOL_ERROR, f"client ERROR: {event.message}"
                )
            case sc.ConnectionClosed():
                self.finish(ErrorCode.NO_ERROR, "peer closed")
            case sc.RequestRefused():
                log.debug(
                    "connection %d: refused %s %d: %s",
                    self.connection_id,
                    event.code.name,
                    event.request_id,
                    event.message,
                )
            case _:
                pass  # PING (PONG is queued already), PONG, ACK: nothing to do here

    async def _store(
        self, event: sc.PublishRequested | sc.PublishBatchRequested
    ) -> tuple[int, int] | None:
        """A publish on a remote broker: (epoch, seq) once the broker has it, or None when
        it cannot be reached (refused with its temporary code; nothing was stored)."""
        broker = self._broker
        try:
            if isinstance(event, sc.PublishBatchRequested):
                return await broker.publish_batch(
                    event.topic,
                    event.flags,
                    event.body,
                    event.records_start,
                    list(event.record_ends),
                )
            return await broker.publish(event.topic, event.flags, event.body)
        except BrokerUnavailable as exc:
            kind = (
                FrameType.PUBLISH_BATCH
                if isinstance(event, sc.PublishBatchRequested)
                else FrameType.PUBLISH
            )
            self._refuse_request(exc.code, kind, event.request_id, event.topic, str(exc))
            return None

    def _admit_run(self, topic: str, run: list[Span]) -> int | None:
        """The checks of a run of publishes on one topic, in the order of the event path:
        the identity's request rate (charged for the run's records and bytes as a whole),
        permission, the topic quota. Returns the run's record count, or None when it was
        refused (every request of the run answered)."""
        kind = FrameType.PUBLISH_BATCH if run[0][4] else FrameType.PUBLISH
        counts: list[int] = list(map(_COUNT, run))  # C-level passes, once per read
        records = sum(counts) + counts.count(0)  # a PUBLISH (count 0) is one message
        nbytes = sum(map(_END, run)) - sum(map(_START, run))
        if not self._within_rate(kind, run[0][0], topic, cost=records, nbytes=nbytes):
            self._refuse_run(run[1:], topic, ErrorCode.RATE_LIMITED, "request rate limit")
            return None
        for check in (self._may_publish, self._claim):
            if not check(kind, run[0][0], topic):
                for request_id, _, _, _, count in run[1:]:
                    check(
                        FrameType.PUBLISH_BATCH if count else FrameType.PUBLISH, request_id, topic
                    )
                return None
        return records

    def _refuse_run(self, run: list[Span], topic: str, code: ErrorCode, reason: str) -> None:
        for request_id, _, _, _, count in run:
            kind = FrameType.PUBLISH_BATCH if count else FrameType.PUBLISH
            self._refuse_request(code, kind, request_id, topic, reason)

    def _acknowledge_run(
        self, topic: str, run: list[Span], records: int, epoch: int, seq: int
    ) -> None:
        """A run was stored from ``seq`` on: count it and queue its PUBACKs in order."""
        self.messages_in += records
        self._counters.messages_in += records
        if log.isEnabledFor(logging.DEBUG) and not topic.startswith("$"):
            log.debug("connection %d: published %d on %r", self.connection_id, records, topic)
        acks = []
        for request_id, _, _, _, count in run:
            acks.append((request_id, seq, count or 1))
            seq += count or 1
        if self._answering():
            self._queue(self.conn.pubacks(epoch, acks))

    def _publish_run(self, data: bytes, spans: list[Span]) -> list[str]:
        """Whole PUBLISH / PUBLISH_BATCH frames of one read
        (:meth:`ServerConnection.take_publishes`): each run on one topic is appended in one
        go and wakes its subscribers once; the PUBACKs follow in request order
        [PW-ORDER-10]. Returns the reserved topics published on, whose side effects
        (:meth:`_published`) the caller awaits."""
        reserved: list[str] = []
        for topic, run in _topic_runs(spans):
            records = self._admit_run(topic, run)
            if records is None:
                continue
            try:
                epoch, seq = self._broker.append_many(
                    topic, data, [(s, e, c) for _, _, s, e, c in run]
                )
            except NoRoom as exc:  # nothing of the run was appended
                self._refuse_run(run, topic, exc.code, str(exc))
                continue
            if topic.startswith("$"):
                reserved.append(topic)
            self._acknowledge_run(topic, run, records, epoch, seq)
        return reserved

    async def _publish_run_remote(self, data: bytes, spans: list[Span]) -> list[str]:
        """:meth:`_publish_run` on a remote broker: each run on one topic is stored in one
        round trip (:meth:`Broker.publish_many`) and acknowledged once stored; a run the
        broker cannot take is refused request by request, with its temporary code."""
        reserved: list[str] = []
        for topic, run in _topic_runs(spans):
            records = self._admit_run(topic, run)
            if records is None:
                continue
            try:
                epoch, seq = await self._broker.publish_many(
                    topic, data, [(s, e, c) for _, _, s, e, c in run]
                )
            except BrokerUnavailable as exc:
                self._refuse_run(run, topic, exc.code, str(exc))
                continue
            if topic.startswith("$"):
                reserved.append(topic)
            self._acknowledge_run(topic, run, records, epoch, seq)
        return reserved

    def _answering(self) -> bool:
        """Whether replies can still go out: another task (a publisher's listener call, the
        ticker, shutdown) may have closed the connection while this one awaited."""
        return not self._finishing and self.conn.state in (
            sc.ServerState.OPEN,
            sc.ServerState.DRAINING,
        )

    def _reject(self, code: ErrorCode, reason: str) -> None:
        """Refuse the HELLO: ERROR(code) instead of WELCOME, then close (audited)."""
        self.server.log_refusal(self, code, "HELLO", reason=reason)
        self.finish(code, reason, self.conn.reject(code, reason))

    async def _published(self, topic: str) -> None:
        """Side effects of a publish on a reserved topic: ``$sys/reset/<topic>`` resets that
        topic (new epoch, history cleared), SPEC.md §9.3."""
        if topic.startswith(RESET_PREFIX) and len(topic) > len(RESET_PREFIX):
            target = topic[len(RESET_PREFIX) :]
            epoch = await self._broker.reset_topic(target)
            log.warning(
                "connection %d: topic %r reset to epoch %d by %s",
                self.connection_id,
                target,
                epoch,
                self.identity_name or self.peer,
                extra={"conn": self.connection_id, "identity": self.identity_name},
            )
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("connection %d: published on %r", self.connection_id, topic)

    def _may_publish(self, request_type: FrameType, request_id: int, topic: str) -> bool:
        if topic.startswith("$") and not topic.startswith(RESET_PREFIX):
            self._refuse_request(
                ErrorCode.FORBIDDEN,
                request_type,
                request_id,
                topic,
                "reserved topic: only the server publishes there",
            )
            return False
        allowed = self._may.get(topic)
        if allowed is None:
            allowed = self._may[topic] = self.server.allowed(self.permissions, "publish", topic)
            if len(self._may) > _MAY_CACHE:
                self._may.clear()
        if allowed:
            return True
        self._refuse_request(
            ErrorCode.FORBIDDEN, request_type, request_id, topic, f"may not publish on {topic!r}"
        )
        return False

    def _claim(self, request_type: FrameType, request_id: int, topic: str) -> bool:
        """The identity's topic quota (Broker.claim); False when refused (QUOTA_EXCEEDED
        has been queued)."""
        if self._broker.claim(topic, self._rate_key):
            return True
        self._refuse_request(
            ErrorCode.QUOTA_EXCEEDED,
            request_type,
            request_id,
            topic,
            "topic quota reached: every topic this identity created is subscribed",
        )
        return False

    async def _subscribe(self, event: sc.SubscribeRequested) -> None:
        conn = self.conn
        t, sid = FrameType.SUBSCRIBE, event.sub_id
        if not self.server.allowed(self.permissions, "subscribe", event.topic):
            self._refuse_request(
                ErrorCode.FORBIDDEN, t, sid, event.topic, f"may not subscribe to {event.topic!r}"
            )
            return
        admission = self.server.admission
        if not admission.subscribe(self._rate_key):
            self._refuse_request(
                ErrorCode.QUOTA_EXCEEDED,
                t,
                sid,
                event.topic,
                "subscription quota of this identity reached (all its connections together)",
            )
            return
        try:
            res = await self._broker.resolve(
                event.topic, event.since_kind, event.since_epoch, event.since_seq, event.since_count
            )
        except InvalidPosition as exc:
            admission.unsubscribe(self._rate_key)
            self._queue(conn.request_error(ErrorCode.INVALID_POSITION, t, sid, str(exc)))
            return
        if not self._answering():
            admission.unsubscribe(self._rate_key)
            return
        self._queue(
            conn.subscribed(
                sid,
                res.outcome,
                res.epoch,
                res.start_seq,
                res.head_seq,
                res.gap_first,
                res.gap_last,
                res.gap_reason,
            )
        )
        cursor = Cursor(sid, event.topic, res.epoch, res.start_seq, baseline=res.head_seq)
        cursor.handle = self._broker.attach(event.topic)
        cursor.wakeup = functools.partial(self._wakeup, cursor)
        cursor.watched = functools.partial(self._watched, cursor)
        self._cursors[sid] = cursor
        self._wake_writer(pull=True)
        log.debug(
            "connection %d: subscription %d to %r: %s, epoch %d, from seq %d",
            self.connection_id,
            sid,
            event.topic,
            Outcome(res.outcome).name,
            res.epoch,
            res.start_seq,
        )

    async def _subscribe_pattern(self, event: sc.PatternSubscribeRequested) -> None:
        """The rest of §6.7's checks, then SUBSCRIBED, one TOPIC_STATUS per position, and
        a cursor per matching topic; topics created from now on join through the broker's
        pattern listener."""
        conn = self.conn
        broker = self._broker
        t, sid, pattern = FrameType.SUBSCRIBE, event.sub_id, event.pattern
        permissions = self.permissions
        if permissions is None or not permissions.allows_pattern("subscribe", pattern):
            self._refuse_request(  # [PW-SUB-25]
                ErrorCode.FORBIDDEN,
                t,
                sid,
                pattern,
                f"may not subscribe to every topic {pattern!r} can match",
            )
            return
        problem = event.position_problem()
        if problem is not None:
            self._queue(conn.request_error(ErrorCode.INVALID_POSITION, t, sid, problem))
            return
        # listen first: a topic created while the positions resolve is not missed
        pending = self._pattern_pending[sid] = []
        self._pattern_stops[sid] = broker.listen_pattern(
            pattern, functools.partial(self._topic_created, sid)
        )
        try:
            resumed = [
                (pos.topic, await broker.resolve(pos.topic, SinceKind.AFTER, pos.epoch, pos.seq))
                for pos in event.positions
            ]
        except InvalidPosition as exc:
            self._end_pattern(sid)
            self._queue(conn.request_error(ErrorCode.INVALID_POSITION, t, sid, str(exc)))
            return
        limit = self.server.limits.max_pattern_topics
        named = {pos.topic for pos in event.positions}
        existing = [name for name in broker.topics_matching(pattern) if name not in named]
        if len(existing) + len(named) > limit:  # [PW-SUB-27]
            self._end_pattern(sid)
            self._queue(
                conn.request_error(
                    ErrorCode.TOO_MANY_TOPICS, t, sid, f"{pattern!r} matches over {limit} topics"
                )
            )
            return
        fresh = [
            (name, await broker.resolve(name, event.since_kind, 0, 0, event.since_count))
            for name in existing
        ]
        if not self._answering():
            self._end_pattern(sid)
            return
        self._queue(conn.pattern_subscribed(sid))
        cursors = self._pattern_cursors[sid] = {}
        for name, res in resumed:  # [PW-RESUME-5]
            self._queue(
                conn.topic_status(
                    sid,
                    name,
                    Outcome(res.outcome),
                    res.epoch,
                    res.start_seq,
                    res.head_seq,
                    res.gap_first,
                    res.gap_last,
                    res.gap_reason,
                )
            )
            cursors[name] = self._pattern_cursor(sid, name, res.epoch, res.start_seq)
        for name, res in fresh:
            cursors[name] = self._pattern_cursor(sid, name, res.epoch, res.start_seq)
        self._pattern_pending.pop(sid, None)
        for name in pending:
            self._topic_created(sid, name)
        self._wake_writer(pull=True)
        log.debug(
            "connection %d: pattern subscription %d to %r: %d topic(s), %d resumed",
            self.connection_id,
            sid,
            pattern,
            len(cursors),
            len(resumed),
        )

    def _pattern_cursor(self, sub_id: int, topic: str, epoch: int, next_seq: int) -> Cursor:
        cursor = Cursor(sub_id, topic, epoch, next_seq, pattern=True)
        cursor.handle = self._broker.attach(topic)
        cursor.wakeup = functools.partial(self._wakeup, cursor)
        cursor.watched = functools.partial(self._watched, cursor)
        return cursor

    def _topic_created(self, sub_id: int, name: str) -> None:
        """A topic the pattern of ``sub_id`` matches came into existence (run by the task
        that named it, before anything is appended): follow it from sequence 1 [PW-SUB-29],
        or end the subscription at its topic limit [PW-SUB-31]."""
        pending = self._pattern_pending.get(sub_id)
        if pending is not None:
            pending.append(name)
            return
        cursors = self._pattern_cursors.get(sub_id)
        if cursors is None or name in cursors or self._finishing:
            return
        limit = self.server.limits.max_pattern_topics
        if len(cursors) >= limit:
            self._end_pattern(sub_id)
            if self._answering():
                self._queue(self.conn.end_pattern(sub_id, f"over {limit} topics"))
            return
        handle = self._broker.attach(name)
        cursor = Cursor(sub_id, name, handle.log.epoch, 1, pattern=True, handle=handle)
        cursor.wakeup = functools.partial(self._wakeup, cursor)
        cursor.watched = functools.partial(self._watched, cursor)
        cursors[name] = cursor
        self._wake_writer(pull=True)

    def _end_pattern(self, sub_id: int) -> None:
        """Stop following new topics for ``sub_id`` and release its cursors (if it is a
        pattern subscription at all)."""
        stop = self._pattern_stops.pop(sub_id, None)
        if stop is not None:
            stop()
        self._pattern_pending.pop(sub_id, None)
        for cursor in self._pattern_cursors.pop(sub_id, {}).values():
            self._release(cursor)
        self._arm()  # without a subscription the idle timeout may apply now

    # -- time --------------------------------------------------------------------------------

    def _arm(self) -> None:
        """Have the server's timers call :meth:`on_timer` at the next deadline, if it moved
        earlier than the one scheduled (later needs nothing: see server/timers.py)."""
        if self._finishing:
            return
        deadline = self.conn.next_deadline()
        deadline = min(
            math.inf if deadline is None else deadline, self._drain_deadline, self._ends_at()
        )
        if deadline < self.timer_at:
            self.server.timers.schedule(self, deadline)

    def _ends_at(self) -> float:
        """When the server ends the connection by its own limits: the signed token's expiry
        (TOKEN_EXPIRED), or IDLE_TIMEOUT after the last request while it holds no
        subscription. Served by the connection's timer entry like its heartbeat, so no
        pass over every connection is needed (that pass cost a core 5 % of its samples
        at 10,000 idle connections)."""
        ends = math.inf if self.expires_at is None else self.expires_at
        idle = self.config.idle_timeout
        if idle and self.admitted and not (self._cursors or self._pattern_stops):
            ends = min(ends, self._last_request + idle)
        return ends

    def on_timer(self, now: float) -> None:
        """A deadline came (run by the server's timer task): what the time demands. ``now``
        is the deadline, which may lie a timer grain ahead (server/timers.py); bytes
        written here are recorded at the real time."""
        if self._finishing:
            return
        conn = self.conn
        if now >= self._drain_deadline:
            self.finish(ErrorCode.SHUTTING_DOWN, "drain time is over")
            return
        if self.expires_at is not None and now >= self.expires_at:
            self.fail(ErrorCode.TOKEN_EXPIRED, "the auth token expired")
            return
        idle = self.config.idle_timeout
        if idle and self.idle_since(now) >= idle:
            self.fail(ErrorCode.IDLE_TIMEOUT, f"no subscription and no request for {idle:g} s")
            return
        out = conn.tick(now)
        if conn.state is sc.ServerState.CLOSED:
            code = conn.close_code or ErrorCode.INTERNAL_ERROR
            log.info(
                "connection %d: %s",
                self.connection_id,
                code.name,
                extra={"conn": self.connection_id, "peer": self.peer, "code": code.name},
            )
            self.finish(code, code.name.lower().replace("_", " "), out)
            return
        if out and self._can_write_now():
            self._write_now([out])  # a PING: no writer wake-up for it
        else:
            self._queue(out)
        self._arm()

    # -- introspection -----------------------------------------------------------------------

    def stats(self) -> SessionStats:
        conn = self.conn
        subs = {}
        for sub_id, cur in self._cursors.items():
            sub = conn.subscription(sub_id)
            if sub is None:
                continue
            subs[sub_id] = SubscriptionStats(
                cur.topic,
                cur.epoch,
                cur.next_seq,
                sub.credit,
                sub.at_least_once,
                sub.acked,
            )
        return SessionStats(
            self.connection_id,
            self.peer,
            conn.client.client_name if conn.client else "",
            conn.state.value,
            self.queued_bytes,
            self.max_queued_bytes,
            subs,
        )


__all__ = [
    "ConnectionFactory",
    "Cursor",
    "Session",
    "SessionConfig",
    "SessionHost",
    "SessionStats",
    "SubscriptionStats",
]
