"""Pattern fan-out: ``subscribers`` connections following ``topics`` topics, each with one
pattern subscription (``bench/p/+``) or with one exact subscription per topic, and one
publisher spreading ``messages`` over the topics round-robin (SPEC.md §6.7).

Theory of operation: the same ``pushwire serve`` child process and raw peers as
:mod:`pushwire.client.bench.server`. Every subscriber counts the records it receives and
checks, per topic, that sequences are contiguous from 1; the figure is deliveries per
second (messages x subscribers over the time from the first publish to the last
delivery), for the pattern and the exact run of the same load, side by side. Both runs
read the same per-topic logs on the server (encode-once), so the difference is what the
pattern costs: a trie walk per new topic, and one cursor per (subscriber, topic) either way.
Run as ``python -m pushwire.client.bench.patterns [SUBSCRIBERS TOPICS MESSAGES]``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from pushwire.client.bench.server import (
    MAX_CREDIT,
    RECEIVE_SIZE,
    BenchError,
    next_frame,
    open_peer,
)
from pushwire.client.bench.server import open_server_process as open_server
from pushwire.protocol import codec
from pushwire.protocol import frames as F

__all__ = ["patterns_run"]

PREFIX = "bench/p"
PAYLOAD = bytes(64)
#: PUBLISH frames per ``send_all``.
CHUNK = 64


async def _subscribe_all(conn: Any, topics: int, pattern: bool) -> None:
    """One pattern SUBSCRIBE, or ``topics`` exact ones sent in one write."""
    if pattern:
        await conn.send(F.Subscribe(1, f"{PREFIX}/+", initial_credit=MAX_CREDIT, positions=()))
        want = 1
    else:
        frames = [
            F.Subscribe(i + 1, f"{PREFIX}/{i}", initial_credit=MAX_CREDIT) for i in range(topics)
        ]
        await conn.send(*frames)
        want = topics
    for _ in range(want):
        frame = await next_frame(conn)
        if not isinstance(frame, F.Subscribed):
            raise BenchError(f"SUBSCRIBE refused: {frame!r}")


async def _receive(conn: Any, total: int, done: list[float], errors: list[str]) -> None:
    """Count records until ``total``; per topic, sequences must follow each other."""
    stream, decoder = conn.stream, conn.decoder
    next_seq: dict[str, int] = {}
    got = 0
    while got < total:
        data = await stream.receive_some(RECEIVE_SIZE)
        if not data:
            errors.append(f"closed after {got} of {total}")
            return
        decoder.feed(data)
        while (frame := decoder.next_frame()) is not None:
            if isinstance(frame, F.Message):
                first, n, topic = frame.seq, 1, frame.topic
            elif isinstance(frame, F.MessageBatch):
                first, n, topic = frame.base_seq, len(frame.records), frame.topic
            elif isinstance(frame, F.Ping):
                await conn.send(F.Pong(frame.opaque))
                continue
            else:
                errors.append(f"unexpected {frame!r}")
                return
            if next_seq.get(topic, 1) != first:
                errors.append(f"{topic}: seq {first}, expected {next_seq.get(topic, 1)}")
                return
            next_seq[topic] = first + n
            got += n
    done.append(time.perf_counter())


async def patterns_run(
    subscribers: int, topics: int, messages: int, pattern: bool
) -> dict[str, Any]:
    import trio

    errors: list[str] = []
    done: list[float] = []
    args = (
        *("--max-connections", str(subscribers + 16)),
        *("--max-connections-per-source", str(subscribers + 16)),  # all from 127.0.0.1
        *("--max-subscriptions", str(topics + 1)),
        *("--churn-rate", str(subscribers * topics)),  # the exact run subscribes to every topic
    )
    async with open_server(*args) as server:
        subs = []
        for i in range(subscribers):
            conn = await open_peer(server.port, f"bench-pattern-{i}")
            await _subscribe_all(conn, topics, pattern)
            subs.append(conn)
        pub = await open_peer(server.port, "bench-pattern-pub")
        frames = [
            codec.encode_frame(F.Publish(0, f"{PREFIX}/{i % topics}", PAYLOAD))
            for i in range(messages)
        ]
        cpu0 = server.cpu_seconds()
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for conn in subs:
                nursery.start_soon(_receive, conn, messages, done, errors)
            for start in range(0, messages, CHUNK):
                await pub.stream.send_all(b"".join(frames[start : start + CHUNK]))
        elapsed = (max(done) if done else time.perf_counter()) - t0
        cpu1 = server.cpu_seconds()
        cpu = None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 2)
        for conn in [*subs, pub]:
            await conn.aclose()
    return {
        "mode": "pattern" if pattern else "exact",
        "subscribers": subscribers,
        "topics": topics,
        "messages": messages,
        "seconds": round(elapsed, 3),
        "deliveries_per_s": round(messages * subscribers / elapsed),
        "server_cpu_s": cpu,
        "errors": errors[:5],
    }


def main(argv: list[str]) -> int:
    import trio

    subscribers, topics, messages = (int(a) for a in (argv or ["100", "1000", "20000"]))
    for pattern in (False, True):
        print(json.dumps(trio.run(patterns_run, subscribers, topics, messages, pattern)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
