"""The terminal commands as a user runs them: ``pushwire serve``, ``sub`` and ``pub`` as
subprocesses over real TCP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
from integration.cli_support import PUSHWIRE, serve

import pushwire.client as pw
from pushwire.client.commands.cli import COMMANDS


async def pushwire(
    *args: str, stdin: bytes = b"", timeout: float = 20
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(
            [*PUSHWIRE, *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


def assert_one_clear_line(
    result: subprocess.CompletedProcess[bytes], code: int, *words: str
) -> None:
    err = result.stderr.decode()
    assert result.returncode == code, (result.returncode, err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("pushwire: error:")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]


async def test_pub_then_sub_round_trip() -> None:
    async with serve() as address:
        one = await pushwire("pub", "news/eu", "hello world", "--server", address)
        assert (one.returncode, one.stdout) == (0, b"1\n"), one.stderr
        lines = await pushwire("pub", "news/eu", "--server", address, stdin=b"a\nb\r\nc")
        assert (lines.returncode, lines.stdout) == (0, b"2\n3\n4\n"), lines.stderr
        sub = await pushwire(
            "sub", "news/eu", "--since", "oldest", "--count", "4", "--server", address
        )
        assert sub.returncode == 0, sub.stderr
        assert sub.stdout.decode().splitlines() == [
            "news/eu 1 hello world",
            "news/eu 2 a",
            "news/eu 3 b",
            "news/eu 4 c",
        ]


@pytest.mark.spec("PW-SUB-29", "PW-TOPIC-7")
async def test_sub_to_a_pattern_prints_each_message_with_its_topic() -> None:
    async with serve() as address:
        for topic in ("orders/eu", "orders/us", "other/x", "orders/eu", "orders/us"):
            done = await pushwire("pub", topic, f"to {topic}", "--server", address)
            assert done.returncode == 0, done.stderr
        sub = await pushwire(
            "sub", "orders/+", "--since", "oldest", "--count", "4", "--server", address
        )
        assert sub.returncode == 0, sub.stderr
        assert sorted(sub.stdout.decode().splitlines()) == [
            "orders/eu 1 to orders/eu",
            "orders/eu 2 to orders/eu",
            "orders/us 1 to orders/us",
            "orders/us 2 to orders/us",
        ]
        refused = await pushwire("pub", "orders/+", "x", "--server", address)
        assert refused.returncode == 2 and b"reserved for patterns" in refused.stderr


def json_lines(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def messages(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["event"] == "message"]


@pytest.mark.spec("PW-TOPIC-4")
async def test_sub_formats_json_and_hex_and_escapes_text() -> None:
    async with serve() as address:
        async with pw.connect(address) as conn:
            await conn.publish("t", b"\xffA\nB", headers=[("k", b"v"), ("k", b"\x80")])
            await conn.publish("t", "caf\u00e9".encode())
        args = ["sub", "t", "--since", "oldest", "--count", "2", "--server", address]
        text = await pushwire(*args)
        assert text.stdout.decode().splitlines() == ["t 1 \\xffA\\nB", "t 2 caf\u00e9"]
        hexed = await pushwire(*args, "--format", "hex")
        assert hexed.stdout.decode().splitlines() == ["t 1 ff410a42", "t 2 636166c3a9"]
        jsoned = await pushwire(*args, "--format", "json")
        first, second = messages(json_lines(jsoned))
        assert first["seq"] == "1" and first["epoch"].isdigit()
        assert first["payload_base64"] is True and first["payload"] == "/0EKQg=="
        assert first["headers"] == [
            {"key": "k", "value": "v"},
            {"key": "k", "value": "gA==", "base64": True},
        ]
        assert second["payload"] == "caf\u00e9" and "payload_base64" not in second


async def test_sub_text_escapes_terminal_controls_and_backslashes() -> None:
    payload = b"a\x1b[31mred\\b\x07\tz\xc2\x85\xe2\x80\xae\xff \xc3\xa9"
    async with serve() as address:
        async with pw.connect(address) as conn:
            await conn.publish("t", payload)
        result = await pushwire(
            "sub", "t", "--since", "oldest", "--count", "1", "--server", address
        )
    line = result.stdout.decode()
    assert line == "t 1 a\\x1b[31mred\\\\b\\x07\\tz\\u0085\\u202e\\xff \u00e9\n"
    assert not any(ch < " " for ch in line[:-1])  # not one control character reaches the tty


async def test_sub_json_prints_u64_values_as_strings_and_since_takes_a_position_verbatim() -> None:
    async with serve() as address:
        async with pw.connect(address) as conn:
            for word in (b"a", b"b", b"c"):
                await conn.publish("t", word)
        args = ["sub", "t", "--format", "json", "--server", address]
        first = await pushwire(*args, "--since", "oldest", "--count", "1")
        (message,) = messages(json_lines(first))
        epoch = int(message["epoch"])
        assert epoch > 2**53  # more than a JSON number keeps (a random u64, SPEC.md §8.4)
        assert message["position"] == f"{epoch}:1" and message["seq"] == "1"
        rest = await pushwire(*args, "--since", message["position"], "--count", "2")
        assert rest.returncode == 0, rest.stderr
        assert [m["payload"] for m in messages(json_lines(rest))] == ["b", "c"]
        assert b"epoch changed" not in rest.stderr


async def test_sub_announces_where_each_subscription_starts() -> None:
    async with serve() as address:
        async with pw.connect(address) as conn:
            await conn.publish("t", b"x")
        text = await pushwire("sub", "t", "u", "--count", "0", "--server", address)
        assert text.returncode == 0, text.stderr
        lines = sorted(text.stderr.decode().splitlines())
        assert lines[0].startswith("subscribed to t after ") and lines[0].endswith(":1")
        assert lines[1].startswith("subscribed to u after ") and lines[1].endswith(":0")
        assert text.stdout == b""
        jsoned = await pushwire(
            "sub", "t", "--since", "oldest", "--count", "1", "--format", "json", "--server", address
        )
        subscribed, message = json_lines(jsoned)
        assert subscribed["event"] == "subscribed" and subscribed["topic"] == "t"
        assert subscribed["position"] == f"{message['epoch']}:0"
        assert jsoned.stderr == b""


async def test_sub_count_zero_checks_the_subscription_and_exits(tmp_path: Path) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"": {"subscribe": ["open/#"]}}))
    async with serve("--auth", str(auth)) as address:
        ok = await pushwire("sub", "open/a", "--count", "0", "--server", address)
        assert ok.returncode == 0 and b"subscribed to open/a" in ok.stderr
        refused = await pushwire("sub", "closed", "--count", "0", "--server", address)
        assert_one_clear_line(refused, 5, "FORBIDDEN")
    help_text = (await pushwire("sub", "--help")).stdout.decode()
    assert "--count 0 exits as soon as every subscription is" in help_text


async def test_sub_timeout_bounds_the_wait() -> None:
    async with serve() as address:
        started = trio.current_time()
        short = await pushwire("sub", "t", "--count", "1", "--timeout", "0.5", "--server", address)
        assert trio.current_time() - started < 10
        assert short.returncode == 1
        assert "timeout: 0 of 1 message(s) within 0.5 s" in short.stderr.decode()
        endless = await pushwire("sub", "t", "--timeout", "0.5", "--server", address)
        assert endless.returncode == 0, endless.stderr
        bad = await pushwire("sub", "t", "--timeout", "0", "--server", address)
        assert_one_clear_line(bad, 2, "--timeout")


async def test_sub_verbose_shows_receive_times_and_headers() -> None:
    async with serve() as address:
        async with pw.connect(address) as conn:
            await conn.publish("t", b"hi", headers=[("k", b"v"), ("id", b"7")])
        args = ["sub", "t", "--since", "oldest", "--count", "1", "-v", "--server", address]
        text = await pushwire(*args)
        line = text.stdout.decode().strip()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z t 1 \{k=v, id=7\} hi", line), (
            line
        )
        (message,) = messages(json_lines(await pushwire(*args, "--format", "json")))
        assert message["received"].endswith("Z")


@pytest.mark.parametrize("since", ["0x10:1", "-1:1", "1:18446744073709551616", "last:x"])
async def test_sub_since_takes_decimal_positions_only(since: str) -> None:
    result = await pushwire("sub", "t", f"--since={since}", "--server", "127.0.0.1:1")
    assert_one_clear_line(result, 2, "--since")
    assert "0x" not in (await pushwire("sub", "--help")).stdout.decode()


@pytest.mark.spec("PW-RESUME-2")
async def test_sub_reports_a_gap_on_stderr_and_as_json() -> None:
    async with serve("--history-count", "3") as address:
        async with pw.connect(address) as conn:
            for i in range(10):
                await conn.publish("t", b"%d" % i)
        first = await pushwire(
            "sub", "t", "--since", "oldest", "--count", "1", "--format", "json", "--server", address
        )
        epoch = messages(json_lines(first))[0]["epoch"]
        result = await pushwire(
            "sub",
            "t",
            "--since",
            f"{epoch}:1",
            "--count",
            "3",
            "--format",
            "json",
            "--server",
            address,
        )
        assert result.returncode == 0, result.stderr
        objects = [o for o in json_lines(result) if o["event"] != "subscribed"]
        assert objects[0] == {
            "event": "gap",
            "topic": "t",
            "epoch": epoch,
            "first": "2",
            "last": "7",
            "reason": "HISTORY_EXPIRED",
            "position": f"{epoch}:7",
        }
        assert [o["seq"] for o in objects[1:]] == ["8", "9", "10"]
        assert "gap: t messages 2..7 lost (HISTORY_EXPIRED)" in result.stderr.decode()


async def test_sub_over_several_topics_with_at_least_once() -> None:
    async with serve() as address:
        for topic in ("a", "b"):
            for word in ("x", "y"):
                assert (await pushwire("pub", topic, word, "--server", address)).returncode == 0
        result = await pushwire(
            "sub", "a", "b", "--since", "oldest", "--count", "4", "--at-least-once",
            "--credit", "1", "--server", address,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        lines = result.stdout.decode().splitlines()
        assert sorted(lines) == ["a 1 x", "a 2 y", "b 1 x", "b 2 y"]
        assert lines.index("a 1 x") < lines.index("a 2 y")


async def test_unreachable_server_exits_3_saying_connection_refused() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    for command in (["sub", "t"], ["pub", "t", "m"]):
        result = await pushwire(*command, "--server", f"127.0.0.1:{port}")
        assert_one_clear_line(result, 3, "connection refused", f"pushwire serve --port {port}")


async def test_rejected_token_exits_4_with_the_code_name(tmp_path: Path) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"good": {"subscribe": ["#"], "publish": ["allowed/#"]}}))
    async with serve("--auth", str(auth)) as address:
        result = await pushwire("sub", "t", "--token", "bad", "--server", address)
        assert_one_clear_line(result, 4, "handshake rejected", "UNAUTHENTICATED")
        refused = await pushwire("pub", "elsewhere", "m", "--token", "good", "--server", address)
        assert_one_clear_line(refused, 5, "FORBIDDEN")
        ok = await pushwire("pub", "allowed/x", "m", "--token", "good", "--server", address)
        assert (ok.returncode, ok.stdout) == (0, b"1\n")


@pytest.mark.parametrize(
    "args",
    [
        ["sub", "t", "--since", "yesterday"],
        ["sub", "t", "--count", "-1"],
        ["sub", "t", "--format", "xml"],
        ["pub", "t", "m", "--header", "novalue"],
        ["sub", "t", "--server", "host:notaport"],
        ["sub", "t", "--server", "7447"],
        ["pub", "t", "m", "--server", "7447"],
        ["sub", "t", "--credit", "0"],
    ],
)
async def test_bad_arguments_exit_2_without_a_traceback(args: list[str]) -> None:
    result = await pushwire(*args, "--connect-timeout", "1")
    assert result.returncode == 2, result.stderr
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["pub", "a//b", "m"], ["sub", "t", "a//b"], ["sub", "x\x01"]])
async def test_topic_syntax_is_checked_before_connecting(command: list[str]) -> None:
    result = await pushwire(*command, "--server", "127.0.0.1:1")  # nothing listens there
    assert_one_clear_line(result, 2, "invalid topic")


async def test_a_bare_port_is_not_taken_for_a_host() -> None:
    result = await pushwire("sub", "t", "--server", "7447")
    assert_one_clear_line(result, 2, "--server 7447: a port alone is not an address")


async def test_pushwire_server_in_the_environment_is_the_default() -> None:
    async with serve() as address:
        env = {**os.environ, "PUSHWIRE_SERVER": address}
        with trio.fail_after(20):
            done = await trio.run_process(
                [*PUSHWIRE, "pub", "t", "m"], env=env, capture_stdout=True, check=False
            )
        assert (done.returncode, done.stdout) == (0, b"1\n")
        bad_env = {**os.environ, "PUSHWIRE_SERVER": "7447"}
        with trio.fail_after(20):
            bad = await trio.run_process(
                [*PUSHWIRE, "pub", "t", "m"], env=bad_env, capture_stderr=True, check=False
            )
        assert bad.returncode == 2 and b"$PUSHWIRE_SERVER= 7447" in bad.stderr


@pytest.mark.parametrize("command", [*COMMANDS, "bench codec", "bench server"])
def test_help_shows_an_example(command: str) -> None:
    done = subprocess.run(
        [*PUSHWIRE, *command.split(), "--help"], capture_output=True, timeout=20, check=False
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    lines = out.splitlines()
    headings = [i for i, line in enumerate(lines) if line.startswith("examples")]
    assert headings, out
    examples = [line.strip() for line in lines[headings[0] + 1 :]]
    invocation = f"pushwire {command}"
    assert any(e == invocation or e.startswith(invocation + " ") for e in examples), out


async def test_pub_file_sends_its_bytes_as_they_are_in_one_message(tmp_path: Path) -> None:
    data = b"\x00line one\r\nline two\r\n\xff\xfe end\r"
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    async with serve() as address:
        one = await pushwire("pub", "t", "--file", str(path), "--server", address)
        assert (one.returncode, one.stdout) == (0, b"1\n"), one.stderr
        whole = await pushwire("pub", "t", "--file", "-", "--server", address, stdin=data)
        assert (whole.returncode, whole.stdout) == (0, b"2\n"), whole.stderr
        got = await pushwire(
            "sub", "t", "--since", "oldest", "--count", "2", "--format", "hex", "--server", address
        )
    assert got.stdout.decode().split() == ["t", "1", data.hex(), "t", "2", data.hex()]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["t", "m", "--file", "x"], "MESSAGE or --file, not both"),
        (["t", "--file", "/nonexistent/x"], "--file /nonexistent/x: No such file"),
        ([b"t", b"caf\xe9"], "MESSAGE is not valid UTF-8"),
        ([b"t", b"m", b"--header", b"k=\xff"], "is not valid UTF-8"),
    ],
)
async def test_pub_refuses_unusable_input_in_one_line(
    args: list[str | bytes], complaint: str
) -> None:
    with trio.fail_after(20):
        result = await trio.run_process(
            [*PUSHWIRE, "pub", *args, "--server", "127.0.0.1:1"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert_one_clear_line(result, 2, complaint)


async def test_pub_with_an_unquoted_message_shows_the_usage_of_pub() -> None:
    result = await pushwire("pub", "t/x", "hello", "world")
    err = result.stderr.decode()
    assert result.returncode == 2 and "Traceback" not in err
    assert err.startswith("usage: pushwire pub ")
    assert "unrecognized arguments: world" in err and "'hello world'" in err


async def test_pub_options_may_come_before_the_message() -> None:
    async with serve() as address:
        result = await pushwire("pub", "t", "--header", "k=v", "the message", "--server", address)
        assert (result.returncode, result.stdout) == (0, b"1\n"), result.stderr


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid(1)")
async def test_ctrl_c_while_pub_reads_a_terminal_exits_at_once() -> None:
    """Ctrl-C typed at the terminal pub reads its lines from, as a user does it: the
    terminal is pub's controlling terminal (``setsid --ctty``), so ^C makes it send
    SIGINT to pub."""
    async with serve() as address:
        controller, terminal = pty.openpty()
        try:
            proc = await trio.lowlevel.open_process(
                ["setsid", "--ctty", *PUSHWIRE, "pub", "t", "-v", "--server", address],
                stdin=terminal,
                stderr=subprocess.PIPE,
            )
            assert proc.stderr is not None
            log = b""
            with trio.fail_after(15):
                while b"connected to" not in log:  # now it waits for a line of the terminal
                    chunk = await proc.stderr.receive_some(4096)
                    assert chunk, log
                    log += chunk
            os.write(controller, b"\x03")  # ^C
            with trio.move_on_after(3):  # at once, not when a line is typed
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
                pytest.fail("pub did not exit on Ctrl-C")
            assert proc.returncode == 130
        finally:
            os.close(controller)
            os.close(terminal)
