"""``pushwire serve`` as a real subprocess: the address line, a client served over TCP,
clean exits on SIGINT and SIGTERM, and one-line errors for user mistakes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from integration.server_peer import RawPeer

from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode

TIMEOUT = 20
COMMAND = [sys.executable, "-m", "pushwire.client.cli", "serve"]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


async def start(tmp_path: Path, *args: str) -> tuple[trio.Process, str, int]:
    """Run ``pushwire serve --port 0 ARGS`` and read its address line."""
    proc = await trio.lowlevel.open_process(
        [*COMMAND, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,  # keep the checkout off sys.path
    )
    assert proc.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await proc.stdout.receive_some(1)
        assert chunk, "pushwire serve exited before printing its address"
        line += chunk
    text = line.decode().strip()
    prefix = "pushwire listening on "
    assert text.startswith(prefix), text
    host, _, port = text[len(prefix) :].rpartition(":")
    return proc, host, int(port)


async def stop(proc: trio.Process, signum: int) -> tuple[int, str, str]:
    proc.send_signal(signum)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = b"", b""
    async with trio.open_nursery() as nursery:

        async def drain(stream: trio.abc.ReceiveStream, which: str) -> None:
            nonlocal out, err
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
            if which == "out":
                out = data
            else:
                err = data

        nursery.start_soon(drain, proc.stdout, "out")
        nursery.start_soon(drain, proc.stderr, "err")
    return await proc.wait(), out.decode(), err.decode()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_serve_prints_its_address_serves_and_exits_cleanly_on_a_signal(
    tmp_path: Path, signum: int
) -> None:
    with trio.fail_after(TIMEOUT):
        proc, host, port = await start(tmp_path, "--heartbeat-ms", "1000")
        try:
            assert host == "127.0.0.1"
            peer = await RawPeer.connect(port, host)
            welcome = await peer.handshake(client_name="cli-test")
            assert welcome.heartbeat_ms == 1000
            await peer.subscribe(1, "t")
            ack = await peer.publish("t", b"over the wire", request_id=3)
            assert ack.first_seq == 1
            assert await peer.messages(1) == [(1, b"over the wire")]
            proc.send_signal(signum)
            goaway = await peer.expect(F.Goaway)
            assert goaway.code == ErrorCode.SHUTTING_DOWN  # type: ignore[union-attr]
            assert goaway.positions == (F.Position(1, ack.epoch, 1),)  # type: ignore[union-attr]
            await peer.aclose()
            code, out, err = await stop(proc, 0)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert code == 0, err
    assert out == ""  # the address line was the only output
    assert "connection 1" in err and "opened as 'cli-test'" in err
    assert "closed" in err
    assert "Traceback" not in err


async def test_serve_logs_json_lines(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        proc, host, port = await start(tmp_path, "--log-format", "json")
        try:
            peer = await RawPeer.connect(port, host)
            await peer.handshake()
            await peer.aclose()
            await trio.sleep(0.2)  # let the server log the close (nothing waits on it)
            code, _, err = await stop(proc, signal.SIGTERM)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert code == 0
    lines = [json.loads(line) for line in err.splitlines()]
    closes = [r for r in lines if r["msg"].startswith("connection 1") and "closed" in r["msg"]]
    assert closes and closes[0]["conn"] == 1 and closes[0]["code"] == "NO_ERROR"
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in lines)


def test_serve_reports_a_port_in_use_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*COMMAND, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=tmp_path,
        )
    assert result.returncode == 1
    assert result.stdout == ""
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"pushwire serve: cannot listen on 127.0.0.1:{port}:")
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read auth file"),
        ("{not json", "is not valid JSON"),
        ('{"t": {"subscribe": "orders/#"}}', "must be a list of topic patterns"),
    ],
)
def test_serve_reports_a_bad_auth_file_in_one_line(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "auth.json"
    if content is not None:
        path.write_text(content)
    result = subprocess.run(
        [*COMMAND, "--port", "0", "--auth", str(path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


async def test_serve_enforces_an_auth_file(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"tok": {"subscribe": ["a/#"], "publish": []}}))
    with trio.fail_after(TIMEOUT):
        proc, host, port = await start(tmp_path, "--auth", str(path))
        try:
            denied = await RawPeer.connect(port, host)
            from integration.server_peer import CLIENT_PREFACE, hello

            await denied.send(CLIENT_PREFACE + hello(auth_token=b"nope"))
            await denied.read_preface()
            await denied.expect_error_and_close(ErrorCode.UNAUTHENTICATED)
            await denied.aclose()
            allowed = await RawPeer.connect(port, host)
            await allowed.handshake(auth_token=b"tok")
            await allowed.subscribe(1, "a/b")
            await allowed.aclose()
            code, _, err = await stop(proc, signal.SIGINT)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert code == 0
    assert "tok" not in err.replace("token", "")  # tokens are never logged
