"""Fan-out and publish rates through one node, and through several nodes sharing Redis.

``python -m pushwire.client.bench.nodes [--subscribers 100] [--messages 5000]`` starts a
redis-server of its own on a free loopback port (``redis-server`` must be on PATH) and
``pushwire serve`` child processes, and prints one line per case:

* ``fanout``: one publisher (window 1000) on node A, ``--subscribers`` subscribers spread
  evenly over the nodes; delivered messages per second, all subscribers together, from the
  first publish to the last delivery. Cases: one node with the in-memory broker, one node
  on Redis, two nodes on Redis.
* ``acks``: publishes with their PUBACK, one at a time (latency-bound) and with a window of
  1000 in flight, on the in-memory broker and on Redis.

The subscribers and the publisher run in this process, so on a small machine the client
side takes a share of the CPU: compare the cases of one run with one another.

``python -m pushwire.client.bench.nodes launch --nodes N [--redis] PUSHWIRE-ARGS...`` runs
in the foreground what a load generator of its own can measure as one server:
``pushwire PUSHWIRE-ARGS --reuse-port`` N times on the same port, on a redis-server of its
own (``--redis``, always with more than one node) or on the in-memory broker, and stops
them all, by PID, when it is stopped (SIGTERM, SIGINT) or when one of them exits. A
one-line script that execs it is a ``PUSHWIRE_BIN`` for the peer fan-out harness
(PERFORMANCE.md, "Several nodes on Redis"), whose raw-socket subscribers are not the
bottleneck that this module's own are.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import trio

import pushwire.client as pw


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In a child, before exec (Linux): SIGTERM when the process that started it dies, even
    by SIGKILL, so that a benchmark killed outright leaves no redis-server or node behind."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextmanager
def _redis() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    port = _free_port()
    with tempfile.TemporaryDirectory() as folder:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder],
            stdout=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait()


@contextmanager
def _node(broker: str | None) -> Iterator[str]:
    """A ``pushwire serve`` child process; yields its address."""
    args = [sys.executable, "-m", "pushwire.client", "serve", "--port", "0"]
    args += ["--log-level", "warning", "--stats-interval", "0", "--max-connections", "4096"]
    args += ["--max-connections-per-source", "4096", "--max-handshaking", "4096"]
    if broker is not None:
        args += ["--broker", broker]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("pushwire listening on "):
            raise RuntimeError(f"pushwire serve did not start: {line!r}")
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def _fanout(addresses: list[str], subscribers: int, messages: int) -> float:
    topic = f"bench/{time.monotonic_ns()}"
    ready = trio.Semaphore(0)
    done = trio.Semaphore(0)

    async def subscriber(address: str) -> None:
        async with pw.connect(address) as conn:
            sub = conn.subscribe(topic, since="new", credit=1000)
            await conn.publish(f"{topic}/ready", b"")  # a round trip: SUBSCRIBED came
            ready.release()
            got = 0
            async for _ in sub:
                got += 1
                if got == messages:
                    break
            done.release()

    async with trio.open_nursery() as nursery:
        for i in range(subscribers):
            nursery.start_soon(subscriber, addresses[i % len(addresses)])
        for _ in range(subscribers):
            await ready.acquire()
        start = time.perf_counter()
        async with pw.connect(addresses[0]) as publisher:
            payload = b"x" * 64
            await publisher.publish_many(
                topic, (payload for _ in range(messages)), lambda seq: None, window=1000
            )
            for _ in range(subscribers):
                await done.acquire()
        return subscribers * messages / (time.perf_counter() - start)


async def _acks(address: str, messages: int, window: int) -> float:
    topic = f"acks/{time.monotonic_ns()}"
    async with pw.connect(address) as conn:
        start = time.perf_counter()
        if window == 1:
            for _ in range(messages):
                await conn.publish(topic, b"x" * 64)
        else:
            await conn.publish_many(
                topic, (b"x" * 64 for _ in range(messages)), lambda seq: None, window=window
            )
        return messages / (time.perf_counter() - start)


def launch(argv: list[str]) -> int:
    """See the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m pushwire.client.bench.nodes launch", allow_abbrev=False
    )
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--redis", action="store_true")
    args, rest = parser.parse_known_args(argv)
    command = [sys.executable, "-m", "pushwire.client", *rest]
    if rest[:1] != ["serve"]:  # --version and the like: pass through
        return subprocess.call(command)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with contextlib.ExitStack() as stack:
        if args.redis or args.nodes > 1:
            command += ["--broker", stack.enter_context(_redis())]
        command += ["--reuse-port"] if args.nodes > 1 else []
        nodes = [subprocess.Popen(command, preexec_fn=_die_with_parent) for _ in range(args.nodes)]
        try:
            while not stop and all(node.poll() is None for node in nodes):
                time.sleep(0.1)
        finally:
            for node in nodes:
                if node.poll() is None:
                    os.kill(node.pid, signal.SIGTERM)
            for node in nodes:
                try:
                    node.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(node.pid, signal.SIGKILL)
                    node.wait()
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["launch"]:
        raise SystemExit(launch(argv[1:]))
    parser = argparse.ArgumentParser(prog="python -m pushwire.client.bench.nodes")
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--acks", type=int, default=5000)
    args = parser.parse_args(argv)
    n, m = args.subscribers, args.messages
    with _redis() as url:
        with _node(None) as memory:
            rate = trio.run(_fanout, [memory], n, m)
            print(f"fanout  1 node, memory  {n} subs x {m}: {rate:12,.0f} delivered msg/s")
            for window in (1, 1000):
                rate = trio.run(_acks, memory, args.acks, window)
                print(f"acks    memory, window {window:4}: {rate:12,.0f} msg/s")
        with _node(url) as a:
            rate = trio.run(_fanout, [a], n, m)
            print(f"fanout  1 node, redis   {n} subs x {m}: {rate:12,.0f} delivered msg/s")
            for window in (1, 1000):
                rate = trio.run(_acks, a, args.acks, window)
                print(f"acks    redis,  window {window:4}: {rate:12,.0f} msg/s")
            with _node(url) as b:
                rate = trio.run(_fanout, [a, b], n, m)
                print(f"fanout  2 nodes, redis  {n} subs x {m}: {rate:12,.0f} delivered msg/s")


if __name__ == "__main__":
    main()
