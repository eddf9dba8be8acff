"""The pushwire server: configuration, listener, sessions, auth, graceful shutdown.

Theory of operation
-------------------
:meth:`Server.serve` binds the listeners, reports the bound address through
``task_status`` (so ``await nursery.start(server.serve)`` returns it), and runs one
:class:`~pushwire.server.session.Session` per accepted connection in its own nursery. A
session never takes the server down: protocol errors close that connection with their code
(logged at INFO); anything unexpected is logged with its traceback and closes that
connection only.

TLS (SPEC.md §2.1) is configuration, not negotiation: with ``ServerConfig.tls`` set, every
accepted TCP stream is wrapped in a server-side :class:`trio.SSLStream` and the TLS
handshake must finish within ``handshake_timeout`` of the accept before a session starts, so
the session only ever sees the decrypted stream from the first preface byte on
(PW-TRANSPORT-3). A connection in its TLS handshake holds a connection slot; one that fails
or is too slow is closed without a session and logged at INFO in one line, like any other
close.

:meth:`Server.shutdown` is the graceful path (SPEC.md §8.6): stop accepting, send every
client GOAWAY(SHUTTING_DOWN, reconnect_after, jitter, positions), answer new requests with
GOING_AWAY, and close each connection when its client does or after ``drain_timeout``.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import math
import os
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

import trio

from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import (
    DEFAULT_PORT,
    MAX_MAX_FRAME_SIZE,
    MIN_MAX_FRAME_SIZE,
    SlowConsumerPolicy,
)
from pushwire.protocol.server_conn import ServerConnection, ServerLimits
from pushwire.protocol.topics import topic_problem
from pushwire.server.admission import Admission, AdmissionLimits, LogSampler, source_of
from pushwire.server.auth import OPEN, Identity, Permissions
from pushwire.server.broker import (
    Broker,
    BrokerUnavailable,
    MemoryBroker,
    TopicStats,
    batch_body,
    message_body,
)
from pushwire.server.metrics import STATS_TOPIC, Counters, serve_metrics, stats_payload
from pushwire.server.session import ConnectionFactory, Session, SessionHost, SessionStats
from pushwire.server.timers import Timers
from pushwire.server.tokens import MIN_SECRET_BYTES
from pushwire.server.tokens import verify as verify_signed_token

__all__ = [
    "Identity",
    "Permissions",
    "Server",
    "ServerConfig",
    "ServerStats",
    "SessionFactory",
    "default_memory_limit",
    "open_server",
    "server_tls_context",
]

log = logging.getLogger("pushwire.server")

#: Deadlines within this many seconds of each other are served by one wake-up of the timer
#: task, each up to this much early (server/timers.py): 200 wake-ups a second at most,
#: however many connections, and far below any interval or timeout the server keeps.
TIMER_GRAIN = 0.005


def _version() -> str:
    try:
        return version("pushwire")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0"


#: How long a connection refused at admission (handshake pool, source cap, reserved
#: slots) may take to send its preface and be told TOO_MANY_CONNECTIONS, and how many such
#: connections one source may have waiting; beyond that they are closed at once.
REFUSED_GRACE = 2.0
REFUSED_WAITING_PER_SOURCE = 8

#: Below this no TLS version may be negotiated (PW-TRANSPORT-5).
MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2


def server_tls_context(
    certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str] | None = None
) -> ssl.SSLContext:
    """A server-side TLS context for ``ServerConfig.tls``: the certificate chain of
    ``certfile`` (PEM, leaf first) with the private key in ``keyfile`` (or in ``certfile``
    when None), TLS 1.2 at least (PW-TRANSPORT-5), 1.3 preferred by OpenSSL's defaults
    (PW-TRANSPORT-6). Clients are not asked for certificates.

    Raises OSError when a file cannot be read and ssl.SSLError when the files are not a
    matching PEM certificate and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if context.minimum_version < MIN_TLS_VERSION:  # MINIMUM_SUPPORTED is negative
        context.minimum_version = MIN_TLS_VERSION
    context.load_cert_chain(certfile, keyfile)
    return context


def default_memory_limit() -> int:
    """A quarter of the machine's physical memory (1 GiB where the OS does not say): room
    for the interpreter, other processes and the allocator's slack beside the budget."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        total = 0
    return max(1 << 20, total // 4) if total > 0 else 1 << 30


def _policy(value: SlowConsumerPolicy | str | int) -> SlowConsumerPolicy:
    if isinstance(value, str):
        return SlowConsumerPolicy[value.upper()]
    return SlowConsumerPolicy(value)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything a server can be told. Sizes in bytes, times in seconds unless ``_ms``."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0: an ephemeral port (see Server.port)
    #: SO_REUSEPORT: several processes on this machine listen on one port (Linux, BSD).
    reuse_port: bool = False
    max_connections: int = 1024  # admitted (WELCOMEd) connections
    #: Connections one source address may hold (handshaking or admitted). None: three
    #: quarters of max_connections, so one source can never take every slot.
    max_connections_per_source: int | None = None
    #: Connections still in the handshake, all sources together (they do not count toward
    #: max_connections; a flood of idle pre-handshake connections stops here).
    max_handshaking: int = 256
    #: With auth on, admitted slots kept for clients with a named token. None: 1/16 of
    #: max_connections.
    reserved_for_authenticated: int | None = None
    #: A connection with no subscription that makes no request for this long is closed
    #: with IDLE_TIMEOUT (PINGs do not count). 0: never.
    idle_timeout: float = 300.0
    #: Failed authentications per source: a burst, then per second; the answer to a HELLO
    #: from a failing source is delayed up to auth_max_delay, then refused AUTH_THROTTLED.
    auth_failure_burst: float = 10.0
    auth_failure_rate: float = 1.0
    auth_max_delay: float = 2.0
    #: SUBSCRIBE + UNSUBSCRIBE per identity (RATE_LIMITED beyond): a burst, then per second.
    churn_burst: float = 10_000.0
    churn_rate: float = 1000.0
    #: All requests per identity, publishes and records of batches included.
    request_burst: float = 100_000.0
    request_rate: float = 0.0  # 0: no limit
    #: Bytes of publish bodies per identity per second (RATE_LIMITED beyond), bursts of
    #: twice that (and at least two of the largest frames). 0: no limit.
    publish_bytes_rate: float = 0.0
    #: Subscriptions one identity holds across its connections (QUOTA_EXCEEDED beyond).
    max_subscriptions_per_identity: int = 100_000
    #: Topics one identity may have created (made retain messages by its first publish)
    #: that still exist; at the quota its own least recently used unheld topic is evicted,
    #: and when all of them are held the publish gets QUOTA_EXCEEDED. None: no quota.
    max_topics_per_identity: int | None = 10_000
    max_frame_size: int = 1 << 20  # what we receive (WELCOME); 16384..2^24
    max_subscriptions: int = 1024  # per connection
    max_patterns: int = 64  # pattern subscriptions per connection (SPEC.md §6.7)
    max_pattern_topics: int = 10_000  # topics one pattern subscription follows (§6.7)
    handshake_timeout: float = 10.0
    frame_timeout: float = 60.0  # a frame whose header is in must complete within this
    heartbeat_ms: int = 5000  # when the client leaves the choice to us
    heartbeat_min_ms: int = 1000  # the client's preference is clamped to min..max
    heartbeat_max_ms: int = 60_000
    history_count: int = 10_000  # messages per topic
    history_bytes: int = 16 << 20  # encoded frames per topic (the newest is always kept)
    max_topics: int = 100_000  # beyond: an unsubscribed topic is evicted (empty ones first)
    #: The whole server's memory budget in bytes: history, topics, connection queues.
    #: None: a quarter of physical memory (default_memory_limit()). It sizes the in-memory
    #: broker built here; a broker passed to Server has its own (``pushwire serve --broker``
    #: gives the Redis broker this value for its local cache).
    memory_limit: int | None = None
    max_lag: int = 10_000
    slow_consumer_policy: SlowConsumerPolicy = SlowConsumerPolicy.DROP
    #: Per connection: queued replies plus one round of pulled pushes. A client that reads
    #: nothing costs at most about twice this plus one frame.
    outbound_queue_bytes: int = 1 << 20
    drain_timeout: float = 5.0  # after GOAWAY, how long a client may stay
    close_timeout: float = 1.0  # after a final ERROR, how long we wait for the client's EOF
    goaway_reconnect_after_ms: int = 1000
    goaway_jitter_ms: int = 1000
    #: token -> Permissions; None: no auth, everything allowed (a warning is logged). A token
    #: "" gives anonymous clients (empty HELLO.auth_token) the permissions it maps to.
    auth: Mapping[bytes, Permissions] | None = None
    #: Secret for signed tokens (JWT, HS256; see pushwire.server.tokens), at least 32 bytes.
    #: Works alone or beside ``auth``: a HELLO token is tried as a signed token first.
    token_secret: bytes | None = None
    #: "HOST:PORT" of the Prometheus endpoint (GET /metrics); None: none.
    metrics_address: str | None = None
    #: Seconds between the JSON stats the server publishes on $sys/stats; 0: never.
    stats_interval: float = 10.0
    #: TLS around every accepted connection (SPEC.md §2.1); None: plain TCP. Build one with
    #: server_tls_context(); a context that allows TLS below 1.2 is refused.
    tls: ssl.SSLContext | None = None
    server_name: str = field(default_factory=lambda: f"pushwire/{_version()}")

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "slow_consumer_policy", _policy(self.slow_consumer_policy))
        if self.auth is not None:
            set_(
                self,
                "auth",
                {
                    (k.encode("utf-8") if isinstance(k, str) else bytes(k)): v
                    for k, v in self.auth.items()
                },
            )
        if not MIN_MAX_FRAME_SIZE <= self.max_frame_size <= MAX_MAX_FRAME_SIZE:
            raise ValueError(f"max_frame_size must be {MIN_MAX_FRAME_SIZE}..{MAX_MAX_FRAME_SIZE}")
        if self.outbound_queue_bytes < MIN_MAX_FRAME_SIZE:
            raise ValueError(f"outbound_queue_bytes must be at least {MIN_MAX_FRAME_SIZE}")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0..65535")
        if not 0 < self.handshake_timeout < math.inf:  # also refuses NaN
            raise ValueError("handshake_timeout must be a finite number of seconds above 0")
        if not 0 <= self.drain_timeout < math.inf:
            raise ValueError("drain_timeout must be a finite number of seconds, 0 or more")
        for name in ("goaway_reconnect_after_ms", "goaway_jitter_ms"):
            if not 0 <= getattr(self, name) <= 0xFFFF_FFFF:
                raise ValueError(f"{name} must fit in a u32 (GOAWAY, SPEC.md §8.6)")
        if self.tls is not None:
            if self.tls.protocol == ssl.PROTOCOL_TLS_CLIENT:
                raise ValueError("tls must be a server-side context (see server_tls_context)")
            if self.tls.minimum_version < MIN_TLS_VERSION:
                raise ValueError("tls must not allow versions below TLS 1.2 (PW-TRANSPORT-5)")
        if self.token_secret is not None and len(self.token_secret) < MIN_SECRET_BYTES:
            raise ValueError(f"token_secret must be at least {MIN_SECRET_BYTES} bytes")
        if not 0 <= self.stats_interval < math.inf:
            raise ValueError("stats_interval must be a finite number of seconds, 0 or more")
        if self.metrics_address is not None:
            self.metrics_endpoint()
        if not 0 <= self.idle_timeout < math.inf:
            raise ValueError("idle_timeout must be a finite number of seconds, 0 or more")
        self.limits()  # validates the rest
        self.admission_limits()

    def metrics_endpoint(self) -> tuple[str, int]:
        """``metrics_address`` as (host, port); ValueError when it is not HOST:PORT."""
        text = self.metrics_address or ""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"metrics address must be HOST:PORT, not {text!r}")
        return host.strip("[]"), int(port)

    @property
    def auth_required(self) -> bool:
        return self.auth is not None or self.token_secret is not None

    def admission_limits(self) -> AdmissionLimits:
        per_source = self.max_connections_per_source
        reserved = self.reserved_for_authenticated
        return AdmissionLimits(
            max_connections=self.max_connections,
            per_source=(
                self.max_connections - self.max_connections // 4
                if per_source is None
                else per_source
            ),
            handshaking=self.max_handshaking,
            handshaking_per_source=max(1, self.max_handshaking // 4),
            reserved_for_authenticated=self.max_connections // 16 if reserved is None else reserved,
            auth_burst=self.auth_failure_burst,
            auth_rate=self.auth_failure_rate,
            auth_max_delay=self.auth_max_delay,
            churn_burst=self.churn_burst,
            churn_rate=self.churn_rate,
            request_burst=self.request_burst,
            request_rate=self.request_rate,
            publish_bytes_burst=max(self.publish_bytes_rate * 2, 2.0 * self.max_frame_size),
            publish_bytes_rate=self.publish_bytes_rate,
            subscriptions_per_identity=self.max_subscriptions_per_identity,
        )

    def limits(self) -> ServerLimits:
        return ServerLimits(
            max_frame_size=self.max_frame_size,
            max_subscriptions=self.max_subscriptions,
            max_lag=self.max_lag,
            slow_consumer_policy=self.slow_consumer_policy,
            heartbeat_ms=self.heartbeat_ms,
            heartbeat_min_ms=self.heartbeat_min_ms,
            heartbeat_max_ms=self.heartbeat_max_ms,
            handshake_timeout=self.handshake_timeout,
            frame_timeout=self.frame_timeout,
            max_patterns=self.max_patterns,
            max_pattern_topics=self.max_pattern_topics,
        )


def _token_name(token: bytes) -> str:
    return "token:" + hashlib.sha256(token).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class ServerStats:
    connections: int
    sessions: tuple[SessionStats, ...]
    topics: dict[str, TopicStats]

    def session(self, connection_id: int) -> SessionStats:
        return next(s for s in self.sessions if s.connection_id == connection_id)


HeadersArg = Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None


def _headers(headers: HeadersArg) -> F.Headers | None:
    if headers is None:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((str(k), bytes(v)) for k, v in items)


def _peer(stream: trio.abc.Stream) -> str:
    try:
        host, port, *_ = stream.socket.getpeername()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _unlink_tls(tls_stream: trio.SSLStream[trio.SocketStream]) -> None:
    """Let reference counting free a closed TLS connection: trio's SSLStream keeps its
    handshake as a bound method of itself (``_handshook``), a reference cycle that holds
    the OpenSSL object and its buffers until a cyclic collection. ``pushwire serve`` runs
    those rarely (server/collector.py), and its rule counts Python objects, not OpenSSL's
    memory: churn of TLS connections grew RSS by about 25 KiB per connection closed. A trio
    without that attribute makes this a no-op (a test notices)."""
    once = getattr(tls_stream, "_handshook", None)
    if once is not None and hasattr(once, "_afn"):
        once._afn = None  # done or never to run: the stream is closed


def _tls_problem(exc: BaseException) -> str:
    """The reason of a failed TLS handshake in a few words, from the ssl error trio wraps."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {cause.verify_message}"
    if isinstance(cause, ssl.SSLError) and cause.reason:
        return cause.reason
    return str(cause) or type(cause).__name__


class SessionFactory(Protocol):
    """Makes the session that serves one accepted connection (:class:`Session`'s
    signature)."""

    def __call__(
        self,
        server: SessionHost,
        stream: trio.abc.Stream,
        connection_id: int,
        peer: str,
        *,
        accepted_at: float | None = None,
    ) -> Session: ...


class Server:
    """A pushwire server over one broker. See the module docstring.

    Two factories let an application change how connections are served without a switch
    in the configuration: ``connection_factory`` makes each connection's sans-I/O
    :class:`~pushwire.protocol.server_conn.ServerConnection` (a subclass may observe or
    change protocol decisions), ``session_factory`` makes each connection's
    :class:`~pushwire.server.session.Session` (a subclass may, for instance, wrap the
    stream to record or rewrite what goes on the wire). The test suite builds its
    deliberately faulty servers this way.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        broker: Broker | None = None,
        connection_factory: ConnectionFactory = ServerConnection,
        session_factory: SessionFactory = Session,
    ):
        self.config = config if config is not None else ServerConfig()
        self.connection_factory = connection_factory
        self.session_factory = session_factory
        self.limits = self.config.limits()
        self.broker: Broker = broker or MemoryBroker(
            history_count=self.config.history_count,
            history_bytes=self.config.history_bytes,
            max_topics=self.config.max_topics,
            memory_limit=self.config.memory_limit or default_memory_limit(),
            max_topics_per_owner=self.config.max_topics_per_identity,
        )
        self.host = self.config.host
        self.port = self.config.port
        self.shutting_down = False
        self.admission = Admission(
            self.config.admission_limits(), auth_required=self.config.auth_required
        )
        #: Refusals are logged through this, so that a flood cannot flood the log.
        self.refusal_log = LogSampler()
        self.counters = Counters()
        #: Where the metrics endpoint listens once serving (host, port), if configured.
        self.metrics_bound: tuple[str, int] | None = None
        #: every session's deadlines, served by one task (see server/timers.py)
        self.timers = Timers(TIMER_GRAIN)
        self._sessions: dict[int, Session] = {}
        self._next_id = 0
        self._listeners: list[trio.SocketListener] = []
        #: Connections in their TLS handshake, each by the cancel scope that bounds it.
        self._tls_handshakes: set[trio.CancelScope] = set()
        #: Refused connections still waiting to be told so, per source (see _run_session).
        self._refused_waiting: dict[str, int] = {}
        #: TLS connections whose admission count a session took over (by id of the stream).
        self._handed_over: dict[int, bool] = {}
        self._stopped = trio.Event()
        self._idle = trio.Event()  # set while no connection is open
        self._idle.set()
        self._serving = False
        self._housekeeping_scope = trio.CancelScope()  # shutdown() ends it

    # -- running -----------------------------------------------------------------------------

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until :meth:`shutdown` completes. ``task_status.started`` gets
        the bound ``(host, port)``. Raises OSError when the address cannot be bound."""
        if self._serving:
            raise RuntimeError("this server is already serving")
        self._serving = True
        config = self.config
        if config.reuse_port:
            self._listeners = await open_reuse_port_listeners(config.port, config.host)
        else:
            self._listeners = await trio.open_tcp_listeners(config.port, host=config.host or None)
        sockname = self._listeners[0].socket.getsockname()
        self.host, self.port = sockname[0], sockname[1]
        if config.auth is None:
            log.warning("no auth configured: every client may subscribe and publish anywhere")
        try:
            # the outer nursery holds the sessions, so they outlive the accept loops
            async with trio.open_nursery() as sessions, trio.open_nursery() as accepting:
                for listener in self._listeners:
                    accepting.start_soon(self._accept_loop, listener, sessions)
                accepting.start_soon(self._housekeeping)
                if config.metrics_address is not None:
                    host, port = config.metrics_endpoint()
                    self.metrics_bound = await accepting.start(serve_metrics, self, host, port)
                log.info("listening on %s", self.address)
                task_status.started((self.host, self.port))
        finally:
            for listener in self._listeners:
                with trio.CancelScope(shield=True):
                    await listener.aclose()
            self._stopped.set()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def _accept_loop(self, listener: trio.SocketListener, sessions: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return
            except OSError as exc:  # out of file descriptors and the like: wait, go on
                log.error("accept failed: %s", exc)
                await trio.sleep(0.1)
                continue
            if self.config.tls is None:
                sessions.start_soon(self._run_session, stream)
            else:
                sessions.start_soon(self._run_tls, stream, self.config.tls)

    async def _run_tls(self, stream: trio.SocketStream, context: ssl.SSLContext) -> None:
        """TLS handshake within the handshake timeout counted from the accept (PW-SEC-6),
        then a session over the TLS stream. A failure sends nothing but what TLS itself
        sends (an alert at most), closes the connection and logs one INFO line whose code
        is ``TLS_FAILED`` (not a registry code: no pushwire frame was exchanged),
        ``HANDSHAKE_TIMEOUT`` or ``SHUTTING_DOWN``."""
        peer = _peer(stream)
        accepted_at = trio.current_time()
        if self._refusing():
            await self._run_session(stream, peer)  # refuses, logs and closes it
            return
        # The TLS handshake is part of the connection's handshake: it holds a handshake slot
        # from the accept on. A refused connection still gets TLS, then ERROR from the session.
        source = source_of(peer)
        refused = self.admission.connect(source)
        try:
            await self._tls_then_session(stream, context, peer, accepted_at, (source, refused))
        finally:
            if refused is None and not self._handed_over.pop(id(stream), False):
                self.admission.disconnect(source, admitted=False)

    async def _tls_then_session(
        self,
        stream: trio.SocketStream,
        context: ssl.SSLContext,
        peer: str,
        accepted_at: float,
        admission: tuple[str, ErrorCode | None],
    ) -> None:
        tls_stream = trio.SSLStream(stream, context, server_side=True)
        try:
            await self._tls_handshake_then_session(stream, tls_stream, peer, accepted_at, admission)
        finally:
            _unlink_tls(tls_stream)

    async def _tls_handshake_then_session(
        self,
        stream: trio.SocketStream,
        tls_stream: trio.SSLStream[trio.SocketStream],
        peer: str,
        accepted_at: float,
        admission: tuple[str, ErrorCode | None],
    ) -> None:
        timeout = self.config.handshake_timeout
        code = reason = ""
        with trio.move_on_after(timeout) as scope:
            self._tls_handshakes.add(scope)  # shutdown() cancels it
            try:
                await tls_stream.do_handshake()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                code, reason = "TLS_FAILED", f"TLS handshake failed: {_tls_problem(exc)}"
            except Exception:  # a bug of ours: it closes this connection, never the server
                log.exception("%s: internal error in the TLS handshake", peer)
                code, reason = ErrorCode.INTERNAL_ERROR.name, "internal error in TLS handshake"
            finally:
                self._tls_handshakes.discard(scope)
        if scope.cancelled_caught:
            if self.shutting_down:
                code, reason = ErrorCode.SHUTTING_DOWN.name, "shut down during the TLS handshake"
            else:
                code, reason = (
                    ErrorCode.HANDSHAKE_TIMEOUT.name,
                    f"no TLS handshake within {timeout:g} s",
                )
        if not code:
            # The HELLO deadline still counts from the TCP accept, not from the end of TLS.
            self._handed_over[id(stream)] = True  # the session releases the admission slot
            await self._run_session(tls_stream, peer, accepted_at=accepted_at, admission=admission)
            return
        await trio.aclose_forcefully(stream)
        self._next_id += 1
        cid = self._next_id
        log.info(
            "connection %d: %s closed: %s %s",
            cid,
            peer,
            code,
            reason,
            extra={"conn": cid, "peer": peer, "code": code},
        )

    async def _housekeeping(self) -> None:
        """Once a second: now and then forget refilled throttling buckets, publish stats
        when asked. (Token expiry and idle connections are each session's own deadlines.)"""
        with self._housekeeping_scope:
            await self._housekeep()

    async def _housekeep(self) -> None:
        ticks = 0
        while True:
            await trio.sleep(1.0)
            now = trio.current_time()
            ticks += 1
            if ticks % 10 == 0:
                self.admission.forget_idle(now)
            interval = self.config.stats_interval
            if interval and ticks % max(1, round(interval)) == 0:
                try:
                    await self.publish(STATS_TOPIC, stats_payload(self))
                except BrokerUnavailable:  # a remote broker is down: these stats are skipped
                    log.debug("stats not published: the broker is unavailable")

    def log_refusal(
        self, session: Session, code: ErrorCode, what: str, topic: str = "", reason: str = ""
    ) -> None:
        """The audit line of a refused HELLO or request: identity, source, topic and code,
        sampled per (code, source) so that a flood of refusals costs a few lines."""
        if what != "HELLO":
            self.counters.refused[code.name] += 1
        suppressed = self.refusal_log.allow(f"{code.name} {session.source}", time.monotonic())
        if suppressed is None:
            return
        more = f" (+{suppressed} similar suppressed)" if suppressed else ""
        log.warning(
            "connection %d: refused %s%s from %s as %s: %s %s%s",
            session.connection_id,
            what,
            f" {topic!r}" if topic else "",
            session.peer,
            session.identity_name or "anonymous",
            code.name,
            reason,
            more,
            extra={
                "conn": session.connection_id,
                "peer": session.peer,
                "code": code.name,
                "identity": session.identity_name,
                "topic": topic,
            },
        )

    def _open_connections(self) -> int:
        return len(self._sessions) + len(self._tls_handshakes)

    def _refusing(self) -> bool:
        """Far beyond the connection limit, or shutting down: a new connection is closed
        at once, without a TLS handshake or a preface (TOO_MANY_CONNECTIONS needs one)."""
        hard_cap = self.config.max_connections + max(64, self.config.max_connections)
        return self._open_connections() >= hard_cap or self.shutting_down

    async def serve_stream(self, stream: trio.abc.Stream, peer: str | None = None) -> None:
        """Serve one connection over any trio stream until it ends (TLS-wrapped streams,
        in-memory streams in tests). Never raises for anything the connection does."""
        await self._run_session(stream, peer)

    async def _run_session(
        self,
        stream: trio.abc.Stream,
        peer: str | None = None,
        accepted_at: float | None = None,
        admission: tuple[str, ErrorCode | None] | None = None,
    ) -> None:
        """``admission``: (source, refusal) when the caller already counted the connection
        (TLS); the session then releases that count when it ends."""
        self._next_id += 1
        cid = self._next_id
        peer = peer or _peer(stream)
        if self._refusing():
            log.info("connection %d: %s refused at the hard cap", cid, peer)
            if admission is not None and admission[1] is None:
                self.admission.disconnect(admission[0], admitted=False)
            await trio.aclose_forcefully(stream)
            return
        if admission is None:
            source = source_of(peer)
            refused = self.admission.connect(source)
        else:
            source, refused = admission
        waiting = self._refused_waiting
        if refused is not None:
            # A refused connection is told why once it sends its preface (§5.3). One that
            # stays silent must not hold its slot for the whole handshake timeout, and one
            # source's refused connections must not pile up to the hard cap and lock every
            # other source out: beyond a few waiting per source, close at once (PW-HS-19).
            if waiting.get(source, 0) >= REFUSED_WAITING_PER_SOURCE:
                self.counters.accepted += 1
                self.counters.closed[refused.name] += 1
                self.counters.handshake_failures += 1
                log.debug("connection %d: %s refused at once (%s)", cid, peer, refused.name)
                await trio.aclose_forcefully(stream)
                return
            waiting[source] = waiting.get(source, 0) + 1
        self.counters.accepted += 1
        session = self.session_factory(self, stream, cid, peer, accepted_at=accepted_at)
        session.source = source
        session.refuse_code = refused
        self._sessions[cid] = session
        if self._idle.is_set():
            self._idle = trio.Event()
        log.debug("connection %d: %s connected", cid, peer, extra={"conn": cid, "peer": peer})
        try:
            if refused is None:
                await session.run()
            else:
                with trio.move_on_after(REFUSED_GRACE):
                    await session.run()
                if session.close_code is None:
                    session.close_code = refused
                    session.close_reason = f"refused; no preface within {REFUSED_GRACE:g} s"
        except* Exception as group:
            session.close_code = ErrorCode.INTERNAL_ERROR
            session.close_reason = "internal error"
            log.error(
                "connection %d: internal error",
                cid,
                exc_info=group,
                extra={"conn": cid, "peer": peer, "code": "INTERNAL_ERROR"},
            )
        finally:
            del self._sessions[cid]
            if refused is None:
                self.admission.disconnect(source, admitted=session.admitted)
            elif waiting[source] > 1:
                waiting[source] -= 1
            else:
                del waiting[source]
            if not self._sessions:
                self._idle.set()
            code = session.close_code or ErrorCode.NO_ERROR
            counters = self.counters
            counters.closed[code.name] += 1
            if not session.admitted:
                counters.handshake_failures += 1
            # Connections that never got in are counted (metrics) and their refusals
            # logged, sampled, where they were refused; a line each at INFO would make the
            # log a second target for a flood of them.
            log.log(
                logging.INFO if session.admitted else logging.DEBUG,
                "connection %d: %s closed: %s %s [%s]",
                cid,
                peer,
                code.name,
                session.close_reason,
                session.totals(),
                extra={"conn": cid, "peer": peer, "code": code.name},
            )

    async def shutdown(self) -> None:
        """Graceful shutdown (§8.6); returns when every connection is closed, which takes
        at most about ``drain_timeout + close_timeout``."""
        if not self.shutting_down:
            self.shutting_down = True
            log.info("shutting down: GOAWAY to %d connection(s)", len(self._sessions))
            for listener in self._listeners:
                await listener.aclose()
            self._housekeeping_scope.cancel()
            for handshake in self._tls_handshakes:
                handshake.cancel()
            config = self.config
            for session in list(self._sessions.values()):
                session.goaway(
                    ErrorCode.SHUTTING_DOWN,
                    config.goaway_reconnect_after_ms,
                    config.goaway_jitter_ms,
                    "server shutting down",
                )
        await self._idle.wait()
        if self._serving:
            await self._stopped.wait()

    # -- auth --------------------------------------------------------------------------------

    def authenticate(self, token: bytes) -> Identity | None:
        """Who ``token`` makes a client, or None when it is refused (UNAUTHENTICATED): a
        valid signed token (``token_secret``), else a token of the token file (``auth``),
        else, without any auth configured, an anonymous client that may do everything."""
        config = self.config
        if not config.auth_required:
            return Identity("", OPEN)
        if config.token_secret is not None and token.count(b".") == 2:
            signed = verify_signed_token(token, config.token_secret, now=time.time())
            if signed is not None:
                return Identity(signed.name, signed.permissions, signed.expires_at)
        auth = config.auth
        if auth is None:
            return None
        found = None
        for known, permissions in auth.items():  # compare every token in constant time
            if hmac.compare_digest(known, token):
                found = permissions
        if found is None:
            return None
        return Identity(_token_name(token) if token else "", found)

    @staticmethod
    def allowed(permissions: Permissions | None, action: str, topic: str) -> bool:
        return permissions is not None and permissions.allows(action, topic)

    # -- the Python API ----------------------------------------------------------------------

    async def publish(
        self, topic: str, payload: bytes, headers: HeadersArg = None
    ) -> tuple[int, int]:
        """Publish as if a client had; returns (epoch, seq). ValueError for a bad topic."""
        problem = topic_problem(topic)
        if problem is not None:
            raise ValueError(f"invalid topic {topic!r}: {problem}")
        flags, body = message_body(topic, bytes(payload), _headers(headers))
        await trio.lowlevel.checkpoint()  # a publishing loop must not starve the sessions
        return await self.broker.publish(topic, flags, body)

    async def publish_batch(
        self,
        topic: str,
        records: Iterable[bytes | tuple[bytes, HeadersArg]],
    ) -> tuple[int, int]:
        """Publish records atomically (consecutive sequences); returns (epoch, first_seq).
        A record is a payload or (payload, headers)."""
        problem = topic_problem(topic)
        if problem is not None:
            raise ValueError(f"invalid topic {topic!r}: {problem}")
        pairs = [(r, None) if isinstance(r, bytes | bytearray) else r for r in records]
        if not 1 <= len(pairs) <= 0xFFFF:
            raise ValueError("a batch holds 1..65535 records")
        with_headers = any(h is not None for _, h in pairs)
        recs = tuple(
            F.Record(bytes(p), (_headers(h) or ()) if with_headers else None) for p, h in pairs
        )
        flags, body, start, ends = batch_body(topic, recs)
        await trio.lowlevel.checkpoint()
        return await self.broker.publish_batch(topic, flags, body, start, ends)

    async def reset_topic(self, topic: str) -> int:
        """Clear the topic's history and start a new epoch (returned); for tests of
        EPOCH_CHANGED. Live subscribers continue in the new epoch."""
        return await self.broker.reset_topic(topic)

    def stats(self) -> ServerStats:
        return ServerStats(
            connections=len(self._sessions),
            sessions=tuple(s.stats() for s in self._sessions.values()),
            topics=self.broker.stats(),
        )

    @property
    def sessions(self) -> dict[int, Session]:
        """Live sessions by connection id (read-only use)."""
        return dict(self._sessions)


async def open_reuse_port_listeners(port: int, host: str) -> list[trio.SocketListener]:
    """Listeners on every address of ``host`` with SO_REUSEPORT set before bind, so that
    other processes doing the same share ``port`` (the kernel spreads new connections
    among them). Raises OSError where SO_REUSEPORT does not exist."""
    if not hasattr(trio.socket, "SO_REUSEPORT"):
        raise OSError(errno.EOPNOTSUPP, "SO_REUSEPORT is not available on this system")
    infos = await trio.socket.getaddrinfo(
        host or None, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
    )
    listeners = []
    try:
        for family, type_, proto, _, sockaddr in infos:
            sock = trio.socket.socket(family, type_, proto)
            try:
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
                if family == trio.socket.AF_INET6:
                    sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
                await sock.bind(sockaddr)
                sock.listen(4096)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


@asynccontextmanager
async def open_server(
    config: ServerConfig | None = None,
    *,
    broker: Broker | None = None,
    connection_factory: ConnectionFactory = ServerConnection,
    session_factory: SessionFactory = Session,
    **overrides: Any,
) -> AsyncIterator[Server]:
    """A started server for the duration of the block; graceful shutdown on exit.

    ``open_server(port=0, heartbeat_ms=...)`` is short for a ServerConfig with overrides;
    the factories are :class:`Server`'s. Raises OSError (``errno`` EADDRINUSE and the like)
    when it cannot listen.
    """
    config = config if config is not None else ServerConfig(port=0)
    if overrides:
        config = replace(config, **overrides)
    server = Server(
        config,
        broker=broker,
        connection_factory=connection_factory,
        session_factory=session_factory,
    )
    started = False
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            started = True
            try:
                yield server
            finally:
                limit = config.drain_timeout + config.close_timeout + 1
                with trio.CancelScope(shield=True), trio.move_on_after(limit):
                    await server.shutdown()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Not listening (a port in use, an address not here): one OSError that says so,
        # not an exception group around it.
        failed: BaseException = group
        while isinstance(failed, BaseExceptionGroup) and len(failed.exceptions) == 1:
            failed = failed.exceptions[0]
        if started or not isinstance(failed, OSError):
            raise
        where = (
            f"[{config.host}]:{config.port}"
            if ":" in config.host
            else f"{config.host}:{config.port}"
        )
        reason = failed.strerror or str(failed)
        reason = reason[:1].lower() + reason[1:]
        raise OSError(failed.errno, f"cannot listen on {where}: {reason}") from None
