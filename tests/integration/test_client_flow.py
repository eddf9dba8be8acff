"""Flow control and acknowledgements end to end against the real server, under asyncio and
trio."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
from client_support import Link, next_item, poll, seqs
from server_thread import RemoteServer, ServerLoop

import pushwire.client as pw
from pushwire.server import ServerConfig
from pushwire.server.session import SubscriptionStats

pytestmark = pytest.mark.anyio


async def server_sub(
    server: RemoteServer, topic: str, until: Callable[[SubscriptionStats], bool]
) -> SubscriptionStats:
    """The server's view of the subscription to ``topic``, once ``until`` holds for it;
    bounded by the caller's fail_after."""
    while True:
        for session in (await server.stats()).sessions:
            for sub in session.subscriptions.values():
                if sub.topic == topic and until(sub):
                    return sub
        await anyio.sleep(0.005)


@pytest.mark.spec("PW-FLOW-1", "PW-FLOW-2", "PW-FLOW-7")
async def test_an_application_that_stops_consuming_stops_the_server_not_its_memory(
    server_loop: ServerLoop,
) -> None:
    window = 4
    with anyio.fail_after(10):
        async with (
            server_loop.server(ServerConfig(port=0)) as server,
            Link(server.port).connect() as conn,
        ):
            sub = conn.subscribe("t", since="oldest", credit=window)
            for i in range(50):
                epoch, _ = await server.publish("t", b"%d" % i)
            # The server sent exactly the window, then stopped for lack of credit.
            await server_sub(server, "t", lambda s: s.credit == 0)
            await poll(lambda: sub.buffered == window)
            await anyio.sleep(0.2)  # show that nothing more arrives while nobody reads
            stats = await server_sub(server, "t", lambda s: True)
            assert stats.next_seq == window + 1
            assert sub.buffered == window
            # Reading resumes the flow; the buffer never holds more than the window.
            got = []
            for _ in range(50):
                got.append(await next_item(sub))
                assert sub.buffered <= window
    assert seqs(got) == list(range(1, 51))
    assert all(m.epoch == epoch for m in got)  # type: ignore[union-attr]


@pytest.mark.spec("PW-ACK-6", "PW-ACK-7")
async def test_acks_reach_the_server_as_the_application_processes(
    server_loop: ServerLoop,
) -> None:
    with anyio.fail_after(10):
        async with (
            server_loop.server(ServerConfig(port=0)) as server,
            Link(server.port).connect() as conn,
        ):
            sub = conn.subscribe("t", since="oldest", at_least_once=True, credit=10)
            for i in range(25):
                await server.publish("t", b"%d" % i)
            for _ in range(25):
                await next_item(sub)
            # 25 is in the application's hands: acknowledged only once it asks again
            await server_sub(server, "t", lambda s: s.acked == 24)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(next_item, sub)  # idle: 25 is processed now
                await server_sub(server, "t", lambda s: s.acked == 25)
                tasks.cancel_scope.cancel()


async def test_a_message_larger_than_our_frame_limit_is_reported_as_a_gap(
    server_loop: ServerLoop,
) -> None:
    with anyio.fail_after(10):
        async with (
            server_loop.server(ServerConfig(port=0)) as server,
            Link(server.port).connect(max_frame_size=16384) as conn,
        ):
            sub = conn.subscribe("t", since="oldest")
            await server.publish("t", b"small")
            await server.publish("t", b"x" * 20000)
            await server.publish("t", b"small again")
            items = [await next_item(sub) for _ in range(3)]
    assert seqs(items) == [1, "gap 2..2", 3]
    assert isinstance(items[1], pw.GapDetected) and items[1].reason.name == "FRAME_TOO_LARGE"  # type: ignore[union-attr]
