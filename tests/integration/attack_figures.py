"""Figures for the memory attacks against a ``pushwire serve`` subprocess: the server's RSS
peak (VmHWM), and a canary's delivered/expected and p99 latency while the attack runs.

    python tests/integration/attack_figures.py flood --pushwire .venv/bin/pushwire -- \\
        --memory-limit 32M
    python tests/integration/attack_figures.py churn --pushwire .venv/bin/pushwire -- \\
        --max-topics 2000 --churn-rate 1000000

``flood``: 512 KiB messages to 1,000 new topics from 127.0.0.2 (each answered before the
next is sent). ``churn``: ``orders/eu/ledger`` holds 5 messages and its subscriber goes
offline after 2; an anonymous client from 127.0.0.2 subscribes and unsubscribes to
``--pairs`` new topics (5,000); the subscriber then resumes AFTER(epoch, 2). Options after
``--`` go to the server. Not a test: run it by hand to compare two builds.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from integration.server_peer import RawPeer

from pushwire.protocol import frames as F
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


async def flood(port: int, figures: dict[str, float]) -> None:
    peer = await connect(port, "127.0.0.2")
    await peer.handshake(heartbeat_ms=SLOW_HEARTBEAT)
    payload = b"f" * (512 * 1024)
    codes: dict[str, int] = {}
    for i in range(1000):
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


async def main(attack: str, pushwire: str, pairs: int, server_args: list[str]) -> None:
    port = free_port()
    cmd = [pushwire, "serve", "--port", str(port), "--log-level", "warning", *server_args]
    server = subprocess.Popen(cmd)
    figures: dict[str, float] = {}
    try:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await connect(port)  # wait for the listener
            nursery.start_soon(canary, port, stop, figures)
            await trio.sleep(0.2)
            if attack == "flood":
                await flood(port, figures)
            else:
                await churn(port, figures, pairs)
            await trio.sleep(0.5)
            stop.set()
        figures["rss_peak_mib"] = round(rss_peak_mib(server.pid), 1)
        figures["alive"] = server.poll() is None
    finally:
        server.terminate()
        server.wait()
    print(attack, " ".join(server_args) or "(defaults)", figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("attack", choices=("flood", "churn"))
    parser.add_argument("--pushwire", default="pushwire")
    parser.add_argument(
        "--pairs", type=int, default=5000, help="churn: subscribe/unsubscribe pairs"
    )
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    trio.run(main, args.attack, args.pushwire, args.pairs, argv[cut + 1 :])
