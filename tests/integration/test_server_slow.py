"""The slow-consumer policies over real TCP: DROP skips with an explicit GAP, DISCONNECT
closes with SLOW_CONSUMER; neither ever stalls the publisher."""

from __future__ import annotations

import pytest
import trio
from integration.server_peer import RawPeer

from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import SinceKind, SlowConsumerPolicy
from pushwire.server import ServerConfig, open_server

TIMEOUT = 30


@pytest.mark.spec("PW-SLOW-3")
async def test_drop_tells_a_subscriber_without_credit_what_it_missed() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_server(ServerConfig(port=0, history_count=10)) as server:
            peer = await RawPeer.connect(server.port)
            await peer.handshake()
            await peer.subscribe(1, "t", credit=0)
            for i in range(50):
                epoch, _ = await server.publish("t", b"%d" % i)
            await peer.send(F.Credit(1, 100))
            assert await peer.recv_data() == F.Gap(1, epoch, 1, 40, ErrorCode.SLOW_CONSUMER)
            assert [s for s, _ in await peer.messages(10)] == list(range(41, 51))
            await peer.aclose()


@pytest.mark.spec("PW-SLOW-3", "PW-SLOW-1")
async def test_drop_tells_a_subscriber_that_stopped_reading_what_it_missed() -> None:
    payload = b"z" * 10_000
    n = 4000  # 40 MB through a history of 200 messages and a 64 KiB outbound queue
    cfg = ServerConfig(port=0, history_count=200, outbound_queue_bytes=64 * 1024)
    with trio.fail_after(TIMEOUT):
        async with open_server(cfg) as server:
            stuck = await RawPeer.connect(server.port)
            await stuck.handshake()
            await stuck.subscribe(1, "t", credit=1_000_000)
            for _ in range(n):
                await server.publish("t", payload)
            expected = 1
            gaps = []
            while expected <= n:
                frame = await stuck.recv_data()
                if isinstance(frame, F.Gap):
                    assert frame.first == expected
                    assert frame.reason == ErrorCode.SLOW_CONSUMER
                    gaps.append(frame)
                    expected = frame.last + 1
                else:
                    assert isinstance(frame, F.Message)
                    assert frame.seq == expected
                    expected += 1
            assert gaps, "the subscriber lagged beyond the history, yet no GAP came"
            assert server.stats().sessions[0].max_queued_bytes <= 64 * 1024 + len(payload) + 64
            await stuck.aclose()


@pytest.mark.spec("PW-SLOW-2")
async def test_disconnect_closes_a_lagging_subscriber_and_only_it() -> None:
    cfg = ServerConfig(port=0, slow_consumer_policy=SlowConsumerPolicy.DISCONNECT, max_lag=20)
    with trio.fail_after(TIMEOUT):
        async with open_server(cfg) as server:
            slow = await RawPeer.connect(server.port)
            welcome = await slow.handshake()
            assert (welcome.slow_consumer_policy, welcome.max_lag) == (0, 20)
            await slow.subscribe(1, "t", credit=5)
            fine = await RawPeer.connect(server.port)
            await fine.handshake()
            await fine.subscribe(1, "t", credit=10_000)
            for i in range(100):
                await server.publish("t", b"%d" % i)
            error = await slow.expect_error_and_close(ErrorCode.SLOW_CONSUMER)
            assert "max_lag" in error.message
            assert [s for s, _ in await fine.messages(100)] == list(range(1, 101))
            await slow.aclose()
            while server.stats().connections > 1:  # until the server has seen the close
                await trio.sleep(0.01)
            await fine.aclose()


@pytest.mark.spec("PW-SLOW-6", "PW-SLOW-2")
async def test_under_disconnect_the_backlog_a_client_asked_for_does_not_count_as_lag() -> None:
    """Ten messages retained, max_lag 5: a subscriber from OLDEST with credit 2 is not cut
    for the backlog it asked for, and makes progress credit by credit; messages published
    after it subscribed do count."""
    config = ServerConfig(
        port=0,
        history_count=10,
        max_lag=5,
        slow_consumer_policy=SlowConsumerPolicy.DISCONNECT,
    )
    with trio.fail_after(TIMEOUT):
        async with open_server(config) as server:
            for i in range(10):
                await server.publish("t", b"%d" % i)
            peer = await RawPeer.connect(server.port)
            await peer.handshake()
            await peer.send(F.Subscribe(1, "t", since_kind=SinceKind.OLDEST, initial_credit=2))
            got = await peer.messages(2)
            for _ in range(4):
                await peer.send(F.Credit(1, 2))
                got += await peer.messages(2)
            assert [s for s, _ in got] == list(range(1, 11))
            # lag now counts what came after the subscription: 6 new ones pass max_lag 5
            for i in range(6):
                await server.publish("t", b"new %d" % i)
            await peer.expect_error_and_close(ErrorCode.SLOW_CONSUMER)
            await peer.aclose()


@pytest.mark.spec("PW-SLOW-7")
async def test_losses_before_the_next_push_are_one_gap_that_costs_no_credit() -> None:
    """DROP, history of 5, a subscriber holding 2 credits that it does not renew: 1 and 2
    arrive; the losses of three rounds of publishing (3..7, then more, then more) come as
    one GAP before the next push, never two adjacent GAPs; the GAP takes no credit, so a
    grant of 1 brings exactly one message after it."""
    with trio.fail_after(TIMEOUT):
        async with open_server(ServerConfig(port=0, history_count=5)) as server:
            peer = await RawPeer.connect(server.port)
            await peer.handshake()
            await peer.subscribe(1, "t", credit=2)
            for round_ in range(3):
                for i in range(10):
                    await server.publish("t", b"r%d-%d" % (round_, i))
                await trio.sleep(0.05)
            frames: list[F.Frame] = []
            with trio.move_on_after(0.3):
                while True:
                    frames.append(await peer.recv_data())
            await peer.send(F.Credit(1, 1))
            with trio.move_on_after(0.5):
                while not any(isinstance(f, F.Message) and f.seq > 2 for f in frames):
                    frames.append(await peer.recv_data())
            kinds = [
                ("gap", f.first, f.last) if isinstance(f, F.Gap) else ("msg", f.seq)
                for f in frames
                if isinstance(f, F.Gap | F.Message)
            ]
            gaps = [k for k in kinds if k[0] == "gap"]
            assert kinds[:2] == [("msg", 1), ("msg", 2)], kinds
            assert len(gaps) == 1, kinds  # one GAP for everything lost before the next push
            assert gaps[0][1] == 3, kinds
            after = kinds[kinds.index(gaps[0]) + 1 :]
            assert after == [("msg", gaps[0][2] + 1)], kinds  # one credit: one message
            await peer.aclose()
