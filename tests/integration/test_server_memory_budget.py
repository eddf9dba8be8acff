"""No client can exhaust the server's memory or erase another identity's history: the memory
budget under a flood of large messages to new topics, subscription churn against retained
history, and the per-identity quotas, each with a canary on another identity that keeps
being served in order with bounded latency.

Hostile clients connect from 127.0.0.2, canaries from 127.0.0.1 (two anonymous identities).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio
from integration.server_peer import RawPeer
from integration.test_server_hardening import HOSTILE, canary_round_trip, connect_from

from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import Outcome, SinceKind
from pushwire.server import Permissions, Server, ServerConfig, open_server
from pushwire.server.broker import MemoryBroker

MiB = 1 << 20
TIMEOUT = 60


@dataclass
class CanaryFigures:
    sent: int = 0
    delivered: int = 0
    in_order: bool = True
    latencies: list[float] = field(default_factory=list)

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[int(len(ordered) * 0.99)] if ordered else 0.0


@asynccontextmanager
async def canary(
    server: Server, topic: str, interval: float = 0.005
) -> AsyncIterator[CanaryFigures]:
    """A publisher and a subscriber on ``topic`` from 127.0.0.1 exchange a message every
    ``interval`` while the body runs; afterwards every message sent must have arrived, in
    order (the figures say how late)."""
    figures = CanaryFigures()
    sent_at: list[float] = []
    sub = await RawPeer.connect(server.port)
    pub = await RawPeer.connect(server.port)
    await sub.handshake()
    await pub.handshake()
    await sub.subscribe(1, topic, credit=1_000_000)
    stop = trio.Event()

    published = trio.Event()

    async def publish() -> None:
        while not stop.is_set():
            sent_at.append(trio.current_time())
            await pub.send(F.Publish(0, topic, b"%d" % figures.sent, None))
            figures.sent += 1
            await trio.sleep(interval)
        published.set()

    async def receive() -> None:
        first = None
        while True:
            ((seq, payload),) = await sub.messages(1)
            first = seq if first is None else first
            index = int(payload)
            if index != figures.delivered or seq != first + index:
                figures.in_order = False
            figures.latencies.append(trio.current_time() - sent_at[index])
            figures.delivered += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish)
        nursery.start_soon(receive)
        yield figures
        stop.set()
        await published.wait()  # the last send may still be under way
        with trio.move_on_after(5):
            while figures.delivered < figures.sent:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    await sub.aclose()
    await pub.aclose()


def assert_served(figures: CanaryFigures) -> None:
    assert figures.sent > 0
    assert figures.in_order
    assert figures.delivered == figures.sent
    assert figures.p99 < 1.0, f"canary p99 {figures.p99:.3f} s"


async def answer(peer: RawPeer) -> F.Frame:
    frame, _ = await peer.recv_until((F.Puback, F.Error, F.Subscribed))  # type: ignore[arg-type]
    return frame


def memory_broker(server: Server) -> MemoryBroker:
    assert isinstance(server.broker, MemoryBroker)
    return server.broker


@pytest.mark.spec("PW-LIMIT-7")
async def test_a_flood_of_large_messages_to_new_topics_stays_within_the_memory_budget() -> None:
    limit = 32 * MiB
    config = ServerConfig(port=0, memory_limit=limit, max_frame_size=8 * MiB)
    with trio.fail_after(TIMEOUT):
        async with open_server(config) as server:
            broker = memory_broker(server)
            peak = acked = 0
            async with canary(server, "canary/flood") as figures:
                flooder = await connect_from(server.port, HOSTILE)
                await flooder.handshake()
                payload = b"f" * (256 * 1024)
                for i in range(400):  # 100 MiB in all
                    await flooder.send(F.Publish(i + 1, f"flood/{i}", payload, None))
                    frame = await answer(flooder)
                    acked += isinstance(frame, F.Puback)
                    peak = max(peak, broker.memory)
                # one frame larger than an eighth of the budget is refused outright
                await flooder.send(F.Publish(9999, "flood/huge", b"h" * (5 * MiB), None))
                refused = await answer(flooder)
                await flooder.aclose()
            assert isinstance(refused, F.Error)
            assert refused.code == ErrorCode.RESOURCE_EXHAUSTED
            assert acked == 400  # room was made by evicting the oldest flood topics
            assert peak <= limit
            assert broker.evicted > 0
            assert "canary/flood" in broker.stats()
            assert_served(figures)


@pytest.mark.spec("PW-LIMIT-8", "PW-LIMIT-5")
async def test_subscription_churn_by_an_anonymous_client_leaves_retained_history_intact() -> None:
    auth = {
        "ledger": Permissions(subscribe=("orders/#",), publish=("orders/#",)),
        "": Permissions(subscribe=("public/#", "canary/#"), publish=("canary/#",)),
    }
    config = ServerConfig(port=0, auth=auth, max_topics=200, churn_burst=1e6, churn_rate=1e6)
    ledger = "orders/eu/ledger"
    with trio.fail_after(TIMEOUT):
        async with open_server(config) as server:
            writer = await RawPeer.connect(server.port)
            await writer.handshake(auth_token=b"ledger")
            reader = await RawPeer.connect(server.port)
            await reader.handshake(auth_token=b"ledger")
            sub = await reader.subscribe(1, ledger, since=SinceKind.NEW)
            for i in range(2):
                await writer.publish(ledger, b"entry %d" % i, request_id=i + 1)
            assert await reader.messages(2) == [(1, b"entry 0"), (2, b"entry 1")]
            await reader.aclose()  # offline: the topic is now evictable
            for i in range(2, 5):
                await writer.publish(ledger, b"entry %d" % i, request_id=i + 1)
            async with canary(server, "canary/churn") as figures:
                churner = await connect_from(server.port, HOSTILE)
                await churner.handshake()
                pairs = 0
                for chunk in range(30):  # 3,000 subscribe/unsubscribe pairs on new topics
                    frames = []
                    for i in range(100):
                        topic = f"public/{chunk * 100 + i}"
                        frames += [F.Subscribe(1, topic, 0, 0, 0, 0, 1, False), F.Unsubscribe(1)]
                    await churner.send(*frames)
                    replies = 0
                    while replies < 200:
                        frame = await churner.recv()
                        if isinstance(frame, F.Ping):
                            await churner.send(F.Pong(frame.opaque))
                            continue
                        assert isinstance(frame, F.Subscribed | F.Unsubscribed), frame
                        replies += 1
                    pairs += 100
                await churner.aclose()
            assert pairs == 3000
            assert memory_broker(server).evicted >= 2800  # the churner's own placeholders
            reader = await RawPeer.connect(server.port)
            await reader.handshake(auth_token=b"ledger")
            resumed = await reader.subscribe(
                1, ledger, since=SinceKind.AFTER, epoch=sub.epoch, seq=2
            )
            assert resumed.outcome == Outcome.RECOVERED
            assert await reader.messages(3) == [(3 + i, b"entry %d" % (2 + i)) for i in range(3)]
            await reader.aclose()
            await writer.aclose()
            assert_served(figures)


@pytest.mark.spec("PW-LIMIT-9")
async def test_subscriptions_are_limited_per_identity_across_its_connections() -> None:
    config = ServerConfig(port=0, max_subscriptions_per_identity=3)
    with trio.fail_after(TIMEOUT):
        async with open_server(config) as server:
            first = await connect_from(server.port, HOSTILE)
            second = await connect_from(server.port, HOSTILE)
            await first.handshake()
            await second.handshake()
            await first.subscribe(1, "public/a")
            await first.subscribe(2, "public/b")
            await second.subscribe(1, "public/c")
            await second.send(F.Subscribe(2, "public/d", 0, 0, 0, 0, 1, False))
            refused = await answer(second)
            assert isinstance(refused, F.Error) and refused.code == ErrorCode.QUOTA_EXCEEDED
            await first.aclose()  # its two subscriptions are released
            await trio.sleep(0.1)
            await second.subscribe(3, "public/d")
            await canary_round_trip(server, "canary/subscriptions")
            await second.aclose()


@pytest.mark.spec("PW-LIMIT-9")
async def test_the_topic_quota_evicts_an_identitys_own_topics_then_refuses() -> None:
    config = ServerConfig(port=0, max_topics_per_identity=3)
    with trio.fail_after(TIMEOUT):
        async with open_server(config) as server:
            owner = await RawPeer.connect(server.port)
            await owner.handshake()  # anon@127.0.0.1
            await owner.publish("orders/eu/ledger", b"kept")
            hostile = await connect_from(server.port, HOSTILE)
            await hostile.handshake()
            for i in range(6):
                await hostile.publish(f"public/{i}", b"x", request_id=i + 1)
            names = set(memory_broker(server).stats())
            assert "orders/eu/ledger" in names
            assert {n for n in names if n.startswith("public/")} == {
                "public/3",
                "public/4",
                "public/5",
            }
            for i in (3, 4, 5):
                await hostile.subscribe(i, f"public/{i}")
            await hostile.send(F.Publish(99, "public/6", b"x", None))
            refused = await answer(hostile)
            assert isinstance(refused, F.Error) and refused.code == ErrorCode.QUOTA_EXCEEDED
            await canary_round_trip(server, "canary/topics")
            await hostile.aclose()
            await owner.aclose()


@pytest.mark.spec("PW-SEC-13")
async def test_publish_bytes_are_rate_limited_per_identity() -> None:
    config = ServerConfig(port=0, publish_bytes_rate=64 * 1024)  # bursts of 2 MiB
    with trio.fail_after(TIMEOUT):
        async with open_server(config) as server:
            hostile = await connect_from(server.port, HOSTILE)
            await hostile.handshake()
            codes = []
            for i in range(8):
                await hostile.send(F.Publish(i + 1, "public/big", b"b" * (512 * 1024), None))
                frame = await answer(hostile)
                codes.append(frame.code if isinstance(frame, F.Error) else 0)
            assert codes[:4] == [0] * 4
            assert set(codes[4:]) == {ErrorCode.RATE_LIMITED}
            await canary_round_trip(server, "canary/bytes")
            await hostile.aclose()
