"""Flow control, memory bounds and fan-out over real TCP on 127.0.0.1.

A subscriber that grants no credit, or that stops reading its socket, must cost the server
no more than its bounded outbound queue, and must not slow down the publisher or the other
subscribers; every subscriber gets the same bytes object, built once.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
import trio
from faults import wrapping_sessions
from integration.server_peer import RawPeer

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import HEADER_SIZE, MAGIC, PREFACE_SIZE, FrameType, SinceKind
from pushwire.server import Server, ServerConfig, open_server
from pushwire.server.broker import message_body
from pushwire.server.session import Session

TIMEOUT = 30


def config(**kw: object) -> ServerConfig:
    base: dict[str, object] = {"port": 0, "history_count": 100_000, "history_bytes": 256 << 20}
    base.update(kw)
    return ServerConfig(**base)  # type: ignore[arg-type]


@pytest.mark.spec("PW-FLOW-1", "PW-FLOW-2", "PW-SLOW-1")
async def test_a_subscriber_without_credit_gets_nothing_and_costs_nothing() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_server(config()) as server:
            stalled = await RawPeer.connect(server.port)
            await stalled.handshake()
            await stalled.subscribe(1, "t", credit=2)
            fast = await RawPeer.connect(server.port)
            await fast.handshake()
            await fast.subscribe(1, "t", credit=1_000_000)
            payload = b"x" * 1000
            n = 2000
            async with trio.open_nursery() as nursery:

                async def publish() -> None:
                    for _ in range(n):
                        await server.publish("t", payload)

                nursery.start_soon(publish)
                got = await fast.messages(n)
            assert [s for s, _ in got] == list(range(1, n + 1))
            assert [s for s, _ in await stalled.messages(2)] == [1, 2]
            with trio.move_on_after(0.2):
                frame = await stalled.recv_data()
                raise AssertionError(f"beyond credit: {frame!r}")
            stats = server.stats()
            stalled_session = next(s for s in stats.sessions if s.subscriptions[1].credit == 0)
            assert stalled_session.queued_bytes == 0
            assert stalled_session.subscriptions[1].next_seq == 3  # lagging in the history
            assert stalled_session.max_queued_bytes < 4096  # handshake and two messages
            await stalled.aclose()
            await fast.aclose()


def publish_without_waiting(server: Server, topic: str, payload: bytes) -> int:
    """Publish through the server's broker and prove that the call never suspended, so
    that it cannot have waited for any subscriber. Returns the message's sequence number."""
    flags, body = message_body(topic, payload, None)
    call = server.broker.publish(topic, flags, body)
    try:
        call.send(None)
    except StopIteration as done:
        return int(done.value[1])
    call.close()
    raise AssertionError("publish() suspended: it waited for something")


async def connect_with_small_buffers(server: Server) -> RawPeer:
    """A peer whose connection holds little in the kernel at either end, so that once it
    stops reading, the server's writer for it blocks after a few frames on any machine
    (loopback buffers otherwise grow to megabytes)."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # before connect: the window
    await sock.connect(("127.0.0.1", server.port))
    peer = RawPeer(trio.SocketStream(sock))
    welcome = await peer.handshake()
    stream = server.sessions[welcome.connection_id].stream
    stream = getattr(stream, "wrapped", stream)  # under a stream that records the writes
    assert isinstance(stream, trio.SocketStream)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    return peer


def frame_types(data: bytes | memoryview) -> list[int]:
    """The types of the frames in one write of a session (after the server preface)."""
    at = PREFACE_SIZE if bytes(data[: len(MAGIC)]) == MAGIC else 0
    types = []
    while at < len(data):
        header = codec.decode_header(data[at:])
        types.append(header.type)
        at += HEADER_SIZE + header.length
    return types


def recording_writes(writes: list[tuple[int, bytes]]) -> type[Session]:
    """A session factory that appends (connection id, bytes) to ``writes`` for every
    send_all, in the order the writers make them."""

    def transform_for(connection_id: int) -> Callable[[bytes], bytes]:
        def record(data: bytes) -> bytes:
            writes.append((connection_id, data))
            return data

        return record

    return wrapping_sessions(transform_for)


@pytest.mark.spec("PW-LIMIT-3", "PW-SLOW-1")
async def test_a_subscriber_that_stops_reading_costs_at_most_its_outbound_queue() -> None:
    budget = 64 * 1024
    payload = b"y" * 10_000
    n = 3000  # 30 MB, far beyond what the stuck connection's buffers hold
    #: (connection id, bytes) for each send_all, in the order the writers made them
    writes: list[tuple[int, bytes]] = []
    session_factory = recording_writes(writes)
    with trio.fail_after(TIMEOUT):
        async with open_server(
            config(outbound_queue_bytes=budget), session_factory=session_factory
        ) as server:
            stuck = await connect_with_small_buffers(server)
            await stuck.subscribe(1, "t", credit=1_000_000)
            fast = await RawPeer.connect(server.port)
            await fast.handshake()
            await fast.subscribe(1, "t", credit=1_000_000)
            async with trio.open_nursery() as nursery:

                async def publish() -> None:
                    for seq in range(1, n + 1):
                        assert publish_without_waiting(server, "t", payload) == seq
                        await trio.lowlevel.checkpoint()  # let the sessions run

                nursery.start_soon(publish)
                got = await fast.messages(n)
            # the fast reader gets every message, in order ...
            assert [s for s, _ in got] == list(range(1, n + 1))
            assert stuck.welcome is not None and fast.welcome is not None
            stuck_id, fast_id = stuck.welcome.connection_id, fast.welcome.connection_id
            stats = server.stats()
            stuck_session = stats.session(stuck_id)
            # ... while the stuck one lags in the history, its writer blocked in send_all
            # (what it holds in flight counts as queued) ...
            assert stuck_session.subscriptions[1].next_seq < n
            assert stuck_session.queued_bytes > 0
            # ... since a point after which the fast reader was sent nearly everything: its
            # writer never waited for the stuck one
            sends = [(cid, frame_types(data).count(FrameType.MESSAGE)) for cid, data in writes]
            last_stuck_send = max(i for i, (cid, _) in enumerate(sends) if cid == stuck_id)
            sent_to_stuck = sum(k for cid, k in sends if cid == stuck_id)
            fast_after = sum(k for cid, k in sends[last_stuck_send + 1 :] if cid == fast_id)
            assert sent_to_stuck < n // 10
            assert fast_after >= n * 9 // 10, (sent_to_stuck, fast_after)
            # the bound: one round of pulled pushes (the budget) plus the frame that crossed it
            assert stuck_session.max_queued_bytes <= budget + len(payload) + 64
            # and once it reads again it gets everything, in order
            assert [s for s, _ in await stuck.messages(n)] == list(range(1, n + 1))
            await stuck.aclose()
            await fast.aclose()


async def work_to_deliver(n: int, payload: bytes, *, beside_a_stuck_subscriber: bool) -> float:
    """CPU seconds this thread spends publishing ``n`` messages and delivering them to a
    reader. The server, the publisher and the peers all run on this thread (loopback TCP
    included), so this is all the work there is, and unlike wall time the machine's other
    load hardly changes it."""
    async with open_server(config(outbound_queue_bytes=64 * 1024)) as server:
        if beside_a_stuck_subscriber:
            stuck = await connect_with_small_buffers(server)
            await stuck.subscribe(1, "t", credit=1_000_000)
        fast = await RawPeer.connect(server.port)
        await fast.handshake()
        await fast.subscribe(1, "t", credit=1_000_000)
        started = time.thread_time()
        async with trio.open_nursery() as nursery:

            async def publish() -> None:
                for _ in range(n):
                    publish_without_waiting(server, "t", payload)
                    await trio.lowlevel.checkpoint()

            nursery.start_soon(publish)
            got = await fast.messages(n)
        spent = time.thread_time() - started
        assert len(got) == n
        if beside_a_stuck_subscriber:
            assert stuck.welcome is not None
            # it was stuck indeed: its writer is still blocked in send_all
            assert server.stats().session(stuck.welcome.connection_id).queued_bytes > 0
            await stuck.aclose()
        await fast.aclose()
    return spent


@pytest.mark.slow
@pytest.mark.spec("PW-SLOW-1")
async def test_a_stuck_subscriber_adds_next_to_nothing_to_the_work_for_the_others() -> None:
    """Best of three runs each, alternating, so that a burst of load cannot decide it."""
    alone: list[float] = []
    beside: list[float] = []
    with trio.fail_after(TIMEOUT):
        for _ in range(3):
            alone.append(await work_to_deliver(2000, b"w" * 1000, beside_a_stuck_subscriber=False))
            beside.append(await work_to_deliver(2000, b"w" * 1000, beside_a_stuck_subscriber=True))
    assert min(beside) < 3 * min(alone), (alone, beside)


@pytest.mark.spec("PW-PUB-8", "PW-PUB-9")
async def test_every_subscriber_is_sent_the_same_memory() -> None:
    writes: list[tuple[int, bytes]] = []
    with trio.fail_after(TIMEOUT):
        async with open_server(config(), session_factory=recording_writes(writes)) as server:
            peers = []
            for _ in range(3):
                peer = await RawPeer.connect(server.port)
                await peer.handshake()
                await peer.subscribe(1, "fan/out")
                peers.append(peer)
            await server.publish("fan/out", b"once", headers={"k": b"v"})
            for peer in peers:
                frame = await peer.recv_data()
                assert frame == F.Message(frame.epoch, 1, "fan/out", b"once", (("k", b"v"),))  # type: ignore[union-attr]
            pushes = [data for _, data in writes if frame_types(data) == [FrameType.MESSAGE]]
            assert len(pushes) == 3
            # slices of one segment of the topic's log, not copies
            assert all(isinstance(p, memoryview) for p in pushes)
            views = [p for p in pushes if isinstance(p, memoryview)]
            assert views[0].obj is views[1].obj is views[2].obj
            assert views[0] == views[1] == views[2]
            assert server.stats().topics["fan/out"].frames_encoded == 1
            for peer in peers:
                await peer.aclose()


@pytest.mark.spec("PW-PUB-7")
async def test_a_publish_is_forwarded_byte_for_byte() -> None:
    headers = (("b", b"2"), ("a", b"1"), ("b", b"\x00\xff"))
    with trio.fail_after(TIMEOUT):
        async with open_server(config()) as server:
            sub = await RawPeer.connect(server.port)
            await sub.handshake()
            await sub.subscribe(1, "t")
            pub = await RawPeer.connect(server.port)
            await pub.handshake()
            ack = await pub.publish("t", b"\x00payload\xff", headers=headers, request_id=77)
            assert (ack.request_id, ack.first_seq, ack.count) == (77, 1, 1)
            await pub.send(
                F.PublishBatch(78, "t", (F.Record(b"r1", ()), F.Record(b"r2", (("h", b""),))))
            )
            batch_ack, _ = await pub.recv_until(F.Puback)
            assert (batch_ack.first_seq, batch_ack.count) == (2, 2)  # type: ignore[union-attr]
            message = await sub.recv_data()
            assert message == F.Message(ack.epoch, 1, "t", b"\x00payload\xff", headers)
            batch = await sub.recv_data()
            assert batch == F.MessageBatch(
                ack.epoch, 2, "t", (F.Record(b"r1", ()), F.Record(b"r2", (("h", b""),)))
            )
            await sub.aclose()
            await pub.aclose()


@pytest.mark.spec("PW-SUB-10", "PW-SUB-11", "PW-SUB-12", "PW-SUB-13", "PW-SUB-5")
async def test_resume_outcomes_over_tcp() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_server(config(history_count=5)) as server:
            for i in range(10):
                epoch, _ = await server.publish("t", b"%d" % i)
            peer = await RawPeer.connect(server.port)
            await peer.handshake()
            gap = await peer.subscribe(1, "t", since=SinceKind.AFTER, epoch=epoch, seq=2)
            assert (gap.gap_first, gap.gap_last, gap.start_seq) == (3, 5, 6)
            other = await peer.subscribe(2, "u", since=SinceKind.AFTER, epoch=1, seq=2)
            assert other.start_seq == 1 and other.epoch != 1
            last = await peer.subscribe(3, "t2", since=SinceKind.LAST, count=3)
            assert (last.start_seq, last.head_seq) == (1, 0)
            await peer.send(F.Unsubscribe(1), F.Subscribe(4, "t", SinceKind.AFTER, epoch, 11))
            error, _ = await peer.recv_until(F.Error)
            assert (error.code, error.request_id) == (ErrorCode.INVALID_POSITION, 4)  # type: ignore[union-attr]
            await peer.aclose()


@pytest.mark.spec("PW-FLOW-8")
async def test_credit_does_not_carry_over_to_the_resuming_connection() -> None:
    """Connection 1 grants 1000 and receives 3; connection 2 resumes after 3 with initial
    credit 2: it gets 4 and 5 and nothing more until it grants more, however much of the
    old grant was left."""
    with trio.fail_after(TIMEOUT):
        async with open_server(config()) as server:
            first = await RawPeer.connect(server.port)
            await first.handshake()
            subscribed = await first.subscribe(1, "t", credit=1000)
            for i in range(3):
                await server.publish("t", b"m%d" % i)
            assert [s for s, _ in await first.messages(3)] == [1, 2, 3]
            await first.aclose()
            for i in range(3, 10):
                await server.publish("t", b"m%d" % i)
            second = await RawPeer.connect(server.port)
            await second.handshake()
            await second.subscribe(
                1, "t", credit=2, since=SinceKind.AFTER, epoch=subscribed.epoch, seq=3
            )
            assert [s for s, _ in await second.messages(2)] == [4, 5]
            with trio.move_on_after(0.3):
                frame = await second.recv_data()
                raise AssertionError(f"beyond the new connection's credit: {frame!r}")
            await second.send(F.Credit(1, 1))
            assert [s for s, _ in await second.messages(1)] == [6]
            await second.aclose()


@pytest.mark.spec("PW-SUB-21")
async def test_after_a_reset_unsubscribed_reports_the_last_push_until_the_new_epoch_pushes() -> (
    None
):
    """Three pushes, then an operator reset: UNSUBSCRIBED names the old epoch and seq 3, the
    last push the client got. A second subscription, which got message 1 of the new epoch,
    is reported at (new epoch, 1)."""
    with trio.fail_after(TIMEOUT):
        async with open_server(config()) as server:
            peer = await RawPeer.connect(server.port)
            await peer.handshake()
            old = await peer.subscribe(1, "t", credit=1000)
            for i in range(3):
                await server.publish("t", b"m%d" % i)
            assert [s for s, _ in await peer.messages(3)] == [1, 2, 3]
            await server.reset_topic("t")
            await peer.send(F.Unsubscribe(1))
            frame, _ = await peer.recv_until(F.Unsubscribed)
            assert (frame.epoch, frame.last_seq) == (old.epoch, 3)
            await peer.subscribe(2, "t", credit=1000)
            epoch, seq = await server.publish("t", b"new")
            assert seq == 1 and epoch != old.epoch
            assert [s for s, _ in await peer.messages(1)] == [1]
            await peer.send(F.Unsubscribe(2))
            frame, _ = await peer.recv_until(F.Unsubscribed)
            assert (frame.epoch, frame.last_seq) == (epoch, 1)
            await peer.aclose()


@pytest.mark.spec("PW-HB-8")
async def test_a_pong_goes_ahead_of_a_backlog_the_server_has_not_written_yet() -> None:
    """A subscriber that does not read while a 38 MiB backlog is pushed to it sends PING,
    then reads: the PONG arrives after what the kernel and one outbound round held, long
    before the end of the backlog."""
    payload = b"x" * (64 << 10)
    count = 600
    with trio.fail_after(TIMEOUT):
        async with open_server(config(history_bytes=64 << 20)) as server:
            peer = await RawPeer.connect(server.port)
            await peer.handshake()
            await peer.subscribe(1, "t", credit=count)
            for _ in range(count):
                await server.publish("t", payload)
            await trio.sleep(0.2)  # the server fills the socket buffers and blocks
            await peer.send(F.Ping(0xAB))
            pushed = 0
            while True:
                frame = await peer.recv()
                if isinstance(frame, F.Pong):
                    break
                if isinstance(frame, F.Message):
                    pushed += 1
            assert frame.opaque == 0xAB
            assert pushed < count // 2, f"PONG after {pushed} of {count} messages"
            assert [s for s, _ in await peer.messages(count - pushed)][-1] == count
            await peer.aclose()


@pytest.mark.spec("PW-SLOW-5", "PW-ORDER-6")
async def test_one_read_of_publishes_on_many_topics_reaches_a_subscriber_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A connection with one subscription per topic, woken by one read of the publisher on
    32 of its topics, gets one write for the read, not one per topic: the sessions' direct
    writes are counted (the writer task's ``send_all`` is not an ``os.write``)."""
    import pushwire.server.session as session_module

    topics = [f"fan/{i}" for i in range(32)]
    writes: list[int] = []
    real_write = session_module.os.write

    def counting_write(fd: int, data: bytes | memoryview) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    with trio.fail_after(TIMEOUT):
        async with open_server(config()) as server:
            sub = await RawPeer.connect(server.port)
            pub = await RawPeer.connect(server.port)
            await sub.handshake()
            await pub.handshake()
            for sub_id, topic in enumerate(topics, 1):
                await sub.subscribe(sub_id, topic)
            await trio.sleep(0.2)  # the subscriber's writer has gone idle
            monkeypatch.setattr(session_module.os, "write", counting_write)
            await pub.send(*(F.Publish(i, t, b"m-%d" % i) for i, t in enumerate(topics, 1)))
            got = []
            while len(got) < len(topics):
                frame = await sub.recv_data()
                assert isinstance(frame, F.Message), frame
                got.append((frame.topic, frame.seq))
            monkeypatch.undo()
            assert sorted(got) == sorted((t, 1) for t in topics)  # no order between topics
            assert 1 <= len(writes) <= 4, writes  # one per read (a read may come in parts)
            await pub.aclose()
            await sub.aclose()
