"""``pushwire bench server``: fan-out, stalled subscribers and acknowledged publishing, measured
against a real ``pushwire serve`` over loopback TCP.

Theory of operation
-------------------
Each run starts its own ``pushwire serve`` as a **child process** (``sys.executable -P -m
pushwire.client serve --host 127.0.0.1 --port 0 ...``, address read from its "listening on"
line) and terminates it when the run ends, whatever happens. Server and load generator are
both single-threaded Python; sharing one thread would measure their sum, so the server gets a
process (and, on a machine with two cores or more, a core) of its own. ``-P`` keeps the current
directory off the child's ``sys.path``, so running from a checkout cannot import ``protocol``
by accident. The server is seen only from the outside: its CPU time and memory come from
``/proc/PID/stat`` and ``/proc/PID/status``, its kernel socket queues from ``/proc/net/tcp``
(Linux; elsewhere those figures are missing). This is on purpose: the bench measures exactly
the server a user runs, and the server needs no stats interface for it.

The load generator speaks the protocol on raw sockets with the project's codec and
``FrameDecoder`` (the reference client's credit and acknowledgement bookkeeping would be
measured too), except in the ``acks`` scenario, which measures the reference client with the
server. Every payload starts with the message's index and its publish time
(``time.perf_counter_ns``, one monotonic clock: publisher and subscribers share this
process), so every subscriber checks that it received every message exactly once and in
order, and measures publish-to-deliver latency.

Scenarios
---------
``fanout``: one raw publisher, N raw subscribers on one topic with all the credit the protocol
allows (2^32 - 1). The publisher keeps at most ``--window`` messages ahead of the slowest
subscriber: the server never slows a publisher for its subscribers (PW-SLOW-1), so without a
window the subscribers would fall out of the history and get GAPs. The window also sizes the
loaded latency (about window / publish rate). Figures: deliveries/s (messages x subscribers),
MB/s of MESSAGE frames written by the server, latency p50/p99 of every delivery under that
load, then ``--probe`` messages published one at a time (each after every subscriber got the
previous one): the latency of an idle server. ``srv cpu`` and ``gen cpu`` are the CPU time the
server and this load generator used during the loaded phase, as a share of its wall time: the
one near 100 % is the bottleneck, and when it is ``gen``, the figures are a floor for the
server, not its limit.

``stall``: one normal subscriber receives ``--messages`` messages of the largest ``--payload``,
twice on fresh servers with the default history and slow-consumer policy: alone, then next to
a subscriber with zero credit (it reads its socket and answers PINGs but grants nothing) and a
subscriber that has credit but stopped reading its socket. Figures: the normal subscriber's
rate and latency in both runs (a stalled subscriber must not slow the others, PW-SLOW-1); the
server's RSS before publishing and after the normal subscriber got everything (the growth
includes the shared history, bounded by the server's history limits and the same in both
runs, so the *difference* is what the stalled subscribers cost in server memory); the bytes
stuck in the kernel between the server and the stuck subscriber (the server's socket send
queue and the subscriber's receive queue: kernel memory, not in the RSS); and the messages the
zero-credit subscriber received (must be 0, PW-FLOW-2).

``acks``: the reference client (``pushwire.client.connect``) publishes ``--messages`` messages
per payload size and waits for each PUBACK: ``single`` (one publish in flight: a round trip
each), ``batch`` (``publish_batch`` of ``--batch`` records, one in flight), ``concurrent``
(``--concurrency`` tasks publishing at once on one connection) and ``window``
(``publish_many``: one task, a window of pipelined publishes, PUBACKs in order; its latency
column is wall time per message). Figures: messages/s, calls/s
and the latency of one call (publish to PUBACK). Sequence numbers are checked contiguous.

``rate``, ``idle`` and ``interference`` are described in :mod:`pushwire.client.bench.scenarios`,
``churn`` (connections that come and go doing a random mix of right and wrong things; the
server's RSS and its closes by code) in :mod:`pushwire.client.bench.churn`.

Every run is bounded: at most ``--duration-limit`` seconds (a run that hits it reports what it
measured and counts as incomplete), at most :data:`MAX_SUBSCRIBERS` connections, only
127.0.0.1. Benchmarks report what they measured; they assert no speed. The exit status is 1
when a run was incomplete (lost, duplicated or reordered messages, a refused request, a
server that died, the time limit), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import array
import itertools
import json
import math
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pushwire.protocol import codec
from pushwire.protocol import frames as F

if TYPE_CHECKING:
    import trio

    from pushwire.client.conformance.wire import WireConnection

HELP = "fan-out, stalled-subscriber and PUBACK throughput of a pushwire serve subprocess"
#: Further scenarios, registered by the modules that implement them (``bench.scenarios``
#: registers ``rate``, ``idle`` and ``interference`` when it is imported, ``bench.churn``
#: registers ``churn``; the ``bench`` command imports both): their options, and a coroutine
#: run after the scenarios here.
EXTRA_ARGUMENTS: list[Callable[[argparse.ArgumentParser], None]] = []
EXTRA_SCENARIOS: list[
    Callable[[argparse.Namespace, Sequence[str], dict[str, Any]], Awaitable[None]]
] = []
#: Their checks of their options: a problem in one line, or None.
EXTRA_PROBLEMS: list[Callable[[argparse.Namespace], str | None]] = []
DESCRIPTION = __doc__.split("\n\n", 1)[1] if __doc__ else HELP
EPILOG = """\
examples:
  pushwire bench server
  pushwire bench server --scenario fanout --subscribers 1,10 --payload 100 --messages 50000
  pushwire bench server --scenario stall --scenario acks --json server.json
"""

SCENARIOS = ("fanout", "stall", "acks", "rate", "idle", "interference", "churn")
#: What runs without --scenario: the others take minutes or thousands of connections.
DEFAULT_SCENARIOS = ("fanout", "stall", "acks")
HOST = "127.0.0.1"

#: Start of every payload: the message's index and its publish time in perf_counter_ns.
STAMP = struct.Struct(">QQ")
MAX_U32 = 0xFFFF_FFFF
#: The most credit a subscription may hold (SPEC.md §8.1, PW-FLOW-4).
MAX_CREDIT = MAX_U32
#: What the raw peers announce in HELLO; the server's default limit for what it receives.
MAX_FRAME_SIZE = 1 << 20
#: Largest payload accepted: a PUBLISH of it fits MAX_FRAME_SIZE with room for the prefix.
MAX_PAYLOAD = MAX_FRAME_SIZE // 2
#: Heartbeat asked for in HELLO (the server's default maximum, SPEC.md §8.5): the stuck
#: subscriber never answers a PING, and must outlive a run (timeout 3 x 60 s).
HEARTBEAT_MS = 60_000
#: Bytes asked of a socket per receive by the raw peers.
RECEIVE_SIZE = 256 * 1024
#: PUBLISH frames per ``send_all`` by the raw publisher.
PUBLISH_CHUNK = 64
#: Each subscriber is a socket here and in the server, whose --max-connections is set to fit.
MAX_SUBSCRIBERS = 1000
MAX_MESSAGES = 10_000_000
MAX_WINDOW = 100_000
#: Memory the fan-out history may be given (2 x (window + chunk) frames must fit).
MAX_HISTORY_BYTES = 256 << 20
MAX_DURATION = 3600.0
#: Publish records per PUBLISH_BATCH allowed by the layout (count is a u16).
MAX_BATCH = 65_535
#: A server CPU share is reported only over at least this many clock ticks of /proc.
MIN_CPU_TICKS = 20
STARTUP_TIMEOUT = 20.0
#: How long a terminated server gets to exit (it drains for at most --drain-timeout 1).
STOP_TIMEOUT = 10.0


class BenchError(Exception):
    """The benchmark could not run (the server did not start, refused a handshake ...)."""


def _describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, or of the first one inside an exception group."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("empty list")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)} "
        f"(default: {', '.join(DEFAULT_SCENARIOS)})",
    )
    parser.add_argument(
        "--subscribers",
        type=_int_list,
        default=[1, 10, 100],
        metavar="N,N",
        help="fan-out subscriber counts (default 1,10,100)",
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=20_000,
        metavar="N",
        help="messages per run: per fan-out configuration, to the normal subscriber, "
        "published with acks per mode (default 20000)",
    )
    parser.add_argument(
        "--payload",
        type=_int_list,
        default=[100, 4096],
        metavar="BYTES,BYTES",
        help=f"payload sizes, {STAMP.size}..{MAX_PAYLOAD} (default 100,4096; stall uses the "
        "largest)",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=1000,
        help="messages the publisher may be ahead of the slowest subscriber (default 1000)",
    )
    parser.add_argument(
        "--probe",
        type=int,
        default=200,
        metavar="N",
        help="fan-out messages then published one at a time for the idle latency (default 200)",
    )
    parser.add_argument(
        "--batch", type=int, default=100, help="records per publish_batch (default 100)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="publishing tasks in 'concurrent' (16)"
    )
    parser.add_argument(
        "--duration-limit",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds one run may take before it stops and counts as incomplete (default 60)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    for add in EXTRA_ARGUMENTS:
        add(parser)


def _problem(args: argparse.Namespace) -> str | None:
    if not all(1 <= n <= MAX_SUBSCRIBERS for n in args.subscribers):
        return f"--subscribers must lie in 1..{MAX_SUBSCRIBERS}"
    if not 1 <= args.messages <= MAX_MESSAGES:
        return f"--messages must lie in 1..{MAX_MESSAGES}"
    if not all(STAMP.size <= p <= MAX_PAYLOAD for p in args.payload):
        return f"--payload must lie in {STAMP.size}..{MAX_PAYLOAD} (index and timestamp first)"
    if not 1 <= args.window <= MAX_WINDOW:
        return f"--window must lie in 1..{MAX_WINDOW}"
    if 2 * (args.window + PUBLISH_CHUNK) * (max(args.payload) + 64) > MAX_HISTORY_BYTES:
        return "--window x --payload too large for the fan-out history; lower --window"
    if not 0 <= args.probe <= MAX_WINDOW:
        return f"--probe must lie in 0..{MAX_WINDOW}"
    if not 1 <= args.batch <= MAX_BATCH:
        return f"--batch must lie in 1..{MAX_BATCH}"
    if not 1 <= args.concurrency <= MAX_SUBSCRIBERS:
        return f"--concurrency must lie in 1..{MAX_SUBSCRIBERS}"
    if not 0 < args.duration_limit <= MAX_DURATION:
        return f"--duration-limit must lie in (0, {MAX_DURATION:.0f}]"
    for check in EXTRA_PROBLEMS:
        problem = check(args)
        if problem is not None:
            return problem
    return None


# -- the server process ---------------------------------------------------------------------


class ServerProcess:
    """``pushwire serve`` in a child process, seen from the outside."""

    def __init__(self, proc: trio.Process, port: int) -> None:
        self.proc = proc
        self.port = port

    def cpu_seconds(self) -> float | None:
        """User + system CPU time so far (fields 14 and 15 of /proc/PID/stat)."""
        try:
            text = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return None
        fields = text.rsplit(")", 1)[1].split()  # the command name may contain spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_kib(self) -> dict[str, int] | None:
        """Resident set size now (VmRSS) and at its highest (VmHWM), in KiB."""
        try:
            lines = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        except OSError:
            return None
        out = {}
        for line in lines:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss" if key == "VmRSS" else "hwm"] = int(value.split()[0])
        return out if len(out) == 2 else None

    def exited(self) -> bool:
        return self.proc.poll() is not None


@asynccontextmanager
async def open_server_process(*args: str) -> AsyncIterator[ServerProcess]:
    """Run ``pushwire serve`` on an ephemeral port of 127.0.0.1 until the block ends."""
    import trio

    command = [
        *(sys.executable, "-P", "-m", "pushwire.client", "serve"),
        *("--host", HOST, "--port", "0", "--log-level", "warning", "--drain-timeout", "1"),
        *args,
    ]
    with tempfile.TemporaryFile() as stderr:
        proc = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=stderr)
        try:
            port = None
            with trio.move_on_after(STARTUP_TIMEOUT):
                port = await _read_port(proc)
            if port is None:
                stderr.seek(0)
                said = stderr.read().decode(errors="replace").strip()[-2000:]
                raise BenchError(f"pushwire serve did not start: {said or 'no output'}")
            yield ServerProcess(proc, port)
        finally:
            with trio.CancelScope(shield=True):
                await _stop(proc)


async def _read_port(proc: trio.Process) -> int | None:
    assert proc.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await proc.stdout.receive_some(1)
        if not chunk:
            return None
        line += chunk
    text = line.decode(errors="replace").strip()
    if not text.startswith("pushwire listening on "):
        return None
    return int(text.rpartition(":")[2])


async def _stop(proc: trio.Process) -> None:
    import trio

    if proc.poll() is None:
        proc.terminate()  # graceful: GOAWAY, at most --drain-timeout for clients to leave
        with trio.move_on_after(STOP_TIMEOUT):
            await proc.wait()
        if proc.poll() is None:
            proc.kill()
            await proc.wait()
    if proc.stdout is not None:
        await proc.stdout.aclose()


def _tcp_queues(local_port: int, remote_port: int) -> tuple[int, int] | None:
    """(send queue, receive queue) in bytes of the IPv4 TCP socket local_port -> remote_port,
    from /proc/net/tcp (``tx_queue:rx_queue``); None when not found or not on Linux."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        local, remote = fields[1].rpartition(":")[2], fields[2].rpartition(":")[2]
        if int(local, 16) == local_port and int(remote, 16) == remote_port:
            tx, _, rx = fields[4].partition(":")
            return int(tx, 16), int(rx, 16)
    return None


# -- raw peers ------------------------------------------------------------------------------


async def open_peer(port: int, name: str, heartbeat_ms: int = HEARTBEAT_MS) -> WireConnection:
    """A raw-wire peer to the server on ``port`` that has completed the handshake (HELLO
    with MAX_FRAME_SIZE and HEARTBEAT_MS). It keeps no log of what it receives."""
    from pushwire.client.conformance.wire import CaseFailed, WireConnection

    conn = await WireConnection.open(HOST, port, record=False, read_size=RECEIVE_SIZE)
    try:
        await conn.handshake(
            max_frame_size=MAX_FRAME_SIZE, heartbeat_ms=heartbeat_ms, client_name=name
        )
    except CaseFailed as exc:
        await conn.aclose()
        raise BenchError(f"handshake refused: expected {exc.expected}, got {exc.observed}") from exc
    except BaseException:
        await conn.aclose()
        raise
    return conn


def local_port(conn: WireConnection) -> int:
    import trio

    assert isinstance(conn.stream, trio.SocketStream)
    return int(conn.stream.socket.getsockname()[1])


async def next_frame(conn: WireConnection) -> F.Frame:
    """The next frame that is not a PING (the peer answers PINGs)."""
    from pushwire.client.conformance.wire import Closed

    frame = await conn.next_frame()
    if isinstance(frame, Closed):
        raise BenchError(f"the server closed the connection ({frame})")
    return frame


async def subscribe(conn: WireConnection, topic: str, credit: int) -> F.Subscribed:
    await conn.send(F.Subscribe(1, topic, initial_credit=credit))
    frame = await next_frame(conn)
    if not isinstance(frame, F.Subscribed):
        raise BenchError(f"SUBSCRIBE {topic!r} refused: {frame!r}")
    return frame


class Progress:
    """Wakes whoever waits (the publisher, the run) when a subscriber or the acknowledgement
    reader made progress or stopped."""

    def __init__(self) -> None:
        import trio

        self._new_event = trio.Event
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = self._new_event()

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._event.wait()


@dataclass(eq=False)
class Subscriber:
    """Receives messages ``0, 1, 2 ...`` in order, stopping at the first that is not next."""

    conn: WireConnection
    next_seq: int  # SUBSCRIBED.start_seq, then the sequence number expected next
    phase_end: int = 0  # messages below this index are the loaded phase
    received: int = 0  # messages received in order: the index expected next
    phase_done_ns: int = 0  # when message phase_end - 1 arrived
    loaded: array.array[int] = field(default_factory=lambda: array.array("q"))
    probe: array.array[int] = field(default_factory=lambda: array.array("q"))
    error: str | None = None
    finished: bool = False

    @classmethod
    async def open(
        cls, port: int, name: str, topic: str, credit: int, heartbeat_ms: int = HEARTBEAT_MS
    ) -> Subscriber:
        conn = await open_peer(port, name, heartbeat_ms)
        subscribed = await subscribe(conn, topic, credit)
        return cls(conn, subscribed.start_seq)

    async def receive(self, total: int | None, phase_end: int, progress: Progress) -> None:
        """Receive ``total`` messages (None: until cancelled), then return."""
        self.phase_end = phase_end
        stream, decoder = self.conn.stream, self.conn.decoder
        try:
            while total is None or self.received < total:
                data = await stream.receive_some(RECEIVE_SIZE)
                now = time.perf_counter_ns()
                if not data:
                    self.error = f"the server closed the connection after {self.received}"
                    return
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    if type(frame) is F.Message:
                        if not self._take(frame.seq, frame.payload, now):
                            return
                    elif isinstance(frame, F.MessageBatch):
                        for i, record in enumerate(frame.records):
                            if not self._take(frame.base_seq + i, record.payload, now):
                                return
                    elif isinstance(frame, F.Ping):
                        await stream.send_all(codec.encode_frame(F.Pong(frame.opaque)))
                    else:
                        self.error = f"unexpected {frame!r} after {self.received} messages"
                        return
                progress.notify()
        except Exception as exc:  # a reset, a protocol error: the run reports it
            self.error = _describe(exc)
        finally:
            self.finished = True
            progress.notify()

    def _take(self, seq: int, payload: bytes, now: int) -> bool:
        index, sent = STAMP.unpack_from(payload)
        if index != self.received or seq != self.next_seq:
            self.error = (
                f"expected message {self.received} (seq {self.next_seq}), "
                f"got message {index} (seq {seq})"
            )
            return False
        if index < self.phase_end:
            self.loaded.append(now - sent)
            if index == self.phase_end - 1:
                self.phase_done_ns = now
        else:
            self.probe.append(now - sent)
        self.received += 1
        self.next_seq += 1
        return True


class Publisher:
    """Publishes messages ``first .. first + count - 1`` on a raw connection, at most
    ``window`` ahead of the slowest subscriber, and counts the PUBACKs."""

    def __init__(self, conn: WireConnection, topic: str, payload_size: int) -> None:
        self.conn = conn
        self.topic = topic
        self.filler = bytes(payload_size - STAMP.size)
        self.acked = 0
        self.error: str | None = None
        self.finished = False

    async def publish(
        self,
        first: int,
        count: int,
        window: int,
        subscribers: Sequence[Subscriber],
        progress: Progress,
    ) -> None:
        index, end = first, first + count

        def room() -> int:
            return window - (index - min(s.received for s in subscribers))

        def may_send() -> bool:
            return room() > 0 or any(s.finished for s in subscribers)

        encode, stamp, now = codec.encode_frame, STAMP.pack, time.perf_counter_ns
        while index < end:
            await progress.until(may_send)
            if any(s.finished for s in subscribers):
                return  # one of them failed; it says why
            k = min(room(), PUBLISH_CHUNK, end - index)
            data = b"".join(
                encode(F.Publish(i % MAX_U32 + 1, self.topic, stamp(i, now()) + self.filler))
                for i in range(index, index + k)  # request_id: 1 .. 2^32 - 1, then again
            )
            await self.conn.stream.send_all(data)
            index += k

    async def read_acks(self, total: int, progress: Progress) -> None:
        try:
            while self.acked < total:
                frame = await next_frame(self.conn)
                if isinstance(frame, F.Puback):
                    self.acked += frame.count
                else:
                    self.error = f"publisher got {frame!r} after {self.acked} PUBACKs"
                    return
        except Exception as exc:
            self.error = f"publisher: {_describe(exc)}"
        finally:
            self.finished = True
            progress.notify()


# -- figures --------------------------------------------------------------------------------


def _latency_us(samples: Sequence[array.array[int]]) -> dict[str, float | int] | None:
    """p50, p99 and max (nearest rank) of latencies in ns, in microseconds."""
    values = sorted(v for part in samples for v in part)
    if not values:
        return None

    def rank(p: float) -> float:
        return values[max(0, math.ceil(p / 100 * len(values)) - 1)] / 1000

    return {"p50": rank(50), "p99": rank(99), "max": values[-1] / 1000, "samples": len(values)}


def _percent(used: float | None, start: float | None, seconds: float) -> float | None:
    if used is None or start is None or seconds <= 0:
        return None
    return 100 * (used - start) / seconds


def _server_percent(used: float | None, start: float | None, seconds: float) -> float | None:
    """Like :func:`_percent`, but None when the interval is too short for /proc's clock ticks
    (usually 10 ms) to give the figure to about 5 %."""
    if used is None or seconds * os.sysconf("SC_CLK_TCK") < MIN_CPU_TICKS:
        return None  # (used is None: no /proc, and maybe no sysconf either)
    return _percent(used, start, seconds)


def _frame_size(topic: str, payload: int) -> int:
    return len(codec.encode_frame(F.Message(0, 0, topic, bytes(payload))))


# -- scenario: fan-out ----------------------------------------------------------------------


async def fanout_run(
    subscribers: int, messages: int, payload: int, window: int, probe: int, limit: float
) -> dict[str, Any]:
    import trio

    topic = f"bench/fanout/{subscribers}/{payload}"
    frame_size = _frame_size(topic, payload)
    # The slowest subscriber lags at most window + one chunk: twice that always stays in
    # the history, so nobody gets a GAP from the window alone.
    kept = 2 * (window + PUBLISH_CHUNK)
    server_args = [
        *("--history-count", str(max(10_000, kept))),
        *("--history-bytes", str(max(16 << 20, kept * frame_size))),
        *("--max-connections", str(subscribers + 16)),
    ]
    total = messages + probe
    result: dict[str, Any] = {
        "subscribers": subscribers,
        "payload_bytes": payload,
        "frame_bytes": frame_size,
        "messages": messages,
        "probe_messages": probe,
        "window": window,
    }
    async with open_server_process(*server_args) as server:
        subs: list[Subscriber] = []
        publisher = None
        try:
            for i in range(subscribers):
                subs.append(await Subscriber.open(server.port, f"bench-sub-{i}", topic, MAX_CREDIT))
            pub_conn = await open_peer(server.port, "bench-pub")
            publisher = Publisher(pub_conn, topic, payload)
            progress = Progress()
            pub = publisher

            def failed() -> bool:
                return pub.error is not None or any(s.error is not None for s in subs)

            t1 = 0
            with trio.move_on_after(limit) as scope:
                async with trio.open_nursery() as nursery:
                    for s in subs:
                        nursery.start_soon(s.receive, total, messages, progress)
                    nursery.start_soon(pub.read_acks, total, progress)
                    t0 = time.perf_counter_ns()
                    cpu0, gen0 = server.cpu_seconds(), time.process_time()
                    await pub.publish(0, messages, window, subs, progress)
                    await progress.until(
                        lambda: failed() or all(s.received >= messages for s in subs)
                    )
                    t1 = time.perf_counter_ns()
                    cpu1, gen1 = server.cpu_seconds(), time.process_time()
                    if probe:
                        await pub.publish(messages, probe, 1, subs, progress)
                    await progress.until(
                        lambda: failed() or (pub.finished and all(s.finished for s in subs))
                    )
                    nursery.cancel_scope.cancel()
        finally:
            for s in subs:
                await s.conn.aclose()
            if publisher is not None:
                await publisher.conn.aclose()
        if not t1:  # the time limit struck in the loaded phase
            t1 = time.perf_counter_ns()
            cpu1, gen1 = server.cpu_seconds(), time.process_time()
        crashed = server.exited()
    done = [s.phase_done_ns for s in subs]
    end = max(done) if all(done) else t1
    seconds = max(end - t0, 1) / 1e9
    delivered = sum(min(s.received, messages) for s in subs)
    errors = [f"subscriber {i}: {s.error}" for i, s in enumerate(subs) if s.error]
    if publisher is not None and publisher.error:
        errors.append(publisher.error)
    if scope.cancelled_caught:
        errors.append(f"stopped by --duration-limit after {limit:g} s")
    if crashed:
        errors.append("the server exited during the run")
    acked = publisher.acked if publisher is not None else 0
    received = [s.received for s in subs]
    result |= {
        "seconds": seconds,
        "published_per_s": delivered / subscribers / seconds,
        "deliveries_per_s": delivered / seconds,
        "mb_per_s": delivered * frame_size / seconds / 1e6,
        "latency_us": _latency_us([s.loaded for s in subs]),
        "probe_latency_us": _latency_us([s.probe for s in subs]),
        "server_cpu_percent": _server_percent(cpu1, cpu0, (t1 - t0) / 1e9),
        "generator_cpu_percent": _percent(gen1, gen0, (t1 - t0) / 1e9),
        "expected_per_subscriber": total,
        "received": received,
        "acked": acked,
        "complete": not errors and acked == total and all(n == total for n in received),
        "errors": errors,
    }
    return result


# -- scenario: stalled subscribers ----------------------------------------------------------


async def stall_run(
    with_stalled: bool, messages: int, payload: int, window: int, limit: float
) -> dict[str, Any]:
    import trio

    topic = "bench/stall"
    frame_size = _frame_size(topic, payload)
    result: dict[str, Any] = {
        "run": "with_stalled" if with_stalled else "alone",
        "payload_bytes": payload,
        "frame_bytes": frame_size,
        "messages": messages,
        "window": window,
    }
    # The server's default history and policy (DROP): what a deployment gets.
    async with open_server_process() as server:
        conns: list[WireConnection] = []
        errors: list[str] = []
        try:
            normal = await Subscriber.open(server.port, "bench-normal", topic, MAX_CREDIT)
            conns.append(normal.conn)
            zero = stuck = None
            if with_stalled:
                zero = await Subscriber.open(server.port, "bench-zero-credit", topic, 0)
                conns.append(zero.conn)
                # Subscribes with all the credit, then never reads its socket again.
                stuck = await open_peer(server.port, "bench-stuck")
                conns.append(stuck)
                await subscribe(stuck, topic, MAX_CREDIT)
            publisher = Publisher(await open_peer(server.port, "bench-pub"), topic, payload)
            conns.append(publisher.conn)
            progress = Progress()
            memory_before = server.memory_kib()
            t0 = time.perf_counter_ns()
            cpu0 = server.cpu_seconds()
            with trio.move_on_after(limit) as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(normal.receive, messages, messages, progress)
                    nursery.start_soon(publisher.read_acks, messages, progress)
                    if zero is not None:
                        nursery.start_soon(zero.receive, None, 0, progress)
                    await publisher.publish(0, messages, window, [normal], progress)
                    await progress.until(
                        lambda: (
                            (normal.finished and publisher.finished)
                            or normal.error is not None
                            or publisher.error is not None
                        )
                    )
                    nursery.cancel_scope.cancel()
            t1 = time.perf_counter_ns()
            cpu1 = server.cpu_seconds()
            # Measured before anything closes: the stuck connection is still stuck.
            memory_after = server.memory_kib()
            if stuck is not None:
                to_stuck = _tcp_queues(server.port, local_port(stuck))
                at_stuck = _tcp_queues(local_port(stuck), server.port)
                result["stuck"] = {
                    "server_send_queue_bytes": None if to_stuck is None else to_stuck[0],
                    "subscriber_receive_queue_bytes": None if at_stuck is None else at_stuck[1],
                }
            if zero is not None:
                result["zero_credit_received"] = zero.received
                if zero.received:
                    errors.append(f"the zero-credit subscriber got {zero.received} messages")
                if zero.error:
                    errors.append(f"zero-credit subscriber: {zero.error}")
        finally:
            for conn in conns:
                await conn.aclose()
        crashed = server.exited()
    seconds = max((normal.phase_done_ns or t1) - t0, 1) / 1e9
    if normal.error:
        errors.append(f"normal subscriber: {normal.error}")
    if publisher.error:
        errors.append(publisher.error)
    if scope.cancelled_caught:
        errors.append(f"stopped by --duration-limit after {limit:g} s")
    if crashed:
        errors.append("the server exited during the run")
    growth = None
    if memory_before is not None and memory_after is not None:
        growth = memory_after["rss"] - memory_before["rss"]
    result |= {
        "seconds": seconds,
        "messages_per_s": normal.received / seconds,
        "mb_per_s": normal.received * frame_size / seconds / 1e6,
        "latency_us": _latency_us([normal.loaded]),
        "server_cpu_percent": _server_percent(cpu1, cpu0, (t1 - t0) / 1e9),
        "server_memory_before_kib": memory_before,
        "server_memory_after_kib": memory_after,
        "server_rss_growth_kib": growth,
        "received": normal.received,
        "acked": publisher.acked,
        "complete": not errors and normal.received == messages and publisher.acked == messages,
        "errors": errors,
    }
    return result


# -- scenario: publish with acknowledgements ------------------------------------------------


def _batch_size(topic: str, payload: int, wanted: int) -> int:
    """``wanted``, or fewer records when a PUBLISH_BATCH of them would exceed the frame limit."""
    body = bytes(payload)
    one = len(codec.encode_frame(F.PublishBatch(1, topic, (F.Record(body),))))
    two = len(codec.encode_frame(F.PublishBatch(1, topic, (F.Record(body),) * 2)))
    per_record, base = two - one, 2 * one - two
    return max(1, min(wanted, (MAX_FRAME_SIZE - base) // per_record))


async def acks_mode(
    conn: Any,
    server: ServerProcess,
    mode: str,
    messages: int,
    payload: int,
    batch: int,
    concurrency: int,
    limit: float,
) -> dict[str, Any]:
    import trio

    topic = f"bench/acks/{mode}/{payload}"
    body = bytes(payload)
    records = _batch_size(topic, payload, batch) if mode == "batch" else 1
    tasks = min(concurrency, messages) if mode == "concurrent" else 1
    latencies = array.array("q")
    firsts: list[tuple[int, int]] = []  # (first seq, count) per call
    done = 0
    errors: list[str] = []

    async def publisher(count: int) -> None:
        nonlocal done
        while count > 0:
            k = min(records, count)
            start = time.perf_counter_ns()
            if mode == "window":  # one call pipelines them all; latency is per message
                seqs: list[int] = []
                await conn.publish_many(topic, itertools.repeat(body, count), seqs.append)
                if seqs and seqs != list(range(seqs[0], seqs[0] + len(seqs))):
                    errors.append("PUBACK sequences are not contiguous and in order")
                firsts.extend((seq, 1) for seq in seqs)
                latencies.append((time.perf_counter_ns() - start) // max(count, 1))
                done += len(seqs)
                return
            if mode == "batch":
                first = await conn.publish_batch(topic, [body] * k)
            else:
                first = await conn.publish(topic, body)
            latencies.append(time.perf_counter_ns() - start)
            firsts.append((first, k))
            done += k
            count -= k

    t0 = time.perf_counter_ns()
    cpu0, gen0 = server.cpu_seconds(), time.process_time()
    with trio.move_on_after(limit) as scope:
        try:
            async with trio.open_nursery() as nursery:
                share, extra = divmod(messages, tasks)
                for i in range(tasks):
                    nursery.start_soon(publisher, share + (i < extra))
        except Exception as exc:  # a refused publish, a lost connection
            errors.append(_describe(exc))
    seconds = max(time.perf_counter_ns() - t0, 1) / 1e9
    cpu1, gen1 = server.cpu_seconds(), time.process_time()
    if scope.cancelled_caught:
        errors.append(f"stopped by --duration-limit after {limit:g} s")
    firsts.sort()
    if any(a + n != b for (a, n), (b, _) in itertools.pairwise(firsts)):
        errors.append("sequence numbers are not contiguous")
    return {
        "mode": mode,
        "payload_bytes": payload,
        "records_per_call": records,
        "in_flight": tasks,
        "messages": done,
        "calls": len(latencies),
        "seconds": seconds,
        "messages_per_s": done / seconds,
        "calls_per_s": len(latencies) / seconds,
        "mb_per_s": done * payload / seconds / 1e6,
        "latency_us": _latency_us([latencies]),
        "server_cpu_percent": _server_percent(cpu1, cpu0, seconds),
        "generator_cpu_percent": _percent(gen1, gen0, seconds),
        "complete": not errors and done == messages,
        "errors": errors,
    }


async def acks_runs(
    messages: int, payload: int, batch: int, concurrency: int, limit: float
) -> list[dict[str, Any]]:
    from pushwire.client import connect

    results = []
    async with open_server_process() as server:
        address = f"{HOST}:{server.port}"
        async with connect(address, reconnect=False, client_name="bench-acks") as conn:
            for mode in ("single", "batch", "concurrent", "window"):
                result = await acks_mode(
                    conn, server, mode, messages, payload, batch, concurrency, limit
                )
                results.append(result)
                _print_acks_row(result)
        if server.exited():
            results[-1]["errors"].append("the server exited during the run")
            results[-1]["complete"] = False
    return results


# -- the table ------------------------------------------------------------------------------


def _ms(latency: dict[str, Any] | None, key: str) -> str:
    return "-" if latency is None else f"{latency[key] / 1000:.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def _ok(result: dict[str, Any]) -> str:
    return "yes" if result["complete"] else "NO"


FANOUT_COLUMNS = (
    f"{'subs':>5}{'payload':>8}{'deliveries/s':>14}{'MB/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
    f"{'idle p50':>10}{'idle p99':>10}{'srv cpu':>9}{'gen cpu':>9}{'ok':>5}"
)


def _print_fanout_row(r: dict[str, Any]) -> None:
    print(
        f"{r['subscribers']:>5}{r['payload_bytes']:>8}{r['deliveries_per_s']:>14,.0f}"
        f"{r['mb_per_s']:>8.1f}{_ms(r['latency_us'], 'p50'):>9}{_ms(r['latency_us'], 'p99'):>9}"
        f"{_ms(r['probe_latency_us'], 'p50'):>10}{_ms(r['probe_latency_us'], 'p99'):>10}"
        f"{_pct(r['server_cpu_percent']):>9}{_pct(r['generator_cpu_percent']):>9}{_ok(r):>5}",
        flush=True,
    )


STALL_COLUMNS = (
    f"{'run':<22}{'msgs/s':>10}{'MB/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'RSS MiB before':>16}"
    f"{'after':>8}{'growth':>8}{'ok':>5}"
)


def _print_stall_row(r: dict[str, Any]) -> None:
    name = "normal alone" if r["run"] == "alone" else "+ zero-credit + stuck"
    before, after = r["server_memory_before_kib"], r["server_memory_after_kib"]
    print(
        f"{name:<22}{r['messages_per_s']:>10,.0f}{r['mb_per_s']:>8.1f}"
        f"{_ms(r['latency_us'], 'p50'):>9}{_ms(r['latency_us'], 'p99'):>9}"
        f"{_mib(before and before['rss']):>16}{_mib(after and after['rss']):>8}"
        f"{_mib(r['server_rss_growth_kib']):>8}{_ok(r):>5}",
        flush=True,
    )


ACKS_COLUMNS = (
    f"{'mode':<12}{'payload':>8}{'records':>8}{'in flight':>10}{'msgs/s':>10}{'calls/s':>10}"
    f"{'MB/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'srv cpu':>9}{'gen cpu':>9}{'ok':>5}"
)


def _print_acks_row(r: dict[str, Any]) -> None:
    print(
        f"{r['mode']:<12}{r['payload_bytes']:>8}{r['records_per_call']:>8}{r['in_flight']:>10}"
        f"{r['messages_per_s']:>10,.0f}{r['calls_per_s']:>10,.0f}{r['mb_per_s']:>8.1f}"
        f"{_ms(r['latency_us'], 'p50'):>9}{_ms(r['latency_us'], 'p99'):>9}"
        f"{_pct(r['server_cpu_percent']):>9}{_pct(r['generator_cpu_percent']):>9}{_ok(r):>5}",
        flush=True,
    )


def _stall_summary(alone: dict[str, Any], stalled: dict[str, Any]) -> dict[str, Any]:
    growth = None
    if alone["server_rss_growth_kib"] is not None and stalled["server_rss_growth_kib"] is not None:
        growth = stalled["server_rss_growth_kib"] - alone["server_rss_growth_kib"]
    rate = stalled["messages_per_s"] / alone["messages_per_s"] if alone["messages_per_s"] else None
    return {"rss_growth_due_to_stalled_kib": growth, "normal_rate_ratio": rate}


# -- running --------------------------------------------------------------------------------


async def _main(args: argparse.Namespace, scenarios: Sequence[str]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    limit = args.duration_limit
    if "fanout" in scenarios:
        print(
            f"fan-out: 1 raw publisher, N raw subscribers; {args.messages} messages at most "
            f"{args.window} ahead of the slowest subscriber, then {args.probe} one at a time "
            "(idle); latency in ms"
        )
        print(FANOUT_COLUMNS)
        report["fanout"] = []
        for payload in args.payload:
            for n in args.subscribers:
                result = await fanout_run(n, args.messages, payload, args.window, args.probe, limit)
                report["fanout"].append(result)
                _print_fanout_row(result)
        print()
    if "stall" in scenarios:
        payload = max(args.payload)
        print(
            f"stalled subscribers: {args.messages} x {payload}-byte messages to one normal "
            "subscriber, alone and next to a zero-credit and a stuck (not reading) subscriber"
        )
        print(STALL_COLUMNS)
        runs = []
        for with_stalled in (False, True):
            result = await stall_run(with_stalled, args.messages, payload, args.window, limit)
            runs.append(result)
            _print_stall_row(result)
        summary = _stall_summary(*runs)
        report["stall"] = {"runs": runs, **summary}
        stuck = runs[1].get("stuck") or {}
        kib = {k: "-" if v is None else f"{v / 1024:.0f} KiB" for k, v in stuck.items()}
        ratio, growth = summary["normal_rate_ratio"], summary["rss_growth_due_to_stalled_kib"]
        print(
            "server RSS growth due to the stalled subscribers: "
            f"{'-' if growth is None else f'{growth:+,} KiB'}; normal subscriber's rate "
            f"with them / alone: {'-' if ratio is None else f'{ratio:.2f}'}"
        )
        print(
            f"stuck subscriber: server send queue {kib.get('server_send_queue_bytes', '-')}, "
            f"its receive queue {kib.get('subscriber_receive_queue_bytes', '-')} (kernel); "
            f"zero-credit subscriber got {runs[1].get('zero_credit_received', '-')} messages"
        )
        print()
    if "acks" in scenarios:
        print(
            f"publish with PUBACK, reference client: {args.messages} messages per mode; "
            "latency of one call in ms"
        )
        print(ACKS_COLUMNS)
        report["acks"] = []
        for payload in args.payload:
            report["acks"] += await acks_runs(
                args.messages, payload, args.batch, args.concurrency, limit
            )
        print()
    for extra in EXTRA_SCENARIOS:
        await extra(args, scenarios, report)
    return report


def _incomplete(report: dict[str, Any]) -> list[str]:
    out = [
        f"{name}: {r['errors']}"
        for name in ("rate", "idle", "interference", "churn")
        for r in report.get(name, [])
        if not r["complete"]
    ]
    for r in report.get("fanout", []):
        if not r["complete"]:
            out.append(f"fanout {r['subscribers']} x {r['payload_bytes']} B: {r['errors']}")
    for r in report.get("stall", {}).get("runs", []):
        if not r["complete"]:
            out.append(f"stall {r['run']}: {r['errors']}")
    for r in report.get("acks", []):
        if not r["complete"]:
            out.append(f"acks {r['mode']} {r['payload_bytes']} B: {r['errors']}")
    return out


def run(args: argparse.Namespace) -> int:
    import trio

    problem = _problem(args)
    if problem is not None:
        print(f"pushwire bench server: {problem}", file=sys.stderr)
        return 2
    scenarios = [s for s in SCENARIOS if s in (args.scenario or DEFAULT_SCENARIOS)]
    print(
        f"pushwire serve subprocess on {HOST}; Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs"
    )
    try:
        report = trio.run(_main, args, scenarios)
    except BaseException as exc:
        failure = _bench_error(exc)
        if failure is None:
            raise
        print(f"pushwire bench server: {failure}", file=sys.stderr)
        return 1
    incomplete = _incomplete(report)
    if args.json:
        full = {
            "target": "server",
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "options": {
                "scenarios": scenarios,
                "subscribers": args.subscribers,
                "messages": args.messages,
                "payload": args.payload,
                "window": args.window,
                "probe": args.probe,
                "batch": args.batch,
                "concurrency": args.concurrency,
                "duration_limit": args.duration_limit,
            },
            **report,
            "complete": not incomplete,
        }
        try:
            args.json.write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:  # the figures are printed already; only the file is lost
            print(
                f"pushwire bench server: error: cannot write {args.json}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 2
    for line in incomplete:
        print(f"pushwire bench server: incomplete: {line}", file=sys.stderr)
    return 1 if incomplete else 0


def _bench_error(exc: BaseException) -> BenchError | None:
    """The BenchError that stopped the run, also from inside an exception group."""
    if isinstance(exc, BenchError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(BenchError)
        if matched is not None and rest is None:
            first: BaseException = matched
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            assert isinstance(first, BenchError)
            return first
    return None
