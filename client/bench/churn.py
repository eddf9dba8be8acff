"""``pushwire bench server --scenario churn``: connections that come and go, each doing a
random mix of what clients do, right or wrong.

Theory of operation
-------------------
A server that runs for months meets every kind of client, and each must leave nothing
behind when it goes: no memory held for a closed connection, no connection ended by a bug
of the server's. ``churn`` opens ``--churn-connections`` connections (20,000),
``--churn-concurrency`` at a time (50), against a ``pushwire serve`` child process on
127.0.0.1. Each follows a generator seeded from ``--churn-seed`` (:func:`random_visit`):
after the handshake a few of SUBSCRIBE (NEW or OLDEST, any credit, at-least-once or not), a
pattern SUBSCRIBE, PUBLISH (with or without PUBACK, 10 or 3,000 bytes), ACK and CREDIT with
arbitrary values, UNSUBSCRIBE of any id, a pause; it may end with garbage or with a frame
cut short, reads what came for a moment or not at all, and leaves by FIN or by reset.

The server keeps 10 messages of history per topic (``--history-count 10``), so its topics
are full after the first few hundred connections and its RSS must then stay flat. Figures:
connections per second; the server's RSS after each fifth of the run; the connections it
closed by code, from its own counters (the ``$sys/stats`` topic, published every second).
Check: no connection closed as INTERNAL_ERROR, the server still running, and RSS at the end
within ``--churn-max-growth`` MiB (16) of RSS after the first fifth. A closed session kept
alive until its heartbeat deadline had grown RSS by 5 MiB per thousand connections, a TLS
stream left in a reference cycle by 25 KiB each; a writer race had ended one connection in
seven as INTERNAL_ERROR.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import time
from typing import TYPE_CHECKING, Any

from pushwire.client.bench import server
from pushwire.client.bench.server import BenchError, _describe, open_peer
from pushwire.client.bench.server import open_server_process as open_server
from pushwire.protocol import frames as F
from pushwire.protocol.layouts import SinceKind

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pushwire.client.conformance.wire import WireConnection

__all__ = ["add_arguments", "problem", "random_visit", "run_scenarios"]

MAX_CONNECTIONS = 1_000_000
MAX_CONCURRENCY = 500
#: Where the server publishes its figures (``--stats-interval 1``).
STATS_TOPIC = "$sys/stats"
#: Topics the connections share: few, so that their history fills early.
TOPICS = 4
PATTERNS = ("churn-p/+", "churn-p/#")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--churn-connections",
        type=int,
        default=20_000,
        metavar="N",
        help="churn: connections in all (default 20000)",
    )
    parser.add_argument(
        "--churn-concurrency",
        type=int,
        default=50,
        metavar="N",
        help="churn: connections open at once (default 50)",
    )
    parser.add_argument(
        "--churn-seed", type=int, default=1, help="churn: seed of the behaviours (default 1)"
    )
    parser.add_argument(
        "--churn-max-growth",
        type=float,
        default=16.0,
        metavar="MIB",
        help="churn: RSS growth allowed after the first fifth (default 16)",
    )


def problem(args: argparse.Namespace) -> str | None:
    if not 1 <= args.churn_connections <= MAX_CONNECTIONS:
        return f"--churn-connections must be 1 to {MAX_CONNECTIONS}"
    if not 1 <= args.churn_concurrency <= MAX_CONCURRENCY:
        return f"--churn-concurrency must be 1 to {MAX_CONCURRENCY}"
    if not args.churn_max_growth >= 0:
        return "--churn-max-growth must be 0 or more"
    return None


async def random_visit(conn: WireConnection, rng: random.Random) -> None:
    """What one client does after its handshake, drawn from ``rng`` (see the module
    docstring); it closes the connection itself. Never raises for what the server does: a
    write to a connection the server closed is an observation, not an error."""
    import trio

    topics = [f"churn/{rng.randrange(TOPICS)}" for _ in range(3)]
    for _ in range(rng.randrange(1, 10)):
        k = rng.random()
        frame: F.Frame | None = None
        if k < 0.2:
            frame = F.Subscribe(
                rng.randrange(1, 5),
                rng.choice(topics),
                since_kind=rng.choice([SinceKind.NEW, SinceKind.OLDEST]),
                initial_credit=rng.choice([0, 1, 5, 1000]),
                at_least_once=rng.random() < 0.5,
            )
        elif k < 0.3:
            frame = F.Subscribe(rng.randrange(5, 8), rng.choice(PATTERNS), initial_credit=3)
        elif k < 0.55:
            topic = rng.choice([*topics, "churn-p/x", "churn-p/y/z"])
            frame = F.Publish(rng.choice([0, 1]), topic, b"p" * rng.choice([10, 3000]), None)
        elif k < 0.65:
            frame = F.Ack(rng.randrange(1, 8), rng.randrange(0, 20))
        elif k < 0.72:
            frame = F.Credit(rng.randrange(1, 8), rng.choice([1, 10, 2**31]))
        elif k < 0.8:
            frame = F.Unsubscribe(rng.randrange(1, 8))
        if frame is None:
            await trio.sleep(rng.random() * 0.01)
        elif not await conn.send(frame):
            break  # the server closed it
    end = rng.random()
    if end < 0.15:
        await conn.send_raw(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))))
    elif end < 0.25:
        await conn.send_raw(b"\x00\x00\x10")  # a frame cut short
    if rng.random() < 0.5:
        deadline = trio.current_time() + rng.random() * 0.02
        while isinstance(await conn.receive_some(deadline - trio.current_time()), bytes):
            pass
    stream = conn.stream
    if rng.random() < 0.2 and isinstance(stream, trio.SocketStream):
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await conn.aclose()


async def _closed_by_code(port: int) -> dict[str, int]:
    """The server's count of closed connections by code, from its next ``$sys/stats``."""
    import trio

    from pushwire.client.conformance.wire import Closed
    from pushwire.protocol.errors import ErrorCode

    conn = await open_peer(port, "churn-stats")
    try:
        await conn.send(F.Subscribe(1, STATS_TOPIC, initial_credit=10))
        with trio.fail_after(10):
            while True:
                frame = await conn.next_frame()
                if isinstance(frame, Closed):
                    raise BenchError(f"the server closed the stats subscription ({frame})")
                if isinstance(frame, F.Error) and frame.code == ErrorCode.FORBIDDEN:
                    raise BenchError(f"{STATS_TOPIC} is forbidden")
                if isinstance(frame, F.Message):
                    stats = json.loads(frame.payload)
                    return dict(stats["totals"]["closed_by_code"])
    finally:
        await conn.aclose()


async def churn_run(
    connections: int, concurrency: int, seed: int, max_growth_mib: float, limit: float
) -> dict[str, Any]:
    import trio

    errors: list[str] = []
    rng = random.Random(seed)
    rss_mib: list[float] = []
    failed_opens = 0
    started = time.perf_counter()
    done = 0
    async with open_server(
        *("--churn-rate", "1000000", "--history-count", "10", "--stats-interval", "1"),
        *("--max-connections", str(concurrency + 16)),
    ) as srv:

        async def one(r: random.Random) -> None:
            nonlocal failed_opens
            try:
                conn = await open_peer(srv.port, "churn", r.choice([1000, 5000, 60_000]))
            except (BenchError, OSError):
                failed_opens += 1
                return
            await random_visit(conn, r)

        fifths = {connections * i // 5 for i in range(1, 6)}
        with trio.move_on_after(limit) as scope:
            while done < connections:
                batch = min(concurrency, connections - done)
                async with trio.open_nursery() as nursery:
                    for _ in range(batch):
                        nursery.start_soon(one, random.Random(rng.random()))
                before, done = done, done + batch
                if any(before < f <= done for f in fifths):
                    memory = srv.memory_kib()
                    if memory is not None:
                        rss_mib.append(memory["rss"] / 1024)
        seconds = time.perf_counter() - started
        if scope.cancelled_caught:
            errors.append(f"stopped by --duration-limit after {limit:g} s")
        alive = not srv.exited()
        closed = await _closed_by_code(srv.port) if alive else {}
    if not alive:
        errors.append("the server exited during the run")
    if closed.get("INTERNAL_ERROR"):
        errors.append(f"{closed['INTERNAL_ERROR']} connections closed as INTERNAL_ERROR")
    if failed_opens:
        errors.append(f"{failed_opens} connections could not be opened")
    growth = rss_mib[-1] - rss_mib[0] if len(rss_mib) >= 2 else None
    if growth is not None and growth > max_growth_mib:
        errors.append(f"RSS grew {growth:.1f} MiB after the first fifth")
    return {
        "connections": done,
        "connections_per_s": done / seconds if seconds else None,
        "rss_mib_by_fifth": [round(m, 1) for m in rss_mib],
        "rss_growth_mib": None if growth is None else round(growth, 1),
        "closed_by_code": closed,
        "complete": not errors and done == connections,
        "errors": errors,
    }


async def run_scenarios(
    args: argparse.Namespace, scenarios: Sequence[str], report: dict[str, Any]
) -> None:
    if "churn" not in scenarios:
        return
    print(
        f"churn: {args.churn_connections} connections, {args.churn_concurrency} at a time, "
        f"each a random mix of right and wrong behaviour (seed {args.churn_seed})"
    )
    try:
        r = await churn_run(
            args.churn_connections,
            args.churn_concurrency,
            args.churn_seed,
            args.churn_max_growth,
            args.duration_limit,
        )
    except BenchError as exc:
        r = {"complete": False, "errors": [_describe(exc)]}
    report["churn"] = [r]
    rate = r.get("connections_per_s")
    fifths = " / ".join(f"{m:.0f}" for m in r.get("rss_mib_by_fifth", [])) or "-"
    closed = r.get("closed_by_code", {})
    print("| conn/s | RSS MiB by fifth | INTERNAL_ERROR | closed by code | check |")
    print("|---:|---|---:|---|---|")
    print(
        f"| {'-' if rate is None else f'{rate:,.0f}'} | {fifths} | "
        f"{closed.get('INTERNAL_ERROR', 0) if closed else '-'} | "
        f"{', '.join(f'{k} {v}' for k, v in closed.items()) or '-'} | "
        f"{'ok' if r['complete'] else r['errors'][:1]} |\n",
        flush=True,
    )


server.EXTRA_ARGUMENTS.append(add_arguments)
server.EXTRA_PROBLEMS.append(problem)
server.EXTRA_SCENARIOS.append(run_scenarios)
