"""What every ``pushwire`` command does the same way, run as a user runs it: the exit-code
table in each ``--help``, ``--server`` and ``$PUSHWIRE_SERVER`` for each command that
connects, exit code 3 and "connection refused" for a server that is not there, usage errors
that show the right usage, and output into a closed pipe without a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
import trio
from integration.cli_support import PUSHWIRE, serve

from pushwire.client.commands.cli import COMMANDS
from pushwire.client.commands.exits import EXIT_CODES_HELP

TIMEOUT = 30
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PUSHWIRE, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=env,
    )


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Every command that connects to a server, with what else it needs to run.
CONNECTING = {
    "sub": ["sub", "t", "--count", "0"],
    "pub": ["pub", "t", "m"],
    "conformance": ["conformance", "--case", "PH-01"],
    "fuzz": ["fuzz", "--examples", "1", "--no-canary"],
    "stats": ["stats", "--json"],
}


def test_bare_pushwire_prints_usage_and_exits_2() -> None:
    result = run()
    assert result.returncode == 2
    assert result.stderr.startswith("usage: pushwire ") and result.stdout == ""


@pytest.mark.parametrize("command", [*COMMANDS, ""])
def test_every_help_ends_with_the_one_exit_code_table(command: str) -> None:
    result = run(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith(EXIT_CODES_HELP)


def test_the_readme_shows_the_same_exit_code_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert EXIT_CODES_HELP in readme


def test_format_has_help() -> None:
    sub_help = run("sub", "--help").stdout
    assert "--format {text,json,hex}\n" in sub_help
    assert "u64 values as strings" in sub_help


@pytest.mark.parametrize("command", sorted(CONNECTING))
def test_an_unreachable_server_is_exit_3_and_says_connection_refused(
    command: str, closed_port: int
) -> None:
    result = run(*CONNECTING[command], "--server", f"127.0.0.1:{closed_port}")
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"cannot connect to 127.0.0.1:{closed_port}: connection refused" in line
    assert f"pushwire serve --port {closed_port}" in line


@pytest.mark.parametrize("command", sorted(CONNECTING))
def test_a_bare_port_is_a_usage_error_everywhere(command: str) -> None:
    result = run(*CONNECTING[command], "--server", "7447")
    assert result.returncode == 2, result.stderr
    assert "a port alone is not an address" in result.stderr


@pytest.mark.parametrize("command", sorted(CONNECTING))
async def test_every_connecting_command_reads_pushwire_server(command: str) -> None:
    async with serve() as address:
        with trio.fail_after(120):
            result = await trio.run_process(
                [*PUSHWIRE, *CONNECTING[command]],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env={**os.environ, "PUSHWIRE_SERVER": address},
            )
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()


@pytest.mark.parametrize(
    "args",
    [
        ["vectors"],
        ["vectors", "--schema"],
        ["decode", "0000000c15000000000200000000000029"],
        ["testserver", "--list"],
        ["conformance", "--list"],
        ["conformance", "--coverage"],
        ["sub", "--help"],
    ],
)
def test_output_into_a_closed_pipe_ends_quietly(args: list[str]) -> None:
    """As in ``pushwire ARGS | true``: the reader is gone before the first write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [*PUSHWIRE, *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 0


def test_output_cut_short_by_head_ends_quietly() -> None:
    """``pushwire vectors | head -1``: the reader leaves after one line."""
    with subprocess.Popen(
        [*PUSHWIRE, "vectors"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == b"{\n"
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=TIMEOUT) == 0
    assert err == b""
