"""Connection lifecycle over real TCP: heartbeats, admission (connection limit, auth),
authorisation, and graceful shutdown with GOAWAY."""

from __future__ import annotations

import gc
import random
import weakref

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from integration.server_peer import CLIENT_PREFACE, PeerClosed, RawPeer

from pushwire.client.bench.churn import random_visit
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import FrameType
from pushwire.server import Permissions, Server, ServerConfig, open_server

TIMEOUT = 10


@pytest.mark.spec("PW-HB-3")
async def test_a_silent_client_is_closed_with_heartbeat_timeout() -> None:
    cfg = ServerConfig(port=0, heartbeat_min_ms=50)
    with trio.fail_after(TIMEOUT):
        async with open_server(cfg) as server:
            peer = await RawPeer.connect(server.port)
            welcome = await peer.handshake(heartbeat_ms=50)
            assert welcome.heartbeat_ms == 50
            start = trio.current_time()
            await peer.expect_error_and_close(ErrorCode.HEARTBEAT_TIMEOUT)  # PINGs unanswered
            assert 0.1 <= trio.current_time() - start < 2.0  # 3 x 50 ms since HELLO
            await peer.aclose()


@pytest.mark.spec("PW-HB-2")
async def test_a_client_that_only_answers_pings_stays_open() -> None:
    cfg = ServerConfig(port=0, heartbeat_min_ms=50)
    with trio.fail_after(TIMEOUT):
        async with open_server(cfg) as server:
            peer = await RawPeer.connect(server.port)
            await peer.handshake(heartbeat_ms=50)
            pings = 0
            with trio.move_on_after(0.6):
                while True:
                    frame = await peer.expect(F.Ping)
                    pings += 1
                    await peer.send(F.Pong(frame.opaque))  # type: ignore[union-attr]
            assert pings >= 5
            assert server.stats().connections == 1
            await peer.aclose()


@pytest.mark.spec("PW-HS-12", "PW-LIMIT-1")
async def test_a_connection_beyond_the_limit_gets_too_many_connections() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_server(ServerConfig(port=0, max_connections=2)) as server:
            first = await RawPeer.connect(server.port)
            await first.handshake()
            second = await RawPeer.connect(server.port)
            await second.handshake()
            third = await RawPeer.connect(server.port)
            await third.send(CLIENT_PREFACE)
            assert await third.read_preface() == (1, 1)
            await third.expect_error_and_close(ErrorCode.TOO_MANY_CONNECTIONS)
            await third.aclose()
            await first.aclose()
            while server.stats().connections > 1:  # wait until the server saw the close
                await trio.sleep(0.01)
            fourth = await RawPeer.connect(server.port)
            await fourth.handshake()
            await fourth.aclose()
            await second.aclose()


AUTH = {
    "s3cret": Permissions(subscribe=("orders/#",), publish=("orders/eu/#",)),
    "": Permissions(subscribe=("public",)),
}


@pytest.mark.spec("PW-HS-11")
@pytest.mark.parametrize("token", [b"wrong", b"s3cre", b"s3cret\x00"])
async def test_an_unknown_token_is_unauthenticated(token: bytes) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_server(ServerConfig(port=0, auth=AUTH)) as server:
            peer = await RawPeer.connect(server.port)
            await peer.send(CLIENT_PREFACE + _hello(token))
            await peer.read_preface()
            await peer.expect_error_and_close(ErrorCode.UNAUTHENTICATED)
            await peer.aclose()


@pytest.mark.spec("PW-HS-11")
async def test_no_token_is_unauthenticated_without_an_anonymous_entry() -> None:
    auth = {"s3cret": AUTH["s3cret"]}
    with trio.fail_after(TIMEOUT):
        async with open_server(ServerConfig(port=0, auth=auth)) as server:
            peer = await RawPeer.connect(server.port)
            await peer.send(CLIENT_PREFACE + _hello(b""))
            await peer.read_preface()
            await peer.expect_error_and_close(ErrorCode.UNAUTHENTICATED)
            await peer.aclose()


def _hello(token: bytes) -> bytes:
    from integration.server_peer import hello

    return hello(auth_token=token)


@pytest.mark.spec("PW-SEC-3", "PW-SEC-4", "PW-SUB-20", "PW-PUB-6")
async def test_permissions_decide_per_topic_with_forbidden() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_server(ServerConfig(port=0, auth=AUTH)) as server:
            peer = await RawPeer.connect(server.port)
            await peer.handshake(auth_token=b"s3cret")
            assert (await peer.subscribe(1, "orders")).sub_id == 1
            assert (await peer.subscribe(2, "orders/eu/1")).sub_id == 2
            await peer.send(F.Subscribe(3, "ordersx"), F.Publish(4, "orders/us", b""))
            refusals = [await peer.recv_data(), await peer.recv_data()]
            assert [(e.code, e.request_type, e.request_id) for e in refusals] == [  # type: ignore[union-attr]
                (ErrorCode.FORBIDDEN, FrameType.SUBSCRIBE, 3),
                (ErrorCode.FORBIDDEN, FrameType.PUBLISH, 4),
            ]
            ack = await peer.publish("orders/eu/1", b"ok", request_id=5)
            assert ack.first_seq == 1
            assert "orders/us" not in server.stats().topics  # a refusal creates nothing
            anonymous = await RawPeer.connect(server.port)
            await anonymous.handshake()
            await anonymous.subscribe(1, "public")
            await anonymous.send(F.Subscribe(2, "orders"))
            refused = await anonymous.recv_data()
            assert refused.code == ErrorCode.FORBIDDEN  # type: ignore[union-attr]
            await peer.aclose()
            await anonymous.aclose()


@pytest.mark.spec("PW-GOAWAY-1", "PW-GOAWAY-2", "PW-GOAWAY-5")
async def test_shutdown_sends_goaway_with_positions_to_every_client() -> None:
    cfg = ServerConfig(port=0, drain_timeout=5.0, goaway_reconnect_after_ms=250)
    with trio.fail_after(TIMEOUT):
        server = Server(cfg)
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(server.serve)
            assert (host, port) == (server.host, server.port)
            peers = []
            for i in range(3):
                peer = await RawPeer.connect(port)
                await peer.handshake()
                await peer.subscribe(7, "t", credit=100, at_least_once=bool(i % 2))
                peers.append(peer)
            for _ in range(4):
                epoch, _ = await server.publish("t", b"m")
            for peer in peers:
                await peer.messages(4)
            await peers[1].send(F.Ack(7, 3), F.Ping(1))  # the at-least-once one
            await peers[1].recv_until(F.Pong)
            start = trio.current_time()
            nursery.start_soon(server.shutdown)
            for i, peer in enumerate(peers):
                goaway = await peer.expect(F.Goaway)
                assert goaway.code == ErrorCode.SHUTTING_DOWN  # type: ignore[union-attr]
                assert goaway.reconnect_after_ms == 250  # type: ignore[union-attr]
                seq = 3 if i == 1 else 4
                assert goaway.positions == (F.Position(7, epoch, seq),)  # type: ignore[union-attr]
                await peer.aclose()  # the client leaves: the server need not wait for drain
        assert trio.current_time() - start < 2.0
    with pytest.raises(OSError):  # the listener is gone
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_the_bound_address_is_reported_and_the_port_is_ephemeral() -> None:
    async with (
        open_server(ServerConfig(host="127.0.0.1", port=0)) as a,
        open_server(ServerConfig(host="127.0.0.1", port=0)) as b,
    ):
        assert a.port and b.port and a.port != b.port
        assert a.address == f"127.0.0.1:{a.port}"


@pytest.mark.spec(
    "PW-SUB-2", "PW-PUB-3", "PW-PUB-5", "PW-ORDER-8", "PW-ORDER-9", "PW-ORDER-10", "PW-ERR-4"
)
async def test_pipelined_requests_get_exactly_one_reply_each_in_order() -> None:
    requests: list[F.Frame] = [
        F.Subscribe(1, "a"),
        F.Publish(10, "a", b"1"),
        F.Subscribe(2, "bad//topic"),
        F.PublishBatch(11, "a", (F.Record(b"2"), F.Record(b"3"))),
        F.Subscribe(1, "b"),  # sub_id in use
        F.Publish(0, "a", b"4"),  # no reply wanted
        F.Publish(12, "", b"5"),
        F.Unsubscribe(9),
        F.Subscribe(3, "c"),
        F.Publish(13, "a", b"6"),
    ]
    expected = [
        (F.Subscribed, 1),
        (F.Puback, 10),
        (F.Error, 2),
        (F.Puback, 11),
        (F.Error, 1),
        (F.Error, 12),
        (F.Error, 9),
        (F.Subscribed, 3),
        (F.Puback, 13),
    ]
    with trio.fail_after(TIMEOUT):
        async with open_server(ServerConfig(port=0)) as server:
            peer = await RawPeer.connect(server.port)
            await peer.handshake()
            await peer.send(*requests, F.Ping(99))
            replies = []
            while True:
                frame = await peer.recv()
                if isinstance(frame, F.Pong):
                    break
                if not isinstance(frame, F.Message | F.MessageBatch | F.Ping):
                    replies.append(frame)
            got = [
                (type(r), getattr(r, "sub_id", None) or getattr(r, "request_id", None))
                for r in replies
            ]
            assert got == expected
            acks = [r for r in replies if isinstance(r, F.Puback)]
            assert [(a.first_seq, a.count) for a in acks] == [(1, 1), (2, 2), (5, 1)]
            assert server.stats().topics["a"].head_seq == 5  # the request_id 0 one counted
            await peer.aclose()


@pytest.mark.spec("PW-TOPIC-3")
async def test_topics_are_compared_byte_for_byte() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_server(ServerConfig(port=0)) as server:
            peer = await RawPeer.connect(server.port)
            await peer.handshake()
            await peer.subscribe(1, "Case")
            await peer.subscribe(2, "case")
            await peer.subscribe(3, "caf\u00e9")
            await peer.subscribe(4, "cafe\u0301")  # the same text, not the same bytes
            await server.publish("case", b"lower")
            await server.publish("cafe\u0301", b"decomposed")
            frames = [await peer.recv_data(), await peer.recv_data()]
            assert sorted((f.topic, f.payload) for f in frames) == [  # type: ignore[union-attr]
                ("cafe\u0301", b"decomposed"),
                ("case", b"lower"),
            ]
            await peer.aclose()


def _server_garbage(garbage: list[object]) -> list[str]:
    """The server's objects among ``garbage``, and callables bound to them."""
    found = []
    for obj in garbage:
        bound = getattr(getattr(obj, "func", obj), "__self__", obj)
        for candidate in (obj, bound):
            module = type(candidate).__module__
            if module.startswith(("pushwire.server", "pushwire.protocol")):
                found.append(f"{type(obj).__name__} ({type(candidate).__name__})")
                break
    return found


async def test_connections_failing_while_pushes_are_written_end_without_internal_errors() -> None:
    """A protocol error ends a session whose writer may be busy with pushes: one writer
    sends EOF while the error's wake-up starts another, and the second met the first on the
    stream (BusyResourceError, INTERNAL_ERROR). Churn with patterns, publishes, garbage."""

    async def visit(port: int, i: int) -> None:
        peer = await RawPeer.connect(port)
        try:
            await peer.handshake()
            await peer.subscribe(1, f"busy/{i % 5}")
            await peer.send(F.Subscribe(2, "load/+", initial_credit=10, positions=()))
            await peer.send(F.Publish(0, f"load/{i % 5}", b"x" * 100, None))
            if i % 3 == 0:
                await peer.send(b"\xff" * 16)
        finally:
            await peer.aclose()

    with trio.fail_after(TIMEOUT * 3):
        async with open_server(port=0, churn_rate=1e6) as server:
            for start in range(0, 600, 50):
                async with trio.open_nursery() as nursery:
                    for i in range(start, start + 50):
                        nursery.start_soon(visit, server.port, i)
            while server.sessions:
                await trio.sleep(0.01)
            closed = dict(server.counters.closed)
    assert closed.get("INTERNAL_ERROR", 0) == 0, closed
    assert sum(closed.values()) == 600


async def _random_visit(port: int, rng: random.Random) -> None:
    """One client of ``pushwire bench server --scenario churn``: a random mix of what clients
    do, right or wrong, then FIN or reset."""
    peer = await RawPeer.connect(port)
    try:
        await peer.handshake(heartbeat_ms=rng.choice([0, 1000, 60_000]))
        await random_visit(peer, rng)
    except PeerClosed:
        pass
    finally:
        await peer.aclose()


@settings(max_examples=3, deadline=None)
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_whatever_clients_do_no_connection_ends_in_an_internal_error_or_stays(seed: int) -> None:
    """Churn of clients that subscribe, publish, acknowledge, grant credit, unsubscribe,
    send garbage or cut frames short, and close or reset, 40 at a time: every connection
    ends with a protocol code, and each closed session is freed. (A seed, not
    ``st.randoms()``: its first draws are all 0.0, and every client would do the same.)"""
    rng = random.Random(seed)

    async def main() -> None:
        with trio.fail_after(TIMEOUT * 3):
            await churn()

    async def churn() -> None:
        async with open_server(port=0, churn_rate=1e6, history_count=50) as server:
            sessions: list[weakref.ref[object]] = []
            for _ in range(5):
                async with trio.open_nursery() as nursery:
                    for _ in range(40):
                        nursery.start_soon(_random_visit, server.port, random.Random(rng.random()))
                    await trio.sleep(0.005)
                    sessions += [weakref.ref(s) for s in server.sessions.values()]
            while server.sessions:
                await trio.sleep(0.01)
            closed = dict(server.counters.closed)
            await trio.sleep(0.05)
            gc.collect()
            assert [ref() for ref in sessions if ref() is not None] == []
        assert closed.get("INTERNAL_ERROR", 0) == 0, closed
        assert sum(closed.values()) == 200, closed

    trio.run(main)


async def test_a_closed_connection_is_freed_at_once_not_at_its_next_deadline() -> None:
    """Nothing holds a closed connection's session until its heartbeat deadline: churn had
    kept thousands of closed sessions whole (server/timers.py). Reference counting alone
    must free each as it closes."""
    with trio.fail_after(TIMEOUT):
        async with open_server(port=0, churn_rate=1e6) as server:
            freed: list[weakref.ref[object]] = []
            gc.disable()
            try:
                for i in range(6):
                    peer = await RawPeer.connect(server.port)
                    await peer.handshake()
                    await peer.subscribe(1, f"freed/{i % 2}")
                    freed += [weakref.ref(s) for s in server.sessions.values()]
                    await peer.aclose()
                    while server.sessions:
                        await trio.sleep(0.01)
                await trio.sleep(0.05)  # the session's task has returned
                alive = [ref() for ref in freed if ref() is not None]
            finally:
                gc.enable()
    assert len(freed) == 6
    assert alive == []


async def test_a_closed_connection_is_freed_without_the_cyclic_collector() -> None:
    """`pushwire serve` looks at the whole heap only when it grew by a quarter
    (server/collector.py), so what a connection leaves in cycles stays until then: the
    cursors' wake-up callbacks held their session, and churn grew the heap. Exact and
    pattern subscriptions, a publish, an UNSUBSCRIBE and a protocol error, then close."""

    async def visit(port: int, i: int, broken: bool) -> None:
        peer = await RawPeer.connect(port)
        await peer.handshake()
        await peer.subscribe(1, f"cycle/{i % 3}")
        await peer.send(F.Subscribe(2, "cycle/+", initial_credit=10, positions=()))
        await peer.send(F.Publish(1, f"cycle/{i % 3}", b"x", None))
        await peer.send(F.Unsubscribe(1))
        if broken:
            await peer.send(b"\xff" * 16)
        await trio.sleep(0.01)
        await peer.aclose()

    with trio.fail_after(TIMEOUT):
        async with open_server(port=0, churn_rate=1e6) as server:
            for i in range(4):  # first-use caches and placeholders
                await visit(server.port, i, i % 2 == 1)
            while server.sessions:
                await trio.sleep(0.01)
            gc.collect()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                for i in range(12):
                    await visit(server.port, i, i % 2 == 1)
                while server.sessions:
                    await trio.sleep(0.01)
                gc.collect()
                left = _server_garbage(gc.garbage)
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
    assert left == []
