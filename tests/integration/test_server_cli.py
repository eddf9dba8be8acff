"""``pushwire serve`` as a real subprocess: the address line, a client served over TCP,
clean exits on SIGINT and SIGTERM, and one-line errors for user mistakes."""

from __future__ import annotations

import argparse
import errno
import importlib.metadata
import io
import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from integration.server_peer import CLIENT_PREFACE, RawPeer

from pushwire.client.commands import cli
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import SinceKind, SlowConsumerPolicy
from pushwire.server import ServerConfig, cmd_serve

TIMEOUT = 20
COMMAND = [sys.executable, "-m", "pushwire.client", "serve"]

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


def test_the_ready_line_is_one_write_even_unbuffered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes sharing a pipe (one launcher, ``--reuse-port``) must not interleave their ready
    lines: under ``PYTHONUNBUFFERED`` ``print`` would write the text and the newline apart."""
    writes: list[bytes] = []

    class Raw(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            writes.append(bytes(b))
            return len(b)

    unbuffered = io.TextIOWrapper(Raw(), write_through=True)  # what -u makes of stdout
    monkeypatch.setattr(sys, "stdout", unbuffered)
    cmd_serve.announce("pushwire listening on 127.0.0.1:7447")
    assert writes == [b"pushwire listening on 127.0.0.1:7447\n"]


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
            from integration.server_peer import hello

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


# -- the limits of SPEC.md §13 as options ---------------------------------------------------

SPEC_FILE = Path(__file__).resolve().parents[2] / "SPEC.md"

#: SPEC.md §13 row -> the `pushwire serve` options that set it: (option, value given,
#: ServerConfig field, the field's value then). The values differ from the defaults.
LIMIT_OPTIONS: dict[str, list[tuple[str, str, str, object]]] = {
    "frame payload, client to server": [("--max-frame-size", "20000", "max_frame_size", 20000)],
    "connections per server": [("--max-connections", "7", "max_connections", 7)],
    "subscriptions per connection": [("--max-subscriptions", "3", "max_subscriptions", 3)],
    "lag per subscription": [
        ("--max-lag", "99", "max_lag", 99),
        ("--slow-consumer", "disconnect", "slow_consumer_policy", SlowConsumerPolicy.DISCONNECT),
    ],
    "history per topic, messages": [("--history-count", "50", "history_count", 50)],
    "history per topic, bytes": [("--history-bytes", "70000", "history_bytes", 70000)],
    "outbound queue per connection": [
        ("--outbound-queue-bytes", "65536", "outbound_queue_bytes", 65536)
    ],
    "handshake time": [("--handshake-timeout", "2.5", "handshake_timeout", 2.5)],
    "heartbeat interval H": [
        ("--heartbeat-ms", "3000", "heartbeat_ms", 3000),
        ("--heartbeat-min-ms", "200", "heartbeat_min_ms", 200),
        ("--heartbeat-max-ms", "90000", "heartbeat_max_ms", 90000),
    ],
    "drain time after GOAWAY": [("--drain-timeout", "0.5", "drain_timeout", 0.5)],
    "reconnect delay after GOAWAY": [
        ("--goaway-reconnect-after-ms", "250", "goaway_reconnect_after_ms", 250),
        ("--goaway-jitter-ms", "0", "goaway_jitter_ms", 0),
    ],
}
#: Rows with a reference default that are not server options, and why.
NOT_SERVER_OPTIONS = {
    "frame payload, server to client": "the client's HELLO.max_frame_size",
    "frame payload before the handshake": "fixed by the protocol",
    "reconnect backoff": "the client's own policy (SPEC.md §8.9)",
}


def spec_limit_rows() -> dict[str, str]:
    """SPEC.md §13's table: limit -> reference default."""
    text = SPEC_FILE.read_text(encoding="utf-8")
    section = text[text.index("## 13. Resource limits") : text.index("## 14.")]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]  # no heading
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    return {c[0]: c[4] for c in cells if len(c) == 6}  # the protocol limits' table


def serve_args(*argv: str) -> argparse.Namespace:
    return cli.build_parser(only="serve").parse_args(["serve", *argv])


def test_every_server_limit_of_spec_section_13_is_an_option_of_serve(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with_default = {row for row, default in spec_limit_rows().items() if default != "-"}
    assert with_default - set(NOT_SERVER_OPTIONS) == set(LIMIT_OPTIONS)
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    help_text = capsys.readouterr().out
    options = [o for entries in LIMIT_OPTIONS.values() for o in entries]
    for option, *_ in options:
        assert option in help_text
    config = cmd_serve.build_config(serve_args(*(w for o in options for w in o[:2])))
    assert {field: getattr(config, field) for _, _, field, _ in options} == {
        field: value for _, _, field, value in options
    }


def test_serve_options_default_to_the_reference_defaults() -> None:
    assert cmd_serve.build_config(serve_args()) == ServerConfig(
        port=7447, server_name=ServerConfig().server_name
    )


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--max-subscriptions", "0"], "--max-subscriptions must be 1..4294967295, not 0"),
        (["--max-subscriptions", "4294967296"], "--max-subscriptions must be 1..4294967295"),
        (["--outbound-queue-bytes", "16383"], "--outbound-queue-bytes must be at least 16384"),
        (["--handshake-timeout", "0"], "--handshake-timeout must be a number of seconds more"),
        (["--handshake-timeout", "-1"], "--handshake-timeout"),
        (["--handshake-timeout", "nan"], "--handshake-timeout"),
        (["--handshake-timeout", "inf"], "--handshake-timeout"),
        (["--drain-timeout", "-0.5"], "--drain-timeout must be a number of seconds zero or more"),
        (["--max-frame-size", "100"], "--max-frame-size must be 16384..16777216, not 100"),
        (["--max-lag", "-1"], "--max-lag must be 0..4294967295, not -1"),
        (["--heartbeat-ms", "0"], "--heartbeat-ms must be 1..600000, not 0"),
        (["--heartbeat-max-ms", "600001"], "--heartbeat-max-ms must be 1..600000"),
        (["--heartbeat-min-ms", "6000"], "need --heartbeat-min-ms (6000) <= --heartbeat-ms (5000)"),
        (["--heartbeat-max-ms", "4000"], "<= --heartbeat-max-ms (4000)"),
        (["--goaway-jitter-ms", "-1"], "--goaway-jitter-ms must be 0..4294967295, not -1"),
        (["--goaway-reconnect-after-ms", "4294967296"], "--goaway-reconnect-after-ms must be"),
        (["--max-connections", "0"], "--max-connections must be at least 1, not 0"),
        (["--port", "-1"], "--port must be 0..65535, not -1"),
        (["--history-bytes", "-1"], "--history-bytes must be at least 0, not -1"),
    ],
)
def test_serve_refuses_a_limit_out_of_range_in_one_line(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("pushwire serve: "), err
    assert complaint in err


def test_serve_refuses_a_limit_that_is_not_a_number() -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["serve", "--max-subscriptions", "many"])
    assert info.value.code == 2


async def test_serve_applies_its_limit_options_to_clients(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        proc, host, port = await start(
            tmp_path,
            *("--max-subscriptions", "1", "--handshake-timeout", "0.5"),
            *("--outbound-queue-bytes", "16384", "--heartbeat-ms", "1000"),
        )
        try:
            peer = await RawPeer.connect(port, host)
            welcome = await peer.handshake()
            assert welcome.max_subscriptions == 1
            await peer.subscribe(1, "a")
            await peer.send(F.Subscribe(2, "b", SinceKind.NEW, 0, 0, 0, 10, False))
            refused, _ = await peer.recv_until(F.Error)
            assert refused.code == ErrorCode.TOO_MANY_SUBSCRIPTIONS  # type: ignore[union-attr]
            # 20 kB pushes still get through a 16 KiB outbound queue, one round each
            payload = b"z" * 20_000
            for _ in range(3):
                await peer.send(F.Publish(0, "a", payload))
            assert await peer.messages(3) == [(1, payload), (2, payload), (3, payload)]
            silent = await RawPeer.connect(port, host)
            await silent.send(CLIENT_PREFACE)  # and no HELLO
            await silent.read_preface()
            started = trio.current_time()
            await silent.expect_error_and_close(ErrorCode.HANDSHAKE_TIMEOUT)
            assert trio.current_time() - started < 0.5 + 5  # 10 s is the default
            await silent.aclose()
            await peer.aclose()
            code, _, err = await stop(proc, signal.SIGTERM)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert code == 0, err


def test_the_installed_serve_command_exits_2_for_a_bad_limit(tmp_path: Path) -> None:
    result = subprocess.run(
        [*COMMAND, "--port", "0", "--outbound-queue-bytes", "1"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "pushwire serve: --outbound-queue-bytes must be at least 16384, not 1\n"
    )


# -- the configuration: a file, and what is logged at start ---------------------------------


def test_every_serve_option_has_a_config_file_key() -> None:
    parser = cli.build_parser(only="serve")
    (serve_parser,) = (
        a.choices["serve"] for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    )
    options = {
        o.removeprefix("--")
        for a in serve_parser._actions
        if a.help is not argparse.SUPPRESS
        for o in a.option_strings
        if o.startswith("--")
    }
    assert options - {"help", "config"} == set(cmd_serve.CONFIG_KEYS)


def test_a_config_file_sets_options_and_the_command_line_overrides_it(tmp_path: Path) -> None:
    (tmp_path / "tokens.json").write_text('{"t": {"subscribe": ["#"]}}')
    path = tmp_path / "pushwire.toml"
    path.write_text(
        'host = "0.0.0.0"\nport = 7000\nmax-lag = 99\nslow-consumer = "disconnect"\n'
        'handshake-timeout = 3\nauth = "tokens.json"\nlog-format = "json"\n'
    )
    config = cmd_serve.build_config(serve_args("--config", str(path), "--port", "7447"))
    assert (config.host, config.port, config.max_lag) == ("0.0.0.0", 7447, 99)
    assert config.slow_consumer_policy == SlowConsumerPolicy.DISCONNECT
    assert config.handshake_timeout == 3.0
    assert config.auth is not None and set(config.auth) == {b"t"}  # from the file's folder
    defaults = cmd_serve.build_config(serve_args("--config", str(path), "--max-lag", "10000"))
    assert defaults.max_lag == 10000  # given as the default value, still given


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("max_lag = 5\n", "unknown key 'max_lag' (did you mean 'max-lag'?)"),
        ("metrics-port = 5\n", "unknown key 'metrics-port'"),
        ('max-lag = "many"\n', "max-lag = 'many': expected an integer"),
        ("max-lag = true\n", "expected an integer"),
        ('slow-consumer = "later"\n', "expected one of 'drop', 'disconnect'"),
        ("max-lag = -1\n", "--max-lag must be 0..4294967295, not -1"),
        ("port = [1\n", "is not valid TOML"),
        ("inject-fault = 'x'\n", "unknown key 'inject-fault'"),
    ],
)
def test_a_bad_config_file_is_one_line(
    tmp_path: Path, content: str, complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(content)
    assert cli.main(["serve", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("pushwire serve: "), err
    assert complaint in err


def test_a_missing_config_file_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--config", "/nonexistent/pushwire.toml"]) == 2
    assert "cannot read config file /nonexistent/pushwire.toml" in capsys.readouterr().err


async def test_serve_logs_its_effective_configuration_at_start(tmp_path: Path) -> None:
    path = tmp_path / "pushwire.toml"
    path.write_text('max-lag = 99\nlog-format = "json"\n')
    with trio.fail_after(TIMEOUT):
        proc, _, _ = await start(tmp_path, "--config", str(path), "--heartbeat-ms", "3000")
        code, _, err = await stop(proc, signal.SIGTERM)
    assert code == 0, err
    records = [json.loads(line) for line in err.splitlines()]
    (logged,) = [r for r in records if r["msg"].startswith("configuration")]
    assert f"from {path} and the command line" in logged["msg"]
    assert "max-lag=99 " in logged["msg"] and "heartbeat-ms=3000 " in logged["msg"]
    assert logged["config"]["max-lag"] == 99 and logged["config"]["port"] == 0
    assert logged["config"]["heartbeat-min-ms"] == 1000  # derived, not None


# -- what clients see of the server ------------------------------------------------------------


async def test_cli_clients_name_themselves_by_command(tmp_path: Path) -> None:
    version = importlib.metadata.version("pushwire")
    with trio.fail_after(TIMEOUT):
        proc, host, port = await start(tmp_path)
        try:
            address = f"{host}:{port}"
            pub = await trio.run_process([*COMMAND[:-1], "pub", "t", "m", "--server", address])
            sub = await trio.run_process(
                [*COMMAND[:-1], "sub", "t", "--count", "0", "--server", address]
            )
            assert pub.returncode == sub.returncode == 0
            await trio.sleep(0.2)  # let the server log the closes (nothing waits on it)
            code, _, err = await stop(proc, signal.SIGTERM)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert code == 0
    assert f"opened as 'pushwire-pub/{version}'" in err
    assert f"opened as 'pushwire-sub/{version}'" in err


async def client_of_a_server_that_ends(
    tmp_path: Path, end: signal.Signals
) -> subprocess.CompletedProcess[bytes]:
    """``pushwire sub --no-reconnect`` against a server that gets ``end`` once subscribed."""
    with trio.fail_after(TIMEOUT):
        proc, host, port = await start(
            tmp_path, "--goaway-reconnect-after-ms", "0", "--goaway-jitter-ms", "0"
        )
        try:
            client = await trio.lowlevel.open_process(
                [*COMMAND[:-1], "sub", "t", "--no-reconnect", "--server", f"{host}:{port}"],
                stderr=subprocess.PIPE,
                cwd=tmp_path,
            )
            assert client.stderr is not None
            err = b""
            while b"subscribed to t" not in err:
                chunk = await client.stderr.receive_some(4096)
                assert chunk, err
                err += chunk
            proc.send_signal(end)
            while chunk := await client.stderr.receive_some(4096):
                err += chunk
            code = await client.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    return subprocess.CompletedProcess(client.args, code, b"", err)


async def test_a_killed_server_is_not_reported_as_no_error(tmp_path: Path) -> None:
    result = await client_of_a_server_that_ends(tmp_path, signal.SIGKILL)
    err = result.stderr.decode()
    assert result.returncode == 6, err
    (line,) = [x for x in err.splitlines() if x.startswith("pushwire: error:")]
    assert line.startswith("pushwire: error: connection lost: "), line
    assert "NO_ERROR" not in line and "reconnect" not in line


async def test_no_reconnect_does_not_speak_of_reconnecting(tmp_path: Path) -> None:
    """SIGTERM makes the server send GOAWAY: --no-reconnect exits on it, naming it, rather
    than following its hint back."""
    result = await client_of_a_server_that_ends(tmp_path, signal.SIGTERM)
    err = result.stderr.decode()
    assert result.returncode == 6, err
    assert "reconnecting" not in err and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("pushwire: error:")]
    assert line == (
        "pushwire: error: connection lost: SHUTTING_DOWN: server going away: server shutting down"
    )


# -- the embedded server ----------------------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def embedded_server_snippet() -> str:
    """README's first Python example: the server embedded in a trio program."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    (snippet,) = [b for b in blocks if "open_server" in b]
    return snippet


def test_the_readme_embedded_server_on_a_port_in_use_ends_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        script = tmp_path / "embedded.py"
        script.write_text(embedded_server_snippet().replace("port=7447", f"port={port}"))
        result = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=tmp_path,
        )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"OSError: [Errno {errno.EADDRINUSE}] cannot listen on 127.0.0.1:{port}: " + (
        "address already in use"
    )
    assert "ExceptionGroup" not in result.stderr and "+-+" not in result.stderr


def test_pushwire_token_mints_a_token_that_serve_accepts(tmp_path: Path) -> None:
    from pushwire.server.tokens import verify

    secret = tmp_path / "secret"
    secret.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    result = subprocess.run(
        [
            *COMMAND[:-1],
            "token",
            "--secret-file",
            str(secret),
            "--name",
            "dashboard",
            "--subscribe",
            "orders/#",
            "--ttl",
            "15m",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    signed = verify(result.stdout.strip().encode(), b"0123456789abcdef0123456789abcdef")
    assert signed is not None and signed.name == "dashboard"
    assert signed.permissions.allows("subscribe", "orders/eu")
    assert not signed.permissions.allows("publish", "orders/eu")
    short = tmp_path / "short"
    short.write_bytes(b"too short")
    result = subprocess.run(
        [*COMMAND[:-1], "token", "--secret-file", str(short), "--name", "x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "pushwire token: error: the token secret must be at least 32 bytes"
    )
