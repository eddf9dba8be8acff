"""What a running server tells its operator: counters, a Prometheus endpoint, stats topics.

Theory of operation
-------------------
The data path must not pay for monitoring, so nothing here is called per message. A server
keeps a few plain counters (:class:`Counters`), bumped where an event happens once per
connection, request or write; everything else (connections by state, subscriptions, topics,
history memory) is read from the live objects when someone asks.

Two ways to ask, both built from :func:`snapshot`:

- ``pushwire serve --metrics HOST:PORT`` serves ``GET /metrics`` in the Prometheus text
  format. The exposition is prometheus_client's (a custom collector over the snapshot,
  rendered by ``generate_latest``); only the few lines of HTTP around it are ours, so that
  the endpoint runs on the server's own trio thread and reads its state without locks.
- The server publishes the same figures as JSON on the reserved topic ``$sys/stats`` every
  ``stats_interval`` seconds (SPEC.md §9.3); ``pushwire stats`` reads it. Who may read it is
  decided by the permissions like any other topic.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from pushwire.protocol.server_conn import ServerConnection
from pushwire.server.admission import Admission
from pushwire.server.broker import Broker

__all__ = ["STATS_TOPIC", "Counters", "MetricsSource", "serve_metrics", "snapshot"]

log = logging.getLogger("pushwire.server")

#: The reserved topic of the periodic stats (SPEC.md §9.3).
STATS_TOPIC = "$sys/stats"
#: An HTTP request line and headers larger than this are refused: the endpoint is for
#: scrapers, not browsers with cookies.
MAX_REQUEST_BYTES = 8192


class _SessionFigures(Protocol):
    @property
    def conn(self) -> ServerConnection: ...
    @property
    def subscription_count(self) -> int: ...


class _ConfigFigures(Protocol):
    @property
    def server_name(self) -> str: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def max_topics(self) -> int: ...
    @property
    def history_bytes(self) -> int: ...


class MetricsSource(Protocol):
    """What the figures are read from (:class:`~pushwire.server.serve.Server` is one).
    Declared here so that this module does not import the server, which imports it."""

    @property
    def sessions(self) -> Mapping[int, _SessionFigures]: ...
    @property
    def broker(self) -> Broker: ...
    @property
    def counters(self) -> Counters: ...
    @property
    def config(self) -> _ConfigFigures: ...
    @property
    def address(self) -> str: ...
    @property
    def shutting_down(self) -> bool: ...
    @property
    def admission(self) -> Admission: ...


@dataclass(slots=True)
class Counters:
    """Monotonic totals since the server started."""

    started: float = field(default_factory=time.time)
    accepted: int = 0
    closed: Counter[str] = field(default_factory=Counter)  # by close code
    refused: Counter[str] = field(default_factory=Counter)  # request/HELLO refusals by code
    handshake_failures: int = 0  # connections that ended before WELCOME
    messages_in: int = 0  # published records
    messages_out: int = 0  # pushed records (MESSAGE, and each record of a MESSAGE_BATCH)
    bytes_in: int = 0
    bytes_out: int = 0
    gaps: int = 0
    slow_consumer_events: int = 0  # DROP gaps and DISCONNECT closes


def snapshot(server: MetricsSource) -> dict[str, Any]:
    """Every figure as plain JSON-able data: {server, connections, topics, memory, totals}."""
    sessions = list(server.sessions.values())
    states = Counter(s.conn.state.value for s in sessions)
    subscriptions = sum(s.subscription_count for s in sessions)
    topics = server.broker.stats()
    counters = server.counters
    return {
        "server": {
            "name": server.config.server_name,
            "address": server.address,
            "uptime_s": round(time.time() - counters.started, 3),
            "shutting_down": server.shutting_down,
        },
        "connections": {
            "open": len(sessions),
            "by_state": dict(sorted(states.items())),
            "handshaking": server.admission.handshaking,
            "admitted": server.admission.admitted,
            "limit": server.config.max_connections,
            "subscriptions": subscriptions,
        },
        "topics": {
            "count": len(topics),
            "limit": server.config.max_topics,
            "history_messages": sum(t.entries for t in topics.values()),
            "history_bytes": sum(t.bytes for t in topics.values()),
            "history_bytes_per_topic_limit": server.config.history_bytes,
        },
        # the MemoryBroker's budget (None for a broker without one)
        "memory": {
            "bytes": getattr(server.broker, "memory", None),
            "limit": getattr(server.broker, "memory_limit", None),
            "reclaimed_bytes": getattr(server.broker, "reclaimed", None),
            "refused_publishes": getattr(server.broker, "refused", None),
            "evicted_topics": getattr(server.broker, "evicted", None),
        },
        "totals": {
            "accepted": counters.accepted,
            "messages_in": counters.messages_in,
            "messages_out": counters.messages_out,
            "bytes_in": counters.bytes_in,
            "bytes_out": counters.bytes_out,
            "gaps": counters.gaps,
            "slow_consumer_events": counters.slow_consumer_events,
            "handshake_failures": counters.handshake_failures,
            "closed_by_code": dict(sorted(counters.closed.items())),
            "refused_by_code": dict(sorted(counters.refused.items())),
        },
    }


class _Collector(Collector):
    def __init__(self, server: MetricsSource) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        snap = snapshot(self.server)
        conns, topics, totals = snap["connections"], snap["topics"], snap["totals"]
        g = GaugeMetricFamily("pushwire_connections", "Open connections by state", labels=["state"])
        for state, n in conns["by_state"].items():
            g.add_metric([state], n)
        yield g
        yield GaugeMetricFamily(
            "pushwire_connections_limit", "Admitted connections allowed", value=conns["limit"]
        )
        yield GaugeMetricFamily(
            "pushwire_subscriptions", "Active subscriptions", value=conns["subscriptions"]
        )
        yield GaugeMetricFamily("pushwire_topics", "Topics with state", value=topics["count"])
        yield GaugeMetricFamily(
            "pushwire_history_messages", "Messages retained", value=topics["history_messages"]
        )
        yield GaugeMetricFamily(
            "pushwire_history_bytes", "Bytes of retained frames", value=topics["history_bytes"]
        )
        yield GaugeMetricFamily(
            "pushwire_history_bytes_limit",
            "History bound: bytes per topic times the topic limit",
            value=topics["history_bytes_per_topic_limit"] * topics["limit"],
        )
        memory = snap["memory"]
        if memory["bytes"] is not None:
            yield GaugeMetricFamily(
                "pushwire_memory_bytes",
                "Bytes held under the memory budget: history, topics, connection queues",
                value=memory["bytes"],
            )
            yield GaugeMetricFamily(
                "pushwire_memory_limit_bytes", "The memory budget", value=memory["limit"]
            )
        simple = {
            "accepted": ("pushwire_connections_accepted", "TCP connections accepted"),
            "messages_in": ("pushwire_messages_in", "Records published"),
            "messages_out": ("pushwire_messages_out", "Records pushed to subscribers"),
            "bytes_in": ("pushwire_bytes_in", "Bytes received"),
            "bytes_out": ("pushwire_bytes_out", "Bytes sent"),
            "gaps": ("pushwire_gaps", "GAPs sent (in GAP frames and SUBSCRIBED)"),
            "slow_consumer_events": (
                "pushwire_slow_consumer_events",
                "Slow-consumer treatments (DROP gaps, DISCONNECT closes)",
            ),
            "handshake_failures": (
                "pushwire_handshake_failures",
                "Connections that ended before WELCOME",
            ),
        }
        for key, (name, doc) in simple.items():
            yield CounterMetricFamily(name, doc, value=totals[key])
        closed = CounterMetricFamily(
            "pushwire_connections_closed", "Connections closed, by code", labels=["code"]
        )
        for code, n in totals["closed_by_code"].items():
            closed.add_metric([code], n)
        yield closed
        heartbeat = totals["closed_by_code"].get("HEARTBEAT_TIMEOUT", 0)
        yield CounterMetricFamily(
            "pushwire_heartbeat_timeouts", "Connections closed for silence", value=heartbeat
        )
        errors = CounterMetricFamily(
            "pushwire_errors",
            "Errors sent: connection closes and request refusals, by code",
            labels=["code", "scope"],
        )
        for code, n in totals["closed_by_code"].items():
            if code != "NO_ERROR":
                errors.add_metric([code, "connection"], n)
        for code, n in totals["refused_by_code"].items():
            errors.add_metric([code, "request"], n)
        yield errors


def registry_for(server: MetricsSource) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(server))
    return registry


async def _answer(stream: trio.SocketStream, registry: CollectorRegistry) -> None:
    request = b""
    with trio.move_on_after(5):
        while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST_BYTES:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            request += chunk
    line = request.split(b"\r\n", 1)[0].split()
    if len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?")[0] == b"/metrics":
        status, ctype, body = b"200 OK", CONTENT_TYPE_LATEST.encode(), generate_latest(registry)
    elif len(line) >= 2 and line[0] == b"GET":
        status, ctype, body = b"404 Not Found", b"text/plain", b"try /metrics\n"
    else:
        status, ctype, body = b"405 Method Not Allowed", b"text/plain", b"GET /metrics\n"
    head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
    await stream.send_all(head % (status, ctype, len(body)) + body)


async def serve_metrics(
    server: MetricsSource,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``GET /metrics`` until cancelled; ``task_status.started`` gets (host, port)."""
    registry = registry_for(server)
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()

    async def handle(stream: trio.SocketStream) -> None:
        try:
            async with stream:
                await _answer(stream, registry)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:  # a bug here must never take the push server down
            log.exception("metrics endpoint: internal error")

    log.info("metrics on http://%s:%d/metrics", bound[0], bound[1])
    task_status.started((bound[0], bound[1]))
    await trio.serve_listeners(handle, listeners)


def stats_payload(server: MetricsSource) -> bytes:
    return json.dumps(snapshot(server), separators=(",", ":")).encode()
