"""Hypothesis over schedules of publish / consume / disconnect / reset / slow-consumer actions
against a live server, checking the client's two promises per topic:

* order: within an epoch, sequences only go up, one at a time (at-least-once may go back
  to redeliver after a reconnect, then continues contiguously);
* no silent loss: every sequence from the start is either delivered or inside a gap the
  application was told about; an epoch change is always announced.

The model is plain data: what was published (by (topic, epoch, seq)) and a running
"next expected" per topic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio
from client_support import Link
from hypothesis import given
from hypothesis import strategies as st

import pushwire.client as pw
from pushwire.server import ServerConfig, open_server

TOPICS = ("a", "b/c")
HISTORY = 6  # small, so disconnects and slow consumers run into expired history

topic_index = st.integers(0, len(TOPICS) - 1)
ACTION = st.one_of(
    st.tuples(st.just("publish"), topic_index, st.integers(1, 10)),
    st.tuples(st.just("batch"), topic_index, st.integers(1, 8)),
    st.tuples(st.just("consume"), topic_index, st.integers(1, 12)),
    st.tuples(st.just("disconnect")),
    st.tuples(st.just("reset"), topic_index),
)


@dataclass
class Expect:
    """What the next delivered item of one topic may be."""

    at_least_once: bool
    epoch: int | None = None
    next_seq: int = 1
    delivered: list[tuple[int, int]] = field(default_factory=list)

    def message(self, msg: pw.Message, published: dict[tuple[str, int, int], bytes]) -> None:
        assert published[msg.topic, msg.epoch, msg.seq] == msg.payload
        if self.epoch is None:
            # since="oldest" starts at the oldest message retained when the subscription is
            # (re)made; if the connection died before SUBSCRIBED, that may be past 1.
            self.epoch, self.next_seq = msg.epoch, msg.seq
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
            if self.epoch is None:
                self.epoch, self.next_seq = exc.epoch, exc.first
            assert exc.epoch == self.epoch
            if self.at_least_once:
                assert exc.first <= self.next_seq
            else:
                assert exc.first == self.next_seq, (exc.first, self.next_seq)
            self.next_seq = exc.last + 1
        else:
            assert isinstance(exc, pw.EpochChanged)
            assert self.epoch is None or exc.old_epoch == self.epoch
            self.epoch = exc.new_epoch
            self.next_seq = exc.start_seq


async def run_schedule(
    schedule: list[tuple[object, ...]], at_least_once: bool, credit: int
) -> None:
    published: dict[tuple[str, int, int], bytes] = {}
    last: dict[str, tuple[int, int]] = {}
    expect = {t: Expect(at_least_once) for t in TOPICS}
    config = ServerConfig(port=0, history_count=HISTORY)
    with trio.fail_after(20):
        async with open_server(config) as server:
            link = Link(server.port)
            async with link.connect() as conn:
                subs = {
                    t: conn.subscribe(t, since="oldest", at_least_once=at_least_once, credit=credit)
                    for t in TOPICS
                }
                await conn.wait_connected()
                counter = 0

                async def publish(topic: str, count: int, batch: bool) -> None:
                    nonlocal counter
                    payloads = [f"{topic}#{counter + i}".encode() for i in range(count)]
                    counter += count
                    if batch:
                        epoch, first = await server.publish_batch(topic, payloads)
                    else:
                        for payload in payloads:
                            epoch, first = await server.publish(topic, payload)
                            published[topic, epoch, first] = payload
                            last[topic] = (epoch, first)
                        return
                    for i, payload in enumerate(payloads):
                        published[topic, epoch, first + i] = payload
                    last[topic] = (epoch, first + count - 1)

                def deliver(topic: str, item: pw.Message | pw.DeliveryInterrupted) -> None:
                    if isinstance(item, pw.Message):
                        expect[topic].message(item, published)
                    else:
                        expect[topic].interruption(item)

                for action in schedule:
                    match action:
                        case ("publish" | "batch") as kind, int(i), int(n):
                            await publish(TOPICS[i], n, kind == "batch")
                        case "consume", int(i), int(n):
                            topic = TOPICS[i]
                            for _ in range(n):
                                try:
                                    deliver(topic, subs[topic].receive_nowait())
                                except pw.DeliveryInterrupted as exc:
                                    deliver(topic, exc)
                                except trio.WouldBlock:
                                    break
                        case ("disconnect",):
                            link.kill()
                        case "reset", int(i):
                            await server.reset_topic(TOPICS[i])
                    await trio.sleep(0)

                # A final marker per topic; drain until it arrives: nothing may be lost.
                for topic in TOPICS:
                    await publish(topic, 1, False)
                for topic in TOPICS:
                    while True:
                        try:
                            item: pw.Message | pw.DeliveryInterrupted = await subs[
                                topic
                            ].__anext__()
                        except pw.DeliveryInterrupted as exc:
                            item = exc
                        deliver(topic, item)
                        if isinstance(item, pw.Message) and (item.epoch, item.seq) == last[topic]:
                            break


@given(
    schedule=st.lists(ACTION, max_size=14),
    at_least_once=st.booleans(),
    credit=st.integers(1, 8),
)
def test_random_schedules_keep_order_and_never_lose_silently(
    schedule: list[tuple[object, ...]], at_least_once: bool, credit: int
) -> None:
    trio.run(run_schedule, schedule, at_least_once, credit)
