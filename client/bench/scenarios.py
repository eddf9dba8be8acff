"""``pushwire bench server`` scenarios ``rate``, ``idle`` and ``interference``.

Theory of operation
-------------------
Same rules as :mod:`pushwire.client.bench.server` (whose server process, raw connections
and checking subscribers these reuse; ``idle`` has subscribers of its own): a ``pushwire
serve`` child process on 127.0.0.1, raw protocol peers, every payload stamped with its index
and publish time, and every subscriber checks that it gets every message once, in order.
They report what they measured and assert no speed.

``rate``: ``--rate-subscribers`` subscribers (10) and one publisher sending one PUBLISH at a
time at each of ``--rates`` (200,2000 msg/s) for ``--rate-seconds``: publish-to-deliver
latency p50/p99 and the server's CPU share at a fixed, not a saturating, load.

``idle``: ``--idle-connections`` subscribed connections (1000) with a ``--idle-heartbeat-ms``
heartbeat (1000), which answer PINGs and nothing else. They are raw sockets on ``select.epoll``
in ``--idle-workers`` processes of their own (:mod:`pushwire.client.bench.idle`), so that the
figures are the server's, not those of one Python process holding every connection. Figures:
the server's RSS growth per connection, its CPU share while they idle for ``--idle-seconds``
(the heartbeats' cost), then ``--idle-publishes`` messages at 1 msg/s to all of them:
delivery p50/p99 (publish and arrival stamped with ``time.monotonic_ns``, one clock for all
processes), and how many connections the server dropped (must be 0).

``interference``: a probe subscriber on one topic gets ``--probe`` messages published one at a
time (each after the previous arrived) while a busy topic gets 2,000 msg/s; twice: without,
then with ``--idle-connections`` zero-credit subscribers on the busy topic. Figure: the probe
topic's p50 with / without. A subscriber without credit must cost nothing when its topic moves.
"""

from __future__ import annotations

import argparse
import resource
import time
from typing import TYPE_CHECKING, Any

from pushwire.client.bench import idle as idle_peers
from pushwire.client.bench import server
from pushwire.client.bench.server import (
    MAX_CREDIT,
    MAX_FRAME_SIZE,
    STAMP,
    BenchError,
    Progress,
    Subscriber,
    _describe,
    _int_list,
    _latency_us,
    _server_percent,
    open_peer,
)
from pushwire.client.bench.server import open_server_process as open_server
from pushwire.protocol import codec
from pushwire.protocol import frames as F

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import trio

__all__ = ["add_arguments", "run_scenarios"]

#: Connections opened at once while setting up many (each waits for its SUBSCRIBED).
CONNECT_BATCH = 50
#: The busy topic's rate in ``interference``, published in 10 ms slices.
BUSY_RATE = 2000
MAX_IDLE_CONNECTIONS = 20_000
#: Processes holding the idle subscribers (the server has a core of its own on two cores
#: or more; these share what is left).
IDLE_WORKERS = 2
MAX_IDLE_WORKERS = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rates",
        type=_int_list,
        default=[200, 2000],
        metavar="N,N",
        help="rate: messages per second (default 200,2000)",
    )
    parser.add_argument("--rate-subscribers", type=int, default=10, help="rate: subscribers (10)")
    parser.add_argument(
        "--rate-seconds", type=float, default=5.0, help="rate: seconds per rate (5)"
    )
    parser.add_argument(
        "--idle-connections",
        type=int,
        default=1000,
        metavar="N",
        help="idle, interference: idle or zero-credit subscribers (1000)",
    )
    parser.add_argument(
        "--idle-heartbeat-ms", type=int, default=1000, help="idle: heartbeat asked for (1000)"
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=10.0, help="idle: seconds of idling measured (10)"
    )
    parser.add_argument(
        "--idle-publishes", type=int, default=5, help="idle: messages at 1 msg/s to all (5)"
    )
    parser.add_argument(
        "--idle-workers",
        type=int,
        default=IDLE_WORKERS,
        metavar="N",
        help=f"idle: processes holding the subscribers ({IDLE_WORKERS})",
    )


def _raise_fd_limit(wanted: int) -> None:
    """Room for ``wanted`` sockets here and in the server (which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        raise BenchError(f"{wanted} sockets need `ulimit -n {wanted}`; the limit is {soft}")


async def _open_many(
    port: int,
    n: int,
    topic: str,
    credit: int,
    heartbeat_ms: int,
    receivers: trio.Nursery,
    total: int | None,
    progress: Progress,
) -> list[Subscriber]:
    """``n`` subscribers, each receiving (and answering PINGs) in ``receivers`` from the
    moment it is subscribed: setting up thousands takes longer than a heartbeat timeout."""
    import trio

    subs: list[Subscriber] = []

    async def one(i: int) -> None:
        s = await Subscriber.open(port, f"bench-idle-{i}", topic, credit, heartbeat_ms)
        subs.append(s)
        receivers.start_soon(s.receive, total, total or 0, progress)

    for start in range(0, n, CONNECT_BATCH):
        async with trio.open_nursery() as nursery:
            for i in range(start, min(n, start + CONNECT_BATCH)):
                nursery.start_soon(one, i)
    return subs


def _publish_frame(
    topic: str, index: int, filler: bytes, clock: Callable[[], int] = time.perf_counter_ns
) -> bytes:
    """A PUBLISH whose payload starts with its index and its publish time by ``clock`` (the
    subscribers' clock: ``time.monotonic_ns`` for those in other processes)."""
    stamp = STAMP.pack(index, clock())
    return codec.encode_frame(F.Publish(0, topic, stamp + filler))


# -- rate -------------------------------------------------------------------------------------


async def rate_run(rate: int, subscribers: int, seconds: float, limit: float) -> dict[str, Any]:
    import trio

    topic = f"bench/rate/{rate}"
    total = max(1, int(rate * seconds))
    filler = bytes(64 - STAMP.size)
    errors: list[str] = []
    async with open_server("--max-connections", str(subscribers + 16)) as server:
        subs = [
            await Subscriber.open(server.port, f"bench-rate-{i}", topic, MAX_CREDIT)
            for i in range(subscribers)
        ]
        pub = await open_peer(server.port, "bench-rate-pub")
        progress = Progress()
        cpu0 = cpu1 = None
        t0 = t1 = time.perf_counter()
        with trio.move_on_after(limit) as scope:
            async with trio.open_nursery() as nursery:
                for s in subs:
                    nursery.start_soon(s.receive, total, total, progress)
                cpu0, t0 = server.cpu_seconds(), time.perf_counter()
                start = trio.current_time()
                for i in range(total):
                    await trio.sleep_until(start + i / rate)
                    await pub.stream.send_all(_publish_frame(topic, i, filler))
                await progress.until(lambda: all(s.finished for s in subs))
                cpu1, t1 = server.cpu_seconds(), time.perf_counter()
        for s in [*subs]:
            await s.conn.aclose()
        await pub.aclose()
    if scope.cancelled_caught:
        errors.append(f"stopped by --duration-limit after {limit:g} s")
    errors += [f"subscriber {i}: {s.error}" for i, s in enumerate(subs) if s.error]
    received = [s.received for s in subs]
    return {
        "rate": rate,
        "subscribers": subscribers,
        "messages": total,
        "latency_us": _latency_us([s.loaded for s in subs]),
        "server_cpu_percent": _server_percent(cpu1, cpu0, t1 - t0),
        "received": received,
        "complete": not errors and all(n == total for n in received),
        "errors": errors,
    }


# -- idle connections -------------------------------------------------------------------------


async def idle_run(
    connections: int,
    heartbeat_ms: int,
    idle_seconds: float,
    publishes: int,
    limit: float,
    workers: int = IDLE_WORKERS,
) -> dict[str, Any]:
    """The subscribers live in ``workers`` processes of their own (:mod:`.idle`); this
    process runs the server and the publisher, and reads the figures from both."""
    import trio

    if not 1 <= workers <= MAX_IDLE_WORKERS:
        raise BenchError(f"--idle-workers must lie in 1..{MAX_IDLE_WORKERS}")
    _raise_fd_limit(connections + 256)
    topic = "bench/idle"
    filler = bytes(64 - STAMP.size)
    errors: list[str] = []
    server_args = [
        *("--max-connections", str(connections + 16)),
        # every subscriber comes from 127.0.0.1, each worker with SETUP_BATCH handshakes
        *("--max-connections-per-source", str(connections + 16)),
        *("--max-handshaking", str(max(256, 4 * workers * idle_peers.SETUP_BATCH))),
        *("--heartbeat-min-ms", str(min(heartbeat_ms, 1000))),
    ]
    result: dict[str, Any] = {
        "connections": connections,
        "heartbeat_ms": heartbeat_ms,
        "idle_seconds": idle_seconds,
        "publishes": publishes,
        "workers": workers,
    }
    parts: list[dict[str, Any]] = []
    crew: list[idle_peers.Worker] = []
    cpu0 = cpu1 = before = after = None
    t0 = t1 = 0.0
    async with open_server(*server_args) as server:
        await trio.sleep(0.5)
        before = server.memory_kib()
        with trio.move_on_after(limit) as scope:
            crew = idle_peers.start_workers(
                workers,
                server.port,
                connections,
                topic,
                heartbeat_ms=heartbeat_ms,
                max_frame_size=MAX_FRAME_SIZE,
                credit=MAX_CREDIT,
                expected=publishes,
                setup_seconds=limit,
            )
            try:
                said = [await w.next_message() for w in crew]
                errors += [f"worker {i}: {m}" for i, (k, m) in enumerate(said) if k != "ready"]
                if not errors:
                    pub = await open_peer(server.port, "bench-idle-pub")
                    await trio.sleep(1.0)  # settle
                    after = server.memory_kib()
                    cpu0, t0 = server.cpu_seconds(), time.perf_counter()
                    print(f"  {connections} connections up; idling {idle_seconds:g} s", flush=True)
                    await trio.sleep(idle_seconds)
                    cpu1, t1 = server.cpu_seconds(), time.perf_counter()
                    for i in range(publishes):
                        await pub.stream.send_all(
                            _publish_frame(topic, i, filler, time.monotonic_ns)
                        )
                        await trio.sleep(1.0)
                    with trio.move_on_after(10):
                        for w in crew:
                            if publishes:
                                kind, message = await w.next_message()
                                if kind != "done":
                                    errors.append(f"worker: {message}")
                    await pub.aclose()
            finally:
                for w in crew:
                    w.stop()
                with trio.CancelScope(shield=True), trio.move_on_after(30):
                    for w in crew:
                        while w.last[0] not in ("figures", "error"):
                            await w.next_message()
                        if w.last[0] == "figures":
                            parts.append(w.last[1])
                        else:
                            errors.append(f"worker: {w.last[1]}")
                for w in crew:
                    w.end()
        crashed = server.exited()
    if scope.cancelled_caught:
        errors.append(f"stopped by --duration-limit after {limit:g} s")
    if crashed:
        errors.append("the server exited during the run")
    got = idle_peers.merge(parts)
    errors += got.errors
    arrived = sum(got.received)
    if parts and not got.errors and arrived < connections * publishes:
        errors.append(
            f"{arrived} of {connections * publishes} deliveries arrived within 10 s of the "
            "last publish"
        )
    rss = None
    if before and after and got.connected:
        rss = (after["rss"] - before["rss"]) / got.connected
    result |= {
        "connected": got.connected,
        "rss_kib_per_connection": rss,
        "idle_server_cpu_percent": _server_percent(cpu1, cpu0, t1 - t0) if t1 else None,
        "latency_us": _latency_us(got.latencies),
        "dropped": got.dropped,
        "generator_cpu_seconds": got.cpu_seconds,
        "complete": not errors
        and got.connected == connections
        and got.received == [publishes] * connections,
        "errors": errors[:5],
    }
    return result


# -- interference -----------------------------------------------------------------------------


async def interference_run(zero_credit: int, probes: int, limit: float) -> dict[str, Any]:
    import trio

    _raise_fd_limit(zero_credit + 256)
    busy, quiet = "bench/busy", "bench/quiet"
    filler = bytes(64 - STAMP.size)
    errors: list[str] = []
    async with open_server("--max-connections", str(zero_credit + 16)) as server:
        idle: list[Subscriber] = []
        probe = await Subscriber.open(server.port, "bench-probe", quiet, MAX_CREDIT)
        busy_sub = await Subscriber.open(server.port, "bench-busy-sub", busy, MAX_CREDIT)
        with trio.move_on_after(limit) as scope:
            progress = Progress()
            async with trio.open_nursery() as nursery:
                if zero_credit:
                    idle = await _open_many(
                        server.port, zero_credit, busy, 0, 60_000, nursery, None, progress
                    )
                pub = await open_peer(server.port, "bench-busy-pub")
                prober = await open_peer(server.port, "bench-probe-pub")
                nursery.start_soon(busy_sub.receive, None, 1 << 62, progress)
                nursery.start_soon(probe.receive, probes, probes, progress)

                async def busy_publisher() -> None:
                    index = 0
                    start = trio.current_time()
                    while True:
                        k = BUSY_RATE // 100
                        data = b"".join(_publish_frame(busy, index + j, filler) for j in range(k))
                        await pub.stream.send_all(data)
                        index += k
                        await trio.sleep_until(start + index / BUSY_RATE)

                nursery.start_soon(busy_publisher)
                await trio.sleep(0.5)
                for i in range(probes):
                    await prober.stream.send_all(_publish_frame(quiet, i, filler))

                    def arrived(wanted: int = i + 1) -> bool:
                        return probe.received >= wanted or probe.finished

                    await progress.until(arrived)
                    if probe.finished:
                        break
                nursery.cancel_scope.cancel()
                await pub.aclose()
                await prober.aclose()
        for s in [*idle, probe, busy_sub]:
            await s.conn.aclose()
    if scope.cancelled_caught:
        errors.append(f"stopped by --duration-limit after {limit:g} s")
    for name, s in (("probe", probe), ("busy subscriber", busy_sub)):
        if s.error:
            errors.append(f"{name}: {s.error}")
    got = sum(s.received for s in idle)
    if got:
        errors.append(f"zero-credit subscribers received {got} messages")
    return {
        "zero_credit_subscribers": zero_credit,
        "probe_latency_us": _latency_us([probe.loaded]),
        "busy_received": busy_sub.received,
        "zero_credit_received": got,
        "complete": not errors and probe.received == probes,
        "errors": errors,
    }


# -- running ----------------------------------------------------------------------------------


def _us(latency: dict[str, Any] | None, key: str) -> str:
    return "-" if latency is None else f"{latency[key]:,.0f}"


async def run_scenarios(
    args: argparse.Namespace, scenarios: Sequence[str], report: dict[str, Any]
) -> None:
    limit = args.duration_limit
    if "rate" in scenarios:
        print(f"fixed rate: {args.rate_subscribers} subscribers, one PUBLISH at a time; µs")
        print("| msg/s | p50 | p99 | srv cpu | check |\n|---:|---:|---:|---:|---|")
        report["rate"] = []
        for rate in args.rates:
            try:
                r = await rate_run(rate, args.rate_subscribers, args.rate_seconds, limit)
            except BenchError as exc:
                r = {"rate": rate, "complete": False, "errors": [_describe(exc)]}
            report["rate"].append(r)
            cpu = r.get("server_cpu_percent")
            print(
                f"| {rate:,} | {_us(r.get('latency_us'), 'p50')} | "
                f"{_us(r.get('latency_us'), 'p99')} | {'-' if cpu is None else f'{cpu:.0f} %'} | "
                f"{'ok' if r['complete'] else r['errors'][:1]} |",
                flush=True,
            )
        print()
    if "idle" in scenarios:
        print(
            f"idle connections: {args.idle_connections} subscribed, heartbeat "
            f"{args.idle_heartbeat_ms} ms, idle {args.idle_seconds:g} s, then "
            f"{args.idle_publishes} messages at 1 msg/s to all"
        )
        try:
            r = await idle_run(
                args.idle_connections,
                args.idle_heartbeat_ms,
                args.idle_seconds,
                args.idle_publishes,
                limit,
                args.idle_workers,
            )
        except BenchError as exc:
            r = {"complete": False, "errors": [_describe(exc)]}
        report["idle"] = [r]
        rss, cpu = r.get("rss_kib_per_connection"), r.get("idle_server_cpu_percent")
        print("| RSS per connection | idle srv cpu | p50 µs | p99 µs | dropped | check |")
        print("|---:|---:|---:|---:|---:|---|")
        print(
            f"| {'-' if rss is None else f'{rss:.1f} KiB'} | "
            f"{'-' if cpu is None else f'{cpu:.1f} %'} | {_us(r.get('latency_us'), 'p50')} | "
            f"{_us(r.get('latency_us'), 'p99')} | {r.get('dropped', '-')} | "
            f"{'ok' if r['complete'] else r['errors'][:1]} |\n",
            flush=True,
        )
    if "interference" in scenarios:
        print(
            f"interference: probe topic p50 while a busy topic gets {BUSY_RATE} msg/s, without "
            f"and with {args.idle_connections} zero-credit subscribers on the busy topic"
        )
        report["interference"] = []
        for n in (0, args.idle_connections):
            try:
                r = await interference_run(n, args.probe, limit)
            except BenchError as exc:
                r = {"zero_credit_subscribers": n, "complete": False, "errors": [_describe(exc)]}
            report["interference"].append(r)
            print(
                f"  {n:>6} zero-credit: probe p50 {_us(r.get('probe_latency_us'), 'p50')} µs, "
                f"p99 {_us(r.get('probe_latency_us'), 'p99')} µs "
                f"{'ok' if r['complete'] else r['errors'][:1]}",
                flush=True,
            )
        print()


server.EXTRA_ARGUMENTS.append(add_arguments)
server.EXTRA_SCENARIOS.append(run_scenarios)
