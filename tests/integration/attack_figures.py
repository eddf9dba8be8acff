"""Figures for the memory attacks against a ``pushwire serve`` subprocess: the server's RSS
peak (VmHWM), and a canary's delivered/expected and p99 latency while the attack runs.

    python tests/integration/attack_figures.py flood --pushwire .venv/bin/pushwire -- \\
        --memory-limit 32M
    python tests/integration/attack_figures.py churn --pushwire .venv/bin/pushwire -- \\
        --max-topics 2000 --churn-rate 1000000

    python tests/integration/attack_figures.py hog --pushwire .venv/bin/pushwire

``flood``: ``--flood-size`` messages (512 KiB) to ``--flood-topics`` new topics (1,000)
from 127.0.0.2, each answered before the next is sent. ``churn``: ``orders/eu/ledger`` holds
5 messages and its subscriber goes offline after 2; an anonymous client from 127.0.0.2
subscribes and unsubscribes to ``--pairs`` new topics (5,000); the subscriber then resumes
AFTER(epoch, 2).

The three admission attacks run the server at its default log level and count the bytes
it logs while they last (``log_bytes``); ``probes`` are the new clients from 127.0.0.1
that try to connect meanwhile, ``admitted`` how many got WELCOME, ``handshake_ms`` their
median and slowest handshake:

``hog``: ``--hogs`` connections (1,100) from 127.0.0.2 complete the handshake (32 at a
time, below any handshake-pool cap, so that every refusal is a refusal of a slot; a refused
one tries again a second later) and then only answer PINGs; once each has been answered,
12 probes follow, one every 2 s. ``idle``: ``--hogs`` connections from
127.0.0.2 send nothing, and reconnect 0.25 s after the server closes one; 12 probes follow,
one every 2 s. ``tokens``: with ``--auth`` a static token file, 16 connections at a time
from 127.0.0.2 send HELLOs with wrong tokens for 15 s (``failures_per_s``, by error code)
while a client with the right token connects from 127.0.0.1 every second.

``empty``: not an attack but what one costs: the server's RSS growth per subscribed topic
that holds no message (``--topics``, 10,000, over connections of 1,000 subscriptions each),
and per further subscription to the same topics.

Options after ``--`` go to the server. Not a test: run it by hand to compare two builds.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from integration.server_peer import CLIENT_PREFACE, PeerClosed, RawPeer, hello

from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import Outcome, SinceKind

#: These clients answer PINGs only while they read: ask for the slowest heartbeat the server
#: allows (it clamps to 60 s), so that a long attack does not time them out.
SLOW_HEARTBEAT = 600_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def connect(port: int, source: str = "127.0.0.1") -> RawPeer:
    for _ in range(200):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
            return RawPeer(stream)
        except OSError:
            await trio.sleep(0.05)
    raise RuntimeError("server did not start")


async def canary(port: int, stop: trio.Event, figures: dict[str, float]) -> None:
    sub = await connect(port)
    pub = await connect(port)
    await sub.handshake(heartbeat_ms=SLOW_HEARTBEAT)
    await pub.handshake(heartbeat_ms=SLOW_HEARTBEAT)
    await sub.subscribe(1, "canary/figures", credit=1_000_000)
    sent: list[float] = []
    latencies: list[float] = []
    in_order = True

    published = trio.Event()

    async def publish() -> None:
        while not stop.is_set():
            sent.append(trio.current_time())
            async with sending:
                await pub.send(F.Publish(0, "canary/figures", b"%d" % (len(sent) - 1), None))
            await trio.sleep(0.005)
        published.set()

    async def receive() -> None:
        nonlocal in_order
        while True:
            ((_, payload),) = await sub.messages(1)
            index = int(payload)
            in_order = in_order and index == len(latencies)
            latencies.append(trio.current_time() - sent[index])

    async def answer_pings() -> None:
        while True:
            frame = await pub.recv()
            if isinstance(frame, F.Ping):
                async with sending:
                    await pub.send(F.Pong(frame.opaque))

    sending = trio.Lock()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish)
        nursery.start_soon(receive)
        nursery.start_soon(answer_pings)
        await stop.wait()
        await published.wait()  # the last send may still be under way
        with trio.move_on_after(5):
            while len(latencies) < len(sent):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    ordered = sorted(latencies)
    figures.update(
        expected=len(sent),
        delivered=len(latencies),
        in_order=in_order,
        p99_ms=round(1000 * ordered[int(len(ordered) * 0.99)], 1) if ordered else 0.0,
    )


async def flood(port: int, figures: dict[str, float], size: int, topics: int) -> None:
    peer = await connect(port, "127.0.0.2")
    await peer.handshake(heartbeat_ms=SLOW_HEARTBEAT)
    payload = b"f" * size
    codes: dict[str, int] = {}
    for i in range(topics):
        await peer.send(F.Publish(i + 1, f"flood/{i}", payload, None))
        frame, _ = await peer.recv_until((F.Puback, F.Error))  # type: ignore[arg-type]
        key = "PUBACK" if isinstance(frame, F.Puback) else f"ERROR {frame.code:#06x}"  # type: ignore[attr-defined]
        codes[key] = codes.get(key, 0) + 1
    figures["answers"] = codes  # type: ignore[assignment]
    await peer.aclose()


async def churn(port: int, figures: dict[str, float], pairs: int) -> None:
    ledger = "orders/eu/ledger"
    writer = await connect(port)
    await writer.handshake(heartbeat_ms=SLOW_HEARTBEAT)
    reader = await connect(port)
    await reader.handshake(heartbeat_ms=SLOW_HEARTBEAT)
    sub = await reader.subscribe(1, ledger)
    for i in range(5):
        await writer.publish(ledger, b"entry %d" % i, request_id=i + 1)
    await reader.messages(2)
    await reader.aclose()
    churner = await connect(port, "127.0.0.2")
    await churner.handshake(heartbeat_ms=SLOW_HEARTBEAT)
    refused = 0
    for chunk in range(pairs // 100):
        frames: list[F.Frame] = []
        for i in range(100):
            topic = f"public/{chunk * 100 + i}"
            frames += [F.Subscribe(1, topic, 0, 0, 0, 0, 1, False), F.Unsubscribe(1)]
        await churner.send(*frames)
        replies = 0
        while replies < 200:
            frame = await churner.recv()
            if isinstance(frame, F.Ping):
                await churner.send(F.Pong(frame.opaque))
                continue
            refused += isinstance(frame, F.Error)
            replies += 1
    await churner.aclose()
    reader = await connect(port)
    await reader.handshake(heartbeat_ms=SLOW_HEARTBEAT)
    await reader.send(F.Subscribe(1, ledger, SinceKind.AFTER, sub.epoch, 2, 0, 100, False))
    frame, _ = await reader.recv_until(F.Subscribed)
    assert isinstance(frame, F.Subscribed)
    figures["churn_refused"] = refused
    figures["resume"] = Outcome(frame.outcome).name  # type: ignore[assignment]
    if frame.outcome == Outcome.RECOVERED:
        figures["recovered"] = len(await reader.messages(frame.head_seq - 2))
    await reader.aclose()
    await writer.aclose()


#: The token the good clients of ``tokens`` present, and the token file that attack writes:
#: anonymous clients (the canary) may use ``canary/...`` only.
GOOD_TOKEN = b"good-token-0123456789"
TOKENS = {
    GOOD_TOKEN.decode(): {"subscribe": ["#"], "publish": ["#"]},
    "": {"subscribe": ["canary/#"], "publish": ["canary/#"]},
}


def code_name(code: int) -> str:
    return ErrorCode(code).name if code in ErrorCode._value2member_map_ else f"{code:#06x}"


async def try_handshake(
    port: int, source: str, token: bytes = b"", timeout: float = 5.0
) -> tuple[RawPeer | None, str, float]:
    """(the admitted peer or None, what the server answered, seconds from connect to it)."""
    start = trio.current_time()
    answer = "no answer"
    peer = None
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
        except OSError as exc:
            return None, f"connect: {exc.strerror}", trio.current_time() - start
        peer = RawPeer(stream)
        await peer.send(CLIENT_PREFACE + hello(auth_token=token, heartbeat_ms=SLOW_HEARTBEAT))
        try:
            frame, _ = await peer.recv_until((F.Welcome, F.Error))  # type: ignore[arg-type]
        except PeerClosed:
            answer = "closed"
        else:
            if isinstance(frame, F.Welcome):
                return peer, "WELCOME", trio.current_time() - start
            answer = code_name(frame.code)  # type: ignore[attr-defined]
    if peer is not None:
        await peer.aclose()
    return None, answer, trio.current_time() - start


async def hold(peer: RawPeer) -> None:
    """Keep an admitted connection open: answer PINGs, ignore the rest, until it closes."""
    try:
        while True:
            frame = await peer.recv()
            if isinstance(frame, F.Ping):
                await peer.send(F.Pong(frame.opaque))
    except PeerClosed:
        return


def ms_median_max(seconds: list[float]) -> str:
    return f"{1000 * statistics.median(seconds):.1f}/{1000 * max(seconds):.1f}"


def count(table: dict[str, int], key: str) -> None:
    table[key] = table.get(key, 0) + 1


async def probe(
    port: int, nursery: trio.Nursery, figures: dict[str, float], n: int, every: float
) -> None:
    """``n`` new clients from 127.0.0.1, one every ``every`` seconds; the admitted stay."""
    answers: dict[str, int] = {}
    latencies = []
    for _ in range(n):
        peer, answer, took = await try_handshake(port, "127.0.0.1")
        count(answers, answer)
        if peer is not None:
            latencies.append(took)
            nursery.start_soon(hold, peer)
        await trio.sleep(max(0.0, every - took))
    figures["probes"] = n
    figures["admitted"] = len(latencies)
    figures["probe_answers"] = answers  # type: ignore[assignment]
    if latencies:
        figures["handshake_ms"] = ms_median_max(latencies)  # type: ignore[assignment]


async def hog(port: int, figures: dict[str, float], hogs: int) -> None:
    answers: dict[str, int] = {}
    tried = 0
    gate = trio.Semaphore(32)

    async def one() -> None:
        nonlocal tried
        first = True
        while True:
            async with gate:
                peer, answer, _ = await try_handshake(port, "127.0.0.2", timeout=15)
            count(answers, answer)
            tried += first
            first = False
            if peer is not None:
                await hold(peer)
                return
            await trio.sleep(1.0)  # refused: try again, as a slot may come free

    async with trio.open_nursery() as nursery:
        for _ in range(hogs):
            nursery.start_soon(one)
        with trio.move_on_after(20):
            while tried < hogs:
                await trio.sleep(0.1)
        await probe(port, nursery, figures, 12, 2.0)
        figures["hogs_admitted"] = answers.get("WELCOME", 0)
        figures["hog_refusals"] = sum(answers.values()) - figures["hogs_admitted"]
        nursery.cancel_scope.cancel()


async def idle(port: int, figures: dict[str, float], hogs: int) -> None:
    connects = closes = 0

    async def one() -> None:
        nonlocal connects, closes
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
            except OSError:
                await trio.sleep(0.25)
                continue
            connects += 1
            try:
                while await stream.receive_some(65536):
                    pass
            except (trio.BrokenResourceError, OSError):
                pass
            closes += 1
            await trio.aclose_forcefully(stream)
            await trio.sleep(0.25)

    async with trio.open_nursery() as nursery:
        for _ in range(hogs):
            nursery.start_soon(one)
        await trio.sleep(3)
        await probe(port, nursery, figures, 12, 2.0)
        figures["idle_connects"] = connects
        figures["idle_closed_by_server"] = closes
        nursery.cancel_scope.cancel()


async def tokens(port: int, figures: dict[str, float], log: Path, seconds: float = 15.0) -> None:
    failures: dict[str, int] = {}
    good: list[float] = []
    good_answers: dict[str, int] = {}
    log_before = log.stat().st_size

    async def guess(worker: int) -> None:
        n = 0
        while True:
            n += 1
            _, answer, _ = await try_handshake(port, "127.0.0.2", b"wrong-%d-%d" % (worker, n))
            count(failures, answer)

    async def good_clients() -> None:
        while True:
            peer, answer, took = await try_handshake(port, "127.0.0.1", GOOD_TOKEN)
            count(good_answers, answer)
            if peer is not None:
                good.append(took)
                await peer.aclose()
            await trio.sleep(max(0.0, 1.0 - took))

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for worker in range(16):
            nursery.start_soon(guess, worker)
        nursery.start_soon(good_clients)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    elapsed = trio.current_time() - start
    await trio.sleep(0.5)  # let the server write what it logs for the last refusals
    figures["failures_per_s"] = round(sum(failures.values()) / elapsed)
    figures["failures"] = failures  # type: ignore[assignment]
    figures["log_bytes"] = log.stat().st_size - log_before
    figures["probes"] = sum(good_answers.values())
    figures["admitted"] = len(good)
    figures["probe_answers"] = good_answers  # type: ignore[assignment]
    if good:
        figures["handshake_ms"] = ms_median_max(good)  # type: ignore[assignment]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def subscribe_all(peer: RawPeer, topics: list[str]) -> int:
    """Subscribe to every topic (100 requests in flight); returns how many were refused."""
    refused = 0
    for chunk in range(0, len(topics), 100):
        names = topics[chunk : chunk + 100]
        await peer.send(
            *(F.Subscribe(chunk + i + 1, t, 0, 0, 0, 0, 1) for i, t in enumerate(names))
        )
        replies = 0
        while replies < len(names):
            frame = await peer.recv()
            if isinstance(frame, F.Ping):
                await peer.send(F.Pong(frame.opaque))
                continue
            refused += isinstance(frame, F.Error)
            replies += 1
    return refused


async def empty(port: int, pid: int, figures: dict[str, float], topics: int) -> None:
    """The server's RSS growth for ``topics`` subscriptions to distinct topics nobody
    publishes to (1,000 per connection, from 127.0.0.2), then for as many subscriptions to
    the same topics again (from 127.0.0.3, another identity): the first is a topic and a
    subscription each, the second a subscription alone."""
    names = [f"empty/{i}" for i in range(topics)]
    rounds: list[list[RawPeer]] = [[], []]
    for source, peers in zip(("127.0.0.2", "127.0.0.3"), rounds, strict=True):
        for _ in range(0, topics, 1000):
            peer = await connect(port, source)
            await peer.handshake(heartbeat_ms=SLOW_HEARTBEAT)
            peers.append(peer)
    await trio.sleep(0.5)
    rss = [rss_kib(pid)]
    refused = 0
    for peers in rounds:
        for i, peer in enumerate(peers):
            refused += await subscribe_all(peer, names[i * 1000 : (i + 1) * 1000])
        await trio.sleep(0.5)
        rss.append(rss_kib(pid))
    figures["refused"] = refused
    figures["topic_and_subscription_b"] = round(1024 * (rss[1] - rss[0]) / topics)
    figures["subscription_b"] = round(1024 * (rss[2] - rss[1]) / topics)
    figures["empty_topic_b"] = figures["topic_and_subscription_b"] - figures["subscription_b"]
    for peer in rounds[0] + rounds[1]:
        await peer.aclose()


def raise_open_files() -> None:
    """Two sockets per connection in one machine's view (ours and the server's, which
    inherits this limit): raise the soft limit as far as the hard one allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def main(args: argparse.Namespace, server_args: list[str]) -> None:
    attack = args.attack
    raise_open_files()
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="pushwire-attack-"))
    cmd = [args.pushwire, "serve", "--port", str(port), *server_args]
    if attack in ("flood", "churn", "empty"):
        cmd[4:4] = ["--log-level", "warning"]
    if attack == "tokens":
        token_file = workdir / "tokens.json"
        token_file.write_text(json.dumps(TOKENS))
        cmd += ["--auth", str(token_file)]
    log = workdir / "server.log"
    figures: dict[str, float] = {}
    with log.open("wb") as log_out:
        server = subprocess.Popen(cmd, stderr=log_out)
        try:
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                await connect(port)  # wait for the listener
                nursery.start_soon(canary, port, stop, figures)
                await trio.sleep(0.2)
                log_before = log.stat().st_size
                if attack == "flood":
                    await flood(port, figures, args.flood_size, args.flood_topics)
                elif attack == "churn":
                    await churn(port, figures, args.pairs)
                elif attack == "hog":
                    await hog(port, figures, args.hogs)
                elif attack == "idle":
                    await idle(port, figures, args.hogs)
                elif attack == "empty":
                    await empty(port, server.pid, figures, args.topics)
                else:
                    await tokens(port, figures, log)
                if attack in ("hog", "idle"):
                    figures["log_bytes"] = log.stat().st_size - log_before
                await trio.sleep(0.5)
                stop.set()
            figures["rss_peak_mib"] = round(rss_peak_mib(server.pid), 1)
            figures["alive"] = server.poll() is None
        finally:
            server.terminate()
            server.wait()
    print(attack, " ".join(server_args) or "(defaults)", figures)
    log.unlink()
    (workdir / "tokens.json").unlink(missing_ok=True)
    workdir.rmdir()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("attack", choices=("flood", "churn", "hog", "idle", "tokens", "empty"))
    parser.add_argument("--pushwire", default="pushwire")
    parser.add_argument(
        "--pairs", type=int, default=5000, help="churn: subscribe/unsubscribe pairs"
    )
    parser.add_argument("--flood-size", type=int, default=512 * 1024, help="flood: payload bytes")
    parser.add_argument("--flood-topics", type=int, default=1000, help="flood: topics")
    parser.add_argument("--topics", type=int, default=10_000, help="empty: topics")
    parser.add_argument("--hogs", type=int, default=1100, help="hog, idle: connections")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    trio.run(main, parser.parse_args(argv[:cut]), argv[cut + 1 :])
