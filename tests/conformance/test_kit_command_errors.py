"""The kit's commands fail with one line and the exit code every pushwire command uses for
that failure, never a traceback or a silent substitute: a port in use (1) or out of range
(2), a report file that cannot be written (2; found before the run, and caught if it
happens after), a server that cannot be reached (3)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from pushwire.client.commands import cli
from pushwire.client.conformance import cmd as conformance_cmd
from pushwire.server import ServerConfig, open_server
from pushwire.server.testserver import cmd as testserver_cmd


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else is listening on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"pushwire {command}: error: "), err
    return lines[0]


# -- pushwire testserver -------------------------------------------------------------------


def test_testserver_on_a_port_in_use_says_so_in_one_line(
    busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["testserver", "--port", str(busy_port), "--scenario", "gap"]) == 1
    out, err = capsys.readouterr()
    line = one_error_line(err, "testserver")
    assert f"cannot listen on 127.0.0.1:{busy_port}" in line
    assert "listening" not in out


@pytest.mark.parametrize("port", ["99999", "65536", "-1", "seven"])
def test_testserver_refuses_a_port_out_of_range(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:  # (and never a server on some other port)
        cli.main(["testserver", "--port", port, "--scenario", "gap", "--scenario-timeout", "0.1"])
    assert info.value.code == 2
    assert "pushwire testserver: error: argument --port:" in capsys.readouterr().err


def test_testserver_checks_the_report_path_before_listening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["testserver", "--port", "0", "--scenario", "gap", "--scenario-timeout", "0.1"]
    report = tmp_path / "missing-dir" / "r.json"
    assert cli.main([*args, "--json", str(report)]) == 2
    out, err = capsys.readouterr()
    assert "cannot write" in one_error_line(err, "testserver")
    assert out == ""
    assert cli.main([*args, "--json", str(tmp_path)]) == 2  # a directory
    assert "Is a directory" in capsys.readouterr().err


def test_testserver_report_write_failure_after_the_run_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path passed the check, then became unwritable while the scenarios ran."""
    monkeypatch.setattr(testserver_cmd, "unwritable", lambda path: None)
    report = tmp_path / "missing-dir" / "r.json"
    args = ["testserver", "--port", "0", "--scenario", "gap", "--scenario-timeout", "0.2"]
    assert cli.main([*args, "--json", str(report)]) == 2
    out, err = capsys.readouterr()
    assert "INCOMPLETE" in out  # the report was printed; only the file is missing
    progress, error = err.strip().splitlines()  # one progress line per scenario, one error
    assert progress.split() == ["incomplete", "gap"]
    assert "cannot write" in one_error_line(error, "testserver")


# -- pushwire conformance ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["positional", "--server", "PUSHWIRE_SERVER"])
def test_conformance_against_an_unreachable_server_is_one_line(
    how: str, closed_port: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    address = f"127.0.0.1:{closed_port}"
    given = {"positional": [address], "--server": ["--server", address], "PUSHWIRE_SERVER": []}
    monkeypatch.setenv("PUSHWIRE_SERVER", address)
    assert cli.main(["conformance", *given[how], "--timeout", "1"]) == 3
    out, err = capsys.readouterr()
    line = one_error_line(err, "conformance")
    assert f"cannot connect to {address}: connection refused" in line
    assert "pushwire serve" in line  # the hint
    assert out == ""  # no table of ~100 failed cases


@pytest.mark.parametrize("address", ["127.0.0.1:99999", "127.0.0.1:0", "7447", "tls://h:1"])
@pytest.mark.parametrize("command", ["conformance", "fuzz"])
def test_the_kit_refuses_an_address_it_cannot_use(
    command: str, address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([command, "--server", address]) == 2
    one_error_line(capsys.readouterr().err, command)


def test_fuzz_against_an_unreachable_server_is_one_line_and_exit_3(
    closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["fuzz", f"127.0.0.1:{closed_port}", "--timeout", "1"]) == 3
    out, err = capsys.readouterr()
    assert "connection refused" in one_error_line(err, "fuzz")
    assert "no WELCOME" not in err and out == ""


def test_fuzz_against_a_server_that_is_not_pushwire_is_exit_4(
    busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Something accepts the connection but never answers HELLO (the listener here never
    even accepts: the kernel completes the handshake for it)."""
    assert cli.main(["fuzz", "--server", f"127.0.0.1:{busy_port}", "--timeout", "0.5"]) == 4
    assert "no WELCOME" in one_error_line(capsys.readouterr().err, "fuzz")


def test_two_different_addresses_are_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["conformance", "127.0.0.1:1", "--server", "127.0.0.1:2"]) == 2
    assert "two addresses" in one_error_line(capsys.readouterr().err, "conformance")


@pytest.mark.parametrize("option", ["--json", "--junit"])
def test_conformance_checks_report_paths_before_the_run(
    option: str, closed_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "missing-dir" / "r.out"
    assert cli.main(["conformance", f"127.0.0.1:{closed_port}", option, str(report)]) == 2
    assert "cannot write" in one_error_line(capsys.readouterr().err, "conformance")
    assert list(tmp_path.iterdir()) == []


async def test_conformance_report_write_failure_after_the_run_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conformance_cmd, "unwritable", lambda path: None)
    report = tmp_path / "missing-dir" / "r.xml"
    async with open_server(ServerConfig(host="127.0.0.1", port=0)) as server:
        args = ["conformance", f"127.0.0.1:{server.port}", "--case", "SO-05", "--junit"]
        code = await trio.to_thread.run_sync(cli.main, [*args, str(report)])
    assert code == 2
    out, err = capsys.readouterr()
    assert "SO-05" in out
    assert "cannot write" in one_error_line(err, "conformance")


def test_a_report_path_check_leaves_no_file_behind(tmp_path: Path) -> None:
    fresh, kept = tmp_path / "new.json", tmp_path / "old.json"
    kept.write_text("keep")
    for unwritable in (conformance_cmd.unwritable, testserver_cmd.unwritable):
        assert unwritable(fresh) is None and not fresh.exists()
        assert unwritable(kept) is None and kept.read_text() == "keep"
