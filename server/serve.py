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

import hmac
import logging
import math
import os
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import trio

from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import (
    DEFAULT_PORT,
    MAX_MAX_FRAME_SIZE,
    MIN_MAX_FRAME_SIZE,
    SlowConsumerPolicy,
)
from pushwire.protocol.server_conn import FAULTS, ServerLimits
from pushwire.protocol.topics import topic_problem
from pushwire.server.broker import Broker, MemoryBroker, TopicStats, batch_body, message_body
from pushwire.server.session import Session, SessionStats

__all__ = [
    "Permissions",
    "Server",
    "ServerConfig",
    "ServerStats",
    "open_server",
    "server_tls_context",
]

log = logging.getLogger("pushwire.server")


def _version() -> str:
    try:
        return version("pushwire")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0"


def topic_matches(pattern: str, topic: str) -> bool:
    """``#`` matches every topic, ``a/b/#`` matches ``a/b`` and everything below it, any
    other pattern only the topic it names."""
    if pattern == "#":
        return True
    if pattern.endswith("/#"):
        prefix = pattern[:-2]
        return topic == prefix or topic.startswith(prefix + "/")
    return pattern == topic


@dataclass(frozen=True, slots=True)
class Permissions:
    """What one auth token may do: topic patterns (see :func:`topic_matches`)."""

    subscribe: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()

    def allows(self, action: str, topic: str) -> bool:
        patterns = self.subscribe if action == "subscribe" else self.publish
        return any(topic_matches(p, topic) for p in patterns)

    @classmethod
    def from_json(cls, value: Any) -> Permissions:
        """``{"subscribe": [...], "publish": [...]}`` (both optional) as in an auth file."""
        if not isinstance(value, dict) or set(value) - {"subscribe", "publish"}:
            raise ValueError('expected {"subscribe": [patterns], "publish": [patterns]}')
        out = {}
        for key in ("subscribe", "publish"):
            patterns = value.get(key, [])
            if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
                raise ValueError(f"{key!r} must be a list of topic patterns")
            out[key] = tuple(patterns)
        return cls(**out)


#: The permissions of every client when the server has no auth configured.
OPEN = Permissions(subscribe=("#",), publish=("#",))


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


def _policy(value: SlowConsumerPolicy | str | int) -> SlowConsumerPolicy:
    if isinstance(value, str):
        return SlowConsumerPolicy[value.upper()]
    return SlowConsumerPolicy(value)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything a server can be told. Sizes in bytes, times in seconds unless ``_ms``."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0: an ephemeral port (see Server.port)
    max_connections: int = 1024
    max_frame_size: int = 1 << 20  # what we receive (WELCOME); 16384..2^24
    max_subscriptions: int = 1024  # per connection
    handshake_timeout: float = 10.0
    frame_timeout: float = 60.0  # a frame whose header is in must complete within this
    heartbeat_ms: int = 5000  # when the client leaves the choice to us
    heartbeat_min_ms: int = 1000  # the client's preference is clamped to min..max
    heartbeat_max_ms: int = 60_000
    history_count: int = 10_000  # messages per topic
    history_bytes: int = 16 << 20  # encoded frames per topic (the newest is always kept)
    max_topics: int = 100_000  # beyond: the least recently used unsubscribed topic is evicted
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
    #: TLS around every accepted connection (SPEC.md §2.1); None: plain TCP. Build one with
    #: server_tls_context(); a context that allows TLS below 1.2 is refused.
    tls: ssl.SSLContext | None = None
    #: TEST-ONLY fault injection; see pushwire.protocol.server_conn.FAULTS.
    faults: frozenset[str] = frozenset()
    server_name: str = field(default_factory=lambda: f"pushwire/{_version()}")

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "slow_consumer_policy", _policy(self.slow_consumer_policy))
        set_(self, "faults", frozenset(self.faults))
        if self.auth is not None:
            set_(
                self,
                "auth",
                {
                    (k.encode("utf-8") if isinstance(k, str) else bytes(k)): v
                    for k, v in self.auth.items()
                },
            )
        unknown = self.faults - FAULTS
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(FAULTS)}")
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
        self.limits()  # validates the rest

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
        )


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


def _tls_problem(exc: BaseException) -> str:
    """The reason of a failed TLS handshake in a few words, from the ssl error trio wraps."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {cause.verify_message}"
    if isinstance(cause, ssl.SSLError) and cause.reason:
        return cause.reason
    return str(cause) or type(cause).__name__


class Server:
    """A pushwire server over one broker. See the module docstring."""

    def __init__(self, config: ServerConfig | None = None, *, broker: Broker | None = None):
        self.config = config if config is not None else ServerConfig()
        self.limits = self.config.limits()
        self.broker: Broker = broker or MemoryBroker(
            history_count=self.config.history_count,
            history_bytes=self.config.history_bytes,
            max_topics=self.config.max_topics,
        )
        self.host = self.config.host
        self.port = self.config.port
        self.shutting_down = False
        #: Test and diagnostics hook: called as on_send(connection_id, chunks) by each
        #: connection's writer just before its single send_all of ``chunks``.
        self.on_send: Any = None
        self._sessions: dict[int, Session] = {}
        self._next_id = 0
        self._listeners: list[trio.SocketListener] = []
        #: Connections in their TLS handshake, each by the cancel scope that bounds it.
        self._tls_handshakes: set[trio.CancelScope] = set()
        self._stopped = trio.Event()
        self._idle = trio.Event()  # set while no connection is open
        self._idle.set()
        self._serving = False

    # -- running -----------------------------------------------------------------------------

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until :meth:`shutdown` completes. ``task_status.started`` gets
        the bound ``(host, port)``. Raises OSError when the address cannot be bound."""
        if self._serving:
            raise RuntimeError("this server is already serving")
        self._serving = True
        config = self.config
        self._listeners = await trio.open_tcp_listeners(config.port, host=config.host or None)
        sockname = self._listeners[0].socket.getsockname()
        self.host, self.port = sockname[0], sockname[1]
        if config.auth is None:
            log.warning("no auth configured: every client may subscribe and publish anywhere")
        if config.faults:
            log.warning("TEST-ONLY faults injected: %s", ", ".join(sorted(config.faults)))
        try:
            # the outer nursery holds the sessions, so they outlive the accept loops
            async with trio.open_nursery() as sessions, trio.open_nursery() as accepting:
                for listener in self._listeners:
                    accepting.start_soon(self._accept_loop, listener, sessions)
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
        tls_stream = trio.SSLStream(stream, context, server_side=True)
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
            await self._run_session(tls_stream, peer, accepted_at=accepted_at)
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
        self, stream: trio.abc.Stream, peer: str | None = None, accepted_at: float | None = None
    ) -> None:
        self._next_id += 1
        cid = self._next_id
        peer = peer or _peer(stream)
        if self._refusing():
            log.info("connection %d: %s refused at the hard cap", cid, peer)
            await trio.aclose_forcefully(stream)
            return
        session = Session(self, stream, cid, peer, accepted_at=accepted_at)
        self._sessions[cid] = session
        if self._idle.is_set():
            self._idle = trio.Event()
        log.debug("connection %d: %s connected", cid, peer, extra={"conn": cid, "peer": peer})
        try:
            await session.run()
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
            if not self._sessions:
                self._idle.set()
            code = session.close_code or ErrorCode.NO_ERROR
            log.info(
                "connection %d: %s closed: %s %s",
                cid,
                peer,
                code.name,
                session.close_reason,
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

    def authenticate(self, token: bytes) -> Permissions | None:
        """The permissions of ``token``, or None when it is refused (UNAUTHENTICATED)."""
        auth = self.config.auth
        if auth is None:
            return OPEN
        found = None
        for known, permissions in auth.items():  # compare every token in constant time
            if hmac.compare_digest(known, token):
                found = permissions
        return found

    @staticmethod
    def allowed(permissions: Permissions | None, action: str, topic: str) -> bool:
        return permissions is not None and permissions.allows(action, topic)

    def over_capacity(self) -> bool:
        return self._open_connections() > self.config.max_connections

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


@asynccontextmanager
async def open_server(
    config: ServerConfig | None = None, *, broker: Broker | None = None, **overrides: Any
) -> AsyncIterator[Server]:
    """A started server for the duration of the block; graceful shutdown on exit.

    ``open_server(port=0, heartbeat_ms=...)`` is short for a ServerConfig with overrides.
    Raises OSError (``errno`` EADDRINUSE and the like) when it cannot listen.
    """
    config = config if config is not None else ServerConfig(port=0)
    if overrides:
        config = replace(config, **overrides)
    server = Server(config, broker=broker)
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
