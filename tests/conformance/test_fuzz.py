"""The network fuzzer: its oracle, a short run against the reference server, and a faulted
server it must catch (with a shrunk, replayable finding)."""

from __future__ import annotations

import os
from pathlib import Path

import trio
from faults import server_options
from integration.cli_support import PUSHWIRE

from pushwire.client.commands import cli
from pushwire.client.conformance import fuzz
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import encode_preface
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import FrameType
from pushwire.server import ServerConfig, open_server

FACTS = fuzz.ServerFacts(max_frame_size=1 << 20, token=b"", auth_required=False)
HEAD = encode_preface(1, 1) + fuzz.hello_bytes(b"")


def test_oracle_follows_the_check_order_and_cuts_after_the_deciding_frame() -> None:
    ping = codec.encode_frame(F.Ping(1))
    bad_flags = codec.encode_raw_frame(FrameType.PING, 0x40, bytes(8))
    sent, expect = fuzz.judge(HEAD + ping + bad_flags + ping, FACTS)
    assert expect.kind == "error" and expect.code == ErrorCode.RESERVED_BITS_SET
    assert sent == HEAD + ping + bad_flags  # nothing after the deciding frame
    huge_header = codec.encode_header(2 << 20, FrameType.PUBLISH, 0)
    sent, expect = fuzz.judge(HEAD + huge_header + b"x" * 50, FACTS)
    assert expect.code == ErrorCode.FRAME_TOO_LARGE and sent == HEAD + huge_header
    assert fuzz.judge(b"GET / HTTP/1.1\r\n", FACTS)[1].kind == "nothing"
    assert fuzz.judge(encode_preface(2, 3), FACTS)[1].kind == "version0"
    # a frame that may itself end the connection makes the answer open
    sent, expect = fuzz.judge(
        HEAD + codec.encode_frame(F.Goaway(0, 0, 0, (), "")) + bad_flags, FACTS
    )
    assert expect.kind == "any"
    # before HELLO: the first frame decides
    assert fuzz.judge(encode_preface(1, 1) + ping, FACTS)[1].code == ErrorCode.UNEXPECTED_FRAME


async def test_short_fuzz_of_the_reference_server_finds_nothing() -> None:
    async with open_server(ServerConfig(host="127.0.0.1", port=0)) as server:
        result = await trio.to_thread.run_sync(
            lambda: fuzz.fuzz("127.0.0.1", server.port, examples=150, seed=7, timeout=2.0)
        )
    assert result.examples >= 150
    assert not result.findings, [str(f) for f in result.findings]
    assert result.canary_received == result.canary_published > 0


async def test_fuzz_catches_a_server_that_ignores_reserved_bits() -> None:
    config = ServerConfig(host="127.0.0.1", port=0)
    async with open_server(config, **server_options("ignore-reserved-bits")) as server:
        result = await trio.to_thread.run_sync(
            lambda: fuzz.fuzz(
                "127.0.0.1", server.port, examples=300, seed=3, timeout=2.0, canary=False
            )
        )
        assert result.findings, "the fuzzer missed an ignored reserved bit"
        finding = result.findings[0]
        assert finding.kind == "wrong-answer"
        assert "RESERVED_BITS_SET" in finding.expected
        assert len(finding.data) <= len(HEAD) + 8  # shrunk to the handshake and one header
        # the printed replay reproduces it
        replay = [
            "fuzz",
            f"127.0.0.1:{server.port}",
            "--replay",
            finding.data.hex(),
            "--timeout",
            "2",
        ]
        assert await trio.to_thread.run_sync(cli.main, replay) == 1
    async with open_server(ServerConfig(host="127.0.0.1", port=0)) as healthy:
        replay[1] = f"127.0.0.1:{healthy.port}"
        assert await trio.to_thread.run_sync(cli.main, replay) == 0


async def test_fuzz_catches_a_server_that_accepts_oversized_frames() -> None:
    """The mutation suite's "accept-oversized" server (tests/faults.py) is a finding of the
    fuzzer too: the first frame header over the limit answered with anything but
    FRAME_TOO_LARGE."""
    config = ServerConfig(host="127.0.0.1", port=0)
    async with open_server(config, **server_options("accept-oversized", config)) as server:
        result = await trio.to_thread.run_sync(
            lambda: fuzz.fuzz(
                "127.0.0.1", server.port, examples=300, seed=3, timeout=2.0, canary=False
            )
        )
    assert result.findings, "the fuzzer missed a server that accepts oversized frames"
    assert "FRAME_TOO_LARGE" in result.findings[0].expected


async def test_a_frame_cut_by_the_servers_reset_is_no_finding() -> None:
    """A server that writes a large frame and closes before reading all the attack gets its
    connection reset by its own TCP stack, which drops what it had not transmitted yet.
    How much of the frame arrives depends on segmentation, so the verdict must not."""
    big = codec.encode_frame(F.Message(1, 1, "t", b"x" * 66_000))

    async def writes_then_closes(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(8)
            await stream.send_all(encode_preface(1, 1) + big)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, writes_then_closes, 0)
        port = listeners[0].socket.getsockname()[1]
        for _ in range(3):
            attack = HEAD + codec.encode_frame(F.Ping(1)) * 400_000  # far more than it reads
            obs = await fuzz._attack("127.0.0.1", port, attack, 3.0)
            assert obs.end == "reset" and not obs.bad, obs
            assert fuzz.verdict(attack, fuzz.Expect("any", why="test"), obs) is None
        nursery.cancel_scope.cancel()


async def test_a_canary_topic_the_token_may_not_use_is_setup_information() -> None:
    from pushwire.server import Permissions

    auth = {b"t": Permissions(subscribe=("allowed/#",), publish=("allowed/#",))}
    config = ServerConfig(host="127.0.0.1", port=0, auth=auth)
    async with open_server(config) as server:

        def run(topic: str | None) -> fuzz.FuzzResult:
            return fuzz.fuzz(
                "127.0.0.1",
                server.port,
                examples=5,
                seed=1,
                timeout=2.0,
                token=b"t",
                canary_topic=topic,
            )

        refused = await trio.to_thread.run_sync(run, None)
        assert not refused.findings, [str(f) for f in refused.findings]
        assert refused.canary_not_run and "FORBIDDEN" in refused.canary_not_run
        named = await trio.to_thread.run_sync(run, "allowed/canary")
        assert not named.findings and named.canary_not_run is None
        assert named.canary_received == named.canary_published > 0


async def test_pushwire_fuzz_leaves_nothing_in_the_working_directory(tmp_path: Path) -> None:
    """Run as a user runs it (its own process, its own working directory): hypothesis must
    not leave its ``.hypothesis/`` caches behind."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPOTHESIS")}
    async with open_server(ServerConfig(host="127.0.0.1", port=0)) as server:
        argv = ["fuzz", f"127.0.0.1:{server.port}", "--examples", "20", "--seed", "3"]
        result = await trio.run_process(
            [*PUSHWIRE, *argv], cwd=tmp_path, env=env, capture_stdout=True, capture_stderr=True
        )
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []
