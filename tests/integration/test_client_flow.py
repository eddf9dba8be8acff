"""Flow control and acknowledgements end to end against the real server."""

from __future__ import annotations

import pytest
import trio
from client_support import Link, next_item, poll, seqs

import pushwire.client as pw
from pushwire.server import ServerConfig, open_server
from pushwire.server.session import SubscriptionStats


def server_sub(server: object, topic: str) -> SubscriptionStats | None:
    for session in server.stats().sessions:  # type: ignore[attr-defined]
        for sub in session.subscriptions.values():
            if sub.topic == topic:
                return sub  # type: ignore[no-any-return]
    return None


@pytest.mark.spec("PW-FLOW-1", "PW-FLOW-2", "PW-FLOW-7")
async def test_an_application_that_stops_consuming_stops_the_server_not_its_memory() -> None:
    window = 4
    with trio.fail_after(10):
        async with (
            open_server(ServerConfig(port=0)) as server,
            Link(server.port).connect() as conn,
        ):
            sub = conn.subscribe("t", since="oldest", credit=window)
            for i in range(50):
                epoch, _ = await server.publish("t", b"%d" % i)
            # The server sent exactly the window, then stopped for lack of credit.
            await poll(lambda: (s := server_sub(server, "t")) is not None and s.credit == 0)
            await poll(lambda: sub.buffered == window)
            await trio.sleep(0.2)  # show that nothing more arrives while nobody reads
            stats = server_sub(server, "t")
            assert stats is not None and stats.next_seq == window + 1
            assert sub.buffered == window
            # Reading resumes the flow; the buffer never holds more than the window.
            got = []
            for _ in range(50):
                got.append(await next_item(sub))
                assert sub.buffered <= window
    assert seqs(got) == list(range(1, 51))
    assert all(m.epoch == epoch for m in got)  # type: ignore[union-attr]


@pytest.mark.spec("PW-ACK-6", "PW-ACK-7")
async def test_acks_reach_the_server_as_the_application_processes() -> None:
    with trio.fail_after(10):
        async with (
            open_server(ServerConfig(port=0)) as server,
            Link(server.port).connect() as conn,
        ):
            sub = conn.subscribe("t", since="oldest", at_least_once=True, credit=10)
            for i in range(25):
                await server.publish("t", b"%d" % i)
            for _ in range(25):
                await next_item(sub)
            # 25 is in the application's hands: acknowledged only once it asks again
            await poll(lambda: (s := server_sub(server, "t")) is not None and s.acked == 24)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(next_item, sub)  # idle: 25 is processed now
                await poll(lambda: server_sub(server, "t").acked == 25)  # type: ignore[union-attr]
                nursery.cancel_scope.cancel()


async def test_a_message_larger_than_our_frame_limit_is_reported_as_a_gap() -> None:
    with trio.fail_after(10):
        async with (
            open_server(ServerConfig(port=0)) as server,
            Link(server.port).connect(max_frame_size=16384) as conn,
        ):
            sub = conn.subscribe("t", since="oldest")
            await server.publish("t", b"small")
            await server.publish("t", b"x" * 20000)
            await server.publish("t", b"small again")
            items = [await next_item(sub) for _ in range(3)]
    assert seqs(items) == [1, "gap 2..2", 3]
    assert isinstance(items[1], pw.GapDetected) and items[1].reason.name == "FRAME_TOO_LARGE"  # type: ignore[union-attr]
