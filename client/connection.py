"""The client: ``connect()``, subscriptions, publishing, reconnect and resume.

It is written with anyio, so it runs on whichever event loop calls ``connect()``, asyncio's
or trio's: tasks are anyio task groups, waits anyio events and cancel scopes, and the
transport is an ``anyio.abc.ByteStream``. Nothing here may use trio or asyncio directly.

Theory of operation
-------------------
``connect()`` starts one *supervisor* task. It opens a transport, runs the handshake
through the sans-I/O :class:`~pushwire.protocol.client_conn.ClientConnection`, and then
serves that *session* with three tasks: a reader (bytes in, events out), a timer (heartbeat
deadlines from ``next_deadline()``) and the writer, the only task that calls ``send``.
When the session ends the supervisor decides: terminal error → every iterator and publisher
gets it; otherwise wait (exponential backoff with full jitter, or the GOAWAY hint) and open a
new session, re-subscribing every live subscription from its own recorded position
(SPEC.md §6.6). Application objects (:class:`Connection`, :class:`Subscription`) outlive
sessions, so iterators keep working across reconnects.

Everything that produces bytes runs synchronously on the core and appends the result to the
session's outbox, so the bytes leave in exactly the order the core produced them, whichever
task asked.

Where memory is bounded
-----------------------
* Per subscription: the buffer between the reader and the application holds at most
  ``credit`` messages (the server may not send more than granted, PW-FLOW-2) plus the
  interruption notices. Credit is granted back only as the application *takes* messages,
  in batches of half the window (PW-FLOW-7), so a slow application slows the server down
  instead of growing this process.
* Per session: the outbox. ``publish`` waits while it holds ``outbound_buffer_bytes`` or
  more; control frames (CREDIT, ACK, PONG, SUBSCRIBE) are small and always admitted.
* Reads: ``receive`` of at most ``RECEIVE_SIZE`` bytes; the decoder buffers at most one
  frame beyond that (PW-LIMIT-4).

Acknowledgements (at-least-once)
--------------------------------
A message counts as *processed* when the application asks for the next item (calls
``__anext__`` again). Processed messages are acknowledged cumulatively, at the moments of
``protocol.acks``: whenever credit is granted back (every half window), when the iterator
has nothing buffered and is about to wait, at every wake of the heartbeat timer (at least
once per interval, so an application slow with one message still acknowledges the ones
before it), on GOAWAY, and when the subscription is closed. After GOAWAY the old connection
stays open while the application works through the messages that preceded it, so they are
acknowledged before it closes; an application that takes none for APP_PROGRESS_WAIT does
not hold it open, and what it did not process comes again after the reconnect. A message
the application was given but did not finish (it did not ask for the next one) is never
acknowledged, so after a reconnect it is delivered again.

A reconnect resumes after the last message processed, not after the last ACK sent: with
ACKs coalesced the application is often ahead of them, and what it processed it never needs
again (SPEC.md §8.4 lets a client record any processed position at or above its last ACK).
Only the message in the application's hands and those still buffered come twice.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
import logging
import os
import random
import ssl
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Literal, TypeAlias

import anyio
import anyio.abc
import anyio.lowlevel

from pushwire.client.errors import (
    ConnectError,
    ConnectionLost,
    EpochChanged,
    GapDetected,
    HandshakeRejected,
    PushwireError,
    RequestError,
)
from pushwire.protocol import client_conn as cc
from pushwire.protocol.acks import AckMoment, AckView, plan_ack
from pushwire.protocol.client_conn import ClientConnection, ClientState, Since, SubStatus
from pushwire.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from pushwire.protocol.events import Sentinel
from pushwire.protocol.frames import Headers
from pushwire.protocol.frames import TopicPosition as WirePosition
from pushwire.protocol.layouts import (
    DEFAULT_PORT,
    MAX_MAX_FRAME_SIZE,
    MIN_MAX_FRAME_SIZE,
    FrameType,
    Outcome,
    SinceKind,
)
from pushwire.protocol.reconnect import Ending, GoawayHint, ReconnectPlanner
from pushwire.protocol.topics import is_pattern, pattern_problem, topic_problem

__all__ = [
    "Connection",
    "EpochChange",
    "Gap",
    "Item",
    "Message",
    "SinceSpec",
    "Subscription",
    "TopicPosition",
    "connect",
]

log = logging.getLogger("pushwire.client")

#: One read from the transport. With the frame decoder's one-frame bound this caps what a
#: session buffers on input (PW-LIMIT-4).
RECEIVE_SIZE = 65536
#: PUBLISH frames publish_many keeps in flight: about 100 KB of 82-byte publishes, enough to
#: cover a loopback or LAN round trip at 100k+ messages per second; the outbox bound still
#: applies on top.
DEFAULT_PUBLISH_WINDOW = 1024
#: Payload bytes publish_many puts in one run of PUBLISH frames (one encoding pass, one
#: write): a quarter of the default outbox bound, so a run never holds the outbox far above it.
PUBLISH_RUN_BYTES = 1 << 18
_LOST_BEFORE_REPLY = (
    "the connection dropped before the reply arrived; the publish may or may not have taken effect"
)
#: How long closing a session waits for the writer to flush the last frames (GOAWAY, ERROR).
FLUSH_TIMEOUT = 1.0
#: After GOAWAY: how long to wait for replies to requests already sent (their answers are
#: PUBACK or GOING_AWAY, so they are quick) before closing the old connection.
DRAIN_WAIT = 2.0
#: After GOAWAY: how long to wait for the application to take its next at-least-once message
#: before closing without acknowledging the rest (they come again after the reconnect): an
#: application working through a burst takes far less per message, and a stalled one must
#: not hold the old connection open (PW-CLIENT-4).
APP_PROGRESS_WAIT = 0.1


@dataclass(frozen=True, slots=True, order=True)
class TopicPosition:
    """A place in a topic's history: the last sequence seen in ``epoch`` (SPEC.md §8.4).
    Pass it as ``since=`` to resume after it."""

    epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class Message:
    """One delivered message. ``headers`` keeps order and repeated keys (PW-TOPIC-4)."""

    topic: str
    epoch: int
    seq: int
    headers: Headers
    payload: bytes

    @property
    def position(self) -> TopicPosition:
        return TopicPosition(self.epoch, self.seq)


@dataclass(frozen=True, slots=True)
class Gap:
    """Sequences ``first..last`` of ``epoch`` will never be delivered; ``reason`` says why
    (HISTORY_EXPIRED, SLOW_CONSUMER, FRAME_TOO_LARGE, or a code not known here). The item
    :meth:`Subscription.items` gives where iterating the subscription raises
    :class:`GapDetected`."""

    topic: str
    epoch: int
    first: int
    last: int
    reason: ErrorCode | int

    @property
    def position(self) -> TopicPosition:
        """Where delivery continues after: the last lost sequence."""
        return TopicPosition(self.epoch, self.last)


@dataclass(frozen=True, slots=True)
class EpochChange:
    """The topic's history was reset (e.g. the server restarted without persistence): its
    sequences restarted in ``new_epoch`` and delivery continues at ``start_seq``. Messages
    of ``old_epoch`` not yet received are lost, and so are sequences 1..start_seq-1 of the
    new epoch. The item :meth:`Subscription.items` gives where iterating the subscription
    raises :class:`EpochChanged`."""

    topic: str
    old_epoch: int
    new_epoch: int
    start_seq: int

    @property
    def position(self) -> TopicPosition:
        """Where delivery continues after: just before ``start_seq`` of the new epoch."""
        return TopicPosition(self.new_epoch, self.start_seq - 1)


#: What :meth:`Subscription.items` yields: a message, or a discontinuity of the ordered
#: stream, as a value.
Item: TypeAlias = Message | Gap | EpochChange


#: Where a subscription starts: None or "new" (only future messages), "oldest" (everything
#: retained), ("after", epoch, seq) or a TopicPosition (resume after it), ("last", n).
SinceSpec: TypeAlias = (
    Literal["new", "oldest"]
    | TopicPosition
    | tuple[Literal["after"], int, int]
    | tuple[Literal["last"], int]
    | None
)

HeadersIn: TypeAlias = Mapping[str, bytes | str] | Sequence[tuple[str, bytes | str]] | None


def parse_since(since: SinceSpec) -> Since:
    """The protocol starting point for a ``since=`` argument; ValueError when malformed."""
    if since is None or since == "new":
        return Since.new()
    if since == "oldest":
        return Since.oldest()
    if isinstance(since, TopicPosition):
        return Since.after(since.epoch, since.seq)
    if isinstance(since, tuple):
        if len(since) == 3 and since[0] == "after":
            return Since.after(int(since[1]), int(since[2]))
        if len(since) == 2 and since[0] == "last":
            return Since.last(int(since[1]))
    raise ValueError(
        f"since={since!r}: expected None, 'new', 'oldest', ('after', epoch, seq), "
        "('last', n) or a TopicPosition"
    )


def _headers(headers: HeadersIn) -> Headers | None:
    if headers is None:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((k, v.encode() if isinstance(v, str) else bytes(v)) for k, v in pairs)


def _check_topic(topic: str) -> None:
    problem = pattern_problem(topic) if is_pattern(topic) else topic_problem(topic)
    if problem is not None:
        raise RequestError(ErrorCode.INVALID_TOPIC, f"{topic!r}: {problem}")


def parse_address(address: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``host`` (port 7447, PW-TRANSPORT-2). There is no
    default host: ``:port`` is refused, and so is ``host:`` (a port left out by mistake,
    not a request for the default port)."""
    host, sep, port = address.rpartition(":")
    if not sep or (address.startswith("[") and not host.endswith("]")):
        host, sep, port = address, "", ""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ValueError(f"address {address!r} has no host")
    if sep and not port:
        raise ValueError(
            f"address {address!r} has no port after the ':' (leave the ':' out for {DEFAULT_PORT})"
        )
    try:
        number = int(port) if port else DEFAULT_PORT
    except ValueError:
        raise ValueError(f"address {address!r}: port {port!r} is not a number") from None
    if not 0 < number < 65536:
        raise ValueError(f"address {address!r}: port {number} is out of range")
    return host, number


def tls_context(
    tls: bool | ssl.SSLContext, *, ca_file: str | os.PathLike[str] | None = None
) -> ssl.SSLContext | None:
    """The TLS context for ``connect(tls=...)``: True gives the system trust store with
    certificate and host name verification (PW-TRANSPORT-4) and TLS 1.2 at least
    (PW-TRANSPORT-5; 1.3 is preferred by the defaults, PW-TRANSPORT-6); ``ca_file`` (PEM)
    replaces the system trust store, for a private or development CA. A context passed
    in is used as it is: its settings are the caller's decision.

    ``ca_file`` raises OSError when it cannot be read and ssl.SSLError when it holds no
    certificate."""
    if ca_file is not None and tls is not True:
        raise ValueError("ca_file only applies to tls=True")
    if tls is True:
        context = ssl.create_default_context(cafile=ca_file)
        context.minimum_version = max(context.minimum_version, ssl.TLSVersion.TLSv1_2)
        return context
    return tls if isinstance(tls, ssl.SSLContext) else None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Backoff(ReconnectPlanner):
    """The reconnect decision and its backoff (SPEC.md §8.9), from the pure planner: attempt
    n waits uniform(d/2, d) with d = min(max, initial * 2**n), and the counter resets only
    after a connection stayed up for the stable time or delivered a message."""

    def __init__(
        self, initial: float, maximum: float, rng: random.Random, stable: float = 10.0
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("backoff needs 0 < backoff_initial <= backoff_max")
        super().__init__(initial, maximum, stable=stable, rng=rng)


@dataclass(slots=True)
class _Options:
    host: str
    port: int
    client_name: str
    auth_token: bytes
    reconnect: bool
    backoff_initial: float
    backoff_max: float
    max_frame_size: int
    heartbeat_ms: int
    connect_timeout: float
    retry_first_connect: bool
    outbound_buffer_bytes: int
    ssl_context: ssl.SSLContext | None
    server_hostname: str | None
    open_stream: Callable[[], Awaitable[anyio.abc.ByteStream]] | None
    rng: random.Random


class _Outbox:
    """Bytes waiting for the writer task, in the order they were produced.

    ``put`` never blocks (so the core's output order is the wire order); producers that can
    wait (publishers) call ``wait_writable`` first, which bounds the outbox to about
    ``limit`` plus one frame.
    """

    def __init__(self, limit: int) -> None:
        self._buffer = bytearray()
        self._limit = limit
        self._readable = anyio.Event()
        self._writable = anyio.Event()
        self._writable.set()
        self.closed = False

    def __len__(self) -> int:
        return len(self._buffer)

    def put(self, data: bytes) -> None:
        if not data or self.closed:
            return
        self._buffer += data
        self._readable.set()

    def close(self) -> None:
        """No more input; ``take`` returns what is left, then b""."""
        self.closed = True
        self._readable.set()

    async def wait_writable(self) -> None:
        while len(self._buffer) >= self._limit and not self.closed:
            if self._writable.is_set():
                self._writable = anyio.Event()
            await self._writable.wait()

    async def take(self) -> bytes:
        while not self._buffer:
            if self.closed:
                return b""
            if self._readable.is_set():
                self._readable = anyio.Event()
            await self._readable.wait()
        data = bytes(self._buffer)
        self._buffer.clear()
        self._writable.set()
        return data


@dataclass(slots=True)
class _PublishWaiter:
    done: anyio.Event = field(default_factory=anyio.Event)
    result: cc.PublishAcked | cc.RequestFailed | ConnectionLost | None = None

    def resolve(self, result: cc.PublishAcked | cc.RequestFailed | ConnectionLost) -> None:
        if self.result is None:
            self.result = result
            self.done.set()


@dataclass(frozen=True, slots=True)
class _Failed:
    """A session ended with an error code: the server's connection-level ERROR, a protocol
    violation we detected, or a heartbeat timeout."""

    code: ErrorCode | int
    message: str


# Why a session ended. ``ConnectionClosed`` (EOF) comes from the core.
_End: TypeAlias = _Failed | cc.ConnectionClosed | ConnectionLost


class _Session:
    """One transport connection and its protocol state."""

    def __init__(self, stream: anyio.abc.ByteStream, core: ClientConnection, limit: int) -> None:
        self.stream = stream
        self.core = core
        self.outbox = _Outbox(limit)
        self.subs: dict[int, Subscription] = {}
        self.publishes: dict[int, _PublishWaiter] = {}
        self.io_scope = anyio.CancelScope()
        self.writer_done = anyio.Event()
        self.progress = anyio.Event()  # pulsed when a reply arrives (drain waits on it)
        self.end: _End | None = None
        self.goaway: cc.GoawayReceived | None = None
        self.goaway_at = 0.0
        self.ended_at = 0.0
        self.opened_at = anyio.current_time()
        self.nursery: anyio.abc.TaskGroup | None = None  # runs the reader, timer and drain tasks

    @property
    def usable(self) -> bool:
        """New requests may go out on this session."""
        return self.end is None and self.core.state is ClientState.OPEN

    def send(self, data: bytes) -> None:
        self.outbox.put(data)

    def finish(self, end: _End) -> None:
        if self.end is None:
            self.end = end
            self.ended_at = anyio.current_time()  # reconnect delays count from here
        self.io_scope.cancel()

    def pulse(self) -> None:
        self.progress.set()
        self.progress = anyio.Event()

    def has_outstanding(self) -> bool:
        if self.publishes or self.core.outstanding_publishes():
            return True
        for sub_id in self.subs:
            view = self.core.subscription(sub_id)
            if view is not None and view.status is SubStatus.PENDING:
                return True
        return False

    def owes_acks(self) -> bool:
        """At-least-once pushes the application has not yet processed, so not yet
        acknowledged: after GOAWAY the session waits for them while the application makes
        progress (PW-GOAWAY-12)."""
        return any(sub._owes_ack() for sub in self.subs.values())


@dataclass(slots=True, eq=False)
class _SentRun:
    """A run of publish_many's payloads sent on ``session``; ``taken`` of its answers
    were handed to the application."""

    session: _Session
    run: cc.PublishRun
    payloads: list[bytes]
    taken: int = 0


class _Prefetch:
    """Reads an asynchronous source of payloads ahead, up to ``limit`` of them, so that
    publish_many sends what accumulated as one run instead of one publish per item."""

    def __init__(self, source: AsyncIterable[bytes], limit: int) -> None:
        self._source = source
        self._limit = limit
        self._items: deque[bytes] = deque()
        self._ready = anyio.Event()
        self._room = anyio.Event()
        self._done = False
        self._error: BaseException | None = None

    async def run(self) -> None:
        items = self._items
        try:
            async for payload in self._source:
                items.append(bytes(payload))
                self._ready.set()
                if len(items) >= self._limit:
                    self._room = anyio.Event()
                    await self._room.wait()
        except Exception as exc:  # the source's own failure is publish_many's to raise
            self._error = exc
        finally:
            self._done = True
            self._ready.set()

    async def take(self, most: int) -> list[bytes]:
        """Up to ``most`` payloads, waiting for the first; [] once the source is over."""
        items = self._items
        while not items:
            if self._done:
                if self._error is not None:
                    raise self._error
                return []
            self._ready = anyio.Event()
            await self._ready.wait()
        batch = [items.popleft() for _ in range(min(most, len(items)))]
        self._room.set()
        return batch


class Subscription:
    """An application's subscription to one topic: an async iterator of :class:`Message`.

    It survives reconnects: the client re-subscribes from the recorded position and the
    iteration simply continues. Losses are never skipped, in either of two forms:
    :meth:`items` yields a :class:`Gap` or an :class:`EpochChange` in the stream of
    messages, so one ``async for`` handles all three; iterating the subscription itself is
    the strict form, where ``__anext__`` raises :class:`GapDetected` or
    :class:`EpochChanged` (both :class:`DeliveryInterrupted`) at a discontinuity, and
    iterating again continues after it. Both forms raise
    :class:`RequestError` when the server refuses the subscription (the iterator then ends),
    and :class:`ConnectionLost` when the connection is gone for good. It stops
    (StopAsyncIteration) after :meth:`aclose` or when the Connection closes.
    """

    def __init__(
        self,
        conn: Connection,
        topic: str,
        since: Since,
        at_least_once: bool,
        credit: int,
    ) -> None:
        self.topic = topic
        self.at_least_once = at_least_once
        self.window = credit
        self._conn = conn
        self._since = since  # used until the first SUBSCRIBED
        self._requested = since  # what the current session's SUBSCRIBE asked for
        self._buffer: deque[Item | PushwireError] = deque()
        self._buffered_messages = 0
        self._pending_grant = 0
        self._wakeup = anyio.Event()
        self._closed = False
        self._error: PushwireError | None = None
        # Positions (SPEC.md §8.4). None until the first SUBSCRIBED.
        self._received: TopicPosition | None = None  # last received from the wire (incl. gaps)
        self._processed: TopicPosition | None = None  # last the application finished
        self._delivered: TopicPosition | None = None  # last handed to the application
        self._returned: Message | None = None  # handed out, not yet processed
        self._session: _Session | None = None
        self._sub_id = 0
        #: A pattern subscription (SPEC.md §6.7): ``topic`` is the pattern, messages carry
        #: their own topics, and each topic received has its own position here.
        self.pattern = is_pattern(topic)
        self._topic_received: dict[str, TopicPosition] = {}
        #: The server has accepted the subscription (SUBSCRIBED) at least once.
        self.accepted = False

    # -- application side ----------------------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        return _message_or_raise(await self._next_item())

    def items(self) -> AsyncIterator[Item]:
        """Messages, gaps and epoch changes, as values: ``async for item in sub.items()``
        with a ``match`` on :class:`Message`, :class:`Gap` and :class:`EpochChange`. The
        same stream as iterating the subscription, which raises at a gap or epoch change
        instead; the two may be mixed."""
        return _Items(self)

    async def _next_item(self) -> Item:
        # Checkpoints as trio's and anyio's own channels do: cancellation is honoured before
        # taking anything, and the scheduler runs once per item even when the buffer is full.
        await anyio.lowlevel.checkpoint_if_cancelled()
        self._finish_previous()
        while True:
            try:
                item = self._take()
            except PushwireError:
                await anyio.lowlevel.cancel_shielded_checkpoint()
                raise
            if item is not None:
                await anyio.lowlevel.cancel_shielded_checkpoint()
                return item
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._flush_ack(AckMoment.IDLE)  # everything processed so far is acknowledged
            if self._session is not None:
                self._session.pulse()  # a draining session may be waiting for this
            if self._wakeup.is_set():
                self._wakeup = anyio.Event()
            await self._wakeup.wait()

    def receive_nowait(self) -> Message:
        """Like ``__anext__`` without waiting: anyio.WouldBlock when nothing is buffered,
        anyio.EndOfStream when the subscription has ended."""
        self._finish_previous()
        item = self._take()
        if item is not None:
            return _message_or_raise(item)
        if self._closed:
            if self._error is not None:
                raise self._error
            raise anyio.EndOfStream
        self._flush_ack(AckMoment.IDLE)
        raise anyio.WouldBlock

    def _take(self) -> Item | None:
        """The next buffered item; raises a buffered terminal error; None when the buffer
        is empty."""
        if not self._buffer:
            return None
        item = self._buffer.popleft()
        if isinstance(item, Message):
            self._buffered_messages -= 1
            self._returned = item
            self._delivered = item.position
            self._consumed_one()
            return item
        if isinstance(item, Gap | EpochChange):
            self._delivered = self._processed = item.position
            return item
        self._closed = True
        raise item

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Unsubscribe. Messages already taken and processed are acknowledged first
        (PW-ACK-7); the one being processed is not. Idempotent."""
        if self._closed and self._session is None:
            return
        self._closed = True
        self._flush_ack(AckMoment.UNSUBSCRIBE)
        session = self._session
        if session is not None and session.end is None:
            try:
                session.send(session.core.unsubscribe(self._sub_id))
            except LocalProtocolError:
                pass  # the session is closing anyway
        self._unbind()
        self._conn._forget(self)
        self._wake()
        await anyio.lowlevel.checkpoint()

    def position(self) -> TopicPosition | None:
        """The last message (or interruption) handed to the application."""
        return self._delivered

    @property
    def buffered(self) -> int:
        """Messages received and not yet taken (at most ``window``)."""
        return self._buffered_messages

    # -- bookkeeping -------------------------------------------------------------------------

    def _wake(self) -> None:
        self._wakeup.set()

    def _finish_previous(self) -> None:
        if self._returned is not None:
            self._processed = self._returned.position
            self._returned = None

    def _consumed_one(self) -> None:
        self._pending_grant += 1
        session = self._session
        if session is None or session.end is not None:
            return
        if session.goaway is not None:
            session.pulse()  # the drain waits while the application makes progress
        if self._pending_grant >= max(1, self.window // 2):
            try:
                data = session.core.grant_credit(
                    self._sub_id, self._pending_grant, now=anyio.current_time()
                )
            except LocalProtocolError:
                return
            session.send(data)
            self._pending_grant = 0
            self._flush_ack(AckMoment.GRANT)

    def _owes_ack(self) -> bool:
        """At-least-once messages are buffered or in the application's hands: not yet
        processed, so not yet acknowledged."""
        return self.at_least_once and (self._buffered_messages > 0 or self._returned is not None)

    def _flush_ack(self, moment: AckMoment) -> None:
        """Send the ACK that ``protocol.acks`` plans for this moment, if any."""
        if not self.at_least_once:
            return
        session = self._session
        if session is None or session.end is not None:
            return
        view = session.core.subscription(self._sub_id)
        active = None
        if view is not None and view.status is SubStatus.ACTIVE:
            active = AckView(view.epoch, view.last_acked, view.last_delivered)
        done = self._processed
        seq = plan_ack(moment, None if done is None else (done.epoch, done.seq), active)
        if seq is None:
            return
        try:
            session.send(session.core.ack(self._sub_id, seq, now=anyio.current_time()))
        except LocalProtocolError:  # the session is closing
            pass

    def _resume_point(self) -> tuple[Since, int]:
        """Where a new session's SUBSCRIBE starts, and its initial credit."""
        if self.pattern:  # per topic positions go with the SUBSCRIBE instead
            self._pending_grant = 0
            return self._since, self.window - self._buffered_messages
        if self.at_least_once:
            # After the last processed message, which may be ahead of the last ACK (SPEC.md
            # §8.4): everything not processed comes again, so drop what is buffered.
            self._buffer.clear()
            self._buffered_messages = 0
            position = self._processed
        else:
            position = self._received
        self._pending_grant = 0
        since = self._since if position is None else Since.after(position.epoch, position.seq)
        return since, self.window - self._buffered_messages

    def topic_positions(self) -> dict[str, TopicPosition]:
        """A pattern subscription's position in each topic it has received from (including
        gaps and epoch changes): what a reconnect resumes from [PW-RESUME-6]."""
        return dict(self._topic_received)

    def _bind(self, session: _Session) -> None:
        since, credit = self._resume_point()
        if self.pattern:
            positions = [
                WirePosition(topic, p.epoch, p.seq) for topic, p in self._topic_received.items()
            ]
            self._sub_id, data = session.core.subscribe_pattern(
                self.topic,
                since,
                positions=positions,
                initial_credit=credit,
                now=anyio.current_time(),
            )
        else:
            self._sub_id, data = session.core.subscribe(
                self.topic,
                since,
                at_least_once=self.at_least_once,
                initial_credit=credit,
                now=anyio.current_time(),
            )
        self._session = session
        self._requested = since
        session.subs[self._sub_id] = self
        session.send(data)

    def _unbind(self) -> None:
        if self._session is not None:
            self._session.subs.pop(self._sub_id, None)
        self._session = None

    def _fail(self, error: PushwireError) -> None:
        """Terminal for this subscription: raised after what is buffered."""
        self._error = error
        self._closed = True
        self._unbind()
        self._wake()

    # -- events from the session ---------------------------------------------------------------

    def _on_subscribed(self, ev: cc.SubscriptionConfirmed) -> None:
        self.accepted = True
        if self.pattern:
            return  # the topics' own outcomes follow (TopicStatusReceived)
        requested = self._requested
        if ev.outcome is Outcome.GAP:
            before = TopicPosition(ev.epoch, ev.gap_first - 1)
            self._push(Gap(self.topic, ev.epoch, ev.gap_first, ev.gap_last, ev.gap_reason))
        elif ev.outcome is Outcome.EPOCH_CHANGED:
            before = TopicPosition(requested.epoch, requested.seq)
            self._push(EpochChange(self.topic, requested.epoch, ev.epoch, ev.start_seq))
        else:
            before = TopicPosition(ev.epoch, ev.start_seq - 1)
        self._received = TopicPosition(ev.epoch, ev.start_seq - 1)
        if self.at_least_once or self._processed is None:
            self._processed = before
        if self._delivered is None:
            self._delivered = before
        self._since = Since.after(ev.epoch, ev.start_seq - 1)

    def _on_message(self, ev: cc.MessageReceived) -> None:
        self._buffer.append(Message(ev.topic, ev.epoch, ev.seq, ev.headers or (), ev.payload))
        self._buffered_messages += 1
        self._received = TopicPosition(ev.epoch, ev.seq)
        if self.pattern:
            self._topic_received[ev.topic] = self._received
        self._wake()

    def _on_topic_status(self, ev: cc.TopicStatusReceived) -> None:
        """One topic of a pattern resumed, skipped or restarted: as a single topic's
        SUBSCRIBED outcome would (SPEC.md §6.6), but for ``ev.topic``."""
        old = self._topic_received.get(ev.topic)
        if ev.outcome is Outcome.GAP:
            self._push(Gap(ev.topic, ev.epoch, ev.gap_first, ev.gap_last, ev.gap_reason))
        elif ev.outcome is Outcome.EPOCH_CHANGED:
            old_epoch = old.epoch if old is not None else 0
            self._push(EpochChange(ev.topic, old_epoch, ev.epoch, ev.start_seq))
        self._topic_received[ev.topic] = TopicPosition(ev.epoch, ev.start_seq - 1)

    def _on_gap(self, ev: cc.GapReceived) -> None:
        self._push(Gap(self.topic, ev.epoch, ev.first, ev.last, ev.reason))
        self._received = TopicPosition(ev.epoch, ev.last)

    def _on_epoch_reset(self, ev: cc.EpochReset) -> None:
        self._push(EpochChange(ev.topic, ev.old_epoch, ev.new_epoch, 1))
        self._received = TopicPosition(ev.new_epoch, 0)
        if self.pattern:
            self._topic_received[ev.topic] = self._received

    def _push(self, item: Gap | EpochChange) -> None:
        self._buffer.append(item)
        self._wake()


class _Items(AsyncIterator[Item]):
    """:meth:`Subscription.items`: the subscription's stream with interruptions as values."""

    def __init__(self, sub: Subscription) -> None:
        self._sub = sub

    async def __anext__(self) -> Item:
        return await self._sub._next_item()


def _message_or_raise(item: Item) -> Message:
    """The strict form: a discontinuity is raised."""
    match item:
        case Message():
            return item
        case Gap():
            raise GapDetected(item.topic, item.first, item.last, item.reason, item.epoch)
        case EpochChange():
            raise EpochChanged(item.topic, item.old_epoch, item.new_epoch, item.start_seq)


class Connection:
    """A client connection that reconnects by itself; made by :func:`connect`."""

    def __init__(self, options: _Options) -> None:
        self._opts = options
        self._subscriptions: dict[str, Subscription] = {}
        self._session: _Session | None = None
        self._changed = anyio.Event()
        self._fatal: PushwireError | None = None
        self._closing = False
        self._run_done = anyio.Event()
        self.connections_made = 0
        self.welcome: cc.Welcomed | None = None
        self._backoff = Backoff(options.backoff_initial, options.backoff_max, options.rng)

    # -- public API ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """A session is open and takes requests (not draining after GOAWAY)."""
        return self._session is not None and self._session.usable

    def subscribe(
        self,
        topic: str,
        *,
        since: SinceSpec = None,
        at_least_once: bool = False,
        credit: int = 64,
    ) -> Subscription:
        """Subscribe to ``topic``; iterate the result to receive messages.

        ``credit`` is the window: at most that many messages are in flight or buffered for
        this subscription. One subscription per topic per Connection.

        A ``topic`` with ``+`` (one segment) or a last ``#`` (the rest, including the
        parent) is a pattern (SPEC.md §9.4): one subscription, one window, every matching
        topic, each :class:`Message` carrying its own topic and that topic's sequence.
        ``since`` ("new", "oldest" or ("last", n)) applies to each topic not yet received;
        after a reconnect each topic received resumes from its own position, and the
        others start by ``since`` again: with "new", messages published while disconnected
        to a topic this subscription never received from are not delivered (use "oldest"
        to get whatever the history still holds).
        """
        _check_topic(topic)
        start = parse_since(since)
        if is_pattern(topic) and (at_least_once or start.kind is SinceKind.AFTER):
            raise ValueError(
                "a pattern subscription is at-most-once and has no single position to resume"
            )
        if not 1 <= credit <= 0xFFFF_FFFF:
            raise ValueError(f"credit must be 1..2**32-1, not {credit}")
        if self._fatal is not None:
            raise self._fatal
        if self._closing:
            raise ConnectionLost("the connection is closed")
        if topic in self._subscriptions:
            raise RequestError(ErrorCode.ALREADY_SUBSCRIBED, f"{topic!r} is already subscribed")
        sub = Subscription(self, topic, start, at_least_once, credit)
        self._subscriptions[topic] = sub
        session = self._session
        if session is not None and session.usable:
            sub._bind(session)
        return sub

    async def publish(self, topic: str, payload: bytes, headers: HeadersIn = None) -> int:
        """Publish one message and wait for its PUBACK; returns its sequence number.

        Waits for a connection when there is none (bound it with a cancel scope). Raises
        RequestError when refused, ConnectionLost when the connection dropped before the
        PUBACK (the outcome is then unknown).
        """
        _check_topic(topic)
        encoded = _headers(headers)
        ack = await self._request(lambda core: core.publish(topic, bytes(payload), encoded))
        return ack.first_seq

    async def publish_many(
        self,
        topic: str,
        payloads: Iterable[bytes] | AsyncIterable[bytes],
        on_ack: Callable[[int], object],
        *,
        headers: HeadersIn = None,
        window: int = DEFAULT_PUBLISH_WINDOW,
    ) -> int:
        """Publish each payload as its own message with up to ``window`` PUBLISH frames
        awaiting their PUBACK (SPEC §7.3: requests are answered in order, so pipelining
        keeps them ordered); ``on_ack(seq)`` is called for each, in payload order, once its
        PUBACK came. Returns how many were published.

        What :meth:`publish` does for one message, for a stream of them at the speed of the
        link rather than of a round trip per message. A publish refused with GOING_AWAY
        (the server is draining, so it and every later one were not processed) is sent
        again, in order, on the next connection. Raises RequestError for any other refusal
        and ConnectionLost when the connection dropped with publishes unanswered (their
        outcome is then unknown; the ones acknowledged so far were passed to ``on_ack``).

        The payloads at hand go out as runs (:meth:`ClientConnection.publish_run`): one
        encoding pass and one write per run, and their PUBACKs are read in bulk, so the
        cost per message is a few list operations. An asynchronous source is read by a
        task of its own, so whatever it produced while the previous run was sent goes out
        together, and a lone message goes out at once.
        """
        if window < 1:
            raise ValueError("window must be at least 1")
        _check_topic(topic)
        encoded = _headers(headers)
        runs: deque[_SentRun] = deque()  # sent, not every answer handed over; oldest first
        in_flight = 0  # payloads sent whose answer was not handed over yet
        count = 0

        async def settle(limit: int, until: _Session | None = None) -> None:
            """Hand over answered publishes until at most ``limit`` are unanswered, or
            (with ``until``) until every run left was sent on that session."""
            nonlocal count, in_flight
            while runs:
                sent = runs[0]
                if sent.session is until:
                    return
                answers = sent.run.answers
                taken = sent.taken
                if taken == len(answers):
                    if in_flight <= limit:
                        return
                    if sent.session.end is not None:
                        raise ConnectionLost(_LOST_BEFORE_REPLY)
                    await sent.session.progress.wait()
                    continue
                for seq in answers[taken:]:
                    if type(seq) is not int:
                        break
                    taken += 1
                    on_ack(seq)
                handed = taken - sent.taken
                sent.taken = taken
                count += handed
                in_flight -= handed
                if taken == len(sent.payloads):
                    runs.popleft()
                elif taken < len(answers):
                    await refused(sent, answers[taken])  # type: ignore[arg-type]

        async def refused(sent: _SentRun, failed: cc.RequestFailed) -> None:
            nonlocal in_flight
            if failed.code != ErrorCode.GOING_AWAY:
                raise RequestError(failed.code, failed.message)
            # This one and every later one were refused unprocessed: send them again.
            again = sent.payloads[sent.taken :]
            for later in runs:
                if later is not sent:
                    again += later.payloads
                while not later.run.done and later.session.end is None:
                    await later.session.progress.wait()
            runs.clear()
            in_flight = 0
            await send(again)

        async def send(batch: list[bytes]) -> None:
            """``batch`` as runs of at most PUBLISH_RUN_BYTES of payload each."""
            nonlocal in_flight
            ends = list(itertools.accumulate(map(len, batch)))
            i = 0
            while i < len(batch):
                session = self._session
                if session is None or not session.usable:
                    session = await self._usable_session()
                await session.outbox.wait_writable()
                if not session.usable:
                    continue
                if runs and runs[0].session is not session:
                    # What went out on the previous connection is answered first: a
                    # GOING_AWAY there is sent again before anything newer, in order.
                    await settle(0, until=session)
                    continue
                base = ends[i - 1] if i else 0
                j = max(i + 1, bisect.bisect_right(ends, base + PUBLISH_RUN_BYTES, i))
                part = batch[i:j]
                try:
                    run, data = session.core.publish_run(topic, part, encoded)
                except LocalProtocolError as exc:
                    if exc.code != ErrorCode.FRAME_TOO_LARGE or len(part) == 1:
                        raise RequestError(exc.code, str(exc.args[0])) from None
                    # One at a time, so those before the one too large are sent first and
                    # it raises on its own, as publish() would.
                    j = i + 1
                    part = batch[i:j]
                    try:
                        run, data = session.core.publish_run(topic, part, encoded)
                    except LocalProtocolError as single:
                        raise RequestError(single.code, str(single.args[0])) from None
                session.send(data)
                runs.append(_SentRun(session, run, part))
                in_flight += len(part)
                i = j

        # A full window drains to half before it is topped up again: the publishes then go
        # out in bursts, many per write, rather than one write per PUBACK that came back.
        low = window // 2
        if isinstance(payloads, AsyncIterable):
            source = _Prefetch(payloads, window)
            failure: Exception | None = None
            async with anyio.create_task_group() as reader:
                reader.start_soon(source.run)
                try:
                    while True:
                        if in_flight >= window:
                            await settle(low)
                        else:
                            await settle(in_flight)  # what is answered already
                        batch = await source.take(window - in_flight)
                        if not batch:
                            break
                        await send(batch)
                    await settle(0)
                except Exception as exc:  # raised as it is, not inside an exception group
                    failure = exc
                finally:
                    reader.cancel_scope.cancel()
            if failure is not None:
                raise failure
            return count
        it = iter(payloads)
        while True:
            if in_flight >= window:
                await settle(low)
            batch = [bytes(p) for p in itertools.islice(it, window - in_flight)]
            if not batch:
                break
            await send(batch)
        await settle(0)
        return count

    async def publish_batch(
        self,
        topic: str,
        payloads: Sequence[bytes | tuple[bytes, HeadersIn]],
    ) -> int:
        """Publish 1-65535 messages atomically (contiguous sequences); returns the first."""
        _check_topic(topic)
        records: list[bytes | tuple[bytes, Headers | None]] = [
            bytes(p) if isinstance(p, bytes | bytearray) else (bytes(p[0]), _headers(p[1]))
            for p in payloads
        ]
        ack = await self._request(lambda core: core.publish_batch(topic, records))
        return ack.first_seq

    async def wait_connected(self) -> None:
        """Return once a connection is up and takes requests (bound it with a cancel
        scope); raises the terminal error when there will be none."""
        await self._usable_session()

    def positions(self) -> dict[str, TopicPosition]:
        """For each subscription, the last message (or interruption) handed to the
        application; pass one as ``since=`` to continue after it later."""
        return {
            topic: sub._delivered
            for topic, sub in self._subscriptions.items()
            if sub._delivered is not None
        }

    # -- requests --------------------------------------------------------------------------------

    async def _usable_session(self) -> _Session:
        while True:
            if self._fatal is not None:
                raise self._fatal
            if self._closing:
                raise ConnectionLost("the connection is closed")
            session = self._session
            if session is not None and session.usable:
                return session
            await self._changed.wait()

    async def _request(
        self, build: Callable[[ClientConnection], tuple[int, bytes]]
    ) -> cc.PublishAcked:
        while True:
            session = await self._usable_session()
            await session.outbox.wait_writable()
            if not session.usable:
                continue
            try:
                request_id, data = build(session.core)
            except LocalProtocolError as exc:
                raise RequestError(exc.code, str(exc.args[0])) from None
            waiter = _PublishWaiter()
            session.publishes[request_id] = waiter
            session.send(data)
            try:
                await waiter.done.wait()
            finally:
                session.publishes.pop(request_id, None)
            result = waiter.result
            if isinstance(result, cc.PublishAcked):
                return result
            if isinstance(result, cc.RequestFailed):
                if result.code == ErrorCode.GOING_AWAY:
                    continue  # not processed; safe to send again on the next connection
                raise RequestError(result.code, result.message)
            assert isinstance(result, ConnectionLost)
            raise result

    # -- session management ---------------------------------------------------------------------

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _forget(self, sub: Subscription) -> None:
        if self._subscriptions.get(sub.topic) is sub:
            del self._subscriptions[sub.topic]

    def _set_fatal(self, error: PushwireError) -> None:
        if self._fatal is None:
            self._fatal = error
        for sub in list(self._subscriptions.values()):
            sub._fail(error)
        self._subscriptions.clear()
        self._pulse()

    async def _open_stream(self) -> anyio.abc.ByteStream:
        opts = self._opts
        if opts.open_stream is not None:
            return await opts.open_stream()
        if opts.ssl_context is None:
            return await anyio.connect_tcp(opts.host, opts.port)
        # TLS from the first byte (PW-TRANSPORT-3), handshake included, inside the caller's
        # connect timeout; a TLS close without close_notify is an error, not an EOF.
        return await anyio.connect_tcp(
            opts.host,
            opts.port,
            tls=True,
            ssl_context=opts.ssl_context,
            tls_hostname=opts.server_hostname or opts.host,
            tls_standard_compatible=True,
        )

    async def _handshake(self, stream: anyio.abc.ByteStream) -> _Session:
        """Preface + HELLO, then read until WELCOME. Raises HandshakeRejected for a server
        refusal, ConnectionLost for anything else (EOF, transport error)."""
        opts = self._opts
        core = ClientConnection()
        session = _Session(stream, core, opts.outbound_buffer_bytes)
        await stream.send(
            core.initiate(
                opts.client_name,
                opts.auth_token,
                opts.max_frame_size,
                opts.heartbeat_ms,
                now=anyio.current_time(),
            )
        )
        while True:
            data = await _receive(stream)
            core.receive_data(data, anyio.current_time())
            try:
                for ev in core.events():
                    if isinstance(ev, cc.Welcomed):
                        # what arrived behind WELCOME stays buffered in the core for _serve
                        session.send(core.data_to_send())
                        self.welcome = ev
                        return session
                    if isinstance(ev, cc.PeerError):
                        raise HandshakeRejected(ev.code, ev.message)
                    if isinstance(ev, cc.ConnectionClosed):
                        raise ConnectionLost(
                            "the server closed the connection during the handshake"
                        )
            except RemoteProtocolError as exc:
                error = core.data_to_send()
                if error:
                    await stream.send(error)
                raise HandshakeRejected(exc.code, _violation_message(exc)) from None

    async def _attempt(self) -> _Session:
        """One connection attempt: the stream and the handshake, within the connect timeout.
        Whatever ends it early (a refusal, an error, the timeout, or the caller cancelling
        the connect or closing the Connection) closes the stream it opened; a dropped one
        would stay open until the garbage collector came across it."""
        stream: anyio.abc.ByteStream | None = None
        try:
            with anyio.fail_after(self._opts.connect_timeout):
                stream = await self._open_stream()
                return await self._handshake(stream)
        except BaseException:
            if stream is not None:
                await anyio.aclose_forcefully(stream)
            raise

    async def _establish(self, first: bool, backoff: Backoff) -> _Session:
        """A session in state OPEN; retries with backoff unless that is not wanted."""
        opts = self._opts
        while True:
            try:
                session = await self._attempt()
                self.connections_made += 1
                log.info(
                    "connected to %s:%s (connection %s, server %r)",
                    opts.host,
                    opts.port,
                    self.welcome.connection_id if self.welcome else "?",
                    self.welcome.server_name if self.welcome else "?",
                )
                return session
            except HandshakeRejected as exc:
                terminal = cc.is_terminal(exc.code)
                if terminal or (first and not opts.retry_first_connect) or not opts.reconnect:
                    raise
                log.warning("handshake refused (%s); retrying", exc)
            except (
                OSError,
                TimeoutError,
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
                ConnectionLost,
            ) as exc:
                why = _failure_reason(exc)
                if first and not opts.retry_first_connect:
                    raise ConnectError(f"cannot connect to {opts.host}:{opts.port}: {why}") from exc
                log.info("connecting to %s:%s failed: %s", opts.host, opts.port, why)
            await anyio.sleep(backoff.next_delay())

    async def _run(
        self, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The supervisor: connect, serve, decide (SPEC.md §8.9), repeat."""
        opts = self._opts
        backoff = self._backoff
        first = True
        try:
            while not self._closing:
                try:
                    session = await self._establish(first, backoff)
                except PushwireError as exc:
                    if first:
                        raise
                    self._set_fatal(exc)
                    return
                if first:
                    task_status.started()
                    first = False
                backoff.opened(session.opened_at)  # WELCOME alone never resets it
                await self._serve(session)
                end = session.end
                if self._closing:
                    return
                plan = backoff.ended(*_ending(session), session.ended_at, goaway=_hint(session))
                if plan.reconnect and plan.at is not None and opts.reconnect:
                    log.info(
                        "connection ended (%s); reconnecting in %.3fs",
                        _describe(end),
                        max(0.0, plan.at - anyio.current_time()),
                    )
                    await anyio.sleep_until(plan.at)
                    continue
                fatal = self._fatal_for(session) or ConnectionLost(
                    f"not reconnecting after {_describe(end)}", _end_code(session)
                )
                self._set_fatal(fatal)
                return
        finally:
            self._run_done.set()

    def _fatal_for(self, session: _Session) -> PushwireError | None:
        """What the application gets when ``session`` is not followed by another, named
        after what ended it: a terminal code, else the GOAWAY (with ``reconnect=False`` the
        client does not follow a GOAWAY's hint either, and the GOAWAY, not the close that
        followed it, is what ended the connection), else how it ended."""
        end = session.end
        if isinstance(end, _Failed) and cc.is_terminal(end.code):
            # Terminal codes and protocol violations are not retried (PW-ERR-10).
            return ConnectionLost(end.message, end.code)
        goaway = session.goaway
        if goaway is not None and not isinstance(end, _Failed):
            reason = f": {goaway.reason}" if goaway.reason else ""
            return ConnectionLost(f"server going away{reason}", goaway.code)
        if not self._opts.reconnect:
            if isinstance(end, ConnectionLost):
                return end
            code = end.code if end is not None else None
            return ConnectionLost(_describe(end), code)
        return None

    async def _serve(self, session: _Session) -> None:
        self._session = session
        for sub in list(self._subscriptions.values()):
            sub._bind(session)
        self._pulse()
        self._process(session)  # what arrived behind WELCOME
        try:
            async with anyio.create_task_group() as nursery:
                nursery.start_soon(self._writer, session)
                with session.io_scope:
                    async with anyio.create_task_group() as io:
                        session.nursery = io
                        io.start_soon(self._reader, session)
                        io.start_soon(self._timer, session)
                        if session.goaway is not None:
                            io.start_soon(self._drain, session)
                        if session.end is None:
                            await anyio.sleep_forever()
                # Flush what is queued (a final ERROR or GOAWAY), briefly (PW-ERR-1).
                session.outbox.close()
                with anyio.move_on_after(FLUSH_TIMEOUT):
                    await session.writer_done.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._end_session(session)
            await anyio.aclose_forcefully(session.stream)

    def _end_session(self, session: _Session) -> None:
        if self._session is session:
            self._session = None
        lost = ConnectionLost(_LOST_BEFORE_REPLY)
        for waiter in list(session.publishes.values()):
            waiter.resolve(lost)
        for sub in list(session.subs.values()):
            sub._unbind()
        session.pulse()
        self._pulse()

    async def _writer(self, session: _Session) -> None:
        try:
            while True:
                data = await session.outbox.take()
                if not data:
                    return
                await session.stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            session.finish(ConnectionLost(f"write failed: {exc}"))
        finally:
            session.writer_done.set()

    async def _reader(self, session: _Session) -> None:
        core = session.core
        while session.end is None:
            try:
                data = await _receive(session.stream)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                session.finish(ConnectionLost(f"read failed: {exc}"))
                return
            core.receive_data(data, anyio.current_time())
            self._process(session)

    async def _timer(self, session: _Session) -> None:
        core = session.core
        while session.end is None:
            deadline = core.next_deadline()
            if deadline is None:
                return
            await anyio.sleep_until(deadline)
            if core.timed_out(anyio.current_time()):
                await anyio.sleep(0)  # the reader first hands over what arrived (PW-CLIENT-14)
                if session.end is not None:
                    return
            for sub in list(session.subs.values()):
                sub._flush_ack(AckMoment.TICK)  # wakes at least once per interval
            session.send(core.tick(anyio.current_time()))
            if core.state is ClientState.CLOSED and core.close_code is not None:
                message = "nothing received from the server for three heartbeat intervals"
                session.finish(_Failed(core.close_code, message))

    def _process(self, session: _Session) -> None:
        """Dispatch every event the core has now; a violation by the server ends the
        session with its code, after the ERROR the core queued for it."""
        core = session.core
        answered = core.run_answers
        take = core.take_pubacks  # before each event: PUBACKs for publish_many in bulk
        try:
            take()
            while not isinstance(ev := core.next_event(), Sentinel):
                self._dispatch(session, ev)
                take()
        except RemoteProtocolError as exc:
            session.send(core.data_to_send())
            session.finish(_Failed(exc.code, _violation_message(exc)))
            return
        finally:
            if core.run_answers != answered:
                session.pulse()
        session.send(core.data_to_send())

    def _dispatch(self, session: _Session, ev: cc.Event) -> None:
        match ev:
            case cc.MessageReceived():
                sub = session.subs.get(ev.sub_id)
                if sub is not None:
                    sub._on_message(ev)
                    self._backoff.delivered()
            case cc.SubscriptionConfirmed():
                sub = session.subs.get(ev.sub_id)
                if sub is not None:
                    sub._on_subscribed(ev)
                session.pulse()
            case cc.TopicStatusReceived():
                sub = session.subs.get(ev.sub_id)
                if sub is not None:
                    sub._on_topic_status(ev)
            case cc.GapReceived():
                sub = session.subs.get(ev.sub_id)
                if sub is not None:
                    sub._on_gap(ev)
            case cc.EpochReset():
                sub = session.subs.get(ev.sub_id)
                if sub is not None:
                    sub._on_epoch_reset(ev)
            case cc.PublishAcked():
                waiter = session.publishes.get(ev.request_id)
                if waiter is not None:
                    waiter.resolve(ev)
                session.pulse()
            case cc.RequestFailed():
                self._on_request_failed(session, ev)
                session.pulse()
            case cc.UnsubscribeConfirmed():
                pass
            case cc.GoawayReceived():
                self._on_goaway(session, ev)
            case cc.PeerError():
                session.finish(_Failed(ev.code, ev.message))
            case cc.ConnectionClosed():
                session.finish(ev)
            case _:  # Welcomed is consumed by the handshake
                pass

    def _on_request_failed(self, session: _Session, ev: cc.RequestFailed) -> None:
        if ev.topic is not None and ev.request_type in (
            FrameType.PUBLISH,
            FrameType.PUBLISH_BATCH,
        ):
            waiter = session.publishes.get(ev.request_id)
            if waiter is not None:
                waiter.resolve(ev)
        elif ev.topic is not None and ev.request_type is FrameType.SUBSCRIBE:
            sub = session.subs.pop(ev.request_id, None)
            if sub is None:
                return
            sub._session = None
            if ev.code == ErrorCode.GOING_AWAY:
                return  # re-subscribed on the next connection
            self._forget(sub)
            sub._fail(RequestError(ev.code, ev.message))
        else:
            # INVALID_ACK can follow a topic reset that raced our ACK (ACK carries no
            # epoch, SPEC.md §8.3); it is harmless because resume uses our own position.
            # An ERROR matching no request of ours is reported and ignored (PW-ERR-12).
            kind = ev.request_type
            log.info(
                "server refused %s %s: %s: %s",
                kind.name if isinstance(kind, FrameType) else f"request type 0x{kind:02x}",
                ev.request_id,
                _code_name(ev.code),
                ev.message,
            )

    def _on_goaway(self, session: _Session, ev: cc.GoawayReceived) -> None:
        """Stop new requests, acknowledge what was processed (PW-GOAWAY-12), wait briefly
        for replies already owed, close, and reconnect after the hint (PW-GOAWAY-7) unless
        ``reconnect=False``."""
        session.goaway = ev
        session.goaway_at = anyio.current_time()  # the GOAWAY's delay counts from here
        if self._opts.reconnect:
            log.info(
                "server going away (%s: %s); reconnect hint %d ms + up to %d ms",
                _code_name(ev.code),
                ev.reason,
                ev.reconnect_after_ms,
                ev.jitter_ms,
            )
        else:
            log.info("server going away (%s: %s); not reconnecting", _code_name(ev.code), ev.reason)
        for sub in list(session.subs.values()):
            sub._flush_ack(AckMoment.GOAWAY)
        self._pulse()  # publishers now wait for the next session
        if session.nursery is not None:  # else _serve starts it once the nursery exists
            session.nursery.start_soon(self._drain, session)

    async def _drain(self, session: _Session) -> None:
        """After GOAWAY: close once the replies owed have come and the application has
        processed (and so acknowledged) the at-least-once pushes that preceded the GOAWAY,
        or stopped taking them; never later than DRAIN_WAIT (PW-CLIENT-4)."""
        with anyio.move_on_after(DRAIN_WAIT):
            while session.end is None:
                if session.has_outstanding():
                    await session.progress.wait()
                elif session.owes_acks():
                    with anyio.move_on_after(APP_PROGRESS_WAIT) as stalled:
                        await session.progress.wait()
                    if stalled.cancelled_caught:
                        break
                else:
                    break
        if session.end is None:
            try:
                session.send(session.core.goaway(now=anyio.current_time()))
            except LocalProtocolError:
                pass
            session.finish(ConnectionLost("closed after GOAWAY"))

    async def _shutdown(self) -> None:
        """Close deliberately: ack what was processed, GOAWAY(NO_ERROR) (PW-GOAWAY-8)."""
        self._closing = True
        session = self._session
        if session is not None and session.end is None:
            for sub in list(session.subs.values()):
                sub._flush_ack(AckMoment.CLOSE)
            try:
                session.send(session.core.goaway(now=anyio.current_time()))
            except LocalProtocolError:
                pass
            session.finish(ConnectionLost("closed by the application"))
        for sub in list(self._subscriptions.values()):
            sub._closed = True
            sub._wake()
        self._pulse()
        if session is not None:
            with anyio.move_on_after(FLUSH_TIMEOUT):
                await session.writer_done.wait()


async def _receive(stream: anyio.abc.ByteStream) -> bytes:
    """At most ``RECEIVE_SIZE`` bytes; b"" at EOF, which is how the core is told of it
    (anyio raises EndOfStream instead)."""
    try:
        return await stream.receive(RECEIVE_SIZE)
    except anyio.EndOfStream:
        return b""


def _ending(session: _Session) -> tuple[Ending, ErrorCode | int | None]:
    """How a session ended, for the reconnect planner (SPEC.md §8.9)."""
    end = session.end
    if isinstance(end, _Failed):
        return Ending.PEER_ERROR, end.code  # ours or the server's: the code's class decides
    if session.goaway is not None:
        return Ending.GOAWAY, session.goaway.code
    return Ending.EOF, None


def _hint(session: _Session) -> GoawayHint | None:
    ev = session.goaway
    if ev is None:
        return None
    return GoawayHint(session.goaway_at, ev.reconnect_after_ms, ev.jitter_ms)


def _end_code(session: _Session) -> ErrorCode | int | None:
    return _ending(session)[1]


def _failure_reason(exc: BaseException) -> str:
    """Why connecting failed, in a few words. The error that says it is often the cause:
    anyio wraps an EOF during the TLS handshake in BrokenResourceError (whose own text is
    empty), and the refused attempts of ``connect_tcp`` in "All connection attempts
    failed"."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    cause: BaseException = exc
    if isinstance(exc, anyio.BrokenResourceError | OSError) and exc.__cause__ is not None:
        cause = exc.__cause__
        if isinstance(cause, BaseExceptionGroup):
            cause = cause.exceptions[0]  # one per address tried; the first says enough
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {cause.verify_message}"
    if isinstance(cause, ssl.SSLEOFError):
        return "the server closed the connection during the TLS handshake (is it using TLS?)"
    if isinstance(cause, ssl.SSLError):
        return f"TLS handshake failed: {cause.reason or cause}"
    return str(cause) or type(cause).__name__


def _code_name(code: ErrorCode | int) -> str:
    return code.name if isinstance(code, ErrorCode) else f"0x{code:04x}"


def _violation_message(exc: RemoteProtocolError) -> str:
    return str(exc.args[0]) if exc.args else exc.code.name


def _describe(end: _End | None) -> str:
    if end is None:
        return "unknown"
    if isinstance(end, ConnectionLost):
        return str(end)
    return f"{_code_name(end.code)}: {end.message}"


@asynccontextmanager
async def connect(
    address: str,
    *,
    client_name: str | None = None,
    auth_token: bytes | str = b"",
    reconnect: bool = True,
    backoff_initial: float = 0.1,
    backoff_max: float = 10.0,
    max_frame_size: int = cc.DEFAULT_MAX_FRAME_SIZE,
    heartbeat_ms: int | None = None,
    connect_timeout: float = 10.0,
    retry_first_connect: bool = False,
    outbound_buffer_bytes: int = 1 << 20,
    tls: bool | ssl.SSLContext = False,
    server_hostname: str | None = None,
    allow_plaintext_token: bool = False,
    open_stream: Callable[[], Awaitable[anyio.abc.ByteStream]] | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[Connection]:
    """Connect to a pushwire server at ``address`` ("host:port") and yield a Connection.

    Entering waits for the first handshake: it raises :class:`ConnectError` when the server
    cannot be reached (unless ``retry_first_connect``) and :class:`HandshakeRejected` when
    the server refuses. Afterwards the connection reconnects by itself (when ``reconnect``)
    with exponential backoff and full jitter between ``backoff_initial`` and ``backoff_max``
    seconds, honouring a server's GOAWAY hint. With ``reconnect=False`` it never opens
    another connection, not even after a GOAWAY that asks it to come back: once the first
    connection ends, iterators raise :class:`ConnectionLost` after the messages already
    received, and so does ``publish``; after a GOAWAY it carries the GOAWAY's code and
    reason. ``heartbeat_ms`` None lets the server choose.
    ``tls`` True verifies the server certificate with the system's trust store
    (PW-TRANSPORT-4); pass an ``ssl.SSLContext`` for anything else (see
    :func:`tls_context`). ``server_hostname`` is the name the certificate must carry when
    it is not the host of ``address`` (an IP address, a tunnel). A non-empty
    ``auth_token`` is refused without TLS to a non-loopback host unless
    ``allow_plaintext_token`` (PW-SEC-2). ``open_stream`` replaces the TCP connect (tests,
    custom transports); ``rng`` makes jitter reproducible.
    """
    host, port = parse_address(address)
    token = auth_token.encode() if isinstance(auth_token, str) else bytes(auth_token)
    context = tls_context(tls)
    plaintext = context is None and open_stream is None
    if server_hostname is not None and context is None:
        raise ValueError("server_hostname needs tls=True or an ssl.SSLContext")
    if token and plaintext and not allow_plaintext_token and not _is_loopback(host):
        raise ValueError(
            "refusing to send an auth token without TLS to a non-loopback host "
            "(use tls=..., or allow_plaintext_token=True)"
        )
    if not MIN_MAX_FRAME_SIZE <= max_frame_size <= MAX_MAX_FRAME_SIZE:
        raise ValueError(
            f"max_frame_size must be {MIN_MAX_FRAME_SIZE}..{MAX_MAX_FRAME_SIZE} (PW-HS-4)"
        )
    if heartbeat_ms is not None and not 0 <= heartbeat_ms <= 0xFFFF_FFFF:
        raise ValueError(f"heartbeat_ms {heartbeat_ms} is not a u32")
    options = _Options(
        host=host,
        port=port,
        client_name=client_name or f"pushwire-python/{version('pushwire')}",
        auth_token=token,
        reconnect=reconnect,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        max_frame_size=max_frame_size,
        heartbeat_ms=heartbeat_ms or 0,
        connect_timeout=connect_timeout,
        retry_first_connect=retry_first_connect,
        outbound_buffer_bytes=outbound_buffer_bytes,
        ssl_context=context,
        server_hostname=server_hostname,
        open_stream=open_stream,
        rng=rng or random.Random(),
    )
    Backoff(backoff_initial, backoff_max, options.rng)  # validates the bounds early
    conn = Connection(options)
    try:
        async with anyio.create_task_group() as nursery:
            await nursery.start(conn._run)
            try:
                yield conn
            finally:
                with anyio.CancelScope(shield=True):
                    await conn._shutdown()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Exceptions of the application's block arrive wrapped by the nursery; hand them
        # back unwrapped, as if there were no nursery.
        inner = _single(group)
        if inner is None:
            raise
        raise inner from None


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    exceptions: Sequence[BaseException] = group.exceptions
    while len(exceptions) == 1:
        only = exceptions[0]
        if not isinstance(only, BaseExceptionGroup):
            return only
        exceptions = only.exceptions
    return None
