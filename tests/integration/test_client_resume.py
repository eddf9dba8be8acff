"""Reconnect and resume against the real server: missed messages, gaps, epoch changes,
at-least-once redelivery; under asyncio and trio."""

from __future__ import annotations

import anyio
import pytest
from client_support import Link, next_item, seqs, take_items, take_until
from server_thread import ServerLoop

import pushwire.client as pw
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import SinceKind
from pushwire.server import MemoryBroker, ServerConfig

pytestmark = pytest.mark.anyio

#: A server whose GOAWAY asks clients back after 50-100 ms (the default is 1-2 s).
QUICK_GOAWAY = ServerConfig(port=0, goaway_reconnect_after_ms=50, goaway_jitter_ms=50)


@pytest.mark.spec("PW-RESUME-1", "PW-SUB-9")
async def test_resume_delivers_exactly_the_missed_messages_in_order(
    server_loop: ServerLoop,
) -> None:
    with anyio.fail_after(10):
        async with server_loop.server(ServerConfig(port=0)) as server:
            link = Link(server.port)
            async with link.connect() as conn:
                sub = conn.subscribe("t", since="oldest", credit=8)
                for i in range(1, 6):
                    await server.publish("t", b"%d" % i)
                assert seqs(await take_items(sub, 5)) == [1, 2, 3, 4, 5]
                link.down = True
                link.kill()
                for i in range(6, 31):  # published while the client is away
                    await server.publish("t", b"%d" % i)
                link.down = False
                items = await take_until(sub, (sub.position().epoch, 30))  # type: ignore[union-attr]
                assert seqs(items) == list(range(6, 31))  # nothing lost, nothing twice
                assert [m.payload for m in items] == [b"%d" % i for i in range(6, 31)]  # type: ignore[union-attr]
                assert conn.connections_made >= 2


@pytest.mark.spec("PW-SUB-10", "PW-RESUME-2")
async def test_resume_beyond_the_history_window_reports_the_gap(server_loop: ServerLoop) -> None:
    with anyio.fail_after(10):
        async with server_loop.server(ServerConfig(port=0, history_count=5)) as server:
            link = Link(server.port)
            async with link.connect() as conn:
                sub = conn.subscribe("t", since="oldest", credit=4)
                epoch, first = await server.publish("t", b"x")
                assert seqs(await take_until(sub, (epoch, first))) == [first]
                link.down = True
                link.kill()
                for _ in range(20):
                    _, head = await server.publish("t", b"y")
                link.down = False
                items = await take_until(sub, (epoch, head))
    # history keeps head-4..head; everything between was lost and is reported as such
    gap = items[0]
    assert isinstance(gap, pw.GapDetected)
    assert (gap.first, gap.last, gap.reason) == (first + 1, head - 5, ErrorCode.HISTORY_EXPIRED)
    assert seqs(items[1:]) == list(range(head - 4, head + 1))


@pytest.mark.spec("PW-SUB-11", "PW-RESUME-3")
async def test_server_restart_without_persistence_is_an_epoch_change(
    server_loop: ServerLoop,
) -> None:
    with anyio.fail_after(15):
        async with server_loop.server(QUICK_GOAWAY) as first:
            port = first.port
            link = Link(port)
            async with link.connect() as conn:
                sub = conn.subscribe("t", since="oldest")
                old_epoch, _ = await first.publish("t", b"before")
                assert seqs([await next_item(sub)]) == [1]
                await first.shutdown()  # GOAWAY; the client waits and retries
                async with server_loop.server(ServerConfig(port=port)) as second:
                    new_epoch, _ = await second.publish("t", b"after-1")
                    await second.publish("t", b"after-2")
                    items = await take_until(sub, (new_epoch, 2))
    change = items[0]
    assert isinstance(change, pw.EpochChanged)
    assert (change.old_epoch, change.new_epoch, change.start_seq) == (old_epoch, new_epoch, 1)
    assert [m.payload for m in items[1:]] == [b"after-1", b"after-2"]  # type: ignore[union-attr]


@pytest.mark.spec("PW-ORDER-12", "PW-ORDER-13")
async def test_reset_topic_while_subscribed_is_an_epoch_change(server_loop: ServerLoop) -> None:
    with anyio.fail_after(10):
        async with (
            server_loop.server(ServerConfig(port=0)) as server,
            Link(server.port).connect() as conn,
        ):
            sub = conn.subscribe("t", since="oldest")
            old_epoch, _ = await server.publish("t", b"a")
            assert seqs([await next_item(sub)]) == [1]
            new_epoch = await server.reset_topic("t")
            await server.publish("t", b"b")
            change = await next_item(sub)
            message = await next_item(sub)
    assert isinstance(change, pw.EpochChanged)
    assert (change.old_epoch, change.new_epoch, change.start_seq) == (old_epoch, new_epoch, 1)
    assert isinstance(message, pw.Message)
    assert (message.epoch, message.seq, message.payload) == (new_epoch, 1, b"b")


@pytest.mark.spec("PW-ACK-6", "PW-RESUME-1")
async def test_at_least_once_redelivers_unacknowledged_messages_after_reconnect(
    server_loop: ServerLoop,
) -> None:
    with anyio.fail_after(10):
        async with server_loop.server(ServerConfig(port=0)) as server:
            link = Link(server.port)
            async with link.connect() as conn:
                sub = conn.subscribe("t", since="oldest", at_least_once=True, credit=10)
                for i in range(1, 7):
                    epoch, _ = await server.publish("t", b"%d" % i)
                got = await take_items(sub, 3)  # 1, 2 processed; 3 in the application's hands
                assert seqs(got) == [1, 2, 3]
                link.kill()
                # While the application still works on 3, the client reconnects...
                await link.wait_connects(2)
                await conn.wait_connected()
                # ...and 3 (never finished) and 4..6 (buffered, dropped) come again.
                assert seqs(await take_until(sub, (epoch, 6))) == [3, 4, 5, 6]
                await server.publish("t", b"7")
                assert seqs([await next_item(sub)]) == [7]  # 6 is processed now
                link.kill()
                await link.wait_connects(3)
                await conn.wait_connected()
                await server.publish("t", b"8")
                assert seqs(await take_until(sub, (epoch, 8))) == [7, 8]


@pytest.mark.spec("PW-RESUME-1", "PW-ACK-6")
async def test_at_least_once_resumes_after_the_last_processed_message_not_the_last_ack(
    server_loop: ServerLoop,
) -> None:
    """ACKs are coalesced, so the application may have processed more than the last ACK
    says; the resume starts after what it processed (SPEC.md §8.4), which it never needs
    again, and only the message in its hands and the buffered ones come twice."""
    with anyio.fail_after(10):
        async with server_loop.server(ServerConfig(port=0)) as server:
            link = Link(server.port, tap=True)
            async with link.connect(heartbeat_ms=60000) as conn:
                sub = conn.subscribe("t", since="oldest", at_least_once=True, credit=10)
                for i in range(1, 7):
                    epoch, _ = await server.publish("t", b"%d" % i)
                # 1..3 processed, 4 in the application's hands, 5 and 6 buffered: no grant
                # yet (half the window is 5), nothing idle, no heartbeat tick, so no ACK.
                assert seqs(await take_items(sub, 4)) == [1, 2, 3, 4]
                link.kill()
                await link.wait_connects(2)
                await conn.wait_connected()
                assert seqs(await take_until(sub, (epoch, 6))) == [4, 5, 6]
    first, second = link.sent[0], link.sent[1]
    assert not [f for f in first if isinstance(f, F.Ack)]  # nothing was acknowledged...
    (resume,) = [f for f in second if isinstance(f, F.Subscribe)]
    assert resume.at_least_once
    # ...and yet it resumes after 3, the last message processed, not after 0
    assert (resume.since_kind, resume.since_epoch, resume.since_seq) == (
        SinceKind.AFTER,
        epoch,
        3,
    )


async def test_positions_can_resume_a_later_connection(server_loop: ServerLoop) -> None:
    with anyio.fail_after(10):
        async with server_loop.server(ServerConfig(port=0)) as server:
            for i in range(1, 11):
                await server.publish("t", b"%d" % i)
            link = Link(server.port)
            async with link.connect() as conn:
                sub = conn.subscribe("t", since=("last", 4))
                assert seqs(await take_items(sub, 2)) == [7, 8]
                saved = conn.positions()["t"]
            async with link.connect() as conn:
                sub = conn.subscribe("t", since=saved)
                assert seqs(await take_items(sub, 2)) == [9, 10]


async def test_a_lost_server_is_retried_until_it_comes_back(server_loop: ServerLoop) -> None:
    broker = MemoryBroker()
    with anyio.fail_after(10):
        async with server_loop.server(QUICK_GOAWAY, broker=broker) as first:
            port = first.port
            link = Link(port)
            async with link.connect(backoff_initial=0.05, backoff_max=0.2) as conn:
                sub = conn.subscribe("t", since="oldest")
                epoch, _ = await first.publish("t", b"1")
                await first.shutdown()
                await anyio.sleep(0.5)  # several refused attempts happen here
                async with server_loop.server(ServerConfig(port=port), broker=broker) as second:
                    await second.publish("t", b"2")
                    items = await take_until(sub, (epoch, 2))
    assert seqs(items) == [1, 2]  # same broker: same epoch, nothing lost or repeated
