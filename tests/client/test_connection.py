"""The client against a scripted server over in-memory streams, under trio for its virtual
clock (tests/integration runs the client under asyncio and trio over real TCP)."""

from __future__ import annotations

import functools
import logging
import random
import ssl
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from scripted_server import EPOCH, Listener, run_soon, welcome

import pushwire.client as pw
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import FrameType, Outcome, SinceKind


def message(seq: int, payload: bytes = b"", topic: str = "t", epoch: int = EPOCH) -> F.Message:
    return F.Message(epoch, seq, topic, payload or str(seq).encode())


async def take(sub: pw.Subscription, n: int) -> list[pw.Message]:
    out = []
    for _ in range(n):
        out.append(await sub.__anext__())
    return out


# -- handshake and connect errors ----------------------------------------------------------------


@pytest.mark.spec("PW-GOAWAY-8", "PW-GOAWAY-9")
async def test_connect_sends_hello_with_the_options(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected(
        client_name="me", auth_token=b"secret", max_frame_size=65536, heartbeat_ms=2000
    ) as (conn, server):
        assert server.preface == b"\x89PW\n\x01\x01\x00\x00"
        assert server.hello == F.Hello(65536, 2000, "me", b"secret")
        assert conn.connected and conn.welcome is not None
        assert conn.welcome.server_name == "scripted"
    frames = await server.recv_until_eof()
    assert frames == [F.Goaway(ErrorCode.NO_ERROR, 0, 0, (), "")]  # PW-GOAWAY-8/9


async def test_handshake_rejection_raises_with_the_servers_code(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async def reject() -> None:
        server = await listener.accept()
        await server.expect(F.Hello)
        await server.send_raw(b"\x89PW\n\x01\x01\x00\x00")
        await server.send(F.Error(ErrorCode.UNAUTHENTICATED, 0, 0, "bad token"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reject)
        with pytest.raises(pw.HandshakeRejected) as info:
            async with pw.connect("h:1", open_stream=listener.open_stream):
                pytest.fail("connected")
    assert info.value.code == ErrorCode.UNAUTHENTICATED
    assert "bad token" in str(info.value)


async def test_no_common_version_is_handshake_rejected(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async def reject() -> None:
        server = await listener.accept()
        await server.expect(F.Hello)
        await server.send_raw(b"\x89PW\n\x00\x07\x00\x00")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reject)
        with pytest.raises(pw.HandshakeRejected) as info:
            async with pw.connect("h:1", open_stream=listener.open_stream):
                pass
    assert info.value.code == ErrorCode.UNSUPPORTED_VERSION


async def test_refused_first_connect_is_a_connect_error(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    listener.refuse = 1
    with pytest.raises(pw.ConnectError, match="refused"):
        async with pw.connect("h:1", open_stream=listener.open_stream):
            pass
    assert len(listener.attempts) == 1


async def test_refused_first_connect_retried_when_asked(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    listener.refuse = 3
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.accept_open)
        async with pw.connect(
            "h:1", open_stream=listener.open_stream, retry_first_connect=True
        ) as conn:
            assert conn.connected
    assert len(listener.attempts) == 4


async def test_handshake_timeout_is_a_connect_error(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        box = run_soon(nursery, listener.accept)  # accepts, never answers
        with pytest.raises(pw.ConnectError, match="timed out"):
            async with pw.connect("h:1", open_stream=listener.open_stream, connect_timeout=3):
                pass
        assert box


async def test_a_cancelled_connect_closes_the_stream_it_opened(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        box = run_soon(nursery, listener.accept)  # accepts, never answers
        with trio.move_on_after(1):
            async with pw.connect("h:1", open_stream=listener.open_stream, connect_timeout=30):
                pytest.fail("connected")
    (server,) = box
    with trio.fail_after(5):
        assert [type(f) for f in await server.recv_until_eof()] == [F.Hello]


async def test_closing_while_a_reconnect_awaits_welcome_closes_its_stream(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected(reconnect=True) as (_conn, server):
        await server.aclose()
        second = await listener.accept()  # the reconnect, never answered
        await second.expect(F.Hello)
    with trio.fail_after(5):
        assert await second.recv_until_eof() == []


async def test_real_tcp_refusal_is_a_connect_error(autojump_clock: trio.testing.MockClock) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with pytest.raises(pw.ConnectError):
        async with pw.connect(f"127.0.0.1:{port}"):
            pass


async def test_token_without_tls_to_a_remote_host_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with pytest.raises(ValueError, match="TLS"):
        async with pw.connect("example.invalid:7447", auth_token=b"t"):
            pass


async def test_application_exceptions_come_out_unwrapped(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.accept_open)
        with pytest.raises(KeyError):
            async with pw.connect("h:1", open_stream=listener.open_stream):
                raise KeyError("mine")


# -- subscriptions ------------------------------------------------------------------------------


@pytest.mark.spec("PW-FLOW-7")
async def test_messages_arrive_in_order_and_credit_is_returned_as_they_are_taken(
    listener: Listener,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with listener.connected() as (conn, server):
        sub = conn.subscribe("t", credit=4)
        request = await server.accept_subscribe()
        assert (request.since_kind, request.initial_credit) == (SinceKind.NEW, 4)
        await server.send(*(message(i) for i in range(1, 5)))
        got = await take(sub, 1)
        assert got[0] == pw.Message("t", EPOCH, 1, (), b"1")
        await take(sub, 1)  # two taken = half the window: credit goes back in one frame
        assert await server.expect(F.Credit) == F.Credit(request.sub_id, 2)
        assert [m.seq for m in await take(sub, 2)] == [3, 4]
        assert await server.expect(F.Credit) == F.Credit(request.sub_id, 2)
        assert conn.positions() == {"t": pw.TopicPosition(EPOCH, 4)}


async def test_slow_application_bounds_the_buffer_to_the_credit_window(
    listener: Listener,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with listener.connected() as (conn, server):
        sub = conn.subscribe("t", credit=8)
        await server.accept_subscribe()
        await server.send(*(message(i) for i in range(1, 9)))  # all the server may send
        await trio.sleep(1)
        assert sub.buffered == 8
        # nothing was granted back while the application took nothing
        with trio.move_on_after(5):
            frame = await server.expect(F.Credit)
            pytest.fail(f"unexpected {frame}")


async def test_a_batch_is_delivered_as_single_messages(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected() as (conn, server):
        sub = conn.subscribe("t")
        await server.accept_subscribe(head=9)
        records = (F.Record(b"a", (("k", b"v"),)), F.Record(b"b", ()))
        await server.send(F.MessageBatch(EPOCH, 10, "t", records))
        got = await take(sub, 2)
        assert [(m.seq, m.payload, m.headers) for m in got] == [
            (10, b"a", (("k", b"v"),)),
            (11, b"b", ()),
        ]


@pytest.mark.spec("PW-PUB-16")
async def test_records_of_one_batch_may_arrive_as_batches_and_single_messages(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    """A server may send a batch record that only fits alone as a MESSAGE: the client takes
    MESSAGE_BATCH 10..11, MESSAGE 12 and MESSAGE_BATCH 13 as one contiguous run."""
    async with listener.connected() as (conn, server):
        sub = conn.subscribe("t")
        await server.accept_subscribe(head=9)
        two = (F.Record(b"a", ()), F.Record(b"b", ()))
        await server.send(
            F.MessageBatch(EPOCH, 10, "t", two),
            F.Message(EPOCH, 12, "t", b"c" * 1000),
            F.MessageBatch(EPOCH, 13, "t", (F.Record(b"d", ()),)),
        )
        got = await take(sub, 4)
        assert [(m.seq, m.payload[:1]) for m in got] == [
            (10, b"a"),
            (11, b"b"),
            (12, b"c"),
            (13, b"d"),
        ]


@pytest.mark.spec("PW-PUB-13")
async def test_gap_is_raised_and_iteration_continues_after_it(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected() as (conn, server):
        sub = conn.subscribe("t")
        request = await server.accept_subscribe()
        await server.send(
            message(1),
            F.Gap(request.sub_id, EPOCH, 2, 5, ErrorCode.SLOW_CONSUMER),
            message(6),
        )
        assert (await sub.__anext__()).seq == 1
        with pytest.raises(pw.GapDetected) as info:
            await sub.__anext__()
        gap = info.value
        assert (gap.topic, gap.first, gap.last, gap.reason) == ("t", 2, 5, ErrorCode.SLOW_CONSUMER)
        assert isinstance(gap, pw.DeliveryInterrupted)
        assert (await sub.__anext__()).seq == 6


async def test_gap_outcome_of_subscribe_is_raised_first(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected() as (conn, server):
        sub = conn.subscribe("t", since=("after", EPOCH, 3))
        request = await server.expect(F.Subscribe)
        assert (request.since_kind, request.since_epoch, request.since_seq) == (1, EPOCH, 3)
        gap = (4, 7, ErrorCode.HISTORY_EXPIRED)
        await server.send(F.Subscribed(request.sub_id, Outcome.GAP, EPOCH, 8, 9, *gap))
        await server.send(message(8), message(9))
        with pytest.raises(pw.GapDetected) as info:
            await sub.__anext__()
        assert (info.value.first, info.value.last) == (4, 7)
        assert [m.seq for m in await take(sub, 2)] == [8, 9]


async def test_epoch_change_on_subscribe_is_raised(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected() as (conn, server):
        sub = conn.subscribe("t", since=pw.TopicPosition(111, 50))
        request = await server.expect(F.Subscribe)
        await server.send(F.Subscribed(request.sub_id, Outcome.EPOCH_CHANGED, 222, 3, 4))
        await server.send(message(3, epoch=222))
        with pytest.raises(pw.EpochChanged) as info:
            await sub.__anext__()
        assert (info.value.old_epoch, info.value.new_epoch, info.value.start_seq) == (111, 222, 3)
        assert (await sub.__anext__()).position == pw.TopicPosition(222, 3)


async def test_history_reset_while_subscribed_is_raised_as_epoch_change(
    listener: Listener,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with listener.connected() as (conn, server):
        sub = conn.subscribe("t")
        await server.accept_subscribe(head=4)
        await server.send(message(5), message(1, epoch=999))
        assert (await sub.__anext__()).seq == 5
        with pytest.raises(pw.EpochChanged) as info:
            await sub.__anext__()
        assert (info.value.old_epoch, info.value.new_epoch, info.value.start_seq) == (
            EPOCH,
            999,
            1,
        )
        assert (await sub.__anext__()).position == pw.TopicPosition(999, 1)


async def test_refused_subscription_raises_request_error_then_ends(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected() as (conn, server):
        sub = conn.subscribe("secret")
        request = await server.expect(F.Subscribe)
        await server.send(F.Error(ErrorCode.FORBIDDEN, FrameType.SUBSCRIBE, request.sub_id, "no"))
        with pytest.raises(pw.RequestError) as info:
            await sub.__anext__()
        assert info.value.code == ErrorCode.FORBIDDEN
        with pytest.raises(pw.RequestError):
            await sub.__anext__()
        conn.subscribe("secret")  # the topic may be tried again


async def test_invalid_topic_and_since_are_refused_before_sending(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected() as (conn, _server):
        with pytest.raises(pw.RequestError) as info:
            conn.subscribe("a//b")
        assert info.value.code == ErrorCode.INVALID_TOPIC
        with pytest.raises(ValueError):
            conn.subscribe("t", since="yesterday")  # type: ignore[arg-type]
        conn.subscribe("t")
        with pytest.raises(pw.RequestError) as info:
            conn.subscribe("t")
        assert info.value.code == ErrorCode.ALREADY_SUBSCRIBED


async def test_aclose_unsubscribes_and_ends_the_iteration(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected() as (conn, server):
        async with conn.subscribe("t") as sub:
            request = await server.accept_subscribe()
        assert await server.expect(F.Unsubscribe) == F.Unsubscribe(request.sub_id)
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()
        assert conn.positions() == {}


# -- at-least-once ------------------------------------------------------------------------------


@pytest.mark.spec("PW-ACK-6", "PW-ACK-7")
async def test_acks_cover_only_messages_the_application_moved_past(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected() as (conn, server):
        sub = conn.subscribe("t", at_least_once=True, credit=100)
        request = await server.accept_subscribe()
        assert request.at_least_once
        await server.send(message(1), message(2), message(3))
        await take(sub, 3)  # 3 is being processed; 1 and 2 are done
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sub.__anext__)  # asks for the next: 3 is done, then idles
            assert await server.expect(F.Ack) == F.Ack(request.sub_id, 3)
            await server.send(message(4))


async def test_at_least_once_resumes_after_the_last_processed_message(
    listener: Listener,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with listener.connected(reconnect=True) as (conn, server):
        sub = conn.subscribe("t", at_least_once=True, credit=10)
        await server.accept_subscribe()
        await server.send(message(1), message(2), message(3))
        await take(sub, 2)  # 1 processed, 2 in the application's hands, 3 buffered
        await server.aclose()
        server = await listener.accept_open()
        request = await server.expect(F.Subscribe)
        assert (request.since_kind, request.since_epoch, request.since_seq) == (1, EPOCH, 1)
        assert request.initial_credit == 10  # the buffer was dropped: 2 and 3 come again
        await server.send(F.Subscribed(request.sub_id, Outcome.RECOVERED, EPOCH, 2, 3))
        await server.send(message(2), message(3))
        assert [m.seq for m in await take(sub, 2)] == [2, 3]


# -- reconnect and resume -----------------------------------------------------------------------


async def test_reconnect_resumes_after_the_last_received_message_without_duplicates(
    listener: Listener,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with listener.connected(backoff_initial=0.5, backoff_max=4) as (conn, server):
        sub = conn.subscribe("t", credit=10)
        await server.accept_subscribe(head=0)
        await server.send(message(1), message(2), message(3))
        assert (await sub.__anext__()).seq == 1
        await trio.sleep(0.1)
        lost_at = trio.current_time()
        await server.aclose()
        server = await listener.accept_open()
        assert trio.current_time() - lost_at <= 0.5  # full jitter below the first ceiling
        request = await server.expect(F.Subscribe)
        assert (request.since_kind, request.since_epoch, request.since_seq) == (1, EPOCH, 3)
        assert request.initial_credit == 10 - 2  # 2 and 3 are still buffered
        await server.send(F.Subscribed(request.sub_id, Outcome.RECOVERED, EPOCH, 4, 5))
        await server.send(message(4), message(5))
        assert [m.seq for m in await take(sub, 4)] == [2, 3, 4, 5]
        assert conn.connections_made == 2


async def test_backoff_grows_while_the_server_stays_away(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected(backoff_initial=1, backoff_max=8, rng=random.Random(7)) as (
        conn,
        server,
    ):
        conn.subscribe("t")
        await server.accept_subscribe()
        listener.refuse = 6
        await server.aclose()
        server = await listener.accept_open()
        await server.accept_subscribe()
    waits = [b - a for a, b in zip(listener.attempts[1:], listener.attempts[2:], strict=False)]
    ceilings = [min(8, 2**n) for n in range(1, len(waits) + 1)]
    assert len(waits) == 6
    assert all(0 <= w <= c + 1e-9 for w, c in zip(waits, ceilings, strict=True)), waits


@pytest.mark.spec("PW-GOAWAY-7", "PW-GOAWAY-12")
async def test_goaway_reconnects_after_the_hint_and_resumes(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected(rng=random.Random(1)) as (conn, server):
        sub = conn.subscribe("t", at_least_once=True)
        request = await server.accept_subscribe()
        await server.send(message(1), message(2))
        await take(sub, 2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sub.__anext__)  # 2 is processed; the iterator idles
            assert await server.expect(F.Ack) == F.Ack(request.sub_id, 2)
            await trio.sleep(0.01)
            await server.send(
                F.Goaway(
                    ErrorCode.SHUTTING_DOWN, 3000, 1000, (F.Position(request.sub_id, EPOCH, 2),), ""
                )
            )
            t0 = trio.current_time()
            frames = await server.recv_until_eof()
            assert frames[-1] == F.Goaway(ErrorCode.NO_ERROR, 0, 0, (), "")
            server = await listener.accept_open()
            waited = trio.current_time() - t0
            assert 3.0 <= waited <= 4.0 + 1e-6  # after + uniform(0, jitter) (PW-GOAWAY-7)
            resumed = await server.expect(F.Subscribe)
            assert (resumed.since_epoch, resumed.since_seq) == (EPOCH, 2)
            await server.send(F.Subscribed(resumed.sub_id, Outcome.RECOVERED, EPOCH, 3, 3))
            await server.send(message(3))


@pytest.mark.spec("PW-GOAWAY-12", "PW-CLIENT-4")
async def test_after_goaway_the_client_acknowledges_what_came_before_it_then_closes(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    """Messages and GOAWAY in one write: the application processes the messages after the
    GOAWAY was read; the connection stays while it makes progress, until they are
    acknowledged, then closes (a stalled application does not hold it: see
    tests/integration/test_client_goaway.py)."""
    async with listener.connected(rng=random.Random(1)) as (conn, server):
        sub = conn.subscribe("t", at_least_once=True)
        request = await server.accept_subscribe()
        goaway = F.Goaway(ErrorCode.SHUTTING_DOWN, 3000, 0, (), "")
        await server.send(message(1), message(2), goaway)

        async def slow_application() -> None:
            for _ in range(3):
                await sub.__anext__()
                await trio.sleep(0.05)  # working through a burst

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_application)
            frames = await server.recv_until_eof()
            nursery.cancel_scope.cancel()
        acks = [f for f in frames if isinstance(f, F.Ack)]
        assert acks and acks[-1] == F.Ack(request.sub_id, 2), frames
        assert frames[-1] == F.Goaway(ErrorCode.NO_ERROR, 0, 0, (), "")


async def test_publish_waits_for_the_puback(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected() as (conn, server), trio.open_nursery() as nursery:
        box = run_soon(nursery, conn.publish, "t", b"hello", {"k": "v"})
        publish = await server.expect(F.Publish)
        assert (publish.topic, publish.payload, publish.headers) == ("t", b"hello", (("k", b"v"),))
        await server.send(F.Puback(publish.request_id, EPOCH, 42, 1))
    assert box == [42]


async def test_publish_batch_returns_the_first_sequence(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected() as (conn, server), trio.open_nursery() as nursery:
        box = run_soon(nursery, conn.publish_batch, "t", [b"a", (b"b", [("x", b"y")])])
        batch = await server.expect(F.PublishBatch)
        assert [r.payload for r in batch.records] == [b"a", b"b"]
        assert batch.records[1].headers == (("x", b"y"),)
        await server.send(F.Puback(batch.request_id, EPOCH, 7, 2))
    assert box == [7]


async def test_publish_refused_by_the_server_raises(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected() as (conn, server):

        async def serve() -> None:
            publish = await server.expect(F.Publish)
            err = F.Error(ErrorCode.FORBIDDEN, FrameType.PUBLISH, publish.request_id, "nope")
            await server.send(err)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            with pytest.raises(pw.RequestError) as info:
                await conn.publish("t", b"")
        assert info.value.code == ErrorCode.FORBIDDEN


async def test_too_large_publish_is_refused_locally(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected(welcome_frame=welcome(max_frame_size=16384)) as (conn, _s):
        with pytest.raises(pw.RequestError) as info:
            await conn.publish("t", b"x" * 20000)
        assert info.value.code == ErrorCode.FRAME_TOO_LARGE


async def test_connection_drop_before_puback_is_connection_lost(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected() as (conn, server):

        async def drop() -> None:
            await server.expect(F.Publish)
            await server.aclose()
            await listener.accept_open()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drop)
            with pytest.raises(pw.ConnectionLost, match="may or may not"):
                await conn.publish("t", b"")


async def test_publish_refused_with_going_away_is_sent_again_on_the_next_connection(
    listener: Listener,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with listener.connected() as (conn, server), trio.open_nursery() as nursery:
        box = run_soon(nursery, conn.publish, "t", b"p")
        first = await server.expect(F.Publish)
        await server.send(
            F.Goaway(ErrorCode.SHUTTING_DOWN, 0, 0, (), ""),
            F.Error(ErrorCode.GOING_AWAY, FrameType.PUBLISH, first.request_id, ""),
        )
        await server.recv_until_eof()
        server = await listener.accept_open()
        again = await server.expect(F.Publish)
        assert again.payload == b"p"
        await server.send(F.Puback(again.request_id, EPOCH, 5, 1))
    assert box == [5]


async def test_publish_many_resends_from_the_first_going_away_on_the_next_connection(
    listener: Listener,
    autojump_clock: trio.testing.MockClock,
) -> None:
    acked: list[int] = []
    payloads = [b"%d" % i for i in range(6)]
    async with listener.connected() as (conn, server), trio.open_nursery() as nursery:
        box = run_soon(nursery, conn.publish_many, "t", payloads, acked.append)
        sent = [await server.expect(F.Publish) for _ in payloads]
        assert [p.payload for p in sent] == payloads
        await server.send(
            F.Puback(sent[0].request_id, EPOCH, 1, 1),
            F.Puback(sent[1].request_id, EPOCH, 2, 1),
            F.Goaway(ErrorCode.SHUTTING_DOWN, 0, 0, (), ""),
            *(F.Error(ErrorCode.GOING_AWAY, FrameType.PUBLISH, p.request_id, "") for p in sent[2:]),
        )
        await server.recv_until_eof()
        server = await listener.accept_open()
        again = [await server.expect(F.Publish) for _ in payloads[2:]]
        assert [p.payload for p in again] == payloads[2:]
        await server.send(*(F.Puback(p.request_id, EPOCH, 3 + i, 1) for i, p in enumerate(again)))
    assert box == [6]
    assert acked == [1, 2, 3, 4, 5, 6]


async def test_publish_many_resends_refused_publishes_before_newer_ones(
    listener: Listener,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """GOAWAY arrives while the window has room: the next payloads wait for the next
    connection, and go out there only after the ones the old one refused."""
    acked: list[int] = []
    payloads = [b"%d" % i for i in range(6)]
    async with listener.connected() as (conn, server), trio.open_nursery() as nursery:
        box = run_soon(
            nursery, functools.partial(conn.publish_many, window=4), "t", payloads, acked.append
        )
        sent = [await server.expect(F.Publish) for _ in range(4)]
        await server.send(
            F.Puback(sent[0].request_id, EPOCH, 1, 1),
            F.Puback(sent[1].request_id, EPOCH, 2, 1),
            F.Goaway(ErrorCode.SHUTTING_DOWN, 0, 0, (), ""),
        )
        await trio.sleep(0.01)  # publish_many has room again and waits for a connection
        await server.send(
            *(F.Error(ErrorCode.GOING_AWAY, FrameType.PUBLISH, p.request_id, "") for p in sent[2:])
        )
        rest = await server.recv_until_eof()
        assert not any(isinstance(f, F.Publish) for f in rest)
        server = await listener.accept_open()
        again = [await server.expect(F.Publish) for _ in range(4)]
        assert [p.payload for p in again] == payloads[2:]
        await server.send(*(F.Puback(p.request_id, EPOCH, 3 + i, 1) for i, p in enumerate(again)))
    assert box == [6]
    assert acked == [1, 2, 3, 4, 5, 6]


async def test_publish_many_sends_what_an_async_source_has_without_waiting_for_more(
    listener: Listener,
    autojump_clock: trio.testing.MockClock,
) -> None:
    acked: list[int] = []
    received = trio.Event()

    async def lines() -> AsyncIterator[bytes]:
        yield b"first"
        await received.wait()  # the source has nothing more until the first is out
        yield b"second"

    async with listener.connected() as (conn, server), trio.open_nursery() as nursery:
        box = run_soon(nursery, conn.publish_many, "t", lines(), acked.append)
        first = await server.expect(F.Publish)
        received.set()
        second = await server.expect(F.Publish)
        assert (first.payload, second.payload) == (b"first", b"second")
        await server.send(F.Puback(first.request_id, EPOCH, 1, 1))
        await server.send(F.Puback(second.request_id, EPOCH, 2, 1))
    assert box == [2] and acked == [1, 2]


async def test_publish_many_refused_mid_window_raises_after_the_acks_before_it(
    listener: Listener,
    autojump_clock: trio.testing.MockClock,
) -> None:
    acked: list[int] = []
    async with listener.connected() as (conn, server), trio.open_nursery() as nursery:

        async def publish() -> None:
            with pytest.raises(pw.RequestError) as info:
                await conn.publish_many("t", [b"a", b"b", b"c"], acked.append)
            assert info.value.code == ErrorCode.RATE_LIMITED

        nursery.start_soon(publish)
        a, b, c = [await server.expect(F.Publish) for _ in range(3)]
        await server.send(
            F.Puback(a.request_id, EPOCH, 1, 1),
            F.Error(ErrorCode.RATE_LIMITED, FrameType.PUBLISH, b.request_id, "slow"),
            F.Puback(c.request_id, EPOCH, 2, 1),
        )
    assert acked == [1]


async def test_publish_many_sends_those_before_a_payload_too_large_then_raises(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    acked: list[int] = []
    welcome_frame = welcome(max_frame_size=16384)
    async with listener.connected(welcome_frame=welcome_frame) as (conn, server):
        with pytest.raises(pw.RequestError) as info:
            await conn.publish_many("t", [b"1", b"2", b"x" * 20000, b"4"], acked.append)
        assert info.value.code == ErrorCode.FRAME_TOO_LARGE
        assert [(await server.expect(F.Publish)).payload for _ in range(2)] == [b"1", b"2"]


async def test_publish_many_connection_lost_with_publishes_unanswered(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    acked: list[int] = []
    async with listener.connected() as (conn, server):

        async def drop() -> None:
            first = await server.expect(F.Publish)
            await server.send(F.Puback(first.request_id, EPOCH, 1, 1))
            await server.expect(F.Publish)
            await server.aclose()
            await listener.accept_open()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drop)
            with pytest.raises(pw.ConnectionLost, match="may or may not"):
                await conn.publish_many("t", [b"1", b"2"], acked.append)
    assert acked == [1]


async def test_publish_while_disconnected_waits_for_the_next_connection(
    listener: Listener,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with listener.connected() as (conn, server):
        listener.refuse = 2
        await server.aclose()
        await trio.sleep(0.01)
        assert not conn.connected
        async with trio.open_nursery() as nursery:
            box = run_soon(nursery, conn.publish, "t", b"later")
            server = await listener.accept_open()
            publish = await server.expect(F.Publish)
            await server.send(F.Puback(publish.request_id, EPOCH, 1, 1))
        assert box == [1]


@pytest.mark.spec("PW-CLIENT-11")
async def test_an_application_slow_with_one_message_still_acknowledges_the_earlier_ones(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    """Messages wait in the buffer, so the iterator is never idle and the window is far
    from half used: the heartbeat timer's wake acknowledges what was processed."""
    async with listener.connected(welcome_frame=welcome(heartbeat_ms=1000)) as (conn, server):
        sub = conn.subscribe("t", at_least_once=True, credit=100)
        request = await server.accept_subscribe()
        await server.send(message(1), message(2), message(3))
        await take(sub, 2)  # 1 is done; the application now holds 2 for a long time
        started = trio.current_time()
        assert await server.expect(F.Ack) == F.Ack(request.sub_id, 1)
        assert trio.current_time() - started <= 1.0


# -- heartbeats, failures, terminal errors ------------------------------------------------------


@pytest.mark.spec("PW-HB-1", "PW-HB-2")
async def test_client_pings_when_idle_and_answers_pings(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected(welcome_frame=welcome(heartbeat_ms=1000)) as (_conn, server):
        t0 = trio.current_time()
        await server.send(F.Ping(77))
        assert await server.recv() == F.Pong(77)
        ping = await server.recv()
        assert isinstance(ping, F.Ping)
        assert trio.current_time() - t0 == pytest.approx(1.0)


@pytest.mark.spec("PW-HB-3")
async def test_silent_server_is_a_heartbeat_timeout_then_a_reconnect(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected(welcome_frame=welcome(heartbeat_ms=1000)) as (conn, server):
        t0 = trio.current_time()
        frames = await server.recv_until_eof()
        assert trio.current_time() - t0 == pytest.approx(3.0)
        assert isinstance(frames[-1], F.Error)
        assert frames[-1].code == ErrorCode.HEARTBEAT_TIMEOUT
        await listener.accept_open()
        await trio.sleep(0.01)
        assert conn.connected and conn.connections_made == 2


@pytest.mark.spec("PW-ERR-10")
async def test_protocol_violation_is_terminal(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected() as (conn, server):
        sub = conn.subscribe("t")
        await server.accept_subscribe()
        await server.send(message(1), message(3))  # a hole without GAP
        frames = await server.recv_until_eof()
        assert isinstance(frames[-1], F.Error)
        assert frames[-1].code == ErrorCode.PROTOCOL_ERROR
        assert (await sub.__anext__()).seq == 1  # what was good is still delivered
        with pytest.raises(pw.ConnectionLost) as info:
            await sub.__anext__()
        assert info.value.code == ErrorCode.PROTOCOL_ERROR
        with pytest.raises(pw.ConnectionLost):
            await conn.publish("t", b"")
    assert len(listener.attempts) == 1  # no reconnect (PW-ERR-10)


async def test_without_reconnect_a_drop_ends_the_iterators(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected(reconnect=False) as (conn, server):
        sub = conn.subscribe("t")
        await server.accept_subscribe()
        await server.aclose()
        with pytest.raises(pw.ConnectionLost):
            await sub.__anext__()
    assert len(listener.attempts) == 1


async def test_rejection_on_reconnect_is_raised_to_the_iterators(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected() as (conn, server):
        sub = conn.subscribe("t")
        await server.accept_subscribe()
        await server.aclose()
        server = await listener.accept()
        await server.expect(F.Hello)
        await server.send_raw(b"\x89PW\n\x01\x01\x00\x00")
        await server.send(F.Error(ErrorCode.UNAUTHENTICATED, 0, 0, "revoked"))
        with pytest.raises(pw.HandshakeRejected):
            await sub.__anext__()


async def test_temporary_server_error_reconnects(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected() as (conn, server):
        await server.send(F.Error(ErrorCode.SLOW_CONSUMER, 0, 0, "slow"))
        await server.recv_until_eof()
        await listener.accept_open()
        await trio.sleep(0.01)
        assert conn.connected


# -- pure helpers -------------------------------------------------------------------------------


@pytest.mark.spec("PW-TRANSPORT-4", "PW-TRANSPORT-5")
def test_tls_verifies_the_server_and_refuses_old_versions() -> None:
    context = pw.tls_context(True)
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert pw.tls_context(False) is None
    mine = ssl.create_default_context()
    assert pw.tls_context(mine) is mine


@pytest.mark.spec("PW-SEC-10")
async def test_the_auth_token_is_never_logged(
    listener: Listener, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.DEBUG, logger="pushwire")
    async with listener.connected(auth_token=b"sekrit-token-123") as (conn, server):
        assert server.hello is not None and server.hello.auth_token == b"sekrit-token-123"
        await server.aclose()  # a reconnect logs as well
        await listener.accept_open()
        await conn.wait_connected()
    assert "sekrit" not in caplog.text
    assert caplog.text  # something was logged


def test_backoff_waits_in_the_upper_half_of_a_growing_ceiling() -> None:
    backoff = pw.Backoff(0.1, 1.0, random.Random(3))
    ceilings = []
    for _ in range(8):
        ceilings.append(backoff.ceiling())
        assert ceilings[-1] / 2 <= backoff.next_delay() <= ceilings[-1]
    assert ceilings == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    backoff.reset()
    assert backoff.ceiling() == 0.1
    with pytest.raises(ValueError):
        pw.Backoff(0, 1, random.Random())


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("example.org:9000", ("example.org", 9000)),
        ("example.org", ("example.org", 7447)),
        ("[::1]:80", ("::1", 80)),
        ("[::1]", ("::1", 7447)),
        ("10.0.0.1:1", ("10.0.0.1", 1)),
    ],
)
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    assert pw.parse_address(address) == expected


@pytest.mark.parametrize("address", [":80", "h:x", "h:0", "h:70000"])
def test_parse_address_rejects_nonsense(address: str) -> None:
    with pytest.raises(ValueError):
        pw.parse_address(address)


def test_parse_since() -> None:
    assert pw.parse_since(None).kind == SinceKind.NEW
    assert pw.parse_since("oldest").kind == SinceKind.OLDEST
    assert pw.parse_since(("last", 5)).count == 5
    after = pw.parse_since(pw.TopicPosition(3, 4))
    assert (after.kind, after.epoch, after.seq) == (SinceKind.AFTER, 3, 4)
    assert pw.parse_since(("after", 3, 4)) == after
    with pytest.raises(ValueError):
        pw.parse_since(("before", 1))  # type: ignore[arg-type]


# -- one loop: interruptions as values ----------------------------------------------------------


async def test_items_give_gaps_and_epoch_changes_as_values_in_one_loop(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected() as (conn, server):
        sub = conn.subscribe("t")
        request = await server.accept_subscribe()
        await server.send(
            message(1),
            F.Gap(request.sub_id, EPOCH, 2, 5, ErrorCode.SLOW_CONSUMER),
            message(6),
            message(1, epoch=999),
        )
        got: list[pw.Item] = []
        positions = []
        async for item in sub.items():
            got.append(item)
            positions.append(sub.position())
            if len(got) == 5:
                break
    assert got == [
        pw.Message("t", EPOCH, 1, (), b"1"),
        pw.Gap("t", EPOCH, 2, 5, ErrorCode.SLOW_CONSUMER),
        pw.Message("t", EPOCH, 6, (), b"6"),
        pw.EpochChange("t", EPOCH, 999, 1),
        pw.Message("t", 999, 1, (), b"1"),
    ]
    assert positions == [
        pw.TopicPosition(EPOCH, 1),
        pw.TopicPosition(EPOCH, 5),  # the gap counts as handed over
        pw.TopicPosition(EPOCH, 6),
        pw.TopicPosition(999, 0),
        pw.TopicPosition(999, 1),
    ]


async def test_items_and_the_strict_form_read_the_same_stream(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected() as (conn, server):
        sub = conn.subscribe("t", since=("after", EPOCH, 3))
        request = await server.expect(F.Subscribe)
        gap = (4, 7, ErrorCode.HISTORY_EXPIRED)
        await server.send(F.Subscribed(request.sub_id, Outcome.GAP, EPOCH, 8, 9, *gap))
        await server.send(message(8), F.Gap(request.sub_id, EPOCH, 9, 9, 0x7777), message(10))
        items = sub.items()
        assert await items.__anext__() == pw.Gap("t", EPOCH, 4, 7, ErrorCode.HISTORY_EXPIRED)
        assert (await sub.__anext__()).seq == 8
        with pytest.raises(pw.GapDetected) as info:
            await sub.__anext__()
        assert (info.value.first, info.value.last, info.value.reason) == (9, 9, 0x7777)
        assert await items.__anext__() == pw.Message("t", EPOCH, 10, (), b"10")


async def test_items_end_and_fail_as_the_strict_form_does(
    listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    async with listener.connected() as (conn, server):
        refused = conn.subscribe("secret")
        request = await server.expect(F.Subscribe)
        await server.send(F.Error(ErrorCode.FORBIDDEN, FrameType.SUBSCRIBE, request.sub_id, "no"))
        with pytest.raises(pw.RequestError):
            async for _ in refused.items():
                pytest.fail("an item of a refused subscription")
        async with conn.subscribe("t") as sub:
            await server.accept_subscribe()
        assert [item async for item in sub.items()] == []  # closed: the loop ends
