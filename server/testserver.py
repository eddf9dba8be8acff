"""``pushwire testserver``: a scripted server that puts a pushwire *client* through edge cases.

Theory of operation
-------------------
This is not the reference server: it is trio plus the protocol codec, and every byte it
sends is scripted. A client under test connects, handshakes as usual (any HELLO is
accepted; WELCOME announces a short heartbeat interval) and subscribes to the topic
``conformance/<scenario>``: the topic picks the script. The script then sends exactly what
the scenario is about (frames split byte by byte, a GAP, a GOAWAY with a reconnect hint,
silence...) and records what the client does on the wire. A scenario can span several
connections (reconnect, resume); all connections that subscribe to its topic belong to it.
Two scenarios start on one connection and end on the *next* one (``bad-version``): the
first connection arms the trick, the client's reconnect receives it.

Each scenario ends with a list of checks, each with the SPEC.md requirement IDs it proves
and a level: a failed MUST check fails the scenario, a failed SHOULD check is a warning
(an error with ``--strict``). What a client shows its application (a gap, an epoch change)
cannot be seen on the wire; each scenario states it (``expect_app``, and as data in
``Scenario.app``), and the project's tests check it for the reference client
(``tests/conformance/reference_client.py``). This module imports only the protocol package:
it never knows the client it tests.

Running a client under test: either start ``pushwire testserver --port 7450`` and run your
client once per scenario (``mytool sub conformance/gap --server 127.0.0.1:7450``), or let
the testserver start it: ``--client-command 'mytool sub {topic} --server {address}
{mode_flag}'`` runs the command per scenario and stops it when the scenario is over.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import trio

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder, encode_preface
from pushwire.protocol.errors import ErrorCode, RemoteProtocolError
from pushwire.protocol.layouts import (
    CLIENT_SENDS,
    HEADER_SIZE,
    INITIAL_MAX_FRAME_SIZE,
    MAGIC,
    MAX_MAX_FRAME_SIZE,
    MIN_MAX_FRAME_SIZE,
    PREFACE_SIZE,
    FrameType,
    Outcome,
    SinceKind,
    SlowConsumerPolicy,
)
from pushwire.protocol.topics import topic_problem

DESCRIPTION = """\
A scripted pushwire server for testing a CLIENT implementation. The client subscribes to
'conformance/<scenario>' and the testserver plays that scenario (split frames, oversized or
unknown frames, gaps, epoch changes, GOAWAY with a reconnect hint, heartbeat silence,
credit exhaustion, redelivery...), records what the client does on the wire and reports,
per scenario, each check with its SPEC.md requirement IDs.

Exit status: 0 = every selected scenario passed, 1 = a MUST check failed (or, with
--strict, a SHOULD check) or a scenario did not finish, 2 = usage error, the port cannot
be opened, or the --json file cannot be written."""

EPILOG = """\
examples:
  pushwire testserver --list
  pushwire testserver --port 7450 --scenario gap      # then: mytool sub conformance/gap ...
  pushwire testserver --scenario all --json report.json \\
      --client-command 'pushwire sub {topic} --server {address} {mode_flag}'"""

TOPIC_PREFIX = "conformance/"
#: The receive limit the testserver announces: small, so max-frame scenarios stay fast.
WELCOME_MAX_FRAME = 65536


# -- results -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Check:
    text: str
    requirements: tuple[str, ...]
    level: str  # MUST or SHOULD
    passed: bool
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.text,
            "requirements": list(self.requirements),
            "level": self.level,
            "passed": self.passed,
            "detail": self.detail,
        }


@dataclass
class ScenarioRun:
    """One scenario's state and findings across the connections of the client under test."""

    scenario: Scenario
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)
    connections: int = 0
    not_applicable: str = ""
    started: float | None = None
    #: Epochs the scripts made up, by name ("epoch", "new-epoch"): the same on every connection.
    epochs: dict[str, int] = field(default_factory=dict)
    #: What connection 1 of a multi-connection scenario leaves for the later ones and for the
    #: expected application view; None until recorded.
    resume_at: int | None = None  # the position the client must resume from
    delivered: int | None = None  # messages delivered before the drop
    goaway_at: float | None = None  # when GOAWAY was sent (trio time)
    credit: int | None = None  # the client's initial credit (over-credit)
    reconnected: trio.Event = field(default_factory=trio.Event)

    def check(
        self,
        text: str,
        requirements: tuple[str, ...],
        passed: bool,
        detail: str = "",
        level: str = "MUST",
    ) -> bool:
        self.checks.append(Check(text, requirements, level, bool(passed), detail))
        return bool(passed)

    def finish(self) -> None:
        self.done.set()

    @property
    def verdict(self) -> str:
        if self.not_applicable:
            return "n/a"
        if any(not c.passed and c.level == "MUST" for c in self.checks):
            return "fail"
        if not self.done.is_set():
            return "incomplete"
        if any(not c.passed for c in self.checks):
            return "warn"
        return "pass"

    def to_json(self) -> dict[str, Any]:
        s = self.scenario
        return {
            "scenario": s.name,
            "topic": s.topic,
            "mode": s.mode,
            "verdict": self.verdict,
            "requirements": list(s.requirements),
            "client_must": s.client_must,
            "expect_app": s.expect_app,
            "connections": self.connections,
            "not_applicable": self.not_applicable,
            "checks": [c.to_json() for c in self.checks],
            "notes": self.notes,
        }


# -- one client connection -------------------------------------------------------------------


class Peer:
    """The client side of one connection, as the testserver sees it.

    A reader task decodes everything the client sends: PING is answered (unless the script
    made us ``silent``), CREDIT and ACK update the books, everything else goes to the script
    through :meth:`next`. A heartbeat task PINGs when we have been idle for an interval.
    """

    def __init__(self, stream: trio.SocketStream, run_checks: Callable[..., bool]) -> None:
        self.stream = stream
        self.opened_at = trio.current_time()
        self.decoder = FrameDecoder(INITIAL_MAX_FRAME_SIZE)
        self._send_lock = trio.Lock()
        self._inbox_send, self._inbox = trio.open_memory_channel[F.Frame | None](1000)
        self.silent = False
        self.heartbeat = 1.0
        self.last_sent = trio.current_time()
        self.received_times: list[float] = []
        self.closed_at: float | None = None
        self.client_error: F.Error | None = None
        self.client_goaway: F.Goaway | None = None
        self.pongs: dict[int, float] = {}
        self.credit: dict[int, int] = {}
        self.granted: dict[int, int] = {}
        self.acks: dict[int, list[int]] = {}
        self.at_least_once: dict[int, bool] = {}
        self.delivered: dict[int, int] = {}
        self.hello: F.Hello | None = None
        self.bad: str = ""
        self._changed = trio.Event()
        self._check = run_checks
        self.after_goaway: list[str] = []
        self.goaway_sent_at: float | None = None

    # sending
    async def send_raw(self, data: bytes) -> bool:
        async with self._send_lock:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return False
            self.last_sent = trio.current_time()
            return True

    async def send(self, *frames: F.Frame) -> bool:
        return await self.send_raw(b"".join(codec.encode_frame(f) for f in frames))

    async def send_bytewise(self, data: bytes) -> bool:
        for i in range(len(data)):
            if not await self.send_raw(data[i : i + 1]):
                return False
        return True

    async def close(self) -> None:
        with trio.move_on_after(1):
            await self.stream.aclose()

    # receiving
    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def reader(self) -> None:
        try:
            while True:
                try:
                    while (frame := self.decoder.next_frame()) is not None:
                        await self._on_frame(frame)
                except RemoteProtocolError as exc:
                    self.bad = str(exc)
                    self._check(
                        "the client sends only well-formed frames",
                        ("PW-FRAME-16",),
                        False,
                        str(exc),
                    )
                    self.closed_at = trio.current_time()
                    await self.close()
                    break
                try:
                    data = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    data = b""
                if not data:
                    self.closed_at = trio.current_time()
                    break
                self.received_times.append(trio.current_time())
                self.decoder.feed(data)
        finally:
            self._inbox_send.close()
            self._wake()

    async def _on_frame(self, frame: F.Frame) -> None:
        if isinstance(frame, F.Unknown):
            return
        if FrameType(frame.TYPE) not in CLIENT_SENDS:
            self._check(
                "the client sends only frame types a client sends",
                ("PW-FRAME-12",),
                False,
                f"{frame.TYPE.name}",
            )
        if self.goaway_sent_at is not None and isinstance(
            frame, F.Subscribe | F.Publish | F.PublishBatch
        ):
            self.after_goaway.append(frame.TYPE.name)
        match frame:
            case F.Ping():
                if not self.silent:
                    await self.send(F.Pong(frame.opaque))
            case F.Pong():
                self.pongs[frame.opaque] = trio.current_time()
            case F.Credit():
                self.credit[frame.sub_id] = self.credit.get(frame.sub_id, 0) + frame.increment
                self.granted[frame.sub_id] = self.granted.get(frame.sub_id, 0) + frame.increment
            case F.Ack():
                acks = self.acks.setdefault(frame.sub_id, [])
                if not self.at_least_once.get(frame.sub_id, False):
                    self._check(
                        "no ACK on an at-most-once subscription", ("PW-ACK-1",), False, str(frame)
                    )
                elif acks and frame.seq < acks[-1]:
                    self._check(
                        "ACKs never go backwards",
                        ("PW-ACK-1",),
                        False,
                        f"{acks[-1]} then {frame.seq}",
                    )
                acks.append(frame.seq)
            case F.Error():
                self.client_error = frame
                self._check(
                    "a client ERROR has request_type 0 and request_id 0",
                    ("PW-ERR-7",),
                    frame.request_type == 0 and frame.request_id == 0,
                    str(frame),
                )
            case F.Goaway():
                self.client_goaway = frame
                self._check(
                    "a client GOAWAY has code NO_ERROR, zero delays and no positions",
                    ("PW-GOAWAY-9",),
                    (
                        frame.code,
                        frame.reconnect_after_ms,
                        frame.reconnect_jitter_ms,
                        frame.positions,
                    )
                    == (0, 0, 0, ()),
                    str(frame),
                )
            case _:
                await self._inbox_send.send(frame)
        self._wake()

    async def heartbeats(self) -> None:
        n = 0
        while self.closed_at is None:
            await trio.sleep(self.heartbeat / 4)
            if not self.silent and trio.current_time() - self.last_sent >= self.heartbeat * 0.9:
                n += 1
                await self.send(F.Ping(0x7E57_0000_0000_0000 + n))

    async def next(self, timeout: float) -> F.Frame | None:
        """The next request frame from the client, or None (closed or timeout)."""
        with trio.move_on_after(timeout):
            try:
                return await self._inbox.receive()
            except trio.EndOfChannel:
                return None
        return None

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while not predicate():
                await self._changed.wait()
            return True
        return predicate()

    async def wait_closed(self, timeout: float) -> bool:
        return await self.wait_until(lambda: self.closed_at is not None, timeout)

    async def ping(self, opaque: int, timeout: float) -> float | None:
        """Round trip of a PING, or None when no PONG came in time."""
        sent = trio.current_time()
        await self.send(F.Ping(opaque))
        if await self.wait_until(lambda: opaque in self.pongs, timeout):
            return self.pongs[opaque] - sent
        return None

    async def settle(self, sub_id: int, timeout: float) -> None:
        """Let the client catch up: a PING round trip (it parsed everything sent), then
        wait until its ACKs stop moving (at-least-once)."""
        await self.ping(0x5E77_1E00 + random.getrandbits(16), timeout)
        if self.at_least_once.get(sub_id):
            target = self.delivered.get(sub_id, 0)
            await self.wait_until(
                lambda: bool(self.acks.get(sub_id)) and self.acks[sub_id][-1] >= target, timeout
            )
        await trio.sleep(0.1)

    def last_ack(self, sub_id: int) -> int:
        acks = self.acks.get(sub_id)
        return acks[-1] if acks else 0

    async def deliver(
        self,
        sub_id: int,
        epoch: int,
        topic: str,
        seqs: range,
        *,
        timeout: float,
        bytewise: bool = False,
        payload: Callable[[int], bytes] = lambda s: b"msg-%d" % s,
    ) -> bool:
        """MESSAGE frames for ``seqs``, never beyond the client's credit; False when the
        client stopped granting credit (or closed) before all were sent."""
        for seq in seqs:
            if (
                not await self.wait_until(
                    lambda: self.credit.get(sub_id, 0) > 0 or self.closed_at is not None, timeout
                )
                or self.closed_at is not None
            ):
                return False
            self.credit[sub_id] -= 1
            data = codec.encode_frame(F.Message(epoch, seq, topic, payload(seq)))
            if not await (self.send_bytewise(data) if bytewise else self.send_raw(data)):
                return False
            self.delivered[sub_id] = seq
        return True

    def restart_acks(self, sub_id: int) -> None:
        """The subscription continues in a new epoch: ACKs count from 0 again (PW-ACK-4), so
        the next ACK below the old level is not "backwards". Call it after :meth:`settle`,
        so no ACK of the old epoch is still on its way."""
        self.acks[sub_id] = []

    def take_subscribe(self, sub: F.Subscribe) -> None:
        self.credit[sub.sub_id] = sub.initial_credit
        self.granted[sub.sub_id] = 0
        self.at_least_once[sub.sub_id] = sub.at_least_once


# -- scenarios -------------------------------------------------------------------------------

Script = Callable[["Ctx"], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    requirements: tuple[str, ...]
    client_must: str
    expect_app: str
    script: Script
    mode: str = "any"  # "at-least-once": the client must subscribe at-least-once
    #: ``expect_app`` as data: the list of ("msg", seq) / ("gap", first, last) / ("epoch",) /
    #: ("error",) items the application must see, computed from the run's state.
    app: Callable[[ScenarioRun], list[tuple[Any, ...]]] | None = None

    @property
    def topic(self) -> str:
        return TOPIC_PREFIX + self.name


@dataclass
class Ctx:
    """What a script gets for one connection."""

    run: ScenarioRun
    peer: Peer
    sub: F.Subscribe
    attempt: int
    server: TestServer

    @property
    def timeout(self) -> float:
        return self.server.timeout

    @property
    def h(self) -> float:
        return self.server.heartbeat_ms / 1000

    def epoch(self, key: str = "epoch") -> int:
        return self.run.epochs.setdefault(key, random.getrandbits(62) | 1)

    def resume_at(self) -> int:
        """The position connection 1 recorded before it asked the client to reconnect."""
        if self.run.resume_at is None:
            raise RuntimeError("the client reconnected before the scenario recorded its position")
        return self.run.resume_at

    async def subscribed(
        self,
        outcome: int = Outcome.NEW,
        start: int = 1,
        head: int = 0,
        epoch: int | None = None,
        gap: tuple[int, int, int] | None = None,
        bytewise: bool = False,
    ) -> None:
        e = self.epoch() if epoch is None else epoch
        first, last, reason = gap or (0, 0, 0)
        frame = F.Subscribed(self.sub.sub_id, outcome, e, start, head, first, last, reason)
        data = codec.encode_frame(frame)
        await (self.peer.send_bytewise(data) if bytewise else self.peer.send_raw(data))

    async def deliver(
        self,
        seqs: range,
        *,
        epoch: int | None = None,
        bytewise: bool = False,
        reqs: tuple[str, ...] = ("PW-FRAME-1",),
    ) -> bool:
        """MESSAGEs ``seqs`` within credit. When the client closes first, that fails
        ``reqs`` (the rules that make these frames valid)."""
        ok = await self.peer.deliver(
            self.sub.sub_id,
            self.epoch() if epoch is None else epoch,
            self.sub.topic,
            seqs,
            timeout=self.timeout,
            bytewise=bytewise,
        )
        if ok:
            return True
        sid = self.sub.sub_id
        if self.peer.closed_at is not None:
            self.run.check(
                "the client stays connected through valid frames",
                reqs,
                False,
                f"closed after seq {self.peer.delivered.get(sid)}; its ERROR: "
                f"{self.peer.client_error}",
            )
        else:
            self.run.check(
                f"the client grants more credit as it consumes (messages {seqs.start}.."
                f"{seqs.stop - 1}; the server never exceeds credit)",
                ("PW-FLOW-7",),
                False,
                f"stalled after seq {self.peer.delivered.get(sid)} with credit 0",
                level="SHOULD",
            )
        self.run.finish()
        return False

    async def finish_ok(self, last_seq: int) -> None:
        """The common end of a scenario the client must survive: it is still connected,
        answers PING, sent no ERROR, and (at-least-once) acknowledged up to last_seq."""
        rtt = await self.peer.ping(0xC0FFEE, self.timeout)
        self.run.check(
            "the client is still connected and answers PING with the same opaque",
            ("PW-HB-2", "PW-FRAME-1"),
            rtt is not None and self.peer.client_error is None,
            ""
            if rtt is not None
            else f"no PONG; client ERROR: {self.peer.client_error}; "
            f"closed: {self.peer.closed_at is not None}",
        )
        if self.sub.at_least_once:
            sid = self.sub.sub_id
            ok = await self.peer.wait_until(
                lambda: self.peer.last_ack(sid) >= last_seq, self.timeout
            )
            self.run.check(
                f"at-least-once: the client acknowledges up to {last_seq}",
                ("PW-ACK-7",),
                ok,
                f"last ACK {self.peer.last_ack(sid)}",
                level="SHOULD",
            )
        self.run.finish()

    async def expect_error_close(self, code: ErrorCode, reqs: tuple[str, ...]) -> None:
        """After a fatal frame: ERROR(code) (best effort, but a different code is wrong)
        and the close."""
        closed = await self.peer.wait_closed(self.timeout)
        err = self.peer.client_error
        self.run.check(
            f"the client closes the connection ({code.name})",
            reqs,
            closed,
            "" if closed else "still open",
        )
        self.run.check(
            f"the client sends ERROR({code.name}, 0, 0) before closing",
            ("PW-ERR-1", *reqs),
            err is not None and err.code == code,
            f"got {err}" if err is not None else "no ERROR",
            level="MUST" if err is not None else "SHOULD",
        )
        self.run.finish()

    def check_resume(self, epoch: int, seq: int, reqs: tuple[str, ...] = ("PW-RESUME-1",)) -> bool:
        s = self.sub
        return self.run.check(
            f"the client resumes with SUBSCRIBE AFTER(epoch {epoch}, seq {seq})",
            reqs,
            s.since_kind == SinceKind.AFTER and (s.since_epoch, s.since_seq) == (epoch, seq),
            f"since_kind {SinceKind(s.since_kind).name} epoch {s.since_epoch} seq {s.since_seq}",
        )

    def resume_point(self, sub_id: int) -> int:
        """Where a correct client resumes: last ACK (at-least-once), last delivered."""
        if self.peer.at_least_once.get(sub_id):
            return self.peer.last_ack(sub_id)
        return self.peer.delivered.get(sub_id, 0)


def _msgs(seqs: range) -> list[tuple[Any, ...]]:
    return [("msg", s) for s in seqs]


async def _split_frames(c: Ctx) -> None:
    await c.subscribed(bytewise=True)
    if await c.deliver(range(1, 11), bytewise=True):
        await c.finish_ok(10)


async def _coalesced(c: Ctx) -> None:
    n = min(50, c.sub.initial_credit)
    batch = [codec.encode_frame(F.Subscribed(c.sub.sub_id, Outcome.NEW, c.epoch(), 1, 0))]
    batch += [
        codec.encode_frame(F.Message(c.epoch(), s, c.sub.topic, b"msg-%d" % s))
        for s in range(1, n + 1)
    ]
    c.peer.credit[c.sub.sub_id] -= n
    c.peer.delivered[c.sub.sub_id] = n
    await c.peer.send_raw(b"".join(batch) + codec.encode_frame(F.Ping(0xC0A1)))
    if n < 50 and not await c.deliver(range(n + 1, 51)):
        return
    await c.finish_ok(50)


async def _max_frame(c: Ctx) -> None:
    hello = c.peer.hello
    assert hello is not None
    limit = min(hello.max_frame_size, MAX_MAX_FRAME_SIZE)
    c.run.notes.append(f"client limit {hello.max_frame_size} bytes")
    await c.subscribed()
    topic_len = len(c.sub.topic.encode())
    size = limit - (8 + 8 + 1 + topic_len)
    ok = await c.peer.deliver(
        c.sub.sub_id,
        c.epoch(),
        c.sub.topic,
        range(1, 2),
        timeout=c.timeout,
        payload=lambda s: b"M" * size,
    )
    if ok and await c.peer.wait_until(lambda: c.peer.credit.get(c.sub.sub_id, 0) > 0, c.timeout):
        body = limit - (8 + 8 + 1 + topic_len + 2 + 4)
        frame = F.MessageBatch(c.epoch(), 2, c.sub.topic, (F.Record(b"B" * body),))
        data = codec.encode_frame(frame)
        c.run.check(
            "the batch frame is exactly the client's limit", (), len(data) - HEADER_SIZE == limit
        )
        c.peer.credit[c.sub.sub_id] -= 1
        await c.peer.send_raw(data)
        c.peer.delivered[c.sub.sub_id] = 2
        await c.finish_ok(2)


def _fatal(frame_bytes: Callable[[Ctx], bytes], code: ErrorCode, reqs: tuple[str, ...]) -> Script:
    async def script(c: Ctx) -> None:
        await c.subscribed()
        if await c.deliver(range(1, 2)):
            await c.peer.send_raw(frame_bytes(c))
            await c.expect_error_close(code, reqs)

    return script


def _too_large(c: Ctx) -> bytes:
    assert c.peer.hello is not None
    return (c.peer.hello.max_frame_size + 1).to_bytes(4, "big") + bytes((FrameType.MESSAGE, 0))


def _raw(type_: int, flags: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + bytes((type_, flags)) + payload


async def _unknown_ignorable(c: Ctx) -> None:
    await c.subscribed()
    if not await c.deliver(range(1, 2)):
        return
    await c.peer.send_raw(_raw(0xB3, 0xFF, os.urandom(100)) + _raw(0x80, 0, b""))
    if await c.deliver(range(2, 3)):
        await c.peer.send_raw(_raw(0xFE, 0x01, b"\x00" * 7))
        if await c.deliver(range(3, 4)):
            await c.finish_ok(3)


async def _gap(c: Ctx) -> None:
    await c.subscribed()
    if not await c.deliver(range(1, 6)):
        return
    await c.peer.send(F.Gap(c.sub.sub_id, c.epoch(), 6, 10, ErrorCode.SLOW_CONSUMER))
    c.peer.delivered[c.sub.sub_id] = 10
    if await c.deliver(range(11, 16)):
        await c.finish_ok(15)


async def _sequence_hole(c: Ctx) -> None:
    """Messages 1 and 2, then 4: no GAP says 3 is gone, so the client must not go on as if
    nothing were missing."""
    await c.subscribed()
    if await c.deliver(range(1, 3)) and await c.deliver(range(4, 5)):
        await c.expect_error_close(ErrorCode.PROTOCOL_ERROR, ("PW-ORDER-7",))


async def _next_epoch(c: Ctx, key: str) -> int:
    """Switch the subscription to a new epoch (the topic was reset while subscribed): let
    the client settle first, so its ACKs of the old epoch are in."""
    await c.peer.settle(c.sub.sub_id, c.timeout)
    c.peer.restart_acks(c.sub.sub_id)
    return c.epoch(key)


async def _epoch_reset_live(c: Ctx) -> None:
    """Epoch A 1..3; epoch B 1..3 (MESSAGEs); epoch C: GAP 1..2, then 3..4. Each new epoch
    starts at sequence 1, as PW-ORDER-12 makes a server do, so the client must accept it."""
    sid = c.sub.sub_id
    reqs = ("PW-ORDER-13", "PW-RESUME-4")
    await c.subscribed()
    if not await c.deliver(range(1, 4)):
        return
    second = await _next_epoch(c, "new-epoch")
    if not await c.deliver(range(1, 4), epoch=second, reqs=reqs):
        return
    rtt = await c.peer.ping(0xE90C, c.timeout)
    if not c.run.check(
        "the client accepts a new epoch whose first MESSAGE has sequence 1",
        reqs,
        rtt is not None and c.peer.closed_at is None,
        "" if rtt is not None else f"no PONG; client ERROR: {c.peer.client_error}",
    ):
        c.run.finish()
        return
    third = await _next_epoch(c, "third-epoch")
    await c.peer.send(F.Gap(sid, third, 1, 2, ErrorCode.SLOW_CONSUMER))
    c.peer.delivered[sid] = 2
    if await c.deliver(range(3, 5), epoch=third, reqs=reqs):
        await c.finish_ok(4)


async def _epoch_reset_bad_start(c: Ctx) -> None:
    """Epoch A 1..3, then a MESSAGE of epoch B with sequence 4: the numbers look
    contiguous, but a new epoch starts at 1, and sequences of two epochs are never
    compared."""
    await c.subscribed()
    if not await c.deliver(range(1, 4)):
        return
    second = await _next_epoch(c, "new-epoch")
    if await c.deliver(range(4, 5), epoch=second):
        await c.expect_error_close(ErrorCode.PROTOCOL_ERROR, ("PW-ORDER-13", "PW-RESUME-4"))


async def _first_then_drop(c: Ctx, last: int, *, goaway_ms: int | None = None) -> None:
    """Connection 1 of a resume scenario: messages 1..last, let the client settle, then
    the connection ends (abruptly, or with GOAWAY and a reconnect hint)."""
    await c.subscribed()
    if not await c.deliver(range(1, last + 1)):
        return
    await c.peer.settle(c.sub.sub_id, c.timeout)
    c.run.resume_at = at = c.resume_point(c.sub.sub_id)
    c.run.delivered = c.peer.delivered.get(c.sub.sub_id, 0)
    if goaway_ms is not None:
        jitter = c.server.goaway_jitter_ms
        pos = F.Position(c.sub.sub_id, c.epoch(), at)
        await c.peer.send(F.Goaway(ErrorCode.SHUTTING_DOWN, goaway_ms, jitter, (pos,), "scenario"))
        c.peer.goaway_sent_at = c.run.goaway_at = trio.current_time()
        await c.peer.wait_closed(1.0)  # drain: the client may ACK, GOAWAY and close
        c.run.check(
            "after GOAWAY the client sends no SUBSCRIBE, PUBLISH or PUBLISH_BATCH",
            ("PW-GOAWAY-6",),
            not c.peer.after_goaway,
            ", ".join(c.peer.after_goaway),
        )
    await c.peer.close()
    c.server.expect_reconnect(c.run, c.timeout + c.server.reconnect_wait + (goaway_ms or 0) / 1000)


async def _resume_gap(c: Ctx) -> None:
    if c.attempt == 1:
        return await _first_then_drop(c, 5)
    at = c.resume_at()
    c.check_resume(c.epoch(), at)
    await c.subscribed(Outcome.GAP, 11, 12, gap=(at + 1, 10, ErrorCode.HISTORY_EXPIRED))
    c.peer.delivered[c.sub.sub_id] = 10
    if await c.deliver(range(11, 13)):
        await c.finish_ok(12)


async def _epoch_change(c: Ctx) -> None:
    if c.attempt == 1:
        return await _first_then_drop(c, 5)
    c.check_resume(c.epoch(), c.resume_at())
    new = c.epoch("new-epoch")
    await c.subscribed(Outcome.EPOCH_CHANGED, 1, 3, epoch=new)
    c.peer.delivered[c.sub.sub_id] = 0
    if await c.deliver(range(1, 4), epoch=new):
        await c.finish_ok(3)


async def _goaway(c: Ctx) -> None:
    if c.attempt == 1:
        return await _first_then_drop(c, 10, goaway_ms=c.server.goaway_after_ms)
    if c.run.goaway_at is None:
        raise RuntimeError("the client reconnected before the scenario sent GOAWAY")
    waited = c.peer.opened_at - c.run.goaway_at
    need = c.server.goaway_after_ms / 1000
    c.run.check(
        f"the client reconnects no earlier than reconnect_after_ms ({need * 1000:.0f} ms)",
        ("PW-GOAWAY-7",),
        waited >= need - 0.02,
        f"reconnected after {waited * 1000:.0f} ms",
    )
    at = c.resume_at()
    c.check_resume(c.epoch(), at)
    await c.subscribed(Outcome.RECOVERED, at + 1, 15)
    c.peer.delivered[c.sub.sub_id] = at
    if await c.deliver(range(at + 1, 16)):
        await c.finish_ok(15)


async def _redelivery(c: Ctx) -> None:
    if not c.sub.at_least_once:
        c.run.not_applicable = "the client subscribed at-most-once; run it at-least-once"
        c.run.finish()
        return
    if c.attempt == 1:
        return await _first_then_drop(c, 10)
    at = c.resume_at()
    c.check_resume(c.epoch(), at, ("PW-RESUME-1", "PW-ACK-6"))
    await c.subscribed(Outcome.RECOVERED, at + 1, 12)
    c.peer.delivered[c.sub.sub_id] = at
    if await c.deliver(range(at + 1, 13)):
        await c.finish_ok(12)


async def _heartbeat(c: Ctx) -> None:
    await c.subscribed()
    if not await c.deliver(range(1, 3)):
        return
    rtt = await c.peer.ping(0x4842, min(2.0, c.timeout))
    c.run.check(
        "PING is answered with PONG (same opaque) promptly",
        ("PW-HB-2",),
        rtt is not None,
        "no PONG" if rtt is None else f"{rtt * 1000:.0f} ms",
    )
    start = trio.current_time()
    await trio.sleep(3 * c.h)
    times = [start] + [t for t in c.peer.received_times if t > start] + [trio.current_time()]
    worst = max(b - a for a, b in pairwise(times))
    c.run.check(
        f"the client sends a frame at least every heartbeat interval ({c.h * 1000:.0f} ms)",
        ("PW-HB-1",),
        worst <= 1.5 * c.h + 0.25,
        f"longest silence {worst * 1000:.0f} ms",
    )
    await c.finish_ok(2)


async def _heartbeat_silence(c: Ctx) -> None:
    if c.attempt > 1:
        at = c.resume_at()
        c.check_resume(c.epoch(), at)
        await c.subscribed(Outcome.RECOVERED, at + 1, 4)
        c.peer.delivered[c.sub.sub_id] = at
        if await c.deliver(range(at + 1, 5)):
            await c.finish_ok(4)
        return
    await c.subscribed()
    if not await c.deliver(range(1, 3)):
        return
    await c.peer.settle(c.sub.sub_id, c.timeout)
    c.run.resume_at = c.resume_point(c.sub.sub_id)
    c.peer.silent = True
    start = trio.current_time()
    closed = await c.peer.wait_closed(4 * c.h + c.timeout)
    elapsed = (c.peer.closed_at or trio.current_time()) - start
    c.run.check(
        f"the client closes after 3 silent heartbeat intervals ({3 * c.h:.2f} s)",
        ("PW-HB-3",),
        closed,
        f"closed after {elapsed:.2f} s" if closed else "never closed",
    )
    c.run.check(
        "the client does not give up much before 3 intervals",
        ("PW-HB-3",),
        elapsed >= 2.5 * c.h,
        f"closed after {elapsed:.2f} s",
        level="SHOULD",
    )
    times = [start] + [t for t in c.peer.received_times if t > start]
    if c.peer.closed_at:
        times.append(c.peer.closed_at)
    worst = max((b - a for a, b in pairwise(times)), default=0.0)
    c.run.check(
        "while the server is silent the client still sends a frame every interval (PING)",
        ("PW-HB-1",),
        worst <= 1.5 * c.h + 0.25,
        f"longest silence {worst * 1000:.0f} ms",
    )
    err = c.peer.client_error
    if err is not None:
        c.run.check(
            "the client's ERROR is HEARTBEAT_TIMEOUT",
            ("PW-HB-3",),
            err.code == ErrorCode.HEARTBEAT_TIMEOUT,
            str(err),
        )
    c.server.expect_reconnect(
        c.run, c.timeout + c.server.reconnect_wait, level="SHOULD", reqs=("PW-ERR-10",)
    )


async def _credit(c: Ctx) -> None:
    initial = c.sub.initial_credit
    if initial > 1000:
        c.run.not_applicable = f"initial credit {initial} > 1000: exhaustion takes too long"
        c.run.finish()
        return
    total = min(3 * initial + 5, 3000) if initial else 20
    await c.subscribed()
    sid = c.sub.sub_id
    worst = 0

    async def watch() -> None:
        nonlocal worst
        while True:
            outstanding = initial + c.peer.granted.get(sid, 0) - c.peer.delivered.get(sid, 0)
            worst = max(worst, outstanding)
            await c.peer.wait_until(lambda: False, 0.01)

    async with trio.open_nursery() as n:
        n.start_soon(watch)
        ok = await c.deliver(range(1, total + 1))
        n.cancel_scope.cancel()
    c.run.check(
        f"credit is granted only as messages are consumed (outstanding never above the "
        f"initial {initial})",
        ("PW-FLOW-7",),
        worst <= max(initial, 1),
        f"outstanding credit reached {worst}",
        level="SHOULD",
    )
    if ok:
        await c.finish_ok(total)


async def _over_credit(c: Ctx) -> None:
    initial = c.sub.initial_credit
    if initial > 1000:
        c.run.not_applicable = f"initial credit {initial} > 1000"
        c.run.finish()
        return
    c.run.credit = initial
    frames: list[F.Frame] = [F.Subscribed(c.sub.sub_id, Outcome.NEW, c.epoch(), 1, 0)]
    frames += [F.Message(c.epoch(), s, c.sub.topic, b"msg-%d" % s) for s in range(1, initial + 2)]
    await c.peer.send(*frames)
    c.peer.delivered[c.sub.sub_id] = initial + 1
    await c.expect_error_close(ErrorCode.FLOW_CONTROL_ERROR, ("PW-FLOW-5",))


async def _bad_version(c: Ctx) -> None:
    """Connection 1 arms the testserver: the client's next connection gets a server preface
    with version 0; it must close without sending anything more."""
    await c.subscribed()
    await c.deliver(range(1, 2))
    await c.peer.settle(c.sub.sub_id, c.timeout)
    c.server.armed = c.run
    await c.peer.send(F.Goaway(ErrorCode.SHUTTING_DOWN, 50, 0, (), "scenario: reconnect"))
    c.peer.goaway_sent_at = trio.current_time()
    await c.peer.wait_closed(1.0)
    await c.peer.close()
    c.server.expect_reconnect(c.run, c.timeout + c.server.reconnect_wait)


def _or(value: int | None, default: int) -> int:
    """A recorded value, or what the expected view assumes when the run never recorded it."""
    return default if value is None else value


def _app_resume(r: ScenarioRun) -> list[tuple[Any, ...]]:
    return _msgs(range(1, _or(r.delivered, 5) + 1))


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "split-frames",
            "Every byte of SUBSCRIBED and 10 MESSAGEs in its own TCP segment",
            ("PW-FRAME-1",),
            "reassemble frames from any split; deliver messages 1..10; answer the final PING",
            "messages 1..10 in order",
            _split_frames,
            app=lambda r: _msgs(range(1, 11)),
        ),
        Scenario(
            "coalesced-frames",
            "SUBSCRIBED, up to 50 MESSAGEs and a PING in one TCP segment",
            ("PW-FRAME-1", "PW-HB-2"),
            "process every frame of one read; PONG the PING; deliver messages 1..50",
            "messages 1..50 in order",
            _coalesced,
            app=lambda r: _msgs(range(1, 51)),
        ),
        Scenario(
            "max-frame",
            "A MESSAGE and a MESSAGE_BATCH exactly at the client's max_frame_size",
            ("PW-FRAME-10",),
            "accept frames exactly as large as its HELLO.max_frame_size",
            "messages 1 and 2 (large payloads)",
            _max_frame,
            app=lambda r: _msgs(range(1, 3)),
        ),
        Scenario(
            "too-large-frame",
            "A frame header declaring max_frame_size + 1 bytes",
            ("PW-FRAME-2",),
            "ERROR(FRAME_TOO_LARGE) from the header alone, then close",
            "message 1, then a connection error",
            _fatal(_too_large, ErrorCode.FRAME_TOO_LARGE, ("PW-FRAME-2",)),
            app=lambda r: [("msg", 1), ("error",)],
        ),
        Scenario(
            "unknown-ignorable",
            "Unknown frame types 0xB3, 0x80, 0xFE (ignorable) between messages",
            ("PW-FRAME-8",),
            "skip unknown frames whose type has bit 7 set, whatever their flags",
            "messages 1..3",
            _unknown_ignorable,
            app=lambda r: _msgs(range(1, 4)),
        ),
        Scenario(
            "unknown-fatal",
            "Unknown frame type 0x7D (not ignorable)",
            ("PW-FRAME-5",),
            "ERROR(UNKNOWN_FRAME_TYPE), then close",
            "message 1, then a connection error",
            _fatal(lambda c: _raw(0x7D, 0, b"\x01"), ErrorCode.UNKNOWN_FRAME_TYPE, ("PW-FRAME-5",)),
            app=lambda r: [("msg", 1), ("error",)],
        ),
        Scenario(
            "reserved-bits",
            "A MESSAGE with an undefined flag bit (0x02)",
            ("PW-FRAME-3",),
            "ERROR(RESERVED_BITS_SET), then close",
            "message 1, then a connection error",
            _fatal(
                lambda c: _raw(
                    FrameType.MESSAGE,
                    0x02,
                    codec.encode_frame(F.Message(c.epoch(), 2, c.sub.topic, b"x"))[HEADER_SIZE:],
                ),
                ErrorCode.RESERVED_BITS_SET,
                ("PW-FRAME-3",),
            ),
            app=lambda r: [("msg", 1), ("error",)],
        ),
        Scenario(
            "malformed",
            "A PING whose payload is 7 bytes instead of 8",
            ("PW-FRAME-4",),
            "ERROR(MALFORMED_FRAME), then close",
            "message 1, then a connection error",
            _fatal(
                lambda c: _raw(FrameType.PING, 0, b"\x00" * 7),
                ErrorCode.MALFORMED_FRAME,
                ("PW-FRAME-4",),
            ),
            app=lambda r: [("msg", 1), ("error",)],
        ),
        Scenario(
            "unexpected-frame",
            "The server sends a SUBSCRIBE (a frame only clients send)",
            ("PW-FRAME-13",),
            "ERROR(UNEXPECTED_FRAME), then close",
            "message 1, then a connection error",
            _fatal(
                lambda c: codec.encode_frame(F.Subscribe(sub_id=1, topic="x")),
                ErrorCode.UNEXPECTED_FRAME,
                ("PW-FRAME-13",),
            ),
            app=lambda r: [("msg", 1), ("error",)],
        ),
        Scenario(
            "gap",
            "Messages 1..5, GAP(6..10, SLOW_CONSUMER), messages 11..15",
            ("PW-PUB-13", "PW-ERR-6"),
            "report the gap 6..10 to the application and go on with 11..15 (at-least-once: "
            "ACK up to 15, a GAP counts as delivered)",
            "messages 1..5, gap 6..10, messages 11..15",
            _gap,
            app=lambda r: [*_msgs(range(1, 6)), ("gap", 6, 10), *_msgs(range(11, 16))],
        ),
        Scenario(
            "sequence-hole",
            "Messages 1, 2, then 4: a hole without a GAP",
            ("PW-ORDER-7", "PW-ERR-1"),
            "ERROR(PROTOCOL_ERROR), then close: never deliver 4 as if 3 had not existed",
            "messages 1..2, then a connection error (never message 4)",
            _sequence_hole,
            app=lambda r: [*_msgs(range(1, 3)), ("error",)],
        ),
        Scenario(
            "epoch-reset-live",
            "Mid-subscription the topic continues in a new epoch at seq 1 (twice; the "
            "second time starting with GAP 1..2)",
            ("PW-ORDER-13", "PW-RESUME-4"),
            "accept a push of a new epoch that starts at sequence 1 (MESSAGE or GAP), "
            "restart its position at (new epoch, 0) and tell the application; stay connected",
            "messages 1..3, epoch change, messages 1..3, epoch change, gap 1..2, messages 3..4",
            _epoch_reset_live,
            app=lambda r: [
                *_msgs(range(1, 4)),
                ("epoch",),
                *_msgs(range(1, 4)),
                ("epoch",),
                ("gap", 1, 2),
                *_msgs(range(3, 5)),
            ],
        ),
        Scenario(
            "epoch-reset-bad-start",
            "Messages 1..3, then a MESSAGE of a new epoch with sequence 4",
            ("PW-ORDER-13", "PW-RESUME-4"),
            "ERROR(PROTOCOL_ERROR), then close: a new epoch must start at sequence 1",
            "messages 1..3, then a connection error (no epoch change, never message 4)",
            _epoch_reset_bad_start,
            app=lambda r: [*_msgs(range(1, 4)), ("error",)],
        ),
        Scenario(
            "resume-gap",
            "Connection dropped after 5 messages; the resume gets outcome GAP",
            ("PW-RESUME-1", "PW-RESUME-2"),
            "reconnect, SUBSCRIBE AFTER(epoch, last ACK or last delivered), report the gap, go on",
            "messages 1..5, gap (resume point+1)..10, messages 11..12",
            _resume_gap,
            app=lambda r: [
                *_app_resume(r),
                ("gap", _or(r.resume_at, 5) + 1, 10),
                *_msgs(range(11, 13)),
            ],
        ),
        Scenario(
            "epoch-change",
            "Connection dropped after 5 messages; the resume gets EPOCH_CHANGED",
            ("PW-RESUME-1", "PW-RESUME-3"),
            "reconnect, resume with AFTER(old epoch, position), adopt the new epoch, tell the "
            "application, deliver seqs 1..3 of the new epoch",
            "messages 1..5, epoch change, messages 1..3",
            _epoch_change,
            app=lambda r: [*_app_resume(r), ("epoch",), *_msgs(range(1, 4))],
        ),
        Scenario(
            "goaway",
            "GOAWAY(SHUTTING_DOWN) after 10 messages with a reconnect hint",
            ("PW-GOAWAY-6", "PW-GOAWAY-7", "PW-RESUME-1"),
            "send no new requests after GOAWAY, reconnect no earlier than reconnect_after_ms, "
            "resume from its own position, deliver 11..15",
            "messages 1..15, no duplicates",
            _goaway,
            app=lambda r: _msgs(range(1, 16)),
        ),
        Scenario(
            "heartbeat",
            "PING from the server; then an idle connection for 3 intervals",
            ("PW-HB-1", "PW-HB-2"),
            "PONG every PING promptly; send a frame at least every heartbeat interval",
            "messages 1..2",
            _heartbeat,
            app=lambda r: _msgs(range(1, 3)),
        ),
        Scenario(
            "heartbeat-silence",
            "The server goes completely silent after 2 messages",
            ("PW-HB-1", "PW-HB-3", "PW-ERR-10"),
            "keep PINGing, close after 3 silent intervals (ERROR(HEARTBEAT_TIMEOUT)), reconnect "
            "and resume from its position",
            "messages 1..4 (the connection is replaced in between)",
            _heartbeat_silence,
            app=lambda r: _msgs(range(1, 5)),
        ),
        Scenario(
            "credit",
            "More messages than the initial credit (3 x credit + 5)",
            ("PW-FLOW-7",),
            "grant more credit as the application consumes, never far ahead of it",
            "every message, in order",
            _credit,
            app=lambda r: [],
        ),
        Scenario(
            "over-credit",
            "One MESSAGE more than the credit granted",
            ("PW-FLOW-5",),
            "ERROR(FLOW_CONTROL_ERROR), then close",
            "the messages within credit, then a connection error",
            _over_credit,
            app=lambda r: [*_msgs(range(1, _or(r.credit, 0) + 1)), ("error",)],
        ),
        Scenario(
            "redelivery",
            "At-least-once: connection dropped after 10 messages; resume from the ACK",
            ("PW-RESUME-1", "PW-ACK-6"),
            "resume with AFTER(epoch, last ACK): what was not acknowledged comes again",
            "messages 1..12 (some may come twice)",
            _redelivery,
            mode="at-least-once",
            app=lambda r: [],
        ),
        Scenario(
            "bad-version",
            "After a GOAWAY, the reconnect gets a server preface with version 0",
            ("PW-PREFACE-7",),
            "report UNSUPPORTED_VERSION and close without sending anything after its HELLO",
            "message 1, then a terminal error (no further reconnects)",
            _bad_version,
            app=lambda r: [("msg", 1), ("error",)],
        ),
    )
}


#: Width of the scenario-name column in the text reports.
NAME_WIDTH = max(len(name) for name in SCENARIOS)


# -- the server ----------------------------------------------------------------------------


class TestServer:
    """Accepts client connections and routes each to its scenario by SUBSCRIBE topic."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        scenarios: list[str],
        *,
        heartbeat_ms: int = 1000,
        timeout: float = 5.0,
        goaway_after_ms: int = 1500,
        goaway_jitter_ms: int = 0,
        reconnect_wait: float = 3.0,
    ) -> None:
        self.runs = {name: ScenarioRun(SCENARIOS[name]) for name in scenarios}
        self.heartbeat_ms = heartbeat_ms
        self.timeout = timeout
        self.goaway_after_ms = goaway_after_ms
        self.goaway_jitter_ms = goaway_jitter_ms
        #: how long (beyond the timeout) a client may take to reconnect after a drop
        self.reconnect_wait = reconnect_wait
        self.armed: ScenarioRun | None = None
        self.port = 0
        self._nursery: trio.Nursery | None = None
        self._conn_ids = 0

    def expect_reconnect(
        self,
        run: ScenarioRun,
        within: float,
        *,
        level: str = "MUST",
        reqs: tuple[str, ...] = ("PW-RESUME-1",),
    ) -> None:
        """The scenario goes on on the client's next connection; record its absence."""
        seen = run.connections

        async def wait() -> None:
            with trio.move_on_after(within):
                while run.connections == seen:
                    await run.reconnected.wait()
                return
            run.check(
                "the client reconnects",
                reqs,
                False,
                f"no new connection within {within:.1f} s",
                level=level,
            )
            run.finish()

        assert self._nursery is not None
        self._nursery.start_soon(wait)

    async def serve(
        self, host: str, port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        await self.serve_listeners(listeners, task_status=task_status)

    async def serve_listeners(
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self.port)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, stream: trio.SocketStream) -> None:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        problems: list[Check] = []

        def early_check(
            text: str, reqs: tuple[str, ...], ok: bool, detail: str = "", level: str = "MUST"
        ) -> bool:
            problems.append(Check(text, reqs, level, bool(ok), detail))
            return bool(ok)

        peer = Peer(stream, early_check)
        peer.heartbeat = self.heartbeat_ms / 1000
        async with stream, trio.open_nursery() as nursery:
            try:
                await self._session(peer, nursery, problems)
            finally:
                nursery.cancel_scope.cancel()

    async def _session(self, peer: Peer, nursery: trio.Nursery, problems: list[Check]) -> None:
        raw = b""
        with trio.move_on_after(self.timeout * 2):
            while len(raw) < PREFACE_SIZE:
                chunk = await _receive(peer.stream)
                if not chunk:
                    return
                raw += chunk
        if len(raw) < PREFACE_SIZE:
            return
        preface, rest = raw[:PREFACE_SIZE], raw[PREFACE_SIZE:]
        armed, self.armed = self.armed, None
        if armed is not None:
            return await self._bad_version(peer, armed, rest)
        ok_preface = (
            preface[:4] == MAGIC and preface[6:8] == b"\0\0" and 1 <= preface[4] <= 1 <= preface[5]
        )
        peer.decoder.feed(rest)
        nursery.start_soon(peer.reader)
        await peer.send_raw(encode_preface(1, 1))
        hello = await self._first_frame(peer)
        if not isinstance(hello, F.Hello):
            return
        peer.hello = hello
        peer.decoder.max_frame_size = WELCOME_MAX_FRAME
        self._conn_ids += 1
        await peer.send(
            F.Welcome(
                self._conn_ids,
                self.heartbeat_ms,
                WELCOME_MAX_FRAME,
                64,
                1000,
                SlowConsumerPolicy.DROP,
                "pushwire-testserver",
            )
        )
        nursery.start_soon(peer.heartbeats)
        sub = await peer.next(self.timeout * 6)
        if not isinstance(sub, F.Subscribe):
            return
        name = sub.topic[len(TOPIC_PREFIX) :] if sub.topic.startswith(TOPIC_PREFIX) else ""
        run = self.runs.get(name)
        if run is None:
            await peer.send(
                F.Error(
                    ErrorCode.FORBIDDEN,
                    FrameType.SUBSCRIBE,
                    sub.sub_id,
                    f"no scenario {name!r}; topics: conformance/<scenario>",
                )
            )
            await peer.wait_closed(60)
            return
        peer._check = run.check
        run.connections += 1
        run.reconnected.set()
        run.reconnected = trio.Event()
        if run.started is None:
            run.started = trio.current_time()
        for c in problems:
            run.checks.append(c)
        run.check(
            "the client preface is MAGIC, 1 <= min <= max (offering 1), reserved 0",
            ("PW-PREFACE-3", "PW-PREFACE-5"),
            ok_preface,
            preface.hex(),
        )
        run.check(
            "HELLO.max_frame_size is in 16384..16777216",
            ("PW-HS-4",),
            MIN_MAX_FRAME_SIZE <= hello.max_frame_size <= MAX_MAX_FRAME_SIZE,
            str(hello.max_frame_size),
        )
        run.check(
            "the SUBSCRIBE topic is a valid name", ("PW-TOPIC-1",), topic_problem(sub.topic) is None
        )
        peer.take_subscribe(sub)
        if run.done.is_set():
            await self._hold(peer, sub)
            return
        ctx = Ctx(run, peer, sub, run.connections, self)
        try:
            await run.scenario.script(ctx)
        except Exception as exc:  # a bug in a script: report it on the scenario, go on
            run.check("the scenario script ran", (), False, f"{type(exc).__name__}: {exc}")
            run.finish()
        if peer.closed_at is None and run.done.is_set():
            await self._hold(peer, sub, subscribed=True)

    async def _first_frame(self, peer: Peer) -> F.Frame | None:
        frame = await peer.next(self.timeout * 2)
        if frame is None:
            return None
        if not isinstance(frame, F.Hello):
            peer._check(
                "the client's first frame is HELLO", ("PW-HS-1",), False, type(frame).__name__
            )
            await peer.send(F.Error(ErrorCode.UNEXPECTED_FRAME, 0, 0, "expected HELLO"))
            return None
        return frame

    async def _hold(self, peer: Peer, sub: F.Subscribe, subscribed: bool = False) -> None:
        """After a scenario is over: keep the client quietly connected until it leaves."""
        if not subscribed:
            await peer.send(F.Subscribed(sub.sub_id, Outcome.NEW, 1, 1, 0))
        await peer.wait_closed(3600)

    async def _bad_version(self, peer: Peer, run: ScenarioRun, rest: bytes) -> None:
        run.connections += 1
        run.reconnected.set()
        run.reconnected = trio.Event()
        await peer.send_raw(encode_preface(0, 1))
        data = rest
        closed = False
        with trio.move_on_after(self.timeout):
            while True:
                chunk = await _receive(peer.stream)
                if not chunk:
                    closed = True
                    break
                data += chunk
        decoder = FrameDecoder(INITIAL_MAX_FRAME_SIZE)
        decoder.feed(data)
        frames: list[str] = []
        try:
            while (frame := decoder.next_frame()) is not None:
                frames.append(type(frame).__name__.upper())
        except RemoteProtocolError as exc:
            frames.append(f"bad bytes ({exc.code.name})")
        extra = frames[1:] if frames[:1] == ["HELLO"] else frames
        run.check(
            "the client closes after a server preface with version 0",
            ("PW-PREFACE-7",),
            closed,
            "" if closed else "still open",
        )
        run.check(
            "the client sends nothing after its HELLO (UNSUPPORTED_VERSION)",
            ("PW-PREFACE-7",),
            not extra,
            ", ".join(extra),
        )
        run.finish()


async def _receive(stream: trio.SocketStream) -> bytes:
    try:
        return await stream.receive_some(65536)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return b""


@asynccontextmanager
async def open_testserver(
    scenarios: list[str] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    listeners: list[trio.SocketListener] | None = None,
    **options: Any,
) -> Any:
    """A started testserver (``.port``, ``.runs``); stops on exit. It listens on ``host``
    and ``port``, or on ``listeners`` already open. The listeners are opened before any task
    starts, so a port in use is a plain ``OSError`` here, not an exception group."""
    server = TestServer(scenarios or list(SCENARIOS), **options)
    if listeners is None:
        listeners = await trio.open_tcp_listeners(port, host=host)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, listeners)
        yield server
        nursery.cancel_scope.cancel()


# -- reports and command line ----------------------------------------------------------------


def render(runs: list[ScenarioRun]) -> str:
    out = []
    for r in runs:
        out.append(
            f"{r.verdict.upper() if r.verdict in ('fail', 'incomplete') else r.verdict:<10} "
            f"{r.scenario.name:<{NAME_WIDTH}} {r.scenario.title}"
        )
        if r.not_applicable:
            out.append(f"{'':11}{r.not_applicable}")
        for c in r.checks:
            if not c.passed:
                out.append(f"{'':11}{c.level} {', '.join(c.requirements)}: {c.text}")
                if c.detail:
                    out.append(f"{'':13}observed: {c.detail}")
        if r.verdict != "n/a":
            out.append(f"{'':11}application should see: {r.scenario.expect_app}")
    verdicts = [r.verdict for r in runs]
    out.append("")
    out.append(
        ", ".join(
            f"{verdicts.count(v)} {v}"
            for v in ("pass", "warn", "fail", "incomplete", "n/a")
            if verdicts.count(v)
        )
    )
    return "\n".join(out)


def render_list() -> str:
    out = []
    for s in SCENARIOS.values():
        mode = " (subscribe at-least-once)" if s.mode != "any" else ""
        out.append(f"{s.name:<{NAME_WIDTH}} topic {s.topic}{mode}")
        out.append(f"{'':{NAME_WIDTH}} {s.title}")
        out.append(f"{'':{NAME_WIDTH}} a correct client must: {s.client_must}")
        out.append(f"{'':{NAME_WIDTH}} requirements: {', '.join(s.requirements)}")
    return "\n".join(out)


def port_number(text: str) -> int:
    """argparse type for --port: a TCP port, 0..65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0..65535)")
    return port


def unwritable(path: Path) -> str | None:
    """Why a report cannot be written to ``path``, or None. Tried by opening it for append
    (a file that did not exist is removed again) before the scenarios run, so a typo in the
    path costs one line, not a run."""
    existed = path.exists()
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or exc}"
    if not existed:
        path.unlink(missing_ok=True)
    return None


def _error(text: str) -> int:
    print(f"pushwire testserver: error: {text}", file=sys.stderr)
    return 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument(
        "--port", type=port_number, default=7450, help="port (7450; 0 = any free port)"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        help="scenario to run (repeat), or 'all' (default)",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write a JSON report")
    parser.add_argument("--strict", action="store_true", help="SHOULD failures fail the run")
    parser.add_argument(
        "--heartbeat-ms",
        type=int,
        default=1000,
        metavar="MS",
        help="heartbeat interval announced in WELCOME (1000)",
    )
    parser.add_argument(
        "--goaway-after-ms",
        type=int,
        default=1500,
        metavar="MS",
        help="reconnect_after_ms of the goaway scenario (1500)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds the client has for each expected reaction (5)",
    )
    parser.add_argument(
        "--scenario-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds one scenario may take from its first connection (60)",
    )
    parser.add_argument(
        "--client-command",
        metavar="CMD",
        help="run this shell command per scenario ({topic} {address} {host} "
        "{port} {scenario} {mode} {mode_flag}) and stop it when the scenario ends",
    )
    parser.add_argument(
        "--mode-flag",
        default="--at-least-once",
        metavar="FLAG",
        help="what {mode_flag} becomes for at-least-once scenarios",
    )


async def _run_command(server: TestServer, run: ScenarioRun, template: str, limit: float) -> None:
    s = run.scenario
    cmd = template.format(
        topic=shlex.quote(s.topic),
        address=f"127.0.0.1:{server.port}",
        host="127.0.0.1",
        port=server.port,
        scenario=s.name,
        mode=s.mode,
        mode_flag=server_mode_flag if s.mode == "at-least-once" else "",
    )
    proc = await trio.lowlevel.open_process(cmd, shell=True, start_new_session=True)
    try:
        with trio.move_on_after(limit):
            await run.done.wait()
            await trio.sleep(0.3)
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.returncode is not None:
                break
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            with trio.move_on_after(2):
                await proc.wait()


server_mode_flag = "--at-least-once"


def run(args: argparse.Namespace) -> int:
    global server_mode_flag
    if args.list:
        print(render_list())
        return 0
    names = [n for n in args.scenario if n != "all"] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        return _error(f"unknown scenario(s) {', '.join(unknown)}; see --list")
    if args.json is not None and (problem := unwritable(args.json)) is not None:
        return _error(problem)
    server_mode_flag = args.mode_flag
    started = time.monotonic()

    async def main() -> list[ScenarioRun] | str:
        try:
            listeners = await trio.open_tcp_listeners(args.port, host=args.host)
        except OSError as exc:
            return f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        async with open_testserver(
            names,
            listeners=listeners,
            heartbeat_ms=args.heartbeat_ms,
            timeout=args.timeout,
            goaway_after_ms=args.goaway_after_ms,
        ) as server:
            print(
                f"pushwire testserver listening on {args.host}:{server.port}; "
                f"subscribe to {TOPIC_PREFIX}<scenario>",
                flush=True,
            )
            runs = [server.runs[n] for n in names]
            for r in runs:
                if args.client_command:
                    await _run_command(server, r, args.client_command, args.scenario_timeout)
                else:
                    with trio.move_on_after(args.scenario_timeout * len(runs)):
                        await r.done.wait()
                print(f"  {r.verdict:<10} {r.scenario.name}", file=sys.stderr, flush=True)
            return runs

    runs = trio.run(main)
    if isinstance(runs, str):
        return _error(runs)
    print(render(runs))
    if args.json:
        doc = {
            "tool": "pushwire testserver",
            "seconds": round(time.monotonic() - started, 3),
            "scenarios": [r.to_json() for r in runs],
        }
        try:
            args.json.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        except OSError as exc:  # checked before the run; the file system changed since
            return _error(f"cannot write {args.json}: {exc.strerror or exc}")
    bad = {"fail", "incomplete"} | ({"warn"} if args.strict else set())
    return 1 if any(r.verdict in bad for r in runs) else 0
