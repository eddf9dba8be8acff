"""Graceful shutdown: GOAWAY, the reconnect hint, and resuming on a new server, under asyncio
and trio."""

from __future__ import annotations

import logging

import anyio
import pytest
from client_support import Link, next_item, seqs, take_until
from server_thread import ServerLoop

import pushwire.client as pw
from pushwire.protocol.errors import ErrorCode
from pushwire.server import MemoryBroker, ServerConfig

pytestmark = pytest.mark.anyio

AFTER_MS = 300
JITTER_MS = 100


@pytest.mark.spec("PW-GOAWAY-1", "PW-GOAWAY-7", "PW-RESUME-1")
async def test_goaway_then_reconnect_to_a_new_server_after_the_hint_and_resume(
    server_loop: ServerLoop,
) -> None:
    broker = MemoryBroker()  # the "persistent" part both servers share
    config = ServerConfig(
        port=0, goaway_reconnect_after_ms=AFTER_MS, goaway_jitter_ms=JITTER_MS, drain_timeout=2
    )
    with anyio.fail_after(15):
        async with server_loop.server(config, broker=broker) as first:
            port = first.port
            link = Link(port)
            async with link.connect() as conn, Link(port).connect() as publisher:
                sub = conn.subscribe("t", since="oldest", at_least_once=True, credit=8)
                for i in range(1, 6):
                    epoch, _ = await first.publish("t", b"%d" % i)
                assert seqs([await next_item(sub) for _ in range(3)]) == [1, 2, 3]
                attempts_before = len(link.attempts)
                t0 = anyio.current_time()
                await first.shutdown()  # returns once both clients have closed
                closed_after = anyio.current_time() - t0
                async with server_loop.server(
                    ServerConfig(port=port, goaway_reconnect_after_ms=AFTER_MS), broker=broker
                ) as second:
                    await link.wait_connects(2)  # the application still holds 3 meanwhile
                    await conn.wait_connected()
                    items = await take_until(sub, (epoch, 5))
                    seq = await publisher.publish("t", b"6")  # the publisher is back as well
                    items += await take_until(sub, (epoch, 6))
                    assert second.port == port
    reconnects = link.attempts[attempts_before:]
    assert reconnects, "the client never came back"
    assert closed_after < AFTER_MS / 1000  # it closed promptly, not at the drain timeout
    assert min(reconnects) - t0 >= AFTER_MS / 1000  # never before the hint (PW-GOAWAY-7)
    # 3 was in the application's hands during the GOAWAY: at-least-once delivers it again
    assert seqs(items) == [3, 4, 5, 6]
    assert seq == 6


@pytest.mark.spec("PW-GOAWAY-12", "PW-CLIENT-4")
async def test_without_reconnect_a_goaway_ends_the_connection_for_good(
    server_loop: ServerLoop, caplog: pytest.LogCaptureFixture
) -> None:
    """``reconnect=False`` holds after a GOAWAY too: the client acknowledges and closes as
    usual, then opens nothing more, however soon the server asks it back; the application
    gets what was received and then ConnectionLost naming the GOAWAY."""
    caplog.set_level(logging.INFO, logger="pushwire.client")
    config = ServerConfig(port=0, goaway_reconnect_after_ms=0, goaway_jitter_ms=0)
    with anyio.fail_after(15):
        async with server_loop.server(config) as first:
            port = first.port
            link = Link(port)
            async with link.connect(reconnect=False) as conn:
                sub = conn.subscribe("t", since="oldest", at_least_once=True, credit=8)
                for i in range(1, 4):
                    epoch, _ = await first.publish("t", b"%d" % i)
                assert seqs(await take_until(sub, (epoch, 3))) == [1, 2, 3]
                await first.shutdown()  # returns once the client has closed
                async with server_loop.server(ServerConfig(port=port)):
                    with pytest.raises(pw.ConnectionLost) as lost:
                        await next_item(sub)
                    with pytest.raises(pw.ConnectionLost):
                        await conn.publish("t", b"4")
                    await anyio.sleep(0.3)  # a reconnect would have come by now
    assert link.connects == 1 and len(link.attempts) == 1
    assert lost.value.code == ErrorCode.SHUTTING_DOWN
    assert str(lost.value) == "SHUTTING_DOWN: server going away: server shutting down"
    said = [r.getMessage() for r in caplog.records if r.name == "pushwire.client"]
    assert any(m.endswith("not reconnecting") for m in said), said
    assert not any("reconnect hint" in m for m in said), said
