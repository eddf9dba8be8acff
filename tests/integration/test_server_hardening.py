"""No client can lock out another: per-source connection caps, a separate handshake pool,
throttled authentication failures, churn limits, idle connections and expiring signed
tokens, each with a canary on another source that keeps being served in order.

Hostile clients connect from 127.0.0.2 (bound as the source address), canaries from
127.0.0.1, so the server sees two sources on loopback.
"""

from __future__ import annotations

import time

import pytest
import trio
from integration.server_peer import CLIENT_PREFACE, PeerClosed, RawPeer, hello

from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import FrameType
from pushwire.server import Permissions, Server, ServerConfig, open_server
from pushwire.server.serve import REFUSED_GRACE, REFUSED_WAITING_PER_SOURCE
from pushwire.server.tokens import mint

TIMEOUT = 20
HOSTILE = "127.0.0.2"
SECRET = b"0123456789abcdef0123456789abcdef"


async def connect_from(port: int, source: str) -> RawPeer:
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    return RawPeer(stream)


async def canary_round_trip(server: Server, topic: str, n: int = 20, **hello: object) -> None:
    """A subscriber and a publisher from 127.0.0.1 complete their handshakes and n messages
    arrive contiguous and in order."""
    sub = await RawPeer.connect(server.port)
    pub = await RawPeer.connect(server.port)
    try:
        await sub.handshake(**hello)
        await pub.handshake(**hello)
        await sub.subscribe(1, topic)
        for i in range(n):
            await pub.send(F.Publish(0, topic, b"canary %d" % i, None))
        got = await sub.messages(n)
        first = got[0][0]
        assert got == [(first + i, b"canary %d" % i) for i in range(n)]
    finally:
        await sub.aclose()
        await pub.aclose()


async def try_handshake(peer: RawPeer, **hello_fields: object) -> F.Frame:
    """WELCOME, or the connection-level ERROR the server answered instead."""
    await peer.send(CLIENT_PREFACE + hello(**hello_fields))  # type: ignore[arg-type]
    await peer.read_preface()
    return await peer.recv_data()


@pytest.mark.spec("PW-SEC-12")
async def test_one_source_holding_its_share_of_slots_leaves_other_sources_admitted() -> None:
    config = ServerConfig(port=0, max_connections=20, max_connections_per_source=12)
    with trio.fail_after(TIMEOUT):
        async with open_server(config) as server:
            hogs: list[RawPeer] = []
            refused = 0
            for _ in range(25):
                peer = await connect_from(server.port, HOSTILE)
                hogs.append(peer)
                try:
                    answer = await try_handshake(peer)
                except PeerClosed:
                    refused += 1
                    continue
                if isinstance(answer, F.Error):
                    assert answer.code == ErrorCode.TOO_MANY_CONNECTIONS
                    refused += 1
            assert refused == 13
            assert server.admission.connections_of(HOSTILE) == 12
            await canary_round_trip(server, "canary/slots")
            for peer in hogs:
                await peer.aclose()


@pytest.mark.spec("PW-HS-19")
async def test_idle_pre_handshake_connections_of_one_source_cannot_fill_the_handshake_pool() -> (
    None
):
    config = ServerConfig(port=0, max_handshaking=16, handshake_timeout=30)
    with trio.fail_after(TIMEOUT):
        async with open_server(config) as server:
            silent = [await connect_from(server.port, HOSTILE) for _ in range(40)]
            while server.admission.connections_of(HOSTILE) < 4:
                await trio.sleep(0.01)
            await trio.sleep(0.1)  # let the server see all 40
            assert server.admission.connections_of(HOSTILE) == 4  # a quarter of the pool
            await canary_round_trip(server, "canary/handshake")
            for peer in silent:
                await peer.aclose()


@pytest.mark.spec("PW-HS-19", "PW-SEC-12")
async def test_silent_refused_connections_of_one_source_cannot_reach_the_hard_cap() -> None:
    """200 silent connections from one source, far more than the hard cap (10 + 64): the
    refused ones beyond a few are closed at once, the few left waiting are closed after the
    grace period, and a client from another source is admitted meanwhile."""
    config = ServerConfig(port=0, max_connections=10, max_handshaking=16, handshake_timeout=30)
    with trio.fail_after(TIMEOUT):
        async with open_server(config) as server:
            silent = [await connect_from(server.port, HOSTILE) for _ in range(200)]
            await trio.sleep(0.2)  # let the server see them all
            assert server.admission.connections_of(HOSTILE) == 4  # a quarter of the pool
            assert len(server._sessions) <= 4 + REFUSED_WAITING_PER_SOURCE
            await canary_round_trip(server, "canary/silent")
            started = time.monotonic()
            while len(server._sessions) > 4:
                await trio.sleep(0.05)
            assert time.monotonic() - started <= REFUSED_GRACE + 1
            for peer in silent:
                await peer.aclose()


@pytest.mark.spec("PW-SEC-8", "PW-SEC-13")
async def test_wrong_tokens_are_slowed_then_refused_while_a_good_token_is_admitted() -> None:
    auth = {"good-token": Permissions(subscribe=("#",), publish=("#",))}
    config = ServerConfig(
        port=0, auth=auth, auth_failure_burst=4, auth_failure_rate=0.5, auth_max_delay=0.3
    )
    with trio.fail_after(TIMEOUT):
        async with open_server(config) as server:
            codes = []
            for i in range(8):
                peer = await connect_from(server.port, HOSTILE)
                answer = await try_handshake(peer, auth_token=b"guess-%d" % i)
                assert isinstance(answer, F.Error)
                codes.append(ErrorCode(answer.code))
                await peer.aclose()
            assert codes[:4] == [ErrorCode.UNAUTHENTICATED] * 4
            assert codes[4:] == [ErrorCode.AUTH_THROTTLED] * 4
            # the right token from the throttled source is refused too, unseen ...
            peer = await connect_from(server.port, HOSTILE)
            answer = await try_handshake(peer, auth_token=b"good-token")
            assert isinstance(answer, F.Error) and answer.code == ErrorCode.AUTH_THROTTLED
            await peer.aclose()
            # ... while another source is admitted at once
            started = trio.current_time()
            await canary_round_trip(server, "canary/auth", auth_token=b"good-token")
            assert trio.current_time() - started < 5


@pytest.mark.spec("PW-SEC-13")
async def test_subscription_churn_is_rate_limited_per_identity() -> None:
    config = ServerConfig(port=0, churn_burst=20, churn_rate=1)
    with trio.fail_after(TIMEOUT):
        async with open_server(config) as server:
            churner = await connect_from(server.port, HOSTILE)
            await churner.handshake()
            limited = 0
            for i in range(30):
                await churner.send(
                    F.Subscribe(1, f"public/{i}", 0, 0, 0, 0, 1, False), F.Unsubscribe(1)
                )
            frames: list[F.Frame] = []
            while len([f for f in frames if not isinstance(f, F.Ping)]) < 60:
                frames.append(await churner.recv())
            errors = [f for f in frames if isinstance(f, F.Error)]
            limited = sum(1 for e in errors if e.code == ErrorCode.RATE_LIMITED)
            assert limited >= 30 - 20  # the burst went through, the rest were refused
            assert all(
                e.request_type in (FrameType.SUBSCRIBE, FrameType.UNSUBSCRIBE)
                and e.code in (ErrorCode.RATE_LIMITED, ErrorCode.UNKNOWN_SUBSCRIPTION)
                for e in errors
            )
            await canary_round_trip(server, "canary/churn")
            await churner.aclose()


@pytest.mark.spec("PW-LIMIT-6")
async def test_a_connection_that_only_answers_pings_is_closed_as_idle() -> None:
    config = ServerConfig(port=0, idle_timeout=1.0, heartbeat_ms=200, heartbeat_min_ms=100)
    with trio.fail_after(TIMEOUT):
        async with open_server(config) as server:
            idle = await connect_from(server.port, HOSTILE)
            await idle.handshake(heartbeat_ms=200)
            busy = await RawPeer.connect(server.port)
            await busy.handshake(heartbeat_ms=200)
            await busy.subscribe(1, "canary/idle")
            started = trio.current_time()
            while True:  # answers PINGs until the server gives up on it
                frame = await idle.recv()
                if isinstance(frame, F.Ping):
                    await idle.send(F.Pong(frame.opaque))
                    continue
                assert isinstance(frame, F.Error) and frame.code == ErrorCode.IDLE_TIMEOUT
                break
            assert 0.9 <= trio.current_time() - started <= 3.5
            await idle.expect_eof()
            await idle.aclose()
            await canary_round_trip(server, "canary/idle")
            assert server.stats().connections >= 1  # the subscribed one stayed
            await busy.aclose()


@pytest.mark.spec("PW-LIMIT-6")
async def test_a_connection_left_without_subscriptions_by_the_server_is_closed_as_idle() -> None:
    """The idle timeout counts from the last request once nothing is subscribed, even when
    the server, not a request, ended the last subscription (a pattern past its topic
    limit) and no heartbeat falls due for a minute."""
    config = ServerConfig(port=0, idle_timeout=1.0, heartbeat_ms=60_000, max_pattern_topics=1)
    with trio.fail_after(TIMEOUT):
        async with open_server(config) as server:
            idle = await RawPeer.connect(server.port)
            await idle.handshake(heartbeat_ms=60_000)
            await idle.send(F.Subscribe(1, "limit/+", initial_credit=10, positions=()))
            await trio.sleep(1.5)  # subscribed for longer than the idle timeout: kept open
            publisher = await RawPeer.connect(server.port)
            await publisher.handshake()
            await publisher.publish("limit/a", b"1", request_id=1)
            await publisher.publish("limit/b", b"2", request_id=2)  # one topic too many
            ended, _ = await idle.recv_until(F.Error)
            assert ended.request_id == 1  # type: ignore[attr-defined]  # the pattern ended
            started = trio.current_time()
            frame, _ = await idle.recv_until(F.Error)
            assert frame.code == ErrorCode.IDLE_TIMEOUT  # type: ignore[attr-defined]
            assert trio.current_time() - started <= 3.5
            await idle.expect_eof()
            await idle.aclose()
            await publisher.aclose()


@pytest.mark.spec("PW-HS-18")
async def test_a_signed_token_is_accepted_until_it_expires_then_the_connection_closes() -> None:
    config = ServerConfig(port=0, token_secret=SECRET)
    token = mint(SECRET, "dashboard", subscribe=("orders/#",), publish=("orders/#",), ttl=1.5)
    with trio.fail_after(TIMEOUT):
        async with open_server(config) as server:
            peer = await RawPeer.connect(server.port)
            await peer.handshake(auth_token=token.encode())
            await peer.subscribe(1, "orders/eu")
            await peer.send(F.Subscribe(2, "other", 0, 0, 0, 0, 1, False))
            refusal, _ = await peer.recv_until(F.Error)
            assert refusal.code == ErrorCode.FORBIDDEN  # type: ignore[attr-defined]
            frame = await peer.recv_data()
            assert isinstance(frame, F.Error) and frame.code == ErrorCode.TOKEN_EXPIRED
            assert frame.request_type == 0
            await peer.expect_eof()
            await peer.aclose()


@pytest.mark.spec("PW-HS-18")
async def test_an_expired_or_forged_signed_token_is_unauthenticated() -> None:
    config = ServerConfig(port=0, token_secret=SECRET)
    expired = mint(SECRET, "late", subscribe=("#",), ttl=60, now=time.time() - 3600)
    forged = mint(b"another-secret-of-at-least-32-bytes!", "eve", subscribe=("#",))
    with trio.fail_after(TIMEOUT):
        async with open_server(config) as server:
            for token in (expired, forged, "not.a.jwt"):
                peer = await RawPeer.connect(server.port)
                answer = await try_handshake(peer, auth_token=token.encode())
                assert isinstance(answer, F.Error) and answer.code == ErrorCode.UNAUTHENTICATED
                await peer.aclose()
