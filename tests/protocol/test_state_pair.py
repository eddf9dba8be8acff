"""Both sans-I/O state machines against each other (ClientConnection <-> ServerConnection).

A hypothesis RuleBasedStateMachine plays the application on the client side and a minimal
broker on the server side; bytes cross an in-memory pipe in random chunks, and time moves
by hand. The model is plain data (per topic and epoch: the payloads in order; per
subscription: the next sequence due, the credit granted, the acks; per side: when it last
received a byte), never a second implementation. Two honest machines must never fail each
other, and everything the client is told must agree with the model.

Time is a shared fake clock that both sides' ``tick()`` read. It may jump with bytes still
in flight, and one side may be *muted* (its bytes are held back, as on a stalled link), so
the heartbeat rules are checked as they happen: a side times out exactly when nothing has
reached it for three intervals (PW-HB-3, PW-HB-4), and then only it and, once its ERROR
arrives, its peer close. A tap on each direction decodes what is sent, so every PING that
reached an open side is answered with a PONG of the same opaque, in order (PW-HB-2), every
code is used in its scope (PW-ERR-5), and nothing follows a connection-level ERROR
(PW-ERR-2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)
from wire_tap import Tap, after_connection_error, scope_problem

from pushwire.protocol import client_conn as cc
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol import server_conn as sc
from pushwire.protocol.client_conn import ClientConnection, ClientState, Since
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.heartbeat import TIMEOUT_FACTOR
from pushwire.protocol.layouts import Outcome, SinceKind
from pushwire.protocol.server_conn import ServerConnection, ServerLimits

TOPICS = ("t/one", "t/two")
PATTERN = "t/+"  # matches both: a pattern subscription follows every topic at once
HEARTBEAT = 1.0  # seconds (HELLO asks for 1000 ms; the server's clamp allows it)
TIMEOUT = TIMEOUT_FACTOR * HEARTBEAT  # nothing received this long: HEARTBEAT_TIMEOUT
Side = Literal["client", "server"]
SIDES: tuple[Side, ...] = ("client", "server")
LIVE = (ClientState.OPEN, ClientState.DRAINING, sc.ServerState.OPEN, sc.ServerState.DRAINING)
CLOSED = (ClientState.CLOSED, sc.ServerState.CLOSED)


class Pipe:
    """One direction: bytes sent and not yet delivered, and a tap on everything sent."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.delivered = 0
        self.tap = Tap()

    def send(self, data: bytes) -> None:
        if data:
            self.pending += data
            self.tap.feed(data)

    def take(self, size: int) -> bytes:
        chunk = bytes(self.pending[:size])
        del self.pending[:size]
        self.delivered += len(chunk)
        return chunk


@dataclass
class ClientSub:
    """The client application's view of one subscription."""

    sub_id: int
    topic: str
    at_least_once: bool
    granted: int  # credit granted in total
    epoch: int = 0
    next_seq: int = 0  # 0 until SUBSCRIBED
    received: int = 0  # messages received in total
    consumed: int = 0  # of those, taken by the application
    last_seq: int = 0  # last sequence received
    acked: int = 0
    closing: bool = False
    #: a pattern subscription: topic -> [epoch, next sequence due], from the positions it
    #: resumed and each TOPIC_STATUS and push since (the first push of a topic not yet
    #: seen may start anywhere: since applies to it)
    topics: dict[str, list[int]] | None = None


@dataclass
class ServerSub:
    topic: str
    next_seq: int
    epoch: int
    acks: list[int] = field(default_factory=list)
    #: a pattern subscription: topic -> [epoch, next sequence to push]
    topics: dict[str, list[int]] | None = None


class StatePair(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.client = ClientConnection()
        # (a frame cut by the random chunking may wait long for its rest: not a trickle attack)
        limits = ServerLimits(heartbeat_min_ms=100, frame_timeout=1e9)
        self.server = ServerConnection(limits, now=self.now)
        self.c2s, self.s2c = Pipe(), Pipe()
        self.c2s.send(self.client.initiate("pair", heartbeat_ms=1000, now=self.now))
        self.last_received = dict.fromkeys(SIDES, self.now)
        self.muted: Side | None = None  # a side whose bytes are held back
        self.timed_out: set[Side] = set()  # sides that closed with HEARTBEAT_TIMEOUT
        # model: topic -> current epoch; (topic, epoch) -> payloads, seq = index + 1
        self.epoch = {t: 0x100 + i for i, t in enumerate(TOPICS)}
        self.history: dict[tuple[str, int], list[bytes]] = {
            (t, e): [] for t, e in self.epoch.items()
        }
        self.server_subs: dict[int, ServerSub] = {}
        self.assigned: dict[int, tuple[int, int, int]] = {}  # request_id -> epoch, first, n
        self.client_subs: dict[int, ClientSub] = {}
        self.pending_publishes: dict[int, int] = {}  # request_id -> count
        self.resets = dict.fromkeys(TOPICS, 0)
        self.counter = 0

    # -- plumbing ------------------------------------------------------------------------------

    def server_sends(self, data: bytes) -> None:
        if data:
            self.s2c.send(data)
            self.server.data_sent(self.now)

    def serve(self) -> None:
        """Let the server (and its tiny broker) answer everything it has received."""
        server = self.server
        for ev in server.events():
            match ev:
                case sc.PrefaceReceived():
                    self.server_sends(server.send_preface())
                case sc.HelloReceived():
                    self.server_sends(server.accept(1, "pair", self.now))
                case sc.SubscribeRequested():
                    self.on_subscribe(ev)
                case sc.PatternSubscribeRequested():
                    self.on_pattern_subscribe(ev)
                case sc.UnsubscribeRequested():
                    self.server_sends(server.unsubscribed(ev.sub_id))
                    del self.server_subs[ev.sub_id]
                case sc.Acked():
                    acks = self.server_subs[ev.sub_id].acks
                    assert not acks or ev.seq >= acks[-1], "acks go backwards"
                    acks.append(ev.seq)
                case sc.PublishRequested():
                    self.on_publish(ev.request_id, ev.topic, [ev.payload])
                case sc.PublishBatchRequested():
                    self.on_publish(ev.request_id, ev.topic, [r.payload for r in ev.records])
                case sc.CreditGranted() | sc.PingReceived() | sc.PongReceived():
                    pass
                case sc.RequestRefused(code=ErrorCode.INVALID_ACK):
                    assert any(self.resets.values()), ev  # the same known race, server side
                case sc.PeerError(code=ErrorCode.HEARTBEAT_TIMEOUT):
                    assert "client" in self.timed_out, ev  # the client's verdict, delivered
                    assert server.state is sc.ServerState.CLOSED
                case _:
                    pytest.fail(f"server got {ev}")
        self.server_sends(server.data_to_send())

    def on_subscribe(self, ev: sc.SubscribeRequested) -> None:
        topic, epoch = ev.topic, self.epoch[ev.topic]
        head = len(self.history[topic, epoch])
        if ev.since_kind == SinceKind.NEW:
            outcome, start = Outcome.NEW, head + 1
        elif ev.since_kind == SinceKind.AFTER and ev.since_epoch == epoch:
            outcome, start = Outcome.RECOVERED, ev.since_seq + 1
        elif ev.since_kind == SinceKind.AFTER:
            outcome, start = Outcome.EPOCH_CHANGED, 1
        elif ev.since_kind == SinceKind.LAST:
            outcome, start = Outcome.RECOVERED, max(0, head - ev.since_count) + 1
        else:
            outcome, start = Outcome.RECOVERED, 1
        self.server_sends(self.server.subscribed(ev.sub_id, outcome, epoch, start, head))
        self.server_subs[ev.sub_id] = ServerSub(topic, start, epoch)

    def on_pattern_subscribe(self, ev: sc.PatternSubscribeRequested) -> None:
        """SUBSCRIBED, then one TOPIC_STATUS per position, in order (PW-RESUME-5); the
        other topics start by ``since``."""
        assert ev.position_problem() is None
        self.server_sends(self.server.pattern_subscribed(ev.sub_id))
        topics: dict[str, list[int]] = {}
        for pos in ev.positions:
            epoch = self.epoch[pos.topic]
            head = len(self.history[pos.topic, epoch])
            if pos.epoch == epoch:
                outcome, start = Outcome.RECOVERED, pos.seq + 1
            else:
                outcome, start = Outcome.EPOCH_CHANGED, 1
            self.server_sends(
                self.server.topic_status(ev.sub_id, pos.topic, outcome, epoch, start, head)
            )
            topics[pos.topic] = [epoch, start]
        for topic in TOPICS:
            if topic in topics:
                continue
            epoch = self.epoch[topic]
            head = len(self.history[topic, epoch])
            start = {
                SinceKind.NEW: head + 1,
                SinceKind.LAST: max(0, head - ev.since_count) + 1,
                SinceKind.OLDEST: 1,
            }[SinceKind(ev.since_kind)]
            topics[topic] = [epoch, start]
        self.server_subs[ev.sub_id] = ServerSub(ev.pattern, 0, 0, topics=topics)

    def on_publish(self, request_id: int, topic: str, payloads: list[bytes]) -> None:
        epoch = self.epoch[topic]
        log = self.history[topic, epoch]
        first = len(log) + 1
        log.extend(payloads)
        self.assigned[request_id] = (epoch, first, len(payloads))
        self.server_sends(self.server.puback(request_id, epoch, first, len(payloads)))

    def listen(self) -> None:
        """Let the client application handle its events."""
        for ev in self.client.events():
            match ev:
                case cc.Welcomed():
                    assert ev.heartbeat_ms == 1000
                case cc.SubscriptionConfirmed() if self.client_subs[ev.sub_id].topics is not None:
                    sub = self.client_subs[ev.sub_id]
                    assert (ev.outcome, ev.epoch, ev.start_seq) == (Outcome.NEW, 0, 0)
                    sub.next_seq = 1  # answered (its topics have their own)
                case cc.TopicStatusReceived():
                    sub = self.client_subs[ev.sub_id]
                    assert sub.topics is not None and not sub.closing
                    known = sub.topics.get(ev.topic)
                    if known is None:  # not seen yet: only a skip or a reset is news
                        assert ev.outcome in (Outcome.GAP, Outcome.EPOCH_CHANGED), ev
                    elif ev.outcome is Outcome.RECOVERED:
                        assert [ev.epoch, ev.start_seq] == known, "resumes where it was"
                    elif ev.outcome is Outcome.EPOCH_CHANGED:
                        assert known[0] != ev.epoch <= self.epoch[ev.topic]
                    else:  # the model's server skips only with GAP outcomes mid-stream
                        assert ev.outcome is Outcome.GAP and ev.epoch == known[0]
                        assert ev.gap_first == known[1], "gap order"
                    sub.topics[ev.topic] = [ev.epoch, ev.start_seq]
                case cc.MessageReceived() if self.client_subs[ev.sub_id].topics is not None:
                    sub = self.client_subs[ev.sub_id]
                    assert sub.topics is not None and not sub.closing
                    known = sub.topics.get(ev.topic)
                    if known is not None and known[0] == ev.epoch:
                        assert ev.seq == known[1], "per topic order"
                    elif known is not None:
                        assert ev.seq == 1, "a new epoch starts at 1"
                    assert self.history[ev.topic, ev.epoch][ev.seq - 1] == ev.payload
                    sub.topics[ev.topic] = [ev.epoch, ev.seq + 1]
                    sub.received += 1
                    assert sub.received <= sub.granted, "beyond credit (one pool)"
                case cc.SubscriptionConfirmed():
                    sub = self.client_subs[ev.sub_id]
                    sub.epoch, sub.next_seq = ev.epoch, ev.start_seq
                case cc.EpochReset():
                    sub = self.client_subs[ev.sub_id]
                    # (an intermediate epoch when the topic was reset twice meanwhile)
                    assert ev.old_epoch == sub.epoch < ev.new_epoch <= self.epoch[sub.topic]
                    sub.epoch, sub.next_seq = ev.new_epoch, 1
                case cc.MessageReceived():
                    sub = self.client_subs[ev.sub_id]
                    assert not sub.closing
                    assert (ev.epoch, ev.seq) == (sub.epoch, sub.next_seq), "order"
                    assert self.history[ev.topic, ev.epoch][ev.seq - 1] == ev.payload
                    sub.next_seq += 1
                    sub.received += 1
                    sub.last_seq = ev.seq
                    assert sub.received <= sub.granted, "beyond credit"
                case cc.GapReceived():
                    sub = self.client_subs[ev.sub_id]
                    assert (ev.epoch, ev.first) == (sub.epoch, sub.next_seq), "gap order"
                    sub.next_seq = ev.last + 1
                    sub.last_seq = ev.last
                case cc.UnsubscribeConfirmed():
                    del self.client_subs[ev.sub_id]
                case cc.RequestFailed(code=ErrorCode.INVALID_ACK):
                    # ACK carries no epoch: one sent before the client saw a reset may land
                    # in the new epoch and be refused (SPEC.md §8.3, a known v1 limit).
                    assert self.resets[ev.topic] if ev.topic else any(self.resets.values())
                case cc.PublishAcked():
                    assert self.assigned.pop(ev.request_id) == (ev.epoch, ev.first_seq, ev.count)
                    assert self.pending_publishes.pop(ev.request_id) == ev.count
                case cc.PeerError(code=ErrorCode.HEARTBEAT_TIMEOUT):
                    # the server's verdict (the client's own, from tick, is no event: the
                    # machine is CLOSED with close_code HEARTBEAT_TIMEOUT)
                    assert "server" in self.timed_out
                    assert self.client.state is ClientState.CLOSED
                case _:
                    pytest.fail(f"client got {ev}")
        self.c2s.send(self.client.data_to_send())

    # -- the pipe ------------------------------------------------------------------------------

    @rule(size=st.integers(1, 200))
    def deliver_to_server(self, size: int) -> None:
        if self.muted == "client":
            return
        chunk = self.c2s.take(size)
        if chunk:  # b"" would mean EOF
            self.last_received["server"] = self.now
            self.server.receive_data(chunk, self.now)
        self.serve()

    @rule(size=st.integers(1, 200))
    def deliver_to_client(self, size: int) -> None:
        if self.muted == "server":
            return
        chunk = self.s2c.take(size)
        if chunk:
            self.last_received["client"] = self.now
            self.client.receive_data(chunk, self.now)
        self.listen()

    def flush(self) -> None:
        """Deliver everything in flight, except what a muted side sends."""
        while (self.c2s.pending and self.muted != "client") or (
            self.s2c.pending and self.muted != "server"
        ):
            self.deliver_to_server(len(self.c2s.pending) or 1)
            self.deliver_to_client(len(self.s2c.pending) or 1)

    def both_open(self) -> bool:
        return self.client.state is ClientState.OPEN and self.server.state is sc.ServerState.OPEN

    @precondition(both_open)
    @rule(side=st.sampled_from(SIDES))
    def mute(self, side: Side) -> None:
        """From now on, nothing ``side`` sends arrives (it still receives)."""
        if self.muted is None:
            self.muted = side

    @precondition(lambda self: self.muted is not None)
    @rule()
    def unmute(self) -> None:
        """The held bytes flow again, late but intact (a stalled link, not a lossy one)."""
        self.muted = None

    def tick(self, side: Side) -> None:
        """``side`` does its heartbeat duties at ``now``; it must time out exactly when
        nothing reached it for three intervals, whatever the rest of the pipe holds."""
        conn = self.client if side == "client" else self.server
        pipe = self.c2s if side == "client" else self.s2c
        live = conn.state in LIVE  # heartbeats run from the handshake on (PW-HB-6)
        silent = self.now - self.last_received[side]
        if side == "client":
            self.c2s.send(self.client.tick(self.now))
        else:
            self.server_sends(self.server.tick(self.now))
        if not live:
            return
        closed = conn.state not in LIVE
        assert closed == (silent >= TIMEOUT), f"{side} silent for {silent:.3f} s, {closed=}"
        if closed:
            if currently_in_test_context():  # (the scripted tests below run outside one)
                event(f"{side} timed out ({self.muted or 'nobody'} muted)")
            self.timed_out.add(side)
            end, error = pipe.tap.frames[-1]
            assert end == pipe.tap.sent and isinstance(error, F.Error), "ERROR comes last"
            assert (error.code, error.request_type, error.request_id) == (
                ErrorCode.HEARTBEAT_TIMEOUT,
                0,
                0,
            )

    @rule(dt=st.floats(0.05, 0.95 * HEARTBEAT))
    def time_passes(self, dt: float) -> None:
        """Idle time below one interval with everything delivered: the PINGs keep both sides
        alive (unless a side is muted: its peer's silence keeps growing)."""
        self.flush()
        self.now += dt
        self.tick("client")
        self.tick("server")
        self.flush()

    @precondition(both_open)
    @rule(dt=st.floats(0.0, 1.5 * HEARTBEAT), server_first=st.booleans())
    def clock_advances(self, dt: float, server_first: bool) -> None:
        """Time jumps with bytes still in flight; both sides tick, in either order."""
        self.now += dt
        for side in reversed(SIDES) if server_first else SIDES:
            self.tick(side)

    # -- the client application ----------------------------------------------------------------

    def is_open(self) -> bool:
        return self.client.state is ClientState.OPEN

    @precondition(is_open)
    @rule(
        topic=st.sampled_from(TOPICS),
        kind=st.sampled_from(["new", "oldest", "after", "last", "stale-epoch"]),
        back=st.integers(0, 5),
        credit=st.integers(0, 5),
        at_least_once=st.booleans(),
    )
    def subscribe(self, topic: str, kind: str, back: int, credit: int, at_least_once: bool) -> None:
        if any(s.topic in (topic, PATTERN) and not s.closing for s in self.client_subs.values()):
            return
        head = len(self.history[topic, self.epoch[topic]])  # the server has at least this
        since = {
            "new": Since.new(),
            "oldest": Since.oldest(),
            "after": Since.after(self.epoch[topic], max(0, head - back)),
            "last": Since.last(back),
            "stale-epoch": Since.after(self.epoch[topic] + 999, back),
        }[kind]
        sub_id, data = self.client.subscribe(
            topic, since, at_least_once=at_least_once, initial_credit=credit
        )
        self.c2s.send(data)
        self.client_subs[sub_id] = ClientSub(sub_id, topic, at_least_once, credit)

    @precondition(is_open)
    @rule(
        kind=st.sampled_from(["new", "oldest", "last"]),
        back=st.integers(0, 5),
        credit=st.integers(0, 5),
        resume=st.booleans(),
    )
    def subscribe_pattern(self, kind: str, back: int, credit: int, resume: bool) -> None:
        """A pattern over every topic: fresh, or (``resume``) replacing the live one with a
        new subscription that carries its positions, as a reconnecting client does."""
        live = [s for s in self.client_subs.values() if not s.closing]
        old = next((s for s in live if s.topics is not None), None)
        if (old is None) == resume or any(s.topics is None for s in live):
            return
        positions: tuple[F.TopicPosition, ...] = ()
        topics: dict[str, list[int]] = {}
        if old is not None:
            positions = self.client.topic_positions(old.sub_id)
            assert old.topics is not None
            assert {(p.topic, p.epoch, p.seq + 1) for p in positions} == {
                (t, e, n) for t, (e, n) in old.topics.items()
            }, "topic_positions is what was received"
            topics = {p.topic: [p.epoch, p.seq + 1] for p in positions}
            self.c2s.send(self.client.unsubscribe(old.sub_id))
            old.closing = True
        since = {"new": Since.new(), "oldest": Since.oldest(), "last": Since.last(back)}[kind]
        sub_id, data = self.client.subscribe_pattern(
            PATTERN, since, positions=positions, initial_credit=credit
        )
        self.c2s.send(data)
        self.client_subs[sub_id] = ClientSub(sub_id, PATTERN, False, credit, topics=topics)

    @precondition(is_open)
    @rule(pick=st.integers(0, 10), count=st.integers(1, 5))
    def consume(self, pick: int, count: int) -> None:
        """The application takes messages, returns their credit and acknowledges them."""
        subs = [s for s in self.client_subs.values() if not s.closing and s.next_seq]
        if not subs:
            return
        sub = subs[pick % len(subs)]
        n = min(count, sub.received - sub.consumed)
        if n == 0:
            return
        sub.consumed += n
        self.c2s.send(self.client.grant_credit(sub.sub_id, n))
        sub.granted += n
        if sub.at_least_once and sub.last_seq > sub.acked:
            view = self.client.subscription(sub.sub_id)
            assert view is not None
            if view.epoch == sub.epoch and view.last_acked < sub.last_seq:
                self.c2s.send(self.client.ack(sub.sub_id, sub.last_seq))
                sub.acked = sub.last_seq

    @precondition(is_open)
    @rule(pick=st.integers(0, 10))
    def unsubscribe(self, pick: int) -> None:
        subs = [s for s in self.client_subs.values() if not s.closing]
        if subs:
            sub = subs[pick % len(subs)]
            self.c2s.send(self.client.unsubscribe(sub.sub_id))
            sub.closing = True

    @precondition(is_open)
    @rule(topic=st.sampled_from(TOPICS), count=st.integers(1, 4), batch=st.booleans())
    def publish(self, topic: str, count: int, batch: bool) -> None:
        payloads = [b"%d" % (self.counter + i) for i in range(count)]
        self.counter += count
        if batch:
            request_id, data = self.client.publish_batch(topic, payloads)
            self.pending_publishes[request_id] = count
            self.c2s.send(data)
            return
        for payload in payloads:
            request_id, data = self.client.publish(topic, payload, (("n", payload),))
            self.pending_publishes[request_id] = 1
            self.c2s.send(data)

    # -- the server's broker -------------------------------------------------------------------

    def server_live(self) -> bool:
        return self.server.state in LIVE

    @precondition(server_live)
    @rule(pick=st.integers(0, 10), most=st.integers(1, 6))
    def push(self, pick: int, most: int) -> None:
        """Send what credit allows, as a MESSAGE or a MESSAGE_BATCH."""
        ready = [
            i
            for i, s in self.server_subs.items()
            if s.topics is not None or s.epoch == self.epoch[s.topic]
        ]
        if not ready:
            return
        sub_id = ready[pick % len(ready)]
        sub = self.server_subs[sub_id]
        if sub.topics is not None:
            self.push_pattern(sub_id, sub.topics, pick, most)
            return
        log = self.history[sub.topic, sub.epoch]
        n = min(most, self.server.credit(sub_id), len(log) - sub.next_seq + 1)
        if n <= 0:
            return
        first = sub.next_seq
        payloads = log[first - 1 : first - 1 + n]
        if n == 1:
            frame: F.Frame = F.Message(sub.epoch, first, sub.topic, payloads[0])
        else:
            records = tuple(F.Record(p) for p in payloads)
            frame = F.MessageBatch(sub.epoch, first, sub.topic, records)
        self.server.consume_credit(sub_id, n, epoch=sub.epoch, last_seq=first + n - 1)
        self.server_sends(codec.encode_frame(frame))
        sub.next_seq += n

    def push_pattern(self, sub_id: int, topics: dict[str, list[int]], pick: int, most: int) -> None:
        """One topic of a pattern subscription: its EPOCH_CHANGED first when it was reset,
        then what the subscription's one credit pool allows (PW-FLOW-9)."""
        topic = TOPICS[pick % len(TOPICS)]
        state = topics[topic]
        epoch = self.epoch[topic]
        log = self.history[topic, epoch]
        if state[0] != epoch:
            self.server_sends(
                self.server.topic_status(sub_id, topic, Outcome.EPOCH_CHANGED, epoch, 1, len(log))
            )
            topics[topic] = state = [epoch, 1]
        n = min(most, self.server.credit(sub_id), len(log) - state[1] + 1)
        if n <= 0:
            return
        first = state[1]
        records = tuple(F.Record(p) for p in log[first - 1 : first - 1 + n])
        frame: F.Frame = (
            F.Message(epoch, first, topic, records[0].payload)
            if n == 1
            else F.MessageBatch(epoch, first, topic, records)
        )
        self.server.consume_credit(sub_id, n, epoch=epoch, last_seq=first + n - 1, topic=topic)
        self.server_sends(codec.encode_frame(frame))
        state[1] += n

    @rule(topic=st.sampled_from(TOPICS))
    def reset_topic(self, topic: str) -> None:
        """The topic's history is reset: live subscriptions continue at 1 of a new epoch."""
        self.epoch[topic] += 1
        self.resets[topic] += 1
        self.history[topic, self.epoch[topic]] = []
        for sub in self.server_subs.values():
            if sub.topic == topic:
                sub.epoch, sub.next_seq, sub.acks = self.epoch[topic], 1, []

    @precondition(server_live)
    @rule(pick=st.integers(0, 10))
    def gap(self, pick: int) -> None:
        """Skip ahead explicitly (as DROP does for a slow consumer)."""
        subs = list(self.server_subs.items())
        if not subs:
            return
        sub_id, sub = subs[pick % len(subs)]
        if sub.topics is not None:
            topic = TOPICS[pick % len(TOPICS)]
            epoch, next_seq = sub.topics[topic]
            head = len(self.history[topic, epoch])
            if epoch != self.epoch[topic] or next_seq > head:
                return
            data = self.server.topic_status(
                sub_id,
                topic,
                Outcome.GAP,
                epoch,
                head + 1,
                head,
                next_seq,
                head,
                ErrorCode.SLOW_CONSUMER,
            )
            self.server_sends(data)  # costs no credit, names its topic (PW-SUB-30)
            sub.topics[topic][1] = head + 1
            return
        head = len(self.history[sub.topic, sub.epoch])
        if sub.epoch != self.epoch[sub.topic] or sub.next_seq > head:
            return
        data = self.server.gap(sub_id, sub.epoch, sub.next_seq, head, ErrorCode.SLOW_CONSUMER)
        self.server_sends(data)  # costs no credit
        sub.next_seq = head + 1

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def only_a_heartbeat_timeout_ends_the_connection(self) -> None:
        if self.server.state is sc.ServerState.CLOSED:
            assert self.server.close_code is ErrorCode.HEARTBEAT_TIMEOUT
        if self.client.state is ClientState.CLOSED or self.server.state is sc.ServerState.CLOSED:
            assert self.timed_out, "an honest pair failed"  # which side: see listen / serve

    @invariant()
    def every_ping_that_arrived_is_answered_with_its_opaque(self) -> None:
        for pipe, back, conn in (
            (self.c2s, self.s2c, self.server),
            (self.s2c, self.c2s, self.client),
        ):
            pings = [f.opaque for f in pipe.tap.up_to(pipe.delivered) if isinstance(f, F.Ping)]
            pongs = [f.opaque for f in back.tap.all() if isinstance(f, F.Pong)]
            if conn.state not in CLOSED:
                assert pongs == pings
            else:  # closed since: the PINGs that arrived later go unanswered
                assert pongs == pings[: len(pongs)]

    @invariant()
    def codes_keep_their_scope_and_nothing_follows_a_connection_error(self) -> None:
        for pipe in (self.c2s, self.s2c):
            frames = pipe.tap.all()
            assert [problem for f in frames if (problem := scope_problem(f))] == []
            assert after_connection_error(frames) == []

    def teardown(self) -> None:
        if self.client.state is ClientState.CLOSED or self.server.state is sc.ServerState.CLOSED:
            return
        self.muted = None
        self.flush()
        assert not self.pending_publishes, "every publish is acknowledged"
        assert all(s.next_seq for s in self.client_subs.values()), "every SUBSCRIBE answered"


TestStatePair = pytest.mark.spec(
    # every frame the client sends is well-formed and allowed (the server never complains),
    # sub_ids and request_ids are never reused while in use, and what arrives is in order,
    # within credit, and matches what was published
    "PW-FRAME-12",
    "PW-FRAME-16",
    "PW-SUB-1",
    "PW-PUB-1",
    "PW-ORDER-7",
    "PW-FLOW-5",
    "PW-HB-1",
    # heartbeats, with time jumping and one side muted: a timeout exactly after three
    # intervals without a byte, never before; every PING answered by a PONG of its opaque
    "PW-HB-2",
    "PW-HB-3",
    "PW-HB-4",
    "PW-ERR-2",
    # pattern subscriptions: one credit pool, per topic order, exactly one TOPIC_STATUS per
    # position on resume, skips and resets told per topic
    "PW-FLOW-9",
    "PW-ORDER-15",
    "PW-RESUME-5",
    "PW-RESUME-6",
    "PW-SUB-30",
)(StatePair.TestCase)


def peer_of(side: Side) -> Side:
    return "server" if side == "client" else "client"


def check_invariants(pair: StatePair) -> None:
    pair.only_a_heartbeat_timeout_ends_the_connection()
    pair.every_ping_that_arrived_is_answered_with_its_opaque()
    pair.codes_keep_their_scope_and_nothing_follows_a_connection_error()


@pytest.mark.spec("PW-HB-3", "PW-HB-4")
@pytest.mark.parametrize("muted", SIDES)
def test_the_peer_of_a_muted_side_times_out_after_exactly_three_intervals(muted: Side) -> None:
    pair = StatePair()
    pair.flush()  # handshake: both OPEN at t=0
    pair.mute(muted)
    for _ in range(3):
        pair.clock_advances(0.75 * HEARTBEAT, server_first=muted == "client")
        pair.flush()  # the muted side still hears its peer's PINGs and answers into the void
        check_invariants(pair)
    assert pair.timed_out == set()
    pair.clock_advances(0.75 * HEARTBEAT, server_first=muted == "client")  # t = 3 intervals
    assert pair.timed_out == {peer_of(muted)}
    pair.flush()  # its ERROR(HEARTBEAT_TIMEOUT) reaches the muted side, which closes too
    check_invariants(pair)
    assert pair.client.state is ClientState.CLOSED
    assert pair.server.state is sc.ServerState.CLOSED


@pytest.mark.spec("PW-HB-4")
@pytest.mark.parametrize("muted", SIDES)
def test_bytes_that_arrive_in_time_restart_the_timer(muted: Side) -> None:
    pair = StatePair()
    pair.flush()
    pair.mute(muted)
    pair.clock_advances(2.9 * HEARTBEAT, server_first=False)
    pair.unmute()
    pair.deliver_to_server(1)  # a single byte of whatever is held is enough
    pair.deliver_to_client(1)
    pair.clock_advances(2.9 * HEARTBEAT, server_first=False)  # 5.8 intervals since t=0
    check_invariants(pair)
    assert pair.timed_out == set()
    pair.teardown()
