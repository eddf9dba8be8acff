"""The subscribers of ``pushwire bench server --scenario idle``: many connections, few cores.

Theory of operation
-------------------
Ten thousand subscribers as trio tasks in one Python process cost that process more than
they cost the server, and delivery figures taken there measure the load generator. Here
each of ``workers`` processes (``multiprocessing``, started with ``spawn``: the parent
runs trio) holds a share of the connections as raw non-blocking sockets on one
``select.epoll``; per connection it keeps the socket, a :class:`FrameDecoder` and three
numbers. A worker opens its connections :data:`SETUP_BATCH` at a time (preface and HELLO,
then SUBSCRIBE after WELCOME [PW-HS-16], then SUBSCRIBED), answers every PING with its PONG
from the start (setting up thousands takes longer than a heartbeat timeout), says
``ready``, and from then on only answers PINGs and takes messages until the parent says
``stop``; then it sends its figures and closes its sockets.

Every payload starts with :data:`~pushwire.client.bench.server.STAMP`: the message's index
and its publish time in ``time.monotonic_ns()``. A worker stamps each read with
``time.monotonic_ns()`` as soon as it has it; CLOCK_MONOTONIC is one clock for every
process of a Linux machine, so the difference is the publish-to-deliver latency even though
publisher and subscriber are different processes. Every subscriber checks that it gets
message 0, 1, 2 ... with consecutive sequence numbers from its SUBSCRIBED.start_seq: each
message once and in order; at the first that is not, it stops counting and keeps the error.
A connection the server closes or resets counts as dropped.

Parent and workers talk over a ``multiprocessing`` pipe: ``("ready", n)`` once all of a
worker's connections are subscribed (or ``("error", text)``), ``("done", None)`` once each
of them received ``expected`` messages or failed, and the figures after ``stop``.
"""

from __future__ import annotations

import array
import multiprocessing
import select
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder, encode_preface, parse_preface
from pushwire.protocol.errors import RemoteProtocolError
from pushwire.protocol.layouts import PREFACE_SIZE

__all__ = ["IdleFigures", "Worker", "merge", "start_workers"]

HOST = "127.0.0.1"
#: Connections in their handshake at once per worker: the server's accept queue stays short.
SETUP_BATCH = 50
#: Bytes asked of a socket per receive (a fan-out delivers one small message at a time).
RECEIVE_SIZE = 64 * 1024
#: Errors a worker reports word for word; the rest are only counted.
MAX_ERRORS = 5
#: The longest a worker waits in epoll when nothing happens.
POLL_SECONDS = 0.5

_PREFACE, _WELCOME, _SUBSCRIBING, _READY, _FAILED = range(5)
_PING = codec.encode_frame(F.Ping(0x6964_6C65))


class _Peer:
    """One subscriber connection of a worker."""

    __slots__ = (
        "decoder",
        "done",
        "error",
        "last_sent",
        "next_seq",
        "received",
        "sock",
        "state",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = FrameDecoder()
        self.state = _PREFACE
        self.next_seq = 0
        self.received = 0
        self.error = ""
        self.done = False  # received what was expected, or failed
        self.last_sent = time.monotonic()


class _Loop:
    """The epoll loop of one worker process."""

    def __init__(
        self, topic: str, heartbeat_ms: int, max_frame_size: int, credit: int, expected: int
    ) -> None:
        from pushwire.client.bench.server import STAMP

        self.stamp = STAMP.unpack_from
        self.ep = select.epoll()
        self.peers: dict[int, _Peer] = {}
        self.latencies = array.array("q")
        self.hello = encode_preface(1, 1) + codec.encode_frame(
            F.Hello(max_frame_size, heartbeat_ms, "bench-idle", b"")
        )
        self.subscribe = codec.encode_frame(F.Subscribe(1, topic, initial_credit=credit))
        self.max_frame_size = max_frame_size
        self.interval = heartbeat_ms / 1000  # until WELCOME says otherwise
        self.expected = expected
        self.setting_up = 0  # connections not yet subscribed (nor failed)
        self.ready = 0
        self.done = 0
        self.dropped = 0
        self.errors: list[str] = []

    def open(self, port: int) -> None:
        sock = socket.create_connection((HOST, port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.adopt(sock)

    def adopt(self, sock: socket.socket) -> _Peer:
        """Start the handshake on a connected socket and watch it."""
        sock.sendall(self.hello)
        sock.setblocking(False)
        peer = self.peers[sock.fileno()] = _Peer(sock)
        self.ep.register(sock.fileno(), select.EPOLLIN)
        self.setting_up += 1
        return peer

    def close(self) -> None:
        for peer in self.peers.values():
            peer.sock.close()
        self.ep.close()

    def _fail(self, peer: _Peer, why: str) -> None:
        if peer.state == _FAILED:
            return
        if peer.state < _READY:
            self.setting_up -= 1
        peer.state = _FAILED
        peer.error = why
        self.errors.append(why)
        self._finished(peer)

    def _finished(self, peer: _Peer) -> None:
        if not peer.done:
            peer.done = True
            self.done += 1

    def _send(self, peer: _Peer, data: bytes) -> None:
        try:
            sent = peer.sock.send(data)
        except OSError as exc:
            sent, why = -1, f"send failed: {exc}"
        else:
            why = f"socket full: {sent} of {len(data)} bytes sent"
        if sent != len(data):
            self._fail(peer, why)
        peer.last_sent = time.monotonic()

    def ping_idle(self, now: float) -> None:
        """PING every subscribed connection that has sent nothing for a heartbeat interval
        (PW-HB-1): answering the server's PINGs is not enough once the server sends
        messages, because then it sends no PINGs."""
        for peer in self.peers.values():
            if peer.state == _READY and now - peer.last_sent >= self.interval:
                self._send(peer, _PING)

    def _take(self, peer: _Peer, seq: int, payload: bytes, now: int) -> bool:
        index, sent = self.stamp(payload)
        if index != peer.received or seq != peer.next_seq:
            self._fail(
                peer,
                f"expected message {peer.received} (seq {peer.next_seq}), "
                f"got message {index} (seq {seq})",
            )
            return False
        self.latencies.append(now - sent)
        peer.received += 1
        peer.next_seq += 1
        if peer.received >= self.expected:
            self._finished(peer)
        return True

    def readable(self, peer: _Peer) -> None:
        try:
            data = peer.sock.recv(RECEIVE_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            data, why = b"", f"connection reset: {exc}"
        else:
            why = f"the server closed the connection after {peer.received} messages"
        now = time.monotonic_ns()
        if not data:
            if peer.state == _READY:
                self.dropped += 1
            self._fail(peer, why)
            self.ep.unregister(peer.sock.fileno())
            return
        if peer.state == _FAILED:
            return
        decoder = peer.decoder
        decoder.feed(data)
        if peer.state == _PREFACE:
            if decoder.buffered < PREFACE_SIZE:
                return
            try:
                version, _ = parse_preface(decoder.take(PREFACE_SIZE))
            except RemoteProtocolError as exc:
                self._fail(peer, f"server preface: {exc}")
                return
            if version != 1:
                self._fail(peer, f"server preface chose version {version}, not 1")
                return
            peer.state = _WELCOME
        try:
            while (frame := decoder.next_frame()) is not None:
                ready = peer.state == _READY
                if isinstance(frame, F.Message) and ready:
                    self._take(peer, frame.seq, frame.payload, now)
                elif isinstance(frame, F.Ping):
                    self._send(peer, codec.encode_frame(F.Pong(frame.opaque)))
                elif isinstance(frame, F.Pong):
                    pass  # the answer to one of ours
                elif isinstance(frame, F.MessageBatch) and ready:
                    for i, record in enumerate(frame.records):
                        if not self._take(peer, frame.base_seq + i, record.payload, now):
                            break
                elif isinstance(frame, F.Welcome) and peer.state == _WELCOME:
                    decoder.max_frame_size = self.max_frame_size
                    self.interval = frame.heartbeat_ms / 1000
                    peer.state = _SUBSCRIBING
                    self._send(peer, self.subscribe)
                elif isinstance(frame, F.Subscribed) and peer.state == _SUBSCRIBING:
                    peer.next_seq = frame.start_seq
                    peer.state = _READY
                    self.setting_up -= 1
                    self.ready += 1
                else:
                    self._fail(peer, f"unexpected {frame!r}")
                if peer.state == _FAILED:
                    break
        except RemoteProtocolError as exc:
            self._fail(peer, f"protocol error: {exc}")

    def figures(self) -> dict[str, Any]:
        return {
            "connected": self.ready,
            "received": [p.received for p in self.peers.values()],
            "dropped": self.dropped,
            "failed": len(self.errors),
            "errors": self.errors[:MAX_ERRORS],
            "latencies": self.latencies.tobytes(),
            "cpu_seconds": time.process_time(),
        }


def _worker(
    pipe: Connection,
    port: int,
    count: int,
    topic: str,
    heartbeat_ms: int,
    max_frame_size: int,
    credit: int,
    expected: int,
    setup_seconds: float,
) -> None:
    """One worker process: see the module docstring."""
    loop = _Loop(topic, heartbeat_ms, max_frame_size, credit, expected)
    try:
        loop.ep.register(pipe.fileno(), select.EPOLLIN)
        opened = 0
        said_ready = said_done = False
        deadline = time.monotonic() + setup_seconds
        sweep = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= sweep:  # a tenth of an interval late at most
                loop.ping_idle(now)
                sweep = now + loop.interval / 10
            while opened < count and loop.setting_up < SETUP_BATCH:
                loop.open(port)
                opened += 1
            if not said_ready:
                if loop.errors:
                    pipe.send(("error", f"{len(loop.errors)} failed: {loop.errors[0]}"))
                    said_ready = True
                elif loop.ready == count:
                    pipe.send(("ready", loop.ready))
                    said_ready = True
                elif time.monotonic() > deadline:
                    pipe.send(("error", f"{count - loop.ready} not subscribed in time"))
                    said_ready = True
            if said_ready and not said_done and expected and loop.done == len(loop.peers):
                pipe.send(("done", None))
                said_done = True
            stop = False
            wait = min(POLL_SECONDS if said_ready else 0.05, max(0.0, sweep - now))
            for fd, _ in loop.ep.poll(wait):
                peer = loop.peers.get(fd)
                if peer is not None:
                    loop.readable(peer)
                elif pipe.poll():
                    stop = pipe.recv() == "stop"
            if stop:
                break
        pipe.send(("figures", loop.figures()))
    except Exception as exc:  # reported to the parent, which reports the run incomplete
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        loop.close()


@dataclass
class Worker:
    """A worker process, seen from the parent (which runs trio)."""

    process: Any
    pipe: Connection
    count: int
    last: tuple[str, Any] = ("", None)

    async def next_message(self) -> tuple[str, Any]:
        """The worker's next message; ("error", ...) when the process is gone."""
        import trio

        while not self.pipe.poll():
            if not self.process.is_alive():
                self.last = ("error", f"worker exited with status {self.process.exitcode}")
                return self.last
            with trio.move_on_after(0.2):
                await trio.lowlevel.wait_readable(self.pipe.fileno())
        try:
            self.last = self.pipe.recv()
        except EOFError:
            self.last = ("error", "worker closed its pipe")
        return self.last

    def stop(self) -> None:
        try:
            self.pipe.send("stop")
        except OSError:
            pass

    def end(self) -> None:
        """Make sure the process is gone (terminated by its own handle if it lingers)."""
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
        self.pipe.close()


def start_workers(
    workers: int,
    port: int,
    connections: int,
    topic: str,
    *,
    heartbeat_ms: int,
    max_frame_size: int,
    credit: int,
    expected: int,
    setup_seconds: float,
) -> list[Worker]:
    """``workers`` processes holding ``connections`` subscribers between them."""
    context = multiprocessing.get_context("spawn")
    out = []
    for i in range(workers):
        count = connections // workers + (i < connections % workers)
        if not count:
            continue
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_worker,
            args=(
                theirs,
                port,
                count,
                topic,
                heartbeat_ms,
                max_frame_size,
                credit,
                expected,
                setup_seconds,
            ),
            name=f"pushwire-bench-idle-{i}",
            daemon=True,
        )
        process.start()
        theirs.close()
        out.append(Worker(process, ours, count))
    return out


@dataclass
class IdleFigures:
    """What the workers measured, together."""

    connected: int = 0
    received: list[int] = field(default_factory=list)
    dropped: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[array.array[int]] = field(default_factory=list)
    cpu_seconds: float = 0.0


def merge(parts: list[dict[str, Any]]) -> IdleFigures:
    out = IdleFigures()
    for part in parts:
        out.connected += part["connected"]
        out.received += part["received"]
        out.dropped += part["dropped"]
        out.failed += part["failed"]
        out.errors += part["errors"]
        samples = array.array("q")
        samples.frombytes(part["latencies"])
        out.latencies.append(samples)
        out.cpu_seconds += part["cpu_seconds"]
    out.errors = out.errors[:MAX_ERRORS]
    return out
