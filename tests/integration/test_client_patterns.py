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
from pushwire.server.auth import Permissions

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
                fr_old, _ = await server.publish("orders/fr", b"fr-1")
                assert by_topic(await take_items(sub, 3)) == {
                    "orders/eu": [1],
                    "orders/us": [1],
                    "orders/fr": [1],
                }
                link.down = True
                link.kill()
                for i in range(2, 4):  # us: 2..3 kept, nothing lost
                    await server.publish("orders/us", b"us-%d" % i)
                for i in range(2, 8):  # eu: only 5..7 kept: 2..4 lost
                    await server.publish("orders/eu", b"eu-%d" % i)
                await server.publish("orders/new", b"new-1")  # created while away
                fr_epoch = await server.reset_topic("orders/fr")  # fr: a new epoch
                await server.publish("orders/fr", b"fr-new-1")
                link.down = False
                items = [await next_item(sub) for _ in range(9)]
                assert conn.connections_made >= 2
                positions = sub.topic_positions()
    gaps = [i for i in items if isinstance(i, pw.GapDetected)]
    assert [(g.topic, g.first, g.last, g.reason) for g in gaps] == [
        ("orders/eu", 2, 4, ErrorCode.HISTORY_EXPIRED)
    ]
    changes = [i for i in items if isinstance(i, pw.EpochChanged)]
    assert [(c.topic, c.old_epoch, c.new_epoch, c.start_seq) for c in changes] == [
        ("orders/fr", fr_old, fr_epoch, 1)
    ]
    messages = [i for i in items if isinstance(i, pw.Message)]
    assert by_topic(messages) == {
        "orders/us": [2, 3],
        "orders/eu": [5, 6, 7],
        "orders/new": [1],
        "orders/fr": [1],
    }
    assert positions["orders/fr"] == pw.TopicPosition(fr_epoch, 1)


def per_topic(items: list[object]) -> dict[str, list[object]]:
    """Each topic's items in order: a seq per message, ("gap", first, last, reason) or
    ("epoch", old, new, start_seq) per interruption."""
    out: dict[str, list[object]] = {}
    for item in items:
        if isinstance(item, pw.Message):
            out.setdefault(item.topic, []).append(item.seq)
        elif isinstance(item, pw.GapDetected):
            out.setdefault(item.topic, []).append(("gap", item.first, item.last, item.reason))
        else:
            assert isinstance(item, pw.EpochChanged), item
            change = ("epoch", item.old_epoch, item.new_epoch, item.start_seq)
            out.setdefault(item.topic, []).append(change)
    return out


@pytest.mark.spec("PW-SUB-30", "PW-ORDER-15", "PW-PUB-13")
async def test_a_skip_in_one_topic_reaches_the_application_as_that_topics_gap(
    server_loop: ServerLoop,
) -> None:
    with anyio.fail_after(15):
        async with server_loop.server(ServerConfig(port=0, history_count=3)) as server:
            link = Link(server.port)
            async with link.connect() as conn:
                sub = conn.subscribe("orders/+", credit=2)
                while not sub.accepted:
                    await anyio.sleep(0.005)
                await server.publish("orders/eu", b"eu-1")
                await server.publish("orders/us", b"us-1")
                while len(sub.topic_positions()) < 2:  # received, not consumed: no credit left
                    await anyio.sleep(0.005)
                for i in range(2, 8):  # eu keeps 5..7: 2..4 leave the history unsent
                    await server.publish("orders/eu", b"eu-%d" % i)
                await server.publish("orders/us", b"us-2")
                got = per_topic(await take_items(sub, 7))
                assert got == {
                    "orders/eu": [1, ("gap", 2, 4, ErrorCode.SLOW_CONSUMER), 5, 6, 7],
                    "orders/us": [1, 2],
                }
                await server.publish("orders/us", b"us-3")
                await server.publish("orders/eu", b"eu-8")
                assert per_topic(await take_items(sub, 2)) == {
                    "orders/eu": [8],
                    "orders/us": [3],
                }
                assert conn.connections_made == 1


@pytest.mark.spec("PW-SUB-30", "PW-ORDER-12", "PW-RESUME-3")
async def test_an_operator_reset_of_one_topic_is_that_topics_epoch_change(
    server_loop: ServerLoop,
) -> None:
    auth = {
        b"app": Permissions(subscribe=("orders/#",), publish=("orders/#",)),
        b"op": Permissions(publish=("$sys/reset/#",)),
    }
    with anyio.fail_after(15):
        async with server_loop.server(ServerConfig(port=0, auth=auth)) as server:
            link = Link(server.port)
            async with link.connect(auth_token=b"app") as app, link.connect(auth_token=b"op") as op:
                sub = app.subscribe("orders/+")
                while not sub.accepted:
                    await anyio.sleep(0.005)
                await app.publish("orders/eu", b"eu-1")
                await app.publish("orders/us", b"us-1")
                first = await take_items(sub, 2)
                assert per_topic(first) == {"orders/eu": [1], "orders/us": [1]}
                old = next(
                    m.epoch for m in first if isinstance(m, pw.Message) and m.topic == "orders/eu"
                )
                await op.publish("$sys/reset/orders/eu", b"reset")
                assert await app.publish("orders/eu", b"eu-new-1") == 1
                await app.publish("orders/us", b"us-2")
                items = await take_items(sub, 3)
                new = sub.topic_positions()["orders/eu"].epoch
                assert new != old
                assert per_topic(items) == {
                    "orders/eu": [("epoch", old, new, 1), 1],
                    "orders/us": [2],
                }
                eu = [m for m in items if isinstance(m, pw.Message) and m.topic == "orders/eu"]
                assert [m.epoch for m in eu] == [new]


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
