"""Pattern subscriptions against the reference server over real TCP (SPEC.md §6.7)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from integration.server_peer import RawPeer

from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import FrameType, Outcome, SinceKind
from pushwire.server import Server, open_server
from pushwire.server.auth import Permissions

TIMEOUT = 30
_OPEN: list[RawPeer] = []


@asynccontextmanager
async def serving(**overrides: Any) -> AsyncIterator[Server]:
    """``open_server(**overrides)`` on an ephemeral port for the block. The raw peers that
    :func:`connect` opened are closed on the way out, before the graceful shutdown (which
    would otherwise wait out the drain timeout for peers that never answer GOAWAY). This
    cannot be an autouse fixture: pytest-trio runs only the async fixtures a test names."""
    async with open_server(**overrides) as server:
        try:
            yield server
        finally:
            while _OPEN:
                await _OPEN.pop().aclose()


async def connect(server: Server, **hello: Any) -> RawPeer:
    """A handshaken raw peer, closed when :func:`serving` ends."""
    peer = await RawPeer.connect(server.port)
    _OPEN.append(peer)
    await peer.handshake(**hello)
    return peer


async def pattern(
    peer: RawPeer,
    sub_id: int,
    text: str,
    positions: tuple[F.TopicPosition, ...] = (),
    *,
    since: int = SinceKind.NEW,
    credit: int = 1000,
) -> F.Subscribed | F.Error:
    await peer.send(F.Subscribe(sub_id, text, since, initial_credit=credit, positions=positions))
    frame, _ = await peer.recv_until((F.Subscribed, F.Error))  # type: ignore[arg-type]
    assert isinstance(frame, F.Subscribed | F.Error)
    return frame


async def pushes(peer: RawPeer, n: int) -> list[tuple[str, int, int, bytes]]:
    """The next ``n`` messages as (topic, epoch, seq, payload)."""
    out: list[tuple[str, int, int, bytes]] = []
    while len(out) < n:
        frame = await peer.recv_data()
        if isinstance(frame, F.Message):
            out.append((frame.topic, frame.epoch, frame.seq, frame.payload))
        elif isinstance(frame, F.MessageBatch):
            out.extend(
                (frame.topic, frame.epoch, frame.base_seq + i, r.payload)
                for i, r in enumerate(frame.records)
            )
        else:
            raise AssertionError(f"expected a push, got {frame!r}")
    return out


async def nothing_more(peer: RawPeer, wait: float = 0.2) -> None:
    with trio.move_on_after(wait):
        frame = await peer.recv_data()
        raise AssertionError(f"unexpected {frame!r}")


@pytest.mark.spec("PW-SUB-29", "PW-ORDER-15", "PW-TOPIC-9")
async def test_a_pattern_gets_each_matching_topic_with_its_own_sequences() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as server:
            await server.publish("orders/eu", b"before")  # existing: since NEW skips it
            sub = await connect(server)
            opened = await pattern(sub, 1, "orders/+")
            assert opened == F.Subscribed(1, Outcome.NEW, 0, 0, 0)
            await server.publish("orders/eu", b"eu-2")
            await server.publish("orders/us", b"us-1")  # a topic created afterwards
            await server.publish("other/x", b"not mine")
            await server.publish("orders/us", b"us-2")
            await server.publish("orders/eu/deep", b"too deep for +")
            got = await pushes(sub, 3)
            assert {(t, s, p) for t, _, s, p in got} == {
                ("orders/eu", 2, b"eu-2"),
                ("orders/us", 1, b"us-1"),
                ("orders/us", 2, b"us-2"),
            }
            assert [s for t, _, s, _ in got if t == "orders/us"] == [1, 2]
            await nothing_more(sub)


@pytest.mark.spec("PW-TOPIC-9")
async def test_a_trailing_hash_includes_the_parent_and_everything_below() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as server:
            sub = await connect(server)
            assert isinstance(await pattern(sub, 1, "orders/#"), F.Subscribed)
            for topic in ("orders", "orders/eu", "orders/eu/late", "other/x", "ordersx"):
                await server.publish(topic, topic.encode())
            got = await pushes(sub, 3)
            assert sorted(t for t, *_ in got) == ["orders", "orders/eu", "orders/eu/late"]
            await nothing_more(sub)


@pytest.mark.spec("PW-RESUME-5")
async def test_resuming_gives_each_seen_topic_exactly_one_outcome() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(history_count=3) as server:
            eu_epoch, _ = await server.publish("orders/eu", b"eu-1")
            for i in range(2, 8):  # eu keeps 5..7 only
                await server.publish("orders/eu", b"eu-%d" % i)
            us_epoch, _ = await server.publish("orders/us", b"us-1")
            await server.publish("orders/us", b"us-2")
            await server.publish("orders/fr", b"fr-1")  # not seen: since NEW skips it
            sub = await connect(server)
            seen = (
                F.TopicPosition("orders/eu", eu_epoch, 2),  # 3..4 are gone: GAP
                F.TopicPosition("orders/us", us_epoch, 1),  # 2 is there: RECOVERED
                F.TopicPosition("orders/uk", 12345, 9),  # never existed here: EPOCH_CHANGED
            )
            opened = await pattern(sub, 1, "orders/+", seen)
            assert opened == F.Subscribed(1, Outcome.NEW, 0, 0, 0)
            statuses = [await sub.expect(F.Subscribed) for _ in seen]
            assert [(s.topic, Outcome(s.outcome)) for s in statuses] == [
                ("orders/eu", Outcome.GAP),
                ("orders/us", Outcome.RECOVERED),
                ("orders/uk", Outcome.EPOCH_CHANGED),
            ]
            eu = statuses[0]
            assert (eu.gap_first, eu.gap_last, eu.start_seq) == (3, 4, 5)
            got = await pushes(sub, 4)
            assert sorted((t, s) for t, _, s, _ in got) == [
                ("orders/eu", 5),
                ("orders/eu", 6),
                ("orders/eu", 7),
                ("orders/us", 2),
            ]
            await nothing_more(sub)


@pytest.mark.spec("PW-FLOW-9")
async def test_one_credit_pool_covers_every_topic_of_a_pattern() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as server:
            sub = await connect(server)
            assert isinstance(await pattern(sub, 1, "t/+", credit=3), F.Subscribed)
            for topic in ("t/a", "t/b", "t/c", "t/d", "t/a"):
                await server.publish(topic, b"m")
            assert len(await pushes(sub, 3)) == 3
            await nothing_more(sub)
            await sub.send(F.Credit(1, 10))
            assert len(await pushes(sub, 2)) == 2


@pytest.mark.spec("PW-TOPIC-7")
async def test_publishing_to_a_pattern_is_an_invalid_topic() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as server:
            peer = await connect(server)
            for request_id, topic in enumerate(("orders/+", "orders/#", "a#b"), 1):
                await peer.send(F.Publish(request_id, topic, b"x"))
                error = await peer.expect(F.Error)
                assert (error.code, error.request_type, error.request_id) == (
                    ErrorCode.INVALID_TOPIC,
                    FrameType.PUBLISH,
                    request_id,
                )


@pytest.mark.spec("PW-SUB-22", "PW-SUB-23", "PW-SUB-24", "PW-SUB-26", "PW-SUB-27")
async def test_pattern_subscribes_are_checked_in_order() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(max_patterns=2, max_pattern_topics=2) as server:
            for topic in ("wide/a", "wide/b", "wide/c"):
                await server.publish(topic, b"x")
            peer = await connect(server)
            cases: list[tuple[int, str, tuple[F.TopicPosition, ...], int, ErrorCode]] = [
                (1, "orders/#/eu", (), SinceKind.NEW, ErrorCode.INVALID_TOPIC),
                (2, "orders/+", (F.TopicPosition("other/x", 1, 1),), 0, ErrorCode.INVALID_TOPIC),
                (3, "orders/+", (), SinceKind.AFTER, ErrorCode.INVALID_POSITION),
                (4, "wide/+", (), SinceKind.NEW, ErrorCode.TOO_MANY_TOPICS),
            ]
            for sub_id, text, positions, since, code in cases:
                await peer.send(F.Subscribe(sub_id, text, since, positions=positions))
                error = await peer.expect(F.Error)
                assert (error.code, error.request_id) == (code, sub_id), error
            assert isinstance(await pattern(peer, 5, "orders/+"), F.Subscribed)
            for sub_id, text, code in [
                (6, "+/eu", ErrorCode.ALREADY_SUBSCRIBED),
                (6, "orders/#", ErrorCode.ALREADY_SUBSCRIBED),
            ]:
                assert (await pattern(peer, sub_id, text)).code == code  # type: ignore[union-attr]
            await peer.send(F.Subscribe(7, "orders/eu"))
            assert (await peer.expect(F.Error)).code == ErrorCode.ALREADY_SUBSCRIBED
            assert isinstance(await pattern(peer, 8, "news/+"), F.Subscribed)
            assert (await pattern(peer, 9, "sport/+")).code == ErrorCode.TOO_MANY_PATTERNS  # type: ignore[union-attr]


@pytest.mark.spec("PW-SUB-25")
async def test_a_pattern_needs_permission_for_everything_it_can_match() -> None:
    auth = {b"t": Permissions(subscribe=("orders/#",), publish=("orders/#",))}
    with trio.fail_after(TIMEOUT):
        async with serving(auth=auth) as server:
            peer = await connect(server, auth_token=b"t")
            assert (await pattern(peer, 1, "+/eu")).code == ErrorCode.FORBIDDEN  # type: ignore[union-attr]
            assert isinstance(await pattern(peer, 2, "orders/+"), F.Subscribed)


@pytest.mark.spec("PW-SUB-32")
async def test_unsubscribing_a_pattern_ends_every_topic_and_reports_zeros() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as server:
            sub = await connect(server)
            assert isinstance(await pattern(sub, 1, "a/+"), F.Subscribed)
            await server.publish("a/x", b"1")
            await pushes(sub, 1)
            await sub.send(F.Unsubscribe(1))
            assert await sub.expect(F.Unsubscribed) == F.Unsubscribed(1, 0, 0)
            await server.publish("a/x", b"2")
            await server.publish("a/new", b"3")
            await nothing_more(sub)


@pytest.mark.spec("PW-SUB-31")
async def test_a_new_topic_beyond_the_limit_ends_the_subscription() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(max_pattern_topics=2) as server:
            sub = await connect(server)
            assert isinstance(await pattern(sub, 1, "a/+"), F.Subscribed)
            await server.publish("a/1", b"1")
            await server.publish("a/2", b"2")
            await pushes(sub, 2)
            await server.publish("a/3", b"3")
            error = await sub.expect(F.Error)
            assert (error.code, error.request_type, error.request_id) == (
                ErrorCode.TOO_MANY_TOPICS,
                FrameType.SUBSCRIBE,
                1,
            )
            await server.publish("a/1", b"4")
            await nothing_more(sub)


async def frames_until(peer: RawPeer, n: int) -> list[F.Frame]:
    """The next frames until ``n`` records were pushed, TOPIC_STATUS replies included."""
    out: list[F.Frame] = []
    records = 0
    while records < n:
        frame = await peer.recv_data()
        out.append(frame)
        if isinstance(frame, F.Message):
            records += 1
        elif isinstance(frame, F.MessageBatch):
            records += len(frame.records)
    return out


def per_topic(frames: list[F.Frame]) -> dict[str, list[object]]:
    """Each topic's pushes in order: a seq per record, ("gap", first, last, reason) or
    ("epoch", epoch, start_seq) per TOPIC_STATUS."""
    out: dict[str, list[object]] = {}
    for frame in frames:
        if isinstance(frame, F.Message):
            out.setdefault(frame.topic, []).append(frame.seq)
        elif isinstance(frame, F.MessageBatch):
            seqs = range(frame.base_seq, frame.base_seq + len(frame.records))
            out.setdefault(frame.topic, []).extend(seqs)
        elif isinstance(frame, F.Subscribed) and frame.topic is not None:
            if frame.outcome == Outcome.GAP:
                status: object = ("gap", frame.gap_first, frame.gap_last, frame.gap_reason)
            else:
                status = (Outcome(frame.outcome).name, frame.epoch, frame.start_seq)
            out.setdefault(frame.topic, []).append(status)
        else:
            raise AssertionError(f"unexpected {frame!r} on a pattern subscription")
    return out


@pytest.mark.spec("PW-SUB-30", "PW-SLOW-3", "PW-ORDER-15")
async def test_a_skip_in_one_topic_is_a_topic_status_gap_for_that_topic_only() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(history_count=3) as server:
            sub = await connect(server)
            assert isinstance(await pattern(sub, 1, "orders/+", credit=2), F.Subscribed)
            await server.publish("orders/eu", b"eu-1")
            await server.publish("orders/us", b"us-1")
            first = per_topic(await frames_until(sub, 2))  # the credit is used up
            assert first == {"orders/eu": [1], "orders/us": [1]}
            for i in range(2, 8):  # eu keeps 5..7: 2..4 leave the history unsent
                await server.publish("orders/eu", b"eu-%d" % i)
            await server.publish("orders/us", b"us-2")  # us loses nothing
            await nothing_more(sub)
            await sub.send(F.Credit(1, 100))
            assert per_topic(await frames_until(sub, 4)) == {
                "orders/eu": [("gap", 2, 4, ErrorCode.SLOW_CONSUMER), 5, 6, 7],
                "orders/us": [2],
            }
            await nothing_more(sub)
            await server.publish("orders/us", b"us-3")
            await server.publish("orders/eu", b"eu-8")
            assert per_topic(await frames_until(sub, 2)) == {"orders/eu": [8], "orders/us": [3]}


@pytest.mark.spec("PW-SUB-30", "PW-ORDER-12", "PW-ORDER-15")
async def test_a_reset_of_one_topic_is_a_topic_status_epoch_change_for_that_topic_only() -> None:
    auth = {
        b"app": Permissions(subscribe=("orders/#",), publish=("orders/#",)),
        b"op": Permissions(publish=("$sys/reset/#",)),
    }
    with trio.fail_after(TIMEOUT):
        async with serving(auth=auth) as server:
            sub = await connect(server, auth_token=b"app")
            assert isinstance(await pattern(sub, 1, "orders/+"), F.Subscribed)
            old, _ = await server.publish("orders/eu", b"eu-1")
            us_epoch, _ = await server.publish("orders/us", b"us-1")
            assert per_topic(await frames_until(sub, 2)) == {"orders/eu": [1], "orders/us": [1]}
            op = await connect(server, auth_token=b"op")
            await op.send(F.Publish(1, "$sys/reset/orders/eu", b"reset"))
            assert isinstance(await op.expect(F.Puback), F.Puback)
            new, seq = await server.publish("orders/eu", b"eu-new-1")
            assert (seq, new != old) == (1, True)
            await server.publish("orders/us", b"us-2")
            frames = await frames_until(sub, 2)
            assert per_topic(frames) == {
                "orders/eu": [("EPOCH_CHANGED", new, 1), 1],
                "orders/us": [2],
            }
            pushes = [f for f in frames if isinstance(f, F.Message)]
            assert {(f.topic, f.epoch) for f in pushes} == {
                ("orders/eu", new),
                ("orders/us", us_epoch),
            }
            await nothing_more(sub)
