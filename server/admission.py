"""Who may connect, how often one may fail to authenticate, and how fast one may ask.

Theory of operation
-------------------
A push server is a shared resource: one client must not be able to take every connection
slot, guess tokens as fast as the network allows, or churn subscriptions until the server
does nothing else (SPEC.md §12, PW-SEC-8 and the admission rules of §5.3). This module
decides all of that as a plain object, with time passed in, so that the rules are tested
without sockets and the trio shell (``serve.py``, ``session.py``) only asks and obeys.

Connections are counted per **source** (the peer's IP address, without the port) in two
pools: connections still in the handshake (no WELCOME yet) and admitted ones. A source may
hold at most ``per_source`` connections of both kinds together and ``handshaking_per_source``
in the handshake; the handshake pool as a whole is capped by ``handshaking``, so idle
pre-handshake connections cannot crowd out clients that finish their handshake. When
authentication is on, the last ``reserved_for_authenticated`` admitted slots are kept for
clients whose token was accepted by name (not the anonymous ``""`` token).

Failed authentications are charged to the source in a token bucket: ``auth_burst``
failures at once, refilled at ``auth_rate`` per second. While the bucket is partly drained,
each HELLO from that source is answered only after a delay that grows as the bucket
empties (up to ``auth_max_delay``); when it is empty, the source's next HELLO is refused
with AUTH_THROTTLED without looking at the token. A well-behaved client that mistyped its
token once sees at most a short delay.

Requests are charged to the **identity** (the token's name, or ``anon@source`` for
anonymous clients) across all its connections: SUBSCRIBE and UNSUBSCRIBE to a churn bucket
(``churn_rate``/``churn_burst``), every request to a request bucket
(``request_rate``/``request_burst``), and the bytes of publish bodies to a bytes bucket
(``publish_bytes_rate``/``publish_bytes_burst``). A refused request is answered RATE_LIMITED
and the connection stays open. Subscriptions held by an identity, across its connections,
are counted against ``subscriptions_per_identity``; beyond it SUBSCRIBE gets QUOTA_EXCEEDED.

Refusals can come in floods, and a log line per refusal would make the log the next target:
:class:`LogSampler` lets the first few lines of each kind through per interval and counts
the rest, reported with the next line that passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pushwire.protocol.errors import ErrorCode

__all__ = ["Admission", "AdmissionLimits", "Bucket", "LogSampler", "source_of"]


def source_of(peer: str) -> str:
    """The source key of a peer address as ``serve.py`` writes it (``host:port``,
    ``[v6]:port``): the host without the port."""
    if peer.startswith("["):
        return peer[1 : peer.find("]")] if "]" in peer else peer
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """Defaults and their reasons; every field has a ``pushwire serve`` option (§13)."""

    #: Connections per server once admitted (TOO_MANY_CONNECTIONS beyond, PW-LIMIT-1).
    max_connections: int = 1024
    #: Connections of one source, in the handshake or admitted. Default: three quarters of
    #: ``max_connections`` (set by ServerConfig), so one source never takes every slot but
    #: a benchmark from one address can still open most of them.
    per_source: int = 768
    #: Connections in the handshake, all sources together: a handshake takes one round trip,
    #: so a few hundred cover any honest burst of reconnects.
    handshaking: int = 256
    #: Connections of one source in the handshake: a quarter of the handshake pool, so a
    #: source that opens connections and sends nothing cannot fill the pool alone.
    handshaking_per_source: int = 64
    #: Admitted slots only clients with a named token may take when auth is on.
    reserved_for_authenticated: int = 0
    #: Failed authentications per source: burst, then per second.
    auth_burst: float = 10.0
    auth_rate: float = 1.0
    #: The longest a HELLO from a failing source waits for its answer.
    auth_max_delay: float = 2.0
    #: SUBSCRIBE + UNSUBSCRIBE per identity: burst, then per second. A burst of 10000 lets
    #: a thousand clients behind one address (re)subscribe to ten topics each at once.
    churn_burst: float = 10_000.0
    churn_rate: float = 1000.0
    #: All requests per identity (publishes and batch records included): burst, then per
    #: second; a rate of 0 means no limit (the default: a fast publisher may publish millions
    #: of messages a second, and memory is bounded by the history limits, not by this).
    request_burst: float = 100_000.0
    request_rate: float = 0.0
    #: Bytes of publish bodies per identity: burst, then per second; a rate of 0 means no
    #: limit (the default, like the request rate: the memory budget bounds what is kept).
    #: The burst must hold the largest frame (ServerConfig makes it at least twice
    #: max_frame_size).
    publish_bytes_burst: float = 128.0 * (1 << 20)
    publish_bytes_rate: float = 0.0
    #: Subscriptions one identity may hold across all its connections: a few connections'
    #: worth of the per-connection limit (1024).
    subscriptions_per_identity: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_connections", "per_source", "handshaking", "handshaking_per_source"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0 <= self.reserved_for_authenticated < self.max_connections:
            raise ValueError("reserved_for_authenticated must be 0..max_connections-1")
        if self.subscriptions_per_identity < 1:
            raise ValueError("subscriptions_per_identity must be at least 1")
        for name in ("auth_burst", "churn_burst", "request_burst", "publish_bytes_burst"):
            if not 1 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a finite number, at least 1")
        rates = ("auth_rate", "churn_rate", "request_rate", "publish_bytes_rate", "auth_max_delay")
        for name in rates:
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a finite number, 0 or more")


@dataclass(slots=True)
class Bucket:
    """A token bucket: ``capacity`` tokens, refilled at ``rate`` per second."""

    capacity: float
    rate: float
    tokens: float = math.nan
    stamp: float = 0.0

    def __post_init__(self) -> None:
        if math.isnan(self.tokens):
            self.tokens = self.capacity

    def level(self, now: float) -> float:
        """Tokens available at ``now`` (refilled since the last look)."""
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        return self.tokens

    def take(self, now: float, amount: float = 1.0) -> bool:
        if self.level(now) >= amount:
            self.tokens -= amount
            return True
        return False

    def full(self, now: float) -> bool:
        return self.level(now) >= self.capacity


@dataclass(slots=True)
class _Source:
    handshaking: int = 0
    admitted: int = 0


@dataclass(slots=True)
class Admission:
    """The server's admission and throttling state. One per server; not thread-safe (the
    server runs on one trio thread)."""

    limits: AdmissionLimits = field(default_factory=AdmissionLimits)
    auth_required: bool = False
    _sources: dict[str, _Source] = field(default_factory=dict)
    _handshaking: int = 0
    _admitted: int = 0
    _auth: dict[str, Bucket] = field(default_factory=dict)
    _churn: dict[str, Bucket] = field(default_factory=dict)
    _requests: dict[str, Bucket] = field(default_factory=dict)
    _bytes: dict[str, Bucket] = field(default_factory=dict)
    _subscriptions: dict[str, int] = field(default_factory=dict)

    # -- connections -------------------------------------------------------------------------

    @property
    def handshaking(self) -> int:
        return self._handshaking

    @property
    def admitted(self) -> int:
        return self._admitted

    def connect(self, source: str) -> ErrorCode | None:
        """A TCP connection from ``source`` was accepted. None: it enters the handshake pool
        (call :meth:`disconnect` when it ends). Otherwise the code to refuse it with; it was
        not counted."""
        entry = self._sources.get(source)
        if entry is not None and (
            entry.handshaking + entry.admitted >= self.limits.per_source
            or entry.handshaking >= self.limits.handshaking_per_source
        ):
            return ErrorCode.TOO_MANY_CONNECTIONS
        if self._handshaking >= self.limits.handshaking:
            return ErrorCode.TOO_MANY_CONNECTIONS
        if entry is None:
            entry = self._sources[source] = _Source()
        entry.handshaking += 1
        self._handshaking += 1
        return None

    def admit(self, source: str, *, named: bool) -> ErrorCode | None:
        """The connection's HELLO was accepted (``named``: by a token other than the
        anonymous one). None: it moves to the admitted pool. Otherwise the code to close it
        with; it stays in the handshake pool until :meth:`disconnect`."""
        free = self.limits.max_connections - self._admitted
        if self.auth_required and not named:
            free -= self.limits.reserved_for_authenticated
        if free <= 0:
            return ErrorCode.TOO_MANY_CONNECTIONS
        entry = self._sources[source]
        entry.handshaking -= 1
        entry.admitted += 1
        self._handshaking -= 1
        self._admitted += 1
        return None

    def disconnect(self, source: str, *, admitted: bool) -> None:
        """A connection counted by :meth:`connect` ended."""
        entry = self._sources[source]
        if admitted:
            entry.admitted -= 1
            self._admitted -= 1
        else:
            entry.handshaking -= 1
            self._handshaking -= 1
        if entry.admitted == 0 and entry.handshaking == 0:
            del self._sources[source]

    def connections_of(self, source: str) -> int:
        entry = self._sources.get(source)
        return 0 if entry is None else entry.handshaking + entry.admitted

    # -- authentication ----------------------------------------------------------------------

    def _auth_bucket(self, source: str) -> Bucket:
        bucket = self._auth.get(source)
        if bucket is None:
            bucket = self._auth[source] = Bucket(self.limits.auth_burst, self.limits.auth_rate)
        return bucket

    def hello_delay(self, source: str, now: float) -> float | None:
        """Seconds to wait before answering a HELLO from ``source``: 0 for a source without
        recent failures, more as its failures use up the bucket. None: the bucket is empty,
        refuse with AUTH_THROTTLED (without checking the token)."""
        bucket = self._auth.get(source)
        if bucket is None:
            return 0.0
        level = bucket.level(now)
        if level < 1.0:
            return None
        if level >= bucket.capacity:
            del self._auth[source]  # forgiven: keep the table small
            return 0.0
        used = 1.0 - level / bucket.capacity
        return self.limits.auth_max_delay * used

    def auth_failed(self, source: str, now: float) -> None:
        """A HELLO from ``source`` was refused UNAUTHENTICATED (or TOKEN_EXPIRED)."""
        self._auth_bucket(source).take(now)

    # -- requests ----------------------------------------------------------------------------

    def request(
        self, identity: str, now: float, *, churn: bool = False, cost: int = 1, nbytes: int = 0
    ) -> bool:
        """Charge ``cost`` requests (and churn, for SUBSCRIBE/UNSUBSCRIBE; and ``nbytes``
        of publish bodies) to ``identity``. False: refuse with RATE_LIMITED; nothing was
        charged."""
        limits = self.limits
        if nbytes and limits.publish_bytes_rate > 0:
            bytes_bucket = self._bytes.get(identity)
            if bytes_bucket is None:
                bytes_bucket = Bucket(limits.publish_bytes_burst, limits.publish_bytes_rate)
                self._bytes[identity] = bytes_bucket
            if bytes_bucket.level(now) < nbytes:
                return False
            if not self.request(identity, now, cost=cost):
                return False
            bytes_bucket.take(now, nbytes)
            return True
        limited = limits.request_rate > 0  # 0: no request limit, only churn is charged
        if not churn and not limited:
            return True
        churn_bucket = None
        if churn:
            churn_bucket = self._churn.get(identity)
            if churn_bucket is None:
                churn_bucket = Bucket(limits.churn_burst, limits.churn_rate)
                self._churn[identity] = churn_bucket
            if churn_bucket.level(now) < 1.0:
                return False
        if limited:
            requests = self._requests.get(identity)
            if requests is None:
                requests = Bucket(limits.request_burst, limits.request_rate)
                self._requests[identity] = requests
            if not requests.take(now, cost):
                return False
        if churn_bucket is not None:
            churn_bucket.take(now)
        return True

    def subscribe(self, identity: str) -> bool:
        """Count one more subscription of ``identity``; False (nothing counted): refuse with
        QUOTA_EXCEEDED. Every True is matched by one :meth:`unsubscribe`."""
        held = self._subscriptions.get(identity, 0)
        if held >= self.limits.subscriptions_per_identity:
            return False
        self._subscriptions[identity] = held + 1
        return True

    def unsubscribe(self, identity: str) -> None:
        held = self._subscriptions.get(identity, 0) - 1
        if held > 0:
            self._subscriptions[identity] = held
        else:
            self._subscriptions.pop(identity, None)

    def subscriptions_of(self, identity: str) -> int:
        return self._subscriptions.get(identity, 0)

    def forget_idle(self, now: float) -> None:
        """Drop the buckets that are full again (call now and then: bounds the tables by the
        identities and sources active within about one refill time)."""
        for table in (self._auth, self._churn, self._requests, self._bytes):
            for key in [k for k, b in table.items() if b.full(now)]:
                del table[key]

    def table_sizes(self) -> tuple[int, int, int, int]:
        """(sources, auth buckets, churn buckets, request buckets): for stats and tests."""
        return len(self._sources), len(self._auth), len(self._churn), len(self._requests)


@dataclass(slots=True)
class LogSampler:
    """Lets ``burst`` lines of each kind through per ``interval`` seconds and counts the
    rest; :meth:`allow` returns how many were suppressed since the last line that passed,
    or None when this one is suppressed too."""

    burst: int = 5
    interval: float = 10.0
    _windows: dict[str, tuple[float, int, int]] = field(default_factory=dict)

    def allow(self, kind: str, now: float) -> int | None:
        start, passed, suppressed = self._windows.get(kind, (now, 0, 0))
        if now - start >= self.interval:
            start, passed = now, 0
        if passed < self.burst:
            self._windows[kind] = (start, passed + 1, 0)
            return suppressed
        self._windows[kind] = (start, passed, suppressed + 1)
        return None
