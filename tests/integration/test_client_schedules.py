"""Hypothesis over schedules of publish / consume / subscribe / unsubscribe / disconnect /
reset / stall actions against a live server, checking the client's two promises per topic:

* order: within an epoch, sequences only go up, one at a time (at-least-once may go back
  to redeliver after a reconnect, then continues contiguously);
* no silent loss: every sequence from a subscription's start is either delivered or inside
  a gap the application was told about; an epoch change is always announced.

A subscription opened mid-schedule asks for a random start (new, oldest, the last N, or
after a position the application remembers from earlier deliveries or publishes). The
schedule waits for its SUBSCRIBED, publishing nothing meanwhile, so the start is exact: the
position just before it (``sub.position()`` until something is taken) must be the one the
request names, read against the topic's head and oldest retained message at that moment.
Whatever lies between that request and the first message (expired history, a reset) must
arrive as GapDetected or EpochChanged first.

A *stall* publishes more than the subscriber's credit window plus the history on a topic
whose subscriber takes nothing meanwhile: its next message is certain to leave the history,
so the application must be told of a gap (the slow-consumer case, SPEC.md §8.2) before the
schedule ends.

The model is plain data: what was published (by (topic, epoch, seq)), the positions the
application has seen, and per subscribed topic a running "next expected". Each schedule runs
with the client under asyncio and under trio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import pytest
from client_support import Link
from hypothesis import event, example, given
from hypothesis import strategies as st
from server_thread import ServerLoop, server_loop

import pushwire.client as pw
from pushwire.protocol.errors import ErrorCode
from pushwire.server import ServerConfig

TOPICS = ("a", "b/c")
HISTORY = 6  # small, so disconnects and slow consumers run into expired history
MAX_CREDIT = 8

topic_index = st.integers(0, len(TOPICS) - 1)
SINCE = st.one_of(
    st.tuples(st.just("new")),
    st.tuples(st.just("oldest")),
    st.tuples(st.just("last"), st.integers(0, 2 * HISTORY)),
    st.tuples(st.just("after"), st.integers(0, 1000)),  # picks a remembered position
)
ACTION = st.one_of(
    st.tuples(st.just("publish"), topic_index, st.integers(1, 10)),
    st.tuples(st.just("batch"), topic_index, st.integers(1, 8)),
    st.tuples(st.just("consume"), topic_index, st.integers(1, 12)),
    st.tuples(st.just("disconnect")),
    st.tuples(st.just("reset"), topic_index),
    st.tuples(st.just("subscribe"), topic_index, SINCE),
    st.tuples(st.just("unsubscribe"), topic_index),
    st.tuples(st.just("stall"), topic_index, st.integers(1, 3)),
)


@dataclass
class Expect:
    """What the next delivered item of one subscription may be."""

    at_least_once: bool
    epoch: int
    next_seq: int
    delivered: list[tuple[int, int]] = field(default_factory=list)
    owes_gap: bool = False  # a stall pushed its next message out of the history

    def message(self, msg: pw.Message, published: dict[tuple[str, int, int], bytes]) -> None:
        assert published[msg.topic, msg.epoch, msg.seq] == msg.payload
        assert msg.epoch == self.epoch, f"epoch change not announced: {msg}"
        if msg.seq < self.next_seq:
            assert self.at_least_once, f"duplicate {msg.seq} (expected {self.next_seq})"
        else:
            assert msg.seq == self.next_seq, f"silent loss: got {msg.seq}, expected {self.next_seq}"
        self.next_seq = msg.seq + 1
        self.delivered.append((msg.epoch, msg.seq))

    def interruption(self, exc: pw.DeliveryInterrupted) -> None:
        """Gaps and epoch changes move the expectation, explicitly."""
        if isinstance(exc, pw.GapDetected):
            assert exc.epoch == self.epoch
            if self.at_least_once:
                assert exc.first <= self.next_seq
            else:
                assert exc.first == self.next_seq, (exc.first, self.next_seq)
            if self.owes_gap:
                event(f"stalled subscriber told: {ErrorCode(exc.reason).name}")
            self.next_seq = exc.last + 1
        else:
            assert isinstance(exc, pw.EpochChanged)
            assert exc.old_epoch == self.epoch
            self.epoch = exc.new_epoch
            self.next_seq = exc.start_seq
        self.owes_gap = False


async def run_schedule(
    loop: ServerLoop, schedule: list[tuple[object, ...]], at_least_once: bool, credit: int
) -> None:
    published: dict[tuple[str, int, int], bytes] = {}
    last: dict[str, tuple[int, int]] = {}
    remembered: dict[str, list[tuple[int, int]]] = {t: [] for t in TOPICS}
    subs: dict[str, pw.Subscription] = {}
    expect: dict[str, Expect] = {}
    config = ServerConfig(port=0, history_count=HISTORY)
    with anyio.fail_after(20):
        async with loop.server(config) as server:
            link = Link(server.port)
            async with link.connect() as conn:
                counter = 0

                async def publish(topic: str, count: int, batch: bool) -> None:
                    nonlocal counter
                    payloads = [f"{topic}#{counter + i}".encode() for i in range(count)]
                    counter += count
                    if batch:
                        epoch, first = await server.publish_batch(topic, payloads)
                        positions = [(epoch, first + i) for i in range(count)]
                    else:
                        positions = [await server.publish(topic, p) for p in payloads]
                    for (epoch, seq), payload in zip(positions, payloads, strict=True):
                        published[topic, epoch, seq] = payload
                    last[topic] = positions[-1]
                    remembered[topic] += positions

                async def unsubscribe(topic: str) -> None:
                    sub = subs.pop(topic, None)
                    expect.pop(topic, None)
                    if sub is not None:
                        await sub.aclose()

                async def subscribe(topic: str, since: tuple[object, ...]) -> None:
                    await unsubscribe(topic)  # (a subscribed topic is subscribed afresh)
                    spec: pw.SinceSpec
                    match since:
                        case ("after", int(pick)) if remembered[topic]:
                            epoch, seq = remembered[topic][pick % len(remembered[topic])]
                            spec = ("after", epoch, seq)
                        case ("last", int(n)):
                            spec = ("last", n)
                        case ("oldest",):
                            spec = "oldest"
                        case _:
                            spec = "new"  # (or "after" with nothing remembered yet)
                    sub = conn.subscribe(
                        topic, since=spec, at_least_once=at_least_once, credit=credit
                    )
                    while sub.position() is None:  # until SUBSCRIBED (no publishes meanwhile)
                        await anyio.sleep(0.001)
                    # The position just before the start: what the request names, read
                    # against the topic as it is (nothing was published since the request).
                    now = (await server.stats()).topics[topic]
                    match spec:
                        case "oldest":
                            before = (now.epoch, now.oldest_seq - 1)
                        case ("last", int(n)):
                            before = (now.epoch, max(0, now.head_seq - n))
                        case ("after", int(epoch), int(seq)):
                            before = (epoch, seq)
                        case _:
                            before = (now.epoch, now.head_seq)
                    assert sub.position() == pw.TopicPosition(*before), (spec, now)
                    event(f"subscribe {since[0]}")
                    subs[topic] = sub
                    expect[topic] = Expect(at_least_once, before[0], before[1] + 1)

                def deliver(topic: str, item: pw.Message | pw.DeliveryInterrupted) -> None:
                    if isinstance(item, pw.Message):
                        expect[topic].message(item, published)
                        remembered[topic].append((item.epoch, item.seq))
                    else:
                        expect[topic].interruption(item)

                await conn.wait_connected()
                for topic in TOPICS:
                    await subscribe(topic, ("oldest",))
                for action in schedule:
                    match action:
                        case ("publish" | "batch") as kind, int(i), int(n):
                            await publish(TOPICS[i], n, kind == "batch")
                        case "consume", int(i), int(n) if TOPICS[i] in subs:
                            topic = TOPICS[i]
                            for _ in range(n):
                                try:
                                    deliver(topic, subs[topic].receive_nowait())
                                except pw.DeliveryInterrupted as exc:
                                    deliver(topic, exc)
                                except anyio.WouldBlock:
                                    break
                        case ("disconnect",):
                            link.kill()
                        case "reset", int(i):
                            epoch = await server.reset_topic(TOPICS[i])
                            remembered[TOPICS[i]].append((epoch, 0))
                        case "subscribe", int(i), tuple(since):
                            await subscribe(TOPICS[i], since)
                        case "unsubscribe", int(i):
                            await unsubscribe(TOPICS[i])
                        case "stall", int(i), int(extra):
                            # One message at a time (the history trims whole entries), more
                            # than the window holds and the history keeps, none taken.
                            topic = TOPICS[i]
                            for _ in range(credit + HISTORY + extra):
                                await publish(topic, 1, False)
                            if topic in expect:
                                expect[topic].owes_gap = True
                    await anyio.sleep(0)

                # A final marker per subscribed topic; drain until it arrives: nothing may
                # be lost, and a stalled subscriber has been told of its gap.
                for topic in subs:
                    await publish(topic, 1, False)
                for topic, sub in subs.items():
                    while True:
                        try:
                            item: pw.Message | pw.DeliveryInterrupted = await sub.__anext__()
                        except pw.DeliveryInterrupted as exc:
                            item = exc
                        deliver(topic, item)
                        if isinstance(item, pw.Message) and (item.epoch, item.seq) == last[topic]:
                            break
                    assert not expect[topic].owes_gap, f"{topic}: a slow consumer was not told"


@given(
    schedule=st.lists(ACTION, max_size=20),
    at_least_once=st.booleans(),
    credit=st.integers(1, MAX_CREDIT),
)
# Every run, whatever the profile: each kind of start, with each SUBSCRIBED outcome (a
# remembered position still held, expired, of an old epoch; the last N held or not), a
# topic subscribed afresh while subscribed, and slow consumers of both delivery modes.
@example(
    schedule=[
        ("publish", 0, 10),  # history keeps 5..10
        ("subscribe", 0, ("after", 0)),  # after 1: GAP 2..4, then 5
        ("consume", 0, 2),
        ("subscribe", 0, ("after", 8)),  # after 9: RECOVERED at 10
        ("consume", 0, 2),
        ("subscribe", 0, ("last", 3)),  # RECOVERED at 8
        ("consume", 0, 2),
        ("subscribe", 0, ("last", 12)),  # GAP 1..4, then 5
        ("consume", 0, 2),
        ("subscribe", 0, ("new",)),
        ("reset", 0),
        ("publish", 0, 2),
        ("subscribe", 0, ("after", 1)),  # a position of the old epoch: EPOCH_CHANGED
        ("consume", 0, 12),
        ("unsubscribe", 1),
        ("publish", 1, 2),
        ("subscribe", 1, ("oldest",)),
    ],
    at_least_once=False,
    credit=3,
)
@example(
    schedule=[("publish", 0, 2), ("stall", 0, 1), ("consume", 0, 12)],
    at_least_once=False,
    credit=2,
)
@example(
    schedule=[("stall", 1, 3), ("consume", 1, 3), ("disconnect",), ("stall", 1, 1)],
    at_least_once=True,
    credit=MAX_CREDIT,
)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_random_schedules_keep_order_and_never_lose_silently(
    backend: str, schedule: list[tuple[object, ...]], at_least_once: bool, credit: int
) -> None:
    with server_loop() as loop:
        anyio.run(run_schedule, loop, schedule, at_least_once, credit, backend=backend)
