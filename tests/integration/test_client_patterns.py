"""Pattern subscriptions from the client library against the real server (SPEC.md §6.7):
messages carry their topics, and a reconnect resumes every topic seen; asyncio and trio."""

from __future__ import annotations

import anyio
import pytest
from client_support import Link, next_item, take_items
from server_thread import ServerLoop

import pushwire.client as pw
from pushwire.protocol.errors import ErrorCode
from pushwire.server import ServerConfig

pytestmark = pytest.mark.anyio


def by_topic(items: list[object]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for item in items:
        assert isinstance(item, pw.Message), item
        out.setdefault(item.topic, []).append(item.seq)
    return out


@pytest.mark.spec("PW-SUB-29", "PW-ORDER-15")
async def test_a_pattern_yields_messages_of_every_matching_topic(server_loop: ServerLoop) -> None:
    with anyio.fail_after(10):
        async with server_loop.server(ServerConfig(port=0)) as server:
            link = Link(server.port)
            async with link.connect() as conn:
                sub = conn.subscribe("orders/+")
                await conn.wait_connected()
                while not sub.accepted:
                    await anyio.sleep(0.005)
                for topic in ("orders/eu", "orders/us", "other/x", "orders/eu", "orders/us"):
                    await server.publish(topic, topic.encode())
                got = by_topic(await take_items(sub, 4))
                assert got == {"orders/eu": [1, 2], "orders/us": [1, 2]}
                assert set(sub.topic_positions()) == {"orders/eu", "orders/us"}


@pytest.mark.spec("PW-RESUME-6", "PW-RESUME-5")
async def test_a_reconnect_resumes_each_topic_seen_with_one_outcome(
    server_loop: ServerLoop,
) -> None:
    with anyio.fail_after(15):
        async with server_loop.server(ServerConfig(port=0, history_count=3)) as server:
            link = Link(server.port)
            async with link.connect() as conn:
                sub = conn.subscribe("orders/#", since="oldest", credit=16)
                await server.publish("orders/eu", b"eu-1")
                await server.publish("orders/us", b"us-1")
                assert by_topic(await take_items(sub, 2)) == {"orders/eu": [1], "orders/us": [1]}
                link.down = True
                link.kill()
                for i in range(2, 4):  # us: 2..3 kept, nothing lost
                    await server.publish("orders/us", b"us-%d" % i)
                for i in range(2, 8):  # eu: only 5..7 kept: 2..4 lost
                    await server.publish("orders/eu", b"eu-%d" % i)
                await server.publish("orders/new", b"new-1")  # created while away
                link.down = False
                items = [await next_item(sub) for _ in range(7)]
                assert conn.connections_made >= 2
    gaps = [i for i in items if isinstance(i, pw.GapDetected)]
    assert [(g.topic, g.first, g.last, g.reason) for g in gaps] == [
        ("orders/eu", 2, 4, ErrorCode.HISTORY_EXPIRED)
    ]
    messages = [i for i in items if isinstance(i, pw.Message)]
    assert by_topic(messages) == {"orders/us": [2, 3], "orders/eu": [5, 6, 7], "orders/new": [1]}


async def test_pattern_arguments_are_checked_before_sending(server_loop: ServerLoop) -> None:
    async with server_loop.server(ServerConfig(port=0)) as server:
        link = Link(server.port)
        async with link.connect() as conn:
            with pytest.raises(pw.RequestError):
                conn.subscribe("orders/#/eu")
            with pytest.raises(ValueError):
                conn.subscribe("orders/+", at_least_once=True)
            with pytest.raises(ValueError):
                conn.subscribe("orders/+", since=("after", 1, 1))
