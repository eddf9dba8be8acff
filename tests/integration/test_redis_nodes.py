"""Several server nodes on one Redis (``--broker redis://``): ordering across nodes, resume
on another node, Redis restarts with and without persistence, trimming, Redis down.

Each test starts its own redis-server on a free loopback port and stops it by PID. CI
installs redis-server (``.ci/run``); on a machine without it these tests are skipped."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from redis_support import REDIS_SERVER, RedisProcess, SentinelProcess, free_port

import pushwire.client as pw
from pushwire.protocol.errors import ErrorCode
from pushwire.server import Server, ServerConfig, open_server
from pushwire.server.redis_broker import RedisBroker, open_redis_broker, redis_url_problem

pytestmark = [
    pytest.mark.skipif(
        REDIS_SERVER is None, reason="redis-server is not installed (CI installs it: .ci/run)"
    ),
    # see collect_failed_connections
    pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning"),
]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    process = RedisProcess(tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()
        collect_failed_connections()


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    process = RedisProcess(tmp_path, aof=True)
    process.start()
    try:
        yield process
    finally:
        process.stop()
        collect_failed_connections()


def collect_failed_connections() -> None:
    """coredis 6.9 leaves the anyio memory streams of a connection that failed (Redis down)
    to the garbage collector, whose ResourceWarning would surface in whichever later test
    happens to collect them: collect them here, where that warning is known and expected."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Unclosed <MemoryObject", ResourceWarning)
        gc.collect()


@asynccontextmanager
async def node(url: str, **overrides: object) -> AsyncIterator[Server]:
    """An in-process server on its own RedisBroker (what one ``pushwire serve`` is)."""
    config = ServerConfig(port=0, **overrides)  # type: ignore[arg-type]
    async with (
        open_redis_broker(
            url,
            history_count=config.history_count,
            history_bytes=config.history_bytes,
            max_topics=config.max_topics,
            memory_limit=config.memory_limit,
        ) as broker,
        open_server(config, broker=broker) as server,
    ):
        yield server


def address(server: Server) -> str:
    return f"127.0.0.1:{server.port}"


async def items(sub: pw.Subscription, n: int) -> list[pw.Item]:
    out: list[pw.Item] = []
    async for item in sub.items():
        out.append(item)
        if len(out) == n:
            break
    return out


def seqs(got: list[pw.Item]) -> list[object]:
    return [
        item.seq
        if isinstance(item, pw.Message)
        else (f"gap {item.first}..{item.last}" if isinstance(item, pw.Gap) else "epoch")
        for item in got
    ]


@pytest.mark.spec("PW-NODE-1")
async def test_ten_messages_published_on_one_node_are_read_in_order_on_another(
    redis: RedisProcess,
) -> None:
    with trio.fail_after(20):
        async with (
            node(redis.url) as a,
            node(redis.url) as b,
            pw.connect(address(b)) as reader,
            pw.connect(address(a)) as writer,
        ):
            sub = reader.subscribe("orders", since="oldest")
            acked = [await writer.publish("orders", b"%d" % i) for i in range(1, 11)]
            got = await items(sub, 10)
    assert acked == list(range(1, 11))
    assert seqs(got) == list(range(1, 11))
    assert [m.payload for m in got if isinstance(m, pw.Message)] == [
        b"%d" % i for i in range(1, 11)
    ]
    assert len({m.epoch for m in got if isinstance(m, pw.Message)}) == 1


@pytest.mark.spec("PW-NODE-1")
async def test_sequences_stay_contiguous_when_two_nodes_publish_at_once(
    redis: RedisProcess,
) -> None:
    with trio.fail_after(20):
        async with (
            node(redis.url) as a,
            node(redis.url) as b,
            pw.connect(address(a)) as on_a,
            pw.connect(address(b)) as on_b,
            pw.connect(address(b)) as reader,
        ):
            sub = reader.subscribe("t", since="oldest", credit=1000)
            seen: list[int] = []

            async def publish(conn: pw.Connection, tag: bytes) -> None:
                for i in range(50):
                    seen.append(await conn.publish("t", tag + b"%d" % i))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish, on_a, b"a")
                nursery.start_soon(publish, on_b, b"b")
            batch_first = await on_a.publish_batch("t", [b"x", b"y", b"z"])
            got = await items(sub, 103)
    assert sorted(seen) == list(range(1, 101))
    assert batch_first == 101
    assert seqs(got) == list(range(1, 104))


async def test_a_publish_with_headers_reaches_another_node_byte_for_byte(
    redis: RedisProcess,
) -> None:
    with trio.fail_after(20):
        async with (
            node(redis.url) as a,
            node(redis.url) as b,
            pw.connect(address(b)) as reader,
            pw.connect(address(a)) as writer,
        ):
            sub = reader.subscribe("h", since="oldest")
            assert await writer.publish("h", b"body", headers=[("k", b"v"), ("k", b"w")]) == 1
            assert await writer.publish_batch("h", [b"r1", (b"r2", {"x": "y"})]) == 2
            got = await items(sub, 3)
    first, _, third = got
    assert isinstance(first, pw.Message) and isinstance(third, pw.Message)
    assert (first.payload, first.headers) == (b"body", (("k", b"v"), ("k", b"w")))
    assert seqs(got) == [1, 2, 3]
    assert third.payload == b"r2" and dict(third.headers) == {"x": b"y"}


@pytest.mark.spec("PW-NODE-1", "PW-NODE-2")
async def test_a_resume_on_another_node_after_sigkill_misses_nothing(
    redis: RedisProcess, tmp_path: Path
) -> None:
    """Node A is a real process, killed with SIGKILL; node B carries on at sequence 11."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pushwire.client", "serve", "--port", "0", "--broker", redis.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,  # keep the checkout off sys.path
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert line.startswith("pushwire listening on "), line
        a_address = line.rsplit(" ", 1)[1].strip()
        with trio.fail_after(20):
            async with pw.connect(a_address, reconnect=False) as on_a:
                sub = on_a.subscribe("t", since="oldest")
                for i in range(1, 11):
                    await on_a.publish("t", b"%d" % i)
                got = await items(sub, 10)
                last = got[-1]
                assert isinstance(last, pw.Message) and last.seq == 10
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
            async with node(redis.url) as b, pw.connect(address(b)) as on_b:
                assert await on_b.publish("t", b"11") == 11
                resumed = on_b.subscribe("t", since=last.position)
                got = await items(resumed, 1)
        assert seqs(got) == [11]
        assert isinstance(got[0], pw.Message) and got[0].epoch == last.epoch
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.spec("PW-NODE-2")
async def test_with_aof_always_a_redis_restart_loses_no_acknowledged_message(
    durable_redis: RedisProcess,
) -> None:
    with trio.fail_after(30):
        async with node(durable_redis.url) as a, pw.connect(address(a)) as on_a:
            for i in range(1, 21):
                await on_a.publish("t", b"%d" % i)
            sub = on_a.subscribe("t", since="oldest")
            first = await items(sub, 20)
        durable_redis.stop(kill=True)
        durable_redis.start()
        async with node(durable_redis.url) as b, pw.connect(address(b)) as on_b:
            after = on_b.subscribe("t", since="oldest")
            got = await items(after, 20)
            assert await on_b.publish("t", b"21") == 21
    assert seqs(got) == list(range(1, 21))
    assert {m.epoch for m in got if isinstance(m, pw.Message)} == {
        m.epoch for m in first if isinstance(m, pw.Message)
    }


@pytest.mark.spec("PW-NODE-3")
async def test_without_persistence_a_redis_restart_is_an_epoch_change(
    redis: RedisProcess,
) -> None:
    with trio.fail_after(30):
        async with node(redis.url) as a, pw.connect(address(a)) as on_a:
            for i in range(1, 6):
                await on_a.publish("t", b"%d" % i)
            sub = on_a.subscribe("t", since="oldest")
            got = await items(sub, 5)
            last = got[-1]
            assert isinstance(last, pw.Message)
            redis.stop(kill=True)
            redis.start()
            # the resuming subscriber is told, never left with a silent gap
            async with pw.connect(address(a)) as again:
                resumed = again.subscribe("t", since=last.position)
                change = (await items(resumed, 1))[0]
                assert isinstance(change, pw.EpochChange)
                assert change.old_epoch == last.epoch and change.new_epoch != last.epoch
                assert await again.publish("t", b"new") == 1


async def test_trimming_in_redis_shows_as_a_gap_with_its_reason(redis: RedisProcess) -> None:
    with trio.fail_after(20):
        async with node(redis.url, history_count=5) as a, node(redis.url, history_count=5) as b:
            async with pw.connect(address(a)) as on_a:
                for i in range(1, 21):
                    await on_a.publish("t", b"%d" % i)
            async with pw.connect(address(b)) as on_b:
                oldest = (await items(on_b.subscribe("t", since="oldest"), 1))[0]
                assert isinstance(oldest, pw.Message) and oldest.seq == 16
            async with pw.connect(address(b)) as on_b:
                resumed = on_b.subscribe("t", since=pw.TopicPosition(oldest.epoch, 3))
                got = await items(resumed, 2)
    gap = got[0]
    assert isinstance(gap, pw.Gap)
    assert (gap.first, gap.last, gap.reason) == (4, 15, ErrorCode.HISTORY_EXPIRED)
    assert isinstance(got[1], pw.Message) and got[1].seq == 16


# coredis 6.9 leaves the anyio memory streams of a connection that failed to connect for
# the garbage collector (ResourceWarning in their __del__): theirs, not ours, collected here
@pytest.mark.spec("PW-NODE-3", "PW-NODE-4")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_with_redis_down_publishes_are_refused_and_subscribers_stay(
    redis: RedisProcess,
) -> None:
    with trio.fail_after(30):
        # stats every second: their publish fails too, and must not take the node down
        async with node(redis.url, stats_interval=1.0) as a, pw.connect(address(a)) as on_a:
            assert await on_a.publish("t", b"1") == 1
            sub = on_a.subscribe("t", since="oldest")
            assert seqs(await items(sub, 1)) == [1]
            broker = a.broker
            assert isinstance(broker, RedisBroker)
            redis.stop()
            with pytest.raises(pw.RequestError) as refused:
                await on_a.publish("t", b"lost?")
            assert refused.value.code == ErrorCode.BROKER_UNAVAILABLE
            await trio.sleep(1.5)  # a round of stats while Redis is down
            redis.start()  # no persistence: the topic's history is gone
            while True:
                try:
                    seq = await on_a.publish("t", b"again")
                    break
                except pw.RequestError as exc:
                    assert exc.code == ErrorCode.BROKER_UNAVAILABLE
                    await trio.sleep(0.05)
            assert on_a.connected
            got = await items(sub, 2)
    assert seq == 1
    assert isinstance(got[0], pw.EpochChange)
    assert isinstance(got[1], pw.Message) and got[1].payload == b"again"


async def test_a_node_follows_more_topics_than_a_connection_pool_holds(
    redis: RedisProcess,
) -> None:
    """Each followed topic holds a blocking read; publishes never wait behind them."""
    topics = [f"many/{i}" for i in range(80)]  # coredis pools hold 64 by default
    with trio.fail_after(30):
        async with (
            node(redis.url) as a,
            node(redis.url) as b,
            pw.connect(address(b)) as reader,
            pw.connect(address(a)) as writer,
        ):
            subs = [reader.subscribe(topic, since="oldest") for topic in topics]
            for topic in topics:
                assert await writer.publish(topic, topic.encode()) == 1
            for topic, sub in zip(topics, subs, strict=True):
                (got,) = await items(sub, 1)
                assert isinstance(got, pw.Message) and got.payload == topic.encode()


def by_topic(got: list[pw.Item]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for item in got:
        assert isinstance(item, pw.Message), item
        out.setdefault(item.topic, []).append(item.seq)
    return out


@pytest.mark.spec("PW-SUB-29", "PW-ORDER-15")
async def test_a_pattern_on_one_node_follows_topics_created_on_another(
    redis: RedisProcess,
) -> None:
    """orders/eu exists before the subscription, orders/us is created on node A after it;
    node B has never been asked for either by name."""
    with trio.fail_after(20):
        async with (
            node(redis.url) as a,
            node(redis.url) as b,
            pw.connect(address(b)) as reader,
            pw.connect(address(a)) as writer,
        ):
            assert await writer.publish("orders/eu", b"eu-1") == 1
            sub = reader.subscribe("orders/+", since="oldest")
            while not sub.accepted:
                await trio.sleep(0.01)
            assert await writer.publish("other/x", b"x-1") == 1
            assert await writer.publish("orders/us", b"us-1") == 1
            assert await writer.publish("orders/eu", b"eu-2") == 2
            assert await writer.publish_batch("orders/us", [b"us-2", b"us-3"]) == 2
            got = await items(sub, 5)
            assert by_topic(got) == {"orders/eu": [1, 2], "orders/us": [1, 2, 3]}
            # a node started now learns the existing names from Redis
            async with node(redis.url) as c, pw.connect(address(c)) as late:
                again = late.subscribe("orders/#", since="oldest")
                assert by_topic(await items(again, 5)) == {
                    "orders/eu": [1, 2],
                    "orders/us": [1, 2, 3],
                }
    payloads = {(m.topic, m.seq): m.payload for m in got if isinstance(m, pw.Message)}
    assert payloads[("orders/us", 3)] == b"us-3" and payloads[("orders/eu", 2)] == b"eu-2"


async def test_a_resume_older_than_the_local_cache_is_served_from_redis(
    redis: RedisProcess,
) -> None:
    """Node B caches about 4 KiB of the topic; Redis keeps all 20 messages (1 KiB each)."""
    payload = b"x" * 1024
    with trio.fail_after(20):
        async with (
            node(redis.url) as a,
            node(redis.url, history_bytes=4096) as b,
            pw.connect(address(a)) as writer,
            pw.connect(address(b)) as reader,
        ):
            for i in range(1, 21):
                assert await writer.publish("t", payload + b"%d" % i) == i
            first = reader.subscribe("t", since="new")
            while not first.accepted:
                await trio.sleep(0.01)
            cached = b.broker.stats()["t"]
            assert cached.head_seq == 20 and cached.oldest_seq > 4  # the cache lacks 4..
            async with pw.connect(address(b)) as resumer:
                resumed = resumer.subscribe("t", since=pw.TopicPosition(cached.epoch, 3))
                got = await items(resumed, 17)
                assert await writer.publish("t", b"21") == 21
                (after,) = await items(resumed, 1)
    assert seqs(got) == list(range(4, 21))
    assert [m.payload for m in got if isinstance(m, pw.Message)] == [
        payload + b"%d" % i for i in range(4, 21)
    ]
    assert seqs([after]) == [21]


@pytest.mark.spec("PW-LIMIT-7")
async def test_the_local_cache_keeps_to_the_memory_budget_and_redis_fills_in(
    redis: RedisProcess,
) -> None:
    """8 topics of 10 messages of 70 KiB (5.6 MB) through a node with a 1 MiB budget: the
    node's cache is trimmed to the budget, and a resume behind the trimmed cache still gets
    every message from Redis."""
    payload = b"p" * (70 << 10)
    topics = [f"big/{i}" for i in range(8)]
    limit = 1 << 20
    with trio.fail_after(30):
        async with (
            node(redis.url) as a,
            node(redis.url, memory_limit=limit) as b,
            pw.connect(address(a)) as writer,
            pw.connect(address(b)) as reader,
        ):
            for topic in topics:
                for i in range(1, 11):
                    assert await writer.publish(topic, payload + b"%d" % i) == i
            subs = [reader.subscribe(topic, since="new") for topic in topics]
            while not all(sub.accepted for sub in subs):
                await trio.sleep(0.01)
            broker = b.broker
            assert isinstance(broker, RedisBroker)
            assert broker.memory <= limit
            stats = broker.stats()
            assert all(stats[topic].head_seq == 10 for topic in topics)
            assert sum(stats[topic].entries for topic in topics) < 80  # trimmed
            # 1 MiB holds at most 14 frames of 70 KiB: some topic keeps at most one
            victim = max(topics, key=lambda topic: stats[topic].oldest_seq)
            assert stats[victim].oldest_seq > 8
            async with pw.connect(address(b)) as resumer:
                resumed = resumer.subscribe(victim, since=pw.TopicPosition(stats[victim].epoch, 7))
                got = await items(resumed, 3)
            assert broker.memory <= limit
    assert seqs(got) == [8, 9, 10]
    assert [m.payload for m in got if isinstance(m, pw.Message)] == [
        payload + b"%d" % i for i in range(8, 11)
    ]


@pytest.mark.spec("PW-LIMIT-5")
async def test_a_node_caches_at_most_max_topics_and_an_evicted_topic_loses_nothing(
    redis: RedisProcess,
) -> None:
    """Unlike a topic evicted from memory (a new epoch), one evicted from a node's cache
    keeps its epoch and history: Redis has them."""
    topics = [f"t/{i}" for i in range(6)]
    with trio.fail_after(30):
        async with (
            node(redis.url) as a,
            node(redis.url, max_topics=3) as b,
            pw.connect(address(a)) as writer,
        ):
            for topic in topics:
                for i in range(1, 6):
                    assert await writer.publish(topic, b"%d" % i) == i
            broker = b.broker
            assert isinstance(broker, RedisBroker)
            epoch = 0
            for topic in topics:
                async with pw.connect(address(b)) as reader:
                    (first,) = await items(reader.subscribe(topic, since="oldest"), 1)
                    assert isinstance(first, pw.Message) and first.seq == 1
                    if topic == topics[0]:
                        epoch = first.epoch
                while broker.stats()[topic].listeners:  # the server saw the close
                    await trio.sleep(0.01)
            assert len(broker.stats()) <= 3
            assert topics[0] not in broker.stats()
            async with pw.connect(address(b)) as resumer:
                got = await items(resumer.subscribe(topics[0], since=pw.TopicPosition(epoch, 2)), 3)
            assert broker.evicted >= 3
    assert seqs(got) == [3, 4, 5]
    assert all(isinstance(m, pw.Message) and m.epoch == epoch for m in got)


async def follow_and_match(url: str) -> None:
    """Two nodes on ``url``: a message published on one is read on the other, by name and
    by pattern."""
    with trio.fail_after(30):
        async with (
            node(url) as a,
            node(url) as b,
            pw.connect(address(b)) as reader,
            pw.connect(address(a)) as writer,
        ):
            by_name = reader.subscribe("orders/eu", since="oldest")
            by_pattern = reader.subscribe("news/+", since="oldest")
            while not by_pattern.accepted:
                await trio.sleep(0.01)
            assert await writer.publish("orders/eu", b"1") == 1
            assert await writer.publish_batch("orders/eu", [b"2", b"3"]) == 2
            assert await writer.publish("news/today", b"n1") == 1
            assert seqs(await items(by_name, 3)) == [1, 2, 3]
            assert by_topic(await items(by_pattern, 1)) == {"news/today": [1]}


# coredis 6.9's cluster client leaves anyio memory streams of its connections to the garbage
# collector, as its other clients do for failed connections (see collect_failed_connections)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_nodes_on_a_redis_cluster_share_topics(tmp_path: Path) -> None:
    cluster = RedisProcess(tmp_path, cluster=True)
    cluster.start()
    try:
        await follow_and_match(f"redis+cluster://127.0.0.1:{cluster.port}")
    finally:
        cluster.stop()
        collect_failed_connections()


async def test_nodes_find_the_primary_through_sentinel(redis: RedisProcess, tmp_path: Path) -> None:
    sentinel = SentinelProcess(tmp_path, redis.port)
    sentinel.start()
    try:
        await follow_and_match(f"redis+sentinel://127.0.0.1:{sentinel.port}/{sentinel.service}/0")
    finally:
        sentinel.stop()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://127.0.0.1:6379/0", None),
        ("redis+cluster://10.0.0.1:7000,10.0.0.2:7000", None),
        ("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/pw", None),
        ("redis+sentinel://10.0.0.1:26379/pw/3", None),
        ("http://127.0.0.1:6379", "is not redis://"),
        ("redis+sentinel://10.0.0.1:26379", "needs HOST:PORT"),
        ("redis+sentinel://10.0.0.1:26379/pw/x", "needs HOST:PORT"),
        ("redis+cluster://10.0.0.1", "is not HOST:PORT"),
    ],
)
def test_broker_urls_are_checked_before_starting(url: str, problem: str | None) -> None:
    found = redis_url_problem(url)
    assert found is None if problem is None else (found is not None and problem in found)


async def test_the_bench_launcher_runs_nodes_on_one_port_and_stops_them(tmp_path: Path) -> None:
    """``pushwire.client.bench.nodes launch``: two nodes share a port and a Redis of the
    launcher's own; SIGTERM to the launcher stops every one of them."""
    port = free_port()
    with (tmp_path / "launcher.log").open("wb") as errors:
        launcher = subprocess.Popen(
            [
                *(sys.executable, "-m", "pushwire.client.bench.nodes", "launch", "--nodes", "2"),
                *("serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
            ],
            stdout=subprocess.PIPE,
            stderr=errors,
            cwd=tmp_path,
        )
        try:
            assert launcher.stdout is not None
            lines = [launcher.stdout.readline().decode() for _ in range(2)]
            assert all(line.startswith("pushwire listening on ") for line in lines), lines
            with trio.fail_after(20):
                async with (
                    pw.connect(f"127.0.0.1:{port}") as reader,
                    pw.connect(f"127.0.0.1:{port}") as writer,
                ):
                    sub = reader.subscribe("t", since="oldest")
                    assert await writer.publish("t", b"1") == 1
                    assert seqs(await items(sub, 1)) == [1]
            launcher.send_signal(signal.SIGTERM)
            assert launcher.wait(20) == 0
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
        finally:
            if launcher.poll() is None:  # the test failed: stop it as it is meant to be stopped
                launcher.send_signal(signal.SIGTERM)
                try:
                    launcher.wait(20)
                except subprocess.TimeoutExpired:
                    launcher.kill()
                    launcher.wait()
            if launcher.stdout is not None:
                launcher.stdout.close()
