"""One client connection on trio: a reader, a writer and a ticker around a ServerConnection.

Theory of operation
-------------------
Three tasks share one nursery per connection:

* the **reader** reads at most :data:`READ_SIZE` bytes at a time, feeds the sans-I/O
  :class:`~pushwire.protocol.server_conn.ServerConnection` and acts on its events (auth,
  broker calls). Replies go to the *control queue*. Before each event it waits until the
  control queue is below ``outbound_queue_bytes``: a client that does not read its replies
  stops being read (TCP pushes back on it), and the queue stays bounded.
* the **writer** is the only task that writes to the stream. Each round it takes the whole
  control queue, then *pulls* pushes for every subscription that has credit, straight from
  the broker's history -- the same ``bytes`` object for every subscriber -- up to the
  outbound budget, and sends everything in one ``send_all``. Control frames queued before
  a round go out before that round's pushes, so SUBSCRIBED precedes the first MESSAGE and
  every MESSAGE precedes UNSUBSCRIBED.
* the **ticker** sleeps until the connection's next deadline (handshake, heartbeat, drain)
  and hands the time to the connection.

Backpressure, in three named places: TCP (``send_all`` blocks the writer), the outbound
budget (``outbound_queue_bytes``: the control queue plus one round of pulled pushes), and
the broker's history (a subscriber that cannot keep up only lags there; the slow-consumer
policy decides when it has lagged too far). A stalled subscriber never blocks a publisher.

Ending: every way out goes through :meth:`Session.finish`: the writer flushes what is
queued (ERROR last), shuts its write side, and the reader discards input until EOF or
``close_timeout`` (so the ERROR is not destroyed by a TCP reset).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from pushwire.protocol import server_conn as sc
from pushwire.protocol.errors import ErrorCode, RemoteProtocolError
from pushwire.protocol.events import Event, Sentinel
from pushwire.protocol.layouts import HEADER_SIZE, FrameType, Outcome, SlowConsumerPolicy
from pushwire.server.admission import Admission
from pushwire.server.auth import Identity, Permissions
from pushwire.server.broker import Broker, Entry, InvalidPosition
from pushwire.server.metrics import Counters

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
    def authenticate(self, token: bytes) -> Identity | None: ...
    def allowed(self, permissions: Permissions | None, action: str, topic: str) -> bool: ...
    def log_refusal(
        self, session: Session, code: ErrorCode, what: str, topic: str = "", reason: str = ""
    ) -> None: ...


@dataclass(slots=True, eq=False)
class Cursor:
    """Where one subscription reads the topic's history: everything before ``next_seq`` of
    ``epoch`` was sent or skipped."""

    sub_id: int
    topic: str
    epoch: int
    next_seq: int
    stop_listening: Callable[[], None] = field(default=lambda: None)
    active: bool = True
    # messages appended since the last pull that the writer will queue first (DISCONNECT)
    queued_count: int = 0
    queued_bytes: int = 0


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
        self._wake = trio.Event()  # the writer has something to do
        self._room = trio.Event()  # the control queue dropped below its bound
        self._poke = trio.Event()  # the next deadline may have moved earlier
        self._reader_done = trio.Event()
        self._finishing = False
        self._pulling = True
        self._drain_deadline = math.inf
        self._cancel_scope: trio.CancelScope | None = None
        self._rotation = 0
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

    @property
    def subscription_count(self) -> int:
        return len(self._cursors)

    def totals(self) -> str:
        """This connection's traffic in a few words, for the close log line."""
        return (
            f"in {self.messages_in} msg {self.bytes_in} B, "
            f"out {self.messages_out} msg {self.bytes_out} B, "
            f"{len(self._cursors)} subscription(s)"
        )

    def idle_since(self, now: float) -> float:
        """Seconds since the last request, or 0 while the connection holds a subscription
        or is still in the handshake (the handshake timeout covers that)."""
        if self._cursors or not self.admitted:
            return 0.0
        return now - self._last_request

    def _refuse_request(
        self, code: ErrorCode, request_type: FrameType, request_id: int, topic: str, reason: str
    ) -> None:
        self.server.log_refusal(self, code, request_type.name, topic, reason)
        self._queue(self.conn.request_error(code, request_type, request_id, reason))

    def _within_rate(
        self, request_type: FrameType, request_id: int, topic: str, *, cost: int = 1
    ) -> bool:
        """Charge a request to the identity's rate buckets; False when it was refused
        (RATE_LIMITED has been queued)."""
        now = trio.current_time()
        self._last_request = now
        churn = request_type in (FrameType.SUBSCRIBE, FrameType.UNSUBSCRIBE)
        if self.server.admission.request(self._rate_key, now, churn=churn, cost=cost):
            return True
        what = "subscription churn" if churn else "request rate"
        self._refuse_request(
            ErrorCode.RATE_LIMITED, request_type, request_id, topic, f"{what} limit reached"
        )
        return False

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it ends; never raises for protocol problems."""
        try:
            async with trio.open_nursery() as nursery:
                self._cancel_scope = nursery.cancel_scope
                nursery.start_soon(self._ticker)
                nursery.start_soon(self._reader)
                await self._writer()
                with trio.move_on_after(self.config.close_timeout):
                    await self._reader_done.wait()
                nursery.cancel_scope.cancel()
        finally:
            for cursor in self._cursors.values():
                cursor.stop_listening()
            self._cursors.clear()
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
        self._wake.set()
        self._room.set()
        self._poke.set()

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
            self._poke.set()
        elif state is not sc.ServerState.DRAINING:  # still in the handshake
            self.finish(code, reason, self.conn.close_with_error(code, reason))

    # -- output ------------------------------------------------------------------------------

    def _queue(self, data: bytes, *, force: bool = False) -> None:
        if not data or (self._finishing and not force):
            return
        self._control.append(data)
        self._control_bytes += len(data)
        self.max_queued_bytes = max(self.max_queued_bytes, self.queued_bytes)
        if self._control_bytes >= self.config.outbound_queue_bytes:
            self._room = trio.Event()
        self._wake.set()

    @property
    def queued_bytes(self) -> int:
        return self._control_bytes + self._inflight

    async def _writer(self) -> None:
        conn = self.conn
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                chunks, self._control = self._control, []
                self._control_bytes = 0
                self._room.set()
                if self._pulling and conn.state in (sc.ServerState.OPEN, sc.ServerState.DRAINING):
                    # snapshot now: a cursor created after this point has its SUBSCRIBED in
                    # the next round, so its pushes must wait for that round too
                    await self._pull(list(self._cursors.values()), chunks)
                if chunks:
                    self._inflight = sum(map(len, chunks))
                    self.max_queued_bytes = max(self.max_queued_bytes, self.queued_bytes)
                    await self.stream.send_all(chunks[0] if len(chunks) == 1 else b"".join(chunks))
                    self.bytes_out += self._inflight
                    self._counters.bytes_out += self._inflight
                    self._inflight = 0
                    conn.data_sent(trio.current_time())
                if self._finishing and not self._control:
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.finish(ErrorCode.NO_ERROR, f"peer went away while we wrote: {exc!r}")
            return
        try:
            if isinstance(self.stream, trio.abc.HalfCloseableStream):
                await self.stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    # -- pulling pushes from the history -----------------------------------------------------

    async def _pull(self, cursors: list[Cursor], chunks: list[bytes]) -> None:
        """Append pushes for ``cursors`` to ``chunks``, fairly, within the outbound budget;
        wake the writer again if any subscription still has something to send."""
        if not cursors:
            return
        budget = self.config.outbound_queue_bytes - sum(map(len, chunks))
        n = len(cursors)
        self._rotation = (self._rotation + 1) % n
        pending = False
        for i in range(n):
            cursor = cursors[(self._rotation + i) % n]
            share = max(budget // (n - i), 1)
            used, more = await self._pull_one(cursor, chunks, share)
            budget -= used
            pending = pending or more
            if self._finishing:
                return
        if pending:
            self._wake.set()

    def _count_out(self, n: int) -> None:
        self.messages_out += n
        self._counters.messages_out += n

    async def _pull_one(self, cur: Cursor, chunks: list[bytes], budget: int) -> tuple[int, bool]:
        """Pushes for one subscription: (bytes appended, more is waiting)."""
        conn = self.conn
        sub = conn.subscription(cur.sub_id)
        if not cur.active or sub is None or not sub.active:
            return 0, False
        credit = conn.credit(cur.sub_id)
        result = await self._broker.read(
            cur.topic, cur.next_seq, max_count=credit, max_bytes=max(budget, 1)
        )
        if not cur.active or conn.state not in (sc.ServerState.OPEN, sc.ServerState.DRAINING):
            return 0, False
        pos = result.position
        out: list[bytes] = []
        cur.queued_count = cur.queued_bytes = 0
        if pos.epoch != cur.epoch:
            # the topic was reset under us: carry on at sequence 1 of the new epoch; if 1 is
            # gone already, the slow-consumer rules below say what happens [PW-ORDER-12]
            cur.epoch = pos.epoch
            cur.next_seq = 1
            return 0, True
        if cur.next_seq < pos.oldest_seq:
            lost = (cur.next_seq, pos.oldest_seq - 1)
            if self.config.slow_consumer_policy == SlowConsumerPolicy.DISCONNECT:
                self._slow(cur, f"messages {lost[0]}..{lost[1]} left the history")
                return 0, False
            if credit == 0:
                return 0, False  # the GAP goes out when there is credit to continue
            out.append(conn.gap(cur.sub_id, cur.epoch, lost[0], lost[1], ErrorCode.SLOW_CONSUMER))
            self._counters.gaps += 1
            self._counters.slow_consumer_events += 1
            cur.next_seq = pos.oldest_seq
            chunks.extend(out)
            return sum(map(len, out)), True
        peer_max = conn.client.max_frame_size if conn.client else 0
        used = 0
        run = 0  # MESSAGEs appended whose credit is charged in one go (the hot path)
        for entry in result.entries:
            if credit <= run or used >= budget:
                break
            if entry.last_seq < cur.next_seq:
                continue
            if entry.first_seq > cur.next_seq:
                break  # trimmed while we looked; the next round sends the gap
            frame = entry.frame
            if not entry.offsets and len(frame) - HEADER_SIZE <= peer_max:
                out.append(frame)  # the shared bytes object, as built by the publish
                used += len(frame)
                run += 1
                cur.next_seq = entry.first_seq + 1
                continue
            if run:
                conn.consume_credit(cur.sub_id, run, epoch=cur.epoch, last_seq=cur.next_seq - 1)
                credit -= run
                self._count_out(run)
                run = 0
            before = len(out)
            pushed = self._push_entry(cur, entry, credit, peer_max, out)
            credit -= pushed
            self._count_out(pushed)
            used += sum(map(len, out[before:]))
        if run:
            conn.consume_credit(cur.sub_id, run, epoch=cur.epoch, last_seq=cur.next_seq - 1)
            credit -= run
            self._count_out(run)
        chunks.extend(out)
        if self._lagging(cur, pos.head_seq):  # after queueing what we could [PW-SLOW-5]
            return used, False
        more = cur.next_seq <= pos.head_seq and credit > 0
        return used, more

    def _push_entry(
        self, cur: Cursor, entry: Entry, credit: int, peer_max: int, out: list[bytes]
    ) -> int:
        """Append the part of ``entry`` from ``cur.next_seq`` that credit and the peer's
        frame limit allow; returns the credit used. Records too large for the peer become a
        GAP(FRAME_TOO_LARGE) and use no credit (§7.3)."""
        conn = self.conn
        if not entry.is_batch:
            if entry.payload_size > peer_max:
                out.append(
                    conn.gap(
                        cur.sub_id,
                        entry.epoch,
                        entry.first_seq,
                        entry.first_seq,
                        ErrorCode.FRAME_TOO_LARGE,
                    )
                )
                cur.next_seq = entry.first_seq + 1
                return 0
            conn.consume_credit(cur.sub_id, 1, epoch=entry.epoch, last_seq=entry.first_seq)
            out.append(entry.frame)
            cur.next_seq = entry.first_seq + 1
            return 1
        first = cur.next_seq - entry.first_seq
        stop = min(entry.count, first + credit)
        if entry.sub_batch_size(first, stop) <= peer_max:  # the common case: one frame
            conn.consume_credit(
                cur.sub_id, stop - first, epoch=entry.epoch, last_seq=entry.first_seq + stop - 1
            )
            out.append(entry.sub_batch(first, stop))
            cur.next_seq = entry.first_seq + stop
            return stop - first
        used = 0
        i = first
        while i < entry.count and used < credit:
            if entry.sub_batch_size(i, i + 1) > peer_max:
                j = i + 1
                while j < entry.count and entry.sub_batch_size(j, j + 1) > peer_max:
                    j += 1
                out.append(
                    conn.gap(
                        cur.sub_id,
                        entry.epoch,
                        entry.first_seq + i,
                        entry.first_seq + j - 1,
                        ErrorCode.FRAME_TOO_LARGE,
                    )
                )
                cur.next_seq = entry.first_seq + j
                i = j
                continue
            j = i + 1
            while (
                j < entry.count
                and used + (j - i) < credit
                and entry.sub_batch_size(i, j + 1) <= peer_max
            ):
                j += 1
            conn.consume_credit(
                cur.sub_id, j - i, epoch=entry.epoch, last_seq=entry.first_seq + j - 1
            )
            out.append(entry.sub_batch(i, j))
            used += j - i
            cur.next_seq = entry.first_seq + j
            i = j
        return used

    def _lagging(self, cur: Cursor, head_seq: int) -> bool:
        """DISCONNECT policy: close once the subscription lags more than max_lag (§8.2)."""
        if self.config.slow_consumer_policy != SlowConsumerPolicy.DISCONNECT:
            return False
        lag = head_seq - (cur.next_seq - 1)
        if lag > self.config.max_lag:
            self._slow(cur, f"lag {lag} exceeds max_lag {self.config.max_lag}")
            return True
        return False

    def _slow(self, cur: Cursor, why: str) -> None:
        self.fail(ErrorCode.SLOW_CONSUMER, f"subscription {cur.sub_id} on {cur.topic!r}: {why}")

    def _on_topic(self, cur: Cursor, epoch: int, head_seq: int, count: int, size: int) -> None:
        """Broker listener, run inside the publisher's task: must be quick and not raise.

        Under DISCONNECT this is where lag is judged each time a message is appended
        [PW-SLOW-5], counting as delivered what the writer would queue first: messages up to
        the credit that fit the room left in the outbound budget (``cur.queueable_*`` is
        that account; the writer resets it when it pulls for the subscription). A
        subscriber whose TCP connection is blocked thus lags once the budget is full.
        """
        if not cur.active or self._finishing:
            return
        policy = self.config.slow_consumer_policy
        if policy == SlowConsumerPolicy.DISCONNECT and epoch == cur.epoch and count:
            sub = self.conn.subscription(cur.sub_id)
            credit = self.conn.credit(cur.sub_id) if sub is not None and sub.active else 0
            room = self.config.outbound_queue_bytes - self.queued_bytes
            if cur.queued_count + count <= credit and cur.queued_bytes + size <= room:
                cur.queued_count += count
                cur.queued_bytes += size
            lag = head_seq - (cur.next_seq - 1) - cur.queued_count
            if lag > self.config.max_lag:
                self._slow(cur, f"lag {lag} exceeds max_lag {self.config.max_lag}")
                return
        self._wake.set()

    # -- reading and events ------------------------------------------------------------------

    async def _reader(self) -> None:
        conn = self.conn
        try:
            while True:
                data = await self.stream.receive_some(READ_SIZE)
                self.bytes_in += len(data)
                self._counters.bytes_in += len(data)
                if self._finishing:
                    if not data:
                        return
                    continue  # lingering: discard until EOF so our ERROR is not reset away
                conn.receive_data(data, trio.current_time())
                await self._process_events()
                if not data:
                    if not self._finishing:
                        self.finish(conn.close_code or ErrorCode.NO_ERROR, "peer closed")
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.finish(ErrorCode.NO_ERROR, f"peer went away: {exc!r}")
        finally:
            self._reader_done.set()

    async def _process_events(self) -> None:
        conn = self.conn
        try:
            while not self._finishing:
                if self._control_bytes >= self.config.outbound_queue_bytes:
                    await self._room.wait()
                    continue
                event = conn.next_event()
                if isinstance(event, Sentinel):  # NEED_DATA, or PAUSED until we answer
                    break
                await self._handle(event)
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
                self._poke.set()
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
            case sc.UnsubscribeRequested():
                if not self._within_rate(FrameType.UNSUBSCRIBE, event.sub_id, ""):
                    return
                cursor = self._cursors.pop(event.sub_id, None)
                if cursor is not None:
                    cursor.active = False
                    cursor.stop_listening()
                    log.debug(
                        "connection %d: unsubscribed %d from %r",
                        self.connection_id,
                        event.sub_id,
                        cursor.topic,
                    )
                self._queue(conn.unsubscribed(event.sub_id))
            case sc.CreditGranted():
                self._wake.set()
            case sc.PublishRequested():
                if not self._within_rate(FrameType.PUBLISH, event.request_id, event.topic):
                    return
                if not self._may_publish(FrameType.PUBLISH, event.request_id, event.topic):
                    return
                epoch, seq = await self._broker.publish(event.topic, event.flags, event.body)
                self.messages_in += 1
                self._counters.messages_in += 1
                await self._published(event.topic)
                if event.request_id and self._answering():
                    self._queue(conn.puback(event.request_id, epoch, seq, 1))
            case sc.PublishBatchRequested():
                if not self._within_rate(
                    FrameType.PUBLISH_BATCH, event.request_id, event.topic, cost=event.count
                ):
                    return
                if not self._may_publish(FrameType.PUBLISH_BATCH, event.request_id, event.topic):
                    return
                epoch, seq = await self._broker.publish_batch(
                    event.topic,
                    event.flags,
                    event.body,
                    event.records_start,
                    list(event.record_ends),
                )
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
        if self.server.allowed(self.permissions, "publish", topic):
            return True
        self._refuse_request(
            ErrorCode.FORBIDDEN, request_type, request_id, topic, f"may not publish on {topic!r}"
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
        try:
            res = await self._broker.resolve(
                event.topic, event.since_kind, event.since_epoch, event.since_seq, event.since_count
            )
        except InvalidPosition as exc:
            self._queue(conn.request_error(ErrorCode.INVALID_POSITION, t, sid, str(exc)))
            return
        if not self._answering():
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
        cursor = Cursor(sid, event.topic, res.epoch, res.start_seq)
        cursor.stop_listening = self._broker.listen(
            event.topic, functools.partial(self._on_topic, cursor)
        )
        self._cursors[sid] = cursor
        self._wake.set()
        log.debug(
            "connection %d: subscription %d to %r: %s, epoch %d, from seq %d",
            self.connection_id,
            sid,
            event.topic,
            Outcome(res.outcome).name,
            res.epoch,
            res.start_seq,
        )

    # -- time --------------------------------------------------------------------------------

    async def _ticker(self) -> None:
        conn = self.conn
        while not self._finishing:
            deadline = conn.next_deadline()
            deadline = min(math.inf if deadline is None else deadline, self._drain_deadline)
            self._poke = trio.Event()
            with trio.move_on_at(deadline):
                await self._poke.wait()
                continue
            now = trio.current_time()
            if now >= self._drain_deadline and not self._finishing:
                self.finish(ErrorCode.SHUTTING_DOWN, "drain time is over")
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
            self._queue(out)

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
