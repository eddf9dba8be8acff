"""Ordering end to end: concurrent publishers, many subscribers, real TCP, real server,
under asyncio and trio."""

from __future__ import annotations

import anyio
import pytest
from client_support import Link, take_items
from server_thread import ServerLoop

import pushwire.client as pw
from pushwire.server import ServerConfig

pytestmark = pytest.mark.anyio

TOPICS = ("orders/eu", "orders/us", "prices")
PUBLISHERS = 4
PER_PUBLISHER = 60  # messages per publisher per topic
SUBSCRIBERS = 6


@pytest.mark.spec("PW-ORDER-1", "PW-ORDER-6", "PW-ORDER-8", "PW-PUB-12")
async def test_every_subscriber_sees_contiguous_increasing_sequences(
    server_loop: ServerLoop,
) -> None:
    total = PUBLISHERS * PER_PUBLISHER
    with anyio.fail_after(30):
        async with server_loop.server(ServerConfig(port=0)) as server:
            link = Link(server.port)
            acked: dict[str, list[int]] = {t: [] for t in TOPICS}
            received: dict[tuple[int, str], list[int]] = {}
            mine: dict[tuple[int, str], list[int]] = {}

            async def subscriber(index: int, ready: anyio.Event) -> None:
                # Mixed settings: some at-least-once, some with a tiny window.
                async with link.connect() as conn:
                    subs = {
                        t: conn.subscribe(
                            t, since="oldest", at_least_once=index % 2 == 1, credit=1 + index * 7
                        )
                        for t in TOPICS
                    }
                    ready.set()
                    async with anyio.create_task_group() as nursery:
                        for topic, sub in subs.items():

                            async def drain(topic: str = topic, sub: pw.Subscription = sub) -> None:
                                items = await take_items(sub, total)
                                assert all(isinstance(i, pw.Message) for i in items), items
                                received[index, topic] = [i.seq for i in items]  # type: ignore[union-attr]

                            nursery.start_soon(drain)

            async def publisher(index: int) -> None:
                async with link.connect() as conn:
                    for n in range(PER_PUBLISHER):
                        for topic in TOPICS:
                            seq = await conn.publish(topic, f"{index}:{n}".encode())
                            acked[topic].append(seq)
                            mine.setdefault((index, topic), []).append(seq)

            async with anyio.create_task_group() as nursery:
                for i in range(SUBSCRIBERS):
                    ready = anyio.Event()
                    nursery.start_soon(subscriber, i, ready)
                    await ready.wait()
                async with anyio.create_task_group() as publishers:
                    for i in range(PUBLISHERS):
                        publishers.start_soon(publisher, i)

    expected = list(range(1, total + 1))
    for topic in TOPICS:
        assert sorted(acked[topic]) == expected  # every publish got its own sequence
    for (_index, _topic), got in received.items():
        assert got == expected
    # One publisher's messages on one topic keep its order (PW-ORDER-8).
    for seqs_of_one in mine.values():
        assert seqs_of_one == sorted(seqs_of_one)
    assert len(received) == SUBSCRIBERS * len(TOPICS)


async def test_batches_arrive_atomically_and_in_order(server_loop: ServerLoop) -> None:
    with anyio.fail_after(10):
        async with server_loop.server(ServerConfig(port=0)) as server:
            link = Link(server.port)
            async with link.connect() as sub_conn, link.connect() as pub_conn:
                sub = sub_conn.subscribe("b", since="oldest", credit=5)  # split by credit
                firsts = []
                for n in range(10):
                    firsts.append(
                        await pub_conn.publish_batch("b", [f"{n}.{i}".encode() for i in range(7)])
                    )
                items = await take_items(sub, 70)
    assert firsts == [1 + 7 * n for n in range(10)]
    assert [(m.seq, m.payload) for m in items] == [  # type: ignore[union-attr]
        (1 + 7 * n + i, f"{n}.{i}".encode()) for n in range(10) for i in range(7)
    ]
