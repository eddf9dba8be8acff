"""A redis-server of the test's own, on a free loopback port, stopped by its PID."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(port: int, *args: str) -> bytes:
    """One command to the server on ``port``; its raw reply (enough for status and bulk
    replies that fit in one read)."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(request.encode())
        return sock.recv(65536)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


class RedisProcess:
    """``redis-server`` with persistence off, or AOF with ``appendfsync always`` in ``dir``
    (``aof=True``); with ``cluster=True`` a Redis Cluster of this one node, holding every
    slot. :meth:`restart` keeps the port and the data directory."""

    def __init__(self, directory: Path, *, aof: bool = False, cluster: bool = False) -> None:
        assert REDIS_SERVER is not None
        self.directory = directory
        self.aof = aof
        self.cluster = cluster
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        options = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.aof
            else ["--appendonly", "no"]
        )
        if self.cluster:
            options += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{self.port}.conf",
                "--cluster-port",  # else port + 10000, which may be taken or above 65535
                str(free_port()),
            ]
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(self.directory),
                *options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_for_ping()
        self._ready()

    def _wait_for_ping(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + 10
        while True:  # ready when it answers PING
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def _ready(self) -> None:
        if self.cluster:
            if b"cluster_slots_assigned:16384" not in command(self.port, "CLUSTER", "INFO"):
                command(self.port, "CLUSTER", "ADDSLOTSRANGE", "0", "16383")
            wait_until(
                lambda: b"cluster_state:ok" in command(self.port, "CLUSTER", "INFO"),
                "the cluster to be ok",
            )

    def stop(self, *, kill: bool = False) -> None:
        """Stop it (SIGKILL with ``kill``, else SIGTERM) and wait for it to be gone."""
        process, self.process = self.process, None
        if process is None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


class SentinelProcess:
    """``redis-server --sentinel`` on a free port, monitoring the primary on
    ``primary_port`` as ``service`` (quorum 1)."""

    def __init__(self, directory: Path, primary_port: int, service: str = "pw") -> None:
        self.directory = directory
        self.port = free_port()
        self.service = service
        self.config = directory / f"sentinel-{self.port}.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {service} 127.0.0.1 {primary_port} 1\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [REDIS_SERVER, str(self.config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(
            lambda: (
                b"127.0.0.1"
                in command(self.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            ),
            "the sentinel to name the primary",
        )

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
