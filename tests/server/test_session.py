"""Sessions over in-memory streams: the trio shell around ServerConnection, on trio's
virtual clock (``autojump_clock``), so heartbeats and timeouts take no wall time."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing
from faults import server_options
from integration.server_peer import PREFACE_ONLY, PeerClosed, RawPeer, memory_server

from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import FrameType, Outcome, SinceKind, SlowConsumerPolicy
from pushwire.server import MemoryBroker, ServerConfig


def config(**kw: object) -> ServerConfig:
    base: dict[str, object] = {
        "port": 0,
        "heartbeat_ms": 1000,
        "heartbeat_min_ms": 10,
        "drain_timeout": 2.0,
        "close_timeout": 0.5,
        "handshake_timeout": 10.0,
    }
    base.update(kw)
    return ServerConfig(**base)  # type: ignore[arg-type]


async def nothing_arrives(peer: RawPeer, seconds: float = 5.0) -> None:
    """No frame but PINGs (answered) for ``seconds`` of virtual time."""
    with trio.move_on_after(seconds):
        while True:
            frame = await peer.recv()
            if isinstance(frame, F.Ping):
                await peer.send(F.Pong(frame.opaque))
                continue
            raise AssertionError(f"unexpected {frame!r}")


# -- heartbeats and handshake -----------------------------------------------------------------


@pytest.mark.spec("PW-HB-1", "PW-HB-3")
async def test_a_silent_client_gets_pings_then_heartbeat_timeout(autojump_clock: object) -> None:
    async with memory_server(config()) as ms:
        peer = await ms.connect()
        await peer.handshake(heartbeat_ms=1000)
        start = trio.current_time()
        pings = []
        with trio.fail_after(30):
            while True:
                frame = await peer.recv()
                if isinstance(frame, F.Ping):
                    pings.append(trio.current_time() - start)
                    continue
                break
        assert isinstance(frame, F.Error)
        assert frame.code == ErrorCode.HEARTBEAT_TIMEOUT
        assert trio.current_time() - start == pytest.approx(3.0, abs=0.01)
        assert pings == pytest.approx([1.0, 2.0], abs=0.01)
        await peer.expect_eof()


@pytest.mark.spec("PW-HB-2", "PW-HB-4")
async def test_a_client_that_answers_pings_stays_connected(autojump_clock: object) -> None:
    async with memory_server(config()) as ms:
        peer = await ms.connect()
        await peer.handshake(heartbeat_ms=1000)
        await nothing_arrives(peer, 30.0)
        assert ms.server.stats().connections == 1
        await peer.send(F.Ping(42))
        pong, _ = await peer.recv_until(F.Pong)
        assert pong == F.Pong(42)


@pytest.mark.spec("PW-HS-14")
async def test_no_hello_after_the_preface_is_handshake_timeout(autojump_clock: object) -> None:
    async with memory_server(config(handshake_timeout=4.0)) as ms:
        peer = await ms.connect()
        start = trio.current_time()
        await peer.send(PREFACE_ONLY)
        error = await peer.expect_error_and_close(ErrorCode.HANDSHAKE_TIMEOUT)
        assert error.request_type == 0
        assert trio.current_time() - start == pytest.approx(4.0, abs=0.01)


@pytest.mark.spec("PW-SEC-6")
async def test_no_preface_is_closed_silently_at_the_handshake_timeout(
    autojump_clock: object,
) -> None:
    async with memory_server(config(handshake_timeout=4.0)) as ms:
        peer = await ms.connect()
        await peer.send(b"\x89P")  # a preface that never completes
        with pytest.raises(PeerClosed):
            await peer.read_preface()
        assert peer.received_bytes == 0


# -- delivery, credit, batches ----------------------------------------------------------------


@pytest.mark.spec("PW-ORDER-5", "PW-FLOW-1", "PW-FLOW-2")
async def test_delivery_follows_credit_and_starts_after_subscribed(
    autojump_clock: object,
) -> None:
    async with memory_server(config()) as ms:
        for i in range(5):
            await ms.server.publish("a/b", b"%d" % i)
        peer = await ms.connect()
        await peer.handshake()
        sub = await peer.subscribe(1, "a/b", since=SinceKind.OLDEST, credit=3)
        assert (sub.outcome, sub.start_seq, sub.head_seq) == (Outcome.RECOVERED, 1, 5)
        assert await peer.messages(3) == [(1, b"0"), (2, b"1"), (3, b"2")]
        await nothing_arrives(peer)
        await peer.send(F.Credit(1, 5))
        assert await peer.messages(2) == [(4, b"3"), (5, b"4")]
        await ms.server.publish("a/b", b"live")
        assert await peer.messages(1) == [(6, b"live")]


@pytest.mark.spec("PW-FLOW-3")
async def test_a_batch_is_split_where_credit_ends(autojump_clock: object) -> None:
    async with memory_server(config()) as ms:
        await ms.server.publish_batch("t", [b"%d" % i for i in range(10)])
        peer = await ms.connect()
        await peer.handshake()
        await peer.subscribe(1, "t", since=SinceKind.OLDEST, credit=4)
        first = await peer.expect(F.MessageBatch)
        assert (first.base_seq, first.count) == (1, 4)  # type: ignore[union-attr]
        await peer.send(F.Credit(1, 3))
        second = await peer.expect(F.MessageBatch)
        assert (second.base_seq, second.count) == (5, 3)  # type: ignore[union-attr]
        await peer.send(F.Credit(1, 100))
        third = await peer.expect(F.MessageBatch)
        assert (third.base_seq, [r.payload for r in third.records]) == (  # type: ignore[union-attr]
            8,
            [b"7", b"8", b"9"],
        )


@pytest.mark.spec("PW-SUB-9", "PW-FLOW-3")
async def test_a_resume_inside_a_batch_gets_the_rest_of_it(autojump_clock: object) -> None:
    async with memory_server(config()) as ms:
        epoch, _ = await ms.server.publish_batch("t", [b"a", b"b", b"c", b"d"])
        peer = await ms.connect()
        await peer.handshake()
        sub = await peer.subscribe(1, "t", since=SinceKind.AFTER, epoch=epoch, seq=2)
        assert (sub.outcome, sub.start_seq) == (Outcome.RECOVERED, 3)
        batch = await peer.expect(F.MessageBatch)
        assert batch == F.MessageBatch(epoch, 3, "t", (F.Record(b"c"), F.Record(b"d")))


@pytest.mark.spec("PW-PUB-11")
async def test_a_message_too_large_for_the_subscriber_becomes_a_gap(
    autojump_clock: object,
) -> None:
    async with memory_server(config()) as ms:
        peer = await ms.connect(max_frame_size=16384)
        await peer.handshake()
        await peer.subscribe(1, "t")
        epoch, _ = await ms.server.publish("t", b"x" * 17000)
        await ms.server.publish("t", b"small")
        assert await peer.recv_data() == F.Gap(1, epoch, 1, 1, ErrorCode.FRAME_TOO_LARGE)
        assert await peer.messages(1) == [(2, b"small")]


@pytest.mark.spec("PW-PUB-11", "PW-FLOW-3")
async def test_a_batch_is_split_around_records_too_large_for_the_subscriber(
    autojump_clock: object,
) -> None:
    async with memory_server(config()) as ms:
        peer = await ms.connect(max_frame_size=16384)
        await peer.handshake()
        await peer.subscribe(1, "t", credit=10)
        big = b"B" * 16384
        epoch, _ = await ms.server.publish_batch("t", [b"1", b"2", big, big, b"5"])
        first = await peer.expect(F.MessageBatch)
        assert (first.base_seq, first.count) == (1, 2)  # type: ignore[union-attr]
        assert await peer.recv_data() == F.Gap(1, epoch, 3, 4, ErrorCode.FRAME_TOO_LARGE)
        last = await peer.expect(F.MessageBatch)
        assert (last.base_seq, last.count) == (5, 1)  # type: ignore[union-attr]
        await nothing_arrives(peer, 1.0)
        sub = ms.server.stats().sessions[0].subscriptions[1]
        assert sub.credit == 7  # the gap cost nothing


@pytest.mark.spec("PW-SUB-16")
async def test_no_push_after_unsubscribed(autojump_clock: object) -> None:
    async with memory_server(config()) as ms:
        peer = await ms.connect()
        await peer.handshake()
        await peer.subscribe(1, "t", credit=100)
        await ms.server.publish("t", b"1")
        await peer.send(F.Unsubscribe(1))
        frame, skipped = await peer.recv_until(F.Unsubscribed)
        assert frame.last_seq == 1  # type: ignore[union-attr]
        assert [type(f) for f in skipped] == [F.Message]
        await ms.server.publish("t", b"2")
        await nothing_arrives(peer)


@pytest.mark.spec("PW-ORDER-12", "PW-ORDER-2")
async def test_after_a_reset_delivery_continues_at_one_in_the_new_epoch(
    autojump_clock: object,
) -> None:
    async with memory_server(config()) as ms:
        peer = await ms.connect()
        await peer.handshake()
        await peer.subscribe(1, "t", credit=100)
        old, _ = await ms.server.publish("t", b"old")
        await peer.messages(1)
        new = await ms.server.reset_topic("t")
        assert new not in (0, old)
        assert await ms.server.publish("t", b"new") == (new, 1)
        frame = await peer.expect(F.Message)
        assert (frame.epoch, frame.seq, frame.payload) == (new, 1, b"new")  # type: ignore[union-attr]


@pytest.mark.spec("PW-ORDER-12", "PW-SLOW-3")
async def test_after_a_reset_a_gap_starts_at_one_when_one_is_gone(autojump_clock: object) -> None:
    async with memory_server(config(history_count=2)) as ms:
        peer = await ms.connect()
        await peer.handshake()
        await peer.subscribe(1, "t", credit=0)
        await ms.server.publish("t", b"old")
        new = await ms.server.reset_topic("t")
        for i in range(5):
            await ms.server.publish("t", b"%d" % i)
        await peer.send(F.Credit(1, 10))
        assert await peer.recv_data() == F.Gap(1, new, 1, 3, ErrorCode.SLOW_CONSUMER)
        assert await peer.messages(2) == [(4, b"3"), (5, b"4")]


# -- slow consumers ---------------------------------------------------------------------------


@pytest.mark.spec("PW-SLOW-3", "PW-SLOW-4")
async def test_drop_sends_an_explicit_gap_then_continues_from_the_oldest(
    autojump_clock: object,
) -> None:
    async with memory_server(config(history_count=5, max_lag=3)) as ms:
        peer = await ms.connect()
        welcome = await peer.handshake()
        assert welcome.slow_consumer_policy == SlowConsumerPolicy.DROP
        await peer.subscribe(1, "t", credit=0)
        for i in range(20):
            epoch, _ = await ms.server.publish("t", b"%d" % i)
        await nothing_arrives(peer)  # lag 20 > max_lag, but DROP never disconnects
        await peer.send(F.Credit(1, 100))
        assert await peer.recv_data() == F.Gap(1, epoch, 1, 15, ErrorCode.SLOW_CONSUMER)
        assert [s for s, _ in await peer.messages(5)] == [16, 17, 18, 19, 20]


@pytest.mark.spec("PW-SLOW-2", "PW-SLOW-5")
async def test_disconnect_closes_a_subscriber_that_lags_beyond_max_lag(
    autojump_clock: object,
) -> None:
    cfg = config(slow_consumer_policy="disconnect", max_lag=10)
    async with memory_server(cfg) as ms:
        slow = await ms.connect()
        await slow.handshake()
        await slow.subscribe(1, "t", credit=0)
        fast = await ms.connect()
        await fast.handshake()
        await fast.subscribe(1, "t", credit=1000)
        for i in range(10):
            await ms.server.publish("t", b"%d" % i)
        assert ms.server.stats().connections == 2  # lag 10 is not beyond 10
        await ms.server.publish("t", b"10")
        await slow.expect_error_and_close(ErrorCode.SLOW_CONSUMER)
        for i in range(11, 30):  # the others and the publisher carry on
            await ms.server.publish("t", b"%d" % i)
        assert [s for s, _ in await fast.messages(30)] == list(range(1, 31))


@pytest.mark.spec("PW-SLOW-2")
async def test_disconnect_closes_when_the_next_message_left_the_history(
    autojump_clock: object,
) -> None:
    cfg = config(slow_consumer_policy=SlowConsumerPolicy.DISCONNECT, max_lag=1000, history_count=3)
    async with memory_server(cfg) as ms:
        peer = await ms.connect()
        await peer.handshake()
        await peer.subscribe(1, "t", credit=0)
        for i in range(5):
            await ms.server.publish("t", b"%d" % i)
        await peer.expect_error_and_close(ErrorCode.SLOW_CONSUMER)


@pytest.mark.spec("PW-SLOW-5")
async def test_disconnect_spares_a_subscriber_that_keeps_up(autojump_clock: object) -> None:
    cfg = config(slow_consumer_policy="disconnect", max_lag=2)
    async with memory_server(cfg) as ms:
        peer = await ms.connect()
        await peer.handshake()
        await peer.subscribe(1, "t", credit=1000)
        async with trio.open_nursery() as nursery:

            async def publish() -> None:
                for i in range(100):
                    await ms.server.publish("t", b"%d" % i)

            nursery.start_soon(publish)
            assert [s for s, _ in await peer.messages(100)] == list(range(1, 101))


# -- memory bounds with a client that does not read -------------------------------------------


@pytest.mark.spec("PW-LIMIT-3", "PW-SLOW-1")
async def test_a_subscriber_that_does_not_read_costs_at_most_its_outbound_budget(
    autojump_clock: object,
) -> None:
    budget = 64 * 1024
    async with memory_server(
        config(outbound_queue_bytes=budget), pair=trio.testing.lockstep_stream_pair
    ) as ms:
        stuck = await ms.connect()
        await stuck.handshake(heartbeat_ms=60_000)
        await stuck.subscribe(1, "t", credit=100_000)
        payload = b"p" * 4000
        for _ in range(500):  # 2 MB: the publisher never waits for the stuck reader
            await ms.server.publish("t", payload)
        await trio.sleep(1)
        stats = ms.server.stats()
        session = stats.sessions[0]
        assert session.max_queued_bytes <= budget + len(payload) + 100
        assert stats.topics["t"].head_seq == 500
        assert session.subscriptions[1].next_seq < 100  # it lags in the history instead


@pytest.mark.spec("PW-LIMIT-3")
async def test_a_publisher_that_does_not_read_pubacks_is_stopped_by_backpressure(
    autojump_clock: object,
) -> None:
    budget = 16384
    async with memory_server(
        config(outbound_queue_bytes=budget), pair=trio.testing.lockstep_stream_pair
    ) as ms:
        peer = await ms.connect()
        await peer.handshake(heartbeat_ms=60_000)
        sent = 0

        async def flood() -> None:
            nonlocal sent
            for i in range(1, 100_000):
                await peer.send(F.Publish(i, "t", b"x"))
                sent = i

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            await trio.sleep(5)
            nursery.cancel_scope.cancel()
        stats = ms.server.stats()
        assert sent < 100_000 - 1  # the flood was held back
        assert stats.sessions[0].max_queued_bytes <= 2 * budget + 1024


# -- graceful shutdown ------------------------------------------------------------------------


@pytest.mark.spec("PW-GOAWAY-1", "PW-GOAWAY-2", "PW-GOAWAY-3", "PW-GOAWAY-4", "PW-GOAWAY-5")
async def test_shutdown_sends_goaway_with_positions_then_drains(autojump_clock: object) -> None:
    async with memory_server(config(goaway_reconnect_after_ms=300, goaway_jitter_ms=50)) as ms:
        peer = await ms.connect()
        await peer.handshake()
        await peer.subscribe(1, "a", credit=100, at_least_once=True)
        await peer.subscribe(2, "b", credit=100)
        for _ in range(3):
            epoch_a, _ = await ms.server.publish("a", b"x")
        epoch_b, _ = await ms.server.publish("b", b"y")
        await peer.messages(4)
        await peer.send(F.Ack(1, 2), F.Ping(9))
        await peer.recv_until(F.Pong)  # the ACK was processed
        ms.nursery.start_soon(ms.server.shutdown)
        goaway = await peer.expect(F.Goaway)
        assert goaway == F.Goaway(
            ErrorCode.SHUTTING_DOWN,
            300,
            50,
            (F.Position(1, epoch_a, 2), F.Position(2, epoch_b, 1)),
            "server shutting down",
        )
        await ms.server.publish("a", b"after")  # never pushed after GOAWAY
        await peer.send(F.Subscribe(3, "c"), F.Publish(7, "a", b"z"), F.Ping(5), F.Ack(1, 3))
        replies = [await peer.recv() for _ in range(3)]
        assert replies[0] == F.Error(
            ErrorCode.GOING_AWAY, FrameType.SUBSCRIBE, 3, replies[0].message
        )  # type: ignore[union-attr]
        assert replies[1] == F.Error(ErrorCode.GOING_AWAY, FrameType.PUBLISH, 7, replies[1].message)  # type: ignore[union-attr]
        assert replies[2] == F.Pong(5)
        start = trio.current_time()
        await peer.expect_eof()  # the drain timeout closes a client that stays
        assert trio.current_time() - start == pytest.approx(2.0, abs=0.1)


@pytest.mark.spec("PW-GOAWAY-5")
async def test_shutdown_ends_as_soon_as_the_client_closes(autojump_clock: object) -> None:
    async with memory_server(config(drain_timeout=100.0)) as ms:
        peer = await ms.connect()
        await peer.handshake()
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ms.server.shutdown)
            await peer.expect(F.Goaway)
            await peer.aclose()
        assert trio.current_time() - start < 1.0


def closed_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """(message, code field) of each 'connection N: PEER closed: ...' log record, without
    the connection's totals at the end."""
    return [
        (r.getMessage().split(" closed: ", 1)[1].rsplit(" [", 1)[0], getattr(r, "code", ""))
        for r in caplog.records
        if " closed: " in r.getMessage()
    ]


async def test_a_client_that_closes_after_goaway_is_logged_as_drained(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pushwire")
    async with memory_server(config(drain_timeout=100.0)) as ms:
        answers, leaves = await ms.connect(), await ms.connect()
        await answers.handshake()
        await leaves.handshake()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ms.server.shutdown)
            await answers.expect(F.Goaway)
            await answers.send(F.Goaway(ErrorCode.NO_ERROR, 0, 0, (), ""))
            await answers.expect_eof()
            await leaves.expect(F.Goaway)
            await leaves.aclose()
    assert sorted(closed_lines(caplog)) == [
        ("SHUTTING_DOWN server shutting down: drained (client GOAWAY)", "SHUTTING_DOWN"),
        ("SHUTTING_DOWN server shutting down: drained (peer closed)", "SHUTTING_DOWN"),
    ]


async def test_a_client_that_stays_after_goaway_is_logged_as_cut_off_at_the_drain_time(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pushwire")
    async with memory_server(config(drain_timeout=2.0)) as ms:
        peer = await ms.connect()
        await peer.handshake()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ms.server.shutdown)
            await peer.expect(F.Goaway)
            await peer.expect_eof()
    assert closed_lines(caplog) == [
        ("SHUTTING_DOWN server shutting down: drain time is over", "SHUTTING_DOWN")
    ]


# -- the faulty servers of tests/faults.py ----------------------------------------------------


async def test_the_reorder_fault_swaps_two_messages(autojump_clock: object) -> None:
    async with memory_server(config(), factories=server_options("reorder")) as ms:
        for i in range(3):
            await ms.server.publish("t", b"%d" % i)
        peer = await ms.connect()
        await peer.handshake()
        await peer.subscribe(1, "t", since=SinceKind.OLDEST)
        assert [s for s, _ in await peer.messages(3)] == [2, 1, 3]


async def test_the_skip_gap_fault_reports_recovered_instead_of_gap(autojump_clock: object) -> None:
    async with memory_server(config(history_count=2), factories=server_options("skip-gap")) as ms:
        for i in range(5):
            epoch, _ = await ms.server.publish("t", b"%d" % i)
        peer = await ms.connect()
        await peer.handshake()
        sub = await peer.subscribe(1, "t", since=SinceKind.AFTER, epoch=epoch, seq=1)
        assert (sub.outcome, sub.start_seq) == (Outcome.RECOVERED, 4)


async def test_the_ignore_credit_fault_sends_beyond_credit(autojump_clock: object) -> None:
    async with memory_server(config(), factories=server_options("ignore-credit")) as ms:
        peer = await ms.connect()
        await peer.handshake()
        await peer.subscribe(1, "t", credit=1)
        for i in range(3):
            await ms.server.publish("t", b"%d" % i)
        assert len(await peer.messages(3)) == 3


# -- errors stay on their connection ----------------------------------------------------------


@pytest.mark.spec("PW-FRAME-5", "PW-ERR-1")
async def test_a_protocol_error_closes_only_that_connection_and_is_logged_at_info(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pushwire")
    async with memory_server(config()) as ms:
        good = await ms.connect()
        await good.handshake()
        await good.subscribe(1, "t")
        bad = await ms.connect()
        await bad.handshake()
        await bad.send(b"\x00\x00\x00\x00\x7f\x00")  # unknown type, ignorable bit clear
        await bad.expect_error_and_close(ErrorCode.UNKNOWN_FRAME_TYPE)
        await ms.server.publish("t", b"still here")
        assert await good.messages(1) == [(1, b"still here")]
    records = [r for r in caplog.records if "UNKNOWN_FRAME_TYPE" in r.getMessage()]
    assert records
    assert all(r.levelno == logging.INFO for r in records)


class ExplodingBroker(MemoryBroker):
    async def publish(self, topic: str, flags: int, body: bytes) -> tuple[int, int]:
        if topic == "boom":
            raise RuntimeError("disk on fire")
        return await super().publish(topic, flags, body)


async def test_an_internal_error_closes_only_that_connection_with_a_traceback(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    from pushwire.server import Server

    caplog.set_level(logging.INFO, logger="pushwire")
    server = Server(config(), broker=ExplodingBroker())
    async with trio.open_nursery() as nursery:
        pairs = [trio.testing.memory_stream_pair() for _ in range(2)]
        for _client, server_side in pairs:
            nursery.start_soon(server.serve_stream, server_side)
        victim, other = (RawPeer(client) for client, _ in pairs)
        await victim.handshake()
        await other.handshake()
        await other.subscribe(1, "t")
        await victim.send(F.Publish(1, "boom", b""))
        await victim.expect_error_and_close(ErrorCode.INTERNAL_ERROR)
        assert (await other.publish("t", b"fine")).first_seq == 1
        assert await other.messages(1) == [(1, b"fine")]
        nursery.cancel_scope.cancel()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors
    assert errors[0].exc_info is not None


@pytest.mark.spec("PW-GOAWAY-10")
async def test_a_client_goaway_is_a_clean_close(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pushwire")
    async with memory_server(config()) as ms:
        peer = await ms.connect()
        await peer.handshake()
        await peer.subscribe(1, "t")
        await peer.send(F.Goaway(0, 0, 0, (), "bye"))
        await ms.server.publish("t", b"late")
        await peer.expect_eof()
        quiet = await ms.connect()
        await quiet.handshake()
        await quiet.send(F.Goaway(0, 0, 0, (), ""))
        await quiet.expect_eof()
    assert sorted(closed_lines(caplog)) == [
        ("NO_ERROR client GOAWAY", "NO_ERROR"),
        ("NO_ERROR client GOAWAY: bye", "NO_ERROR"),
    ]


@pytest.mark.spec("PW-SUB-19")
async def test_subscriptions_end_with_their_connection(autojump_clock: object) -> None:
    async with memory_server(config()) as ms:
        peer = await ms.connect()
        await peer.handshake()
        await peer.subscribe(1, "t")
        assert ms.server.stats().topics["t"].listeners == 1
        await peer.aclose()
        while ms.server.stats().connections:
            await trio.sleep(0.01)
        assert ms.server.stats().topics["t"].listeners == 0
