"""The terminal commands as a user runs them: ``pushwire serve``, ``sub`` and ``pub`` as
subprocesses over real TCP on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

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
        first, second = (json.loads(line) for line in jsoned.stdout.decode().splitlines())
        assert first["event"] == "message" and first["seq"] == 1 and first["epoch"] > 0
        assert first["payload_base64"] is True and first["payload"] == "/0EKQg=="
        assert first["headers"] == [
            {"key": "k", "value": "v"},
            {"key": "k", "value": "gA==", "base64": True},
        ]
        assert second["payload"] == "caf\u00e9" and "payload_base64" not in second


@pytest.mark.spec("PW-RESUME-2")
async def test_sub_reports_a_gap_on_stderr_and_as_json() -> None:
    async with serve("--history-count", "3") as address:
        async with pw.connect(address) as conn:
            for i in range(10):
                await conn.publish("t", b"%d" % i)
        first = await pushwire(
            "sub", "t", "--since", "oldest", "--count", "1", "--format", "json", "--server", address
        )
        epoch = json.loads(first.stdout)["epoch"]
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
        objects = [json.loads(line) for line in result.stdout.decode().splitlines()]
        assert objects[0] == {
            "event": "gap",
            "topic": "t",
            "epoch": epoch,
            "first": 2,
            "last": 7,
            "reason": "HISTORY_EXPIRED",
        }
        assert [o["seq"] for o in objects[1:]] == [8, 9, 10]
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


async def test_unreachable_server_exits_3_with_one_line() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    for command in (["sub", "t"], ["pub", "t", "m"]):
        result = await pushwire(*command, "--server", f"127.0.0.1:{port}")
        assert_one_clear_line(result, 3, "cannot connect")


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
    ],
)
async def test_bad_arguments_exit_2_without_a_traceback(args: list[str]) -> None:
    result = await pushwire(*args, "--connect-timeout", "1")
    assert result.returncode == 2, result.stderr
    assert b"Traceback" not in result.stderr


async def test_invalid_topic_is_a_clear_request_error() -> None:
    async with serve() as address:
        result = await pushwire("pub", "a//b", "m", "--server", address)
        assert_one_clear_line(result, 5, "INVALID_TOPIC")


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
