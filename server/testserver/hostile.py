"""``pushwire testserver --hostile N``: fuzz a client with hostile frames from a server.

Theory of operation: each example starts the client command (``{address}`` and
``{topic}`` filled in, like the scenarios' ``--client-command``) and serves its first
connection: the server preface, WELCOME and SUBSCRIBED(NEW), then, in one write, 1-3 valid
MESSAGEs (seq 1, 2, ...) and one hostile frame drawn from
:func:`pushwire.protocol.testing.strategies.malformed_frames` for a receiver with the
client's own ``max_frame_size``, then EOF. A correct client

- reports the code the strategy names: ERROR(code, 0, 0) on the wire, then it closes
  (SPEC.md §3.5, §8.7); and
- delivers the messages that came *before* the bad frame, even though they arrived in the
  same read: the client prints one JSON line per message on stdout (``{"event":
  "message", "seq": ...}``, as ``pushwire sub --format json`` does), and those lines must
  hold seq 1..k in order.

A finding names the hostile frame (hex), what was expected and what the client did; the
run stops at the first one (no shrinking: every example costs a process start). The
client's own output is not echoed into the report, only what the verdict needs.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

import trio

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder, encode_preface, read_preface
from pushwire.protocol.errors import ErrorCode, RemoteProtocolError
from pushwire.protocol.layouts import (
    INITIAL_MAX_FRAME_SIZE,
    MAX_MAX_FRAME_SIZE,
    PREFACE_SIZE,
    Outcome,
    SlowConsumerPolicy,
)

#: The topic the client is started with.
TOPIC = "conformance/hostile"
#: An epoch that is not 0 (§6.5); the same for every example.
EPOCH = 0x4057_11E5
#: Heartbeat announced in WELCOME: long, so no PING interferes with the verdict.
HEARTBEAT_MS = 60_000


@dataclass
class Example:
    """One hostile example and what the client did about it."""

    messages: int = 0
    hostile: bytes = b""
    expected: ErrorCode | None = None
    #: the connection-level ERROR codes the client sent, in order
    errors: list[int] = field(default_factory=list)
    #: how the client's connection ended, or why the example could not be played
    end: str = ""
    #: seqs of the message lines the client printed
    printed: list[int] = field(default_factory=list)
    #: stdout lines that are not JSON objects (counted, not shown)
    unreadable: int = 0
    #: the client's HELLO.max_frame_size
    limit: int = 0


@dataclass
class Finding:
    expected: str
    observed: str
    example: Example

    def render(self) -> str:
        ex = self.example
        return "\n".join(
            [
                f"  expected: {self.expected}",
                f"  observed: {self.observed}",
                f"  sent:     {ex.messages} MESSAGE(s), then hostile frame {ex.hostile.hex()}",
            ]
        )


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"0x{code:04x}"


def judge(ex: Example) -> Finding | None:
    """The finding ``ex`` amounts to, if any."""
    assert ex.expected is not None
    want_code = f"ERROR({ex.expected.name}, 0, 0) from the client, then its close"
    if not ex.errors:
        return Finding(want_code, f"no ERROR ({ex.end})", ex)
    if ex.errors[0] != ex.expected:
        return Finding(want_code, f"ERROR({_code_name(ex.errors[0])}) ({ex.end})", ex)
    want = list(range(1, ex.messages + 1))
    if ex.printed[: len(want)] != want:
        return Finding(
            f"messages {want} delivered (printed as JSON lines) before the error",
            f"printed seqs {ex.printed}"
            + (f" and {ex.unreadable} line(s) that are not JSON" if ex.unreadable else ""),
            ex,
        )
    return None


class _Peer:
    """The server side of one client connection, on bytes (no validation beyond what the
    example needs: the scenarios check the client's handshake)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(MAX_MAX_FRAME_SIZE)
        self.buffer = b""

    async def _more(self) -> bool:
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        if not data:
            return False
        self.decoder.feed(data)
        return True

    async def preface(self) -> bool:
        while self.decoder.buffered < PREFACE_SIZE:
            if not await self._more():
                return False
        read_preface(self.decoder.take(PREFACE_SIZE))
        return True

    async def frame(self) -> F.Frame | str:
        """The next client frame, or how the stream ended ("eof", "bad bytes: ...")."""
        while True:
            try:
                frame = self.decoder.next_frame()
            except RemoteProtocolError as exc:
                return f"bad bytes from the client: {exc}"
            if frame is not None:
                return frame
            if not await self._more():
                self.decoder.feed(b"")
                try:
                    self.decoder.next_frame()
                except RemoteProtocolError as exc:
                    return f"bad bytes from the client: {exc}"
                return "the client closed"

    async def until(self, cls: type) -> Any:
        while True:
            got = await self.frame()
            if isinstance(got, str | cls):
                return got
            if isinstance(got, F.Ping):
                await self.stream.send_all(codec.encode_frame(F.Pong(got.opaque)))


#: (messages before the hostile frame, its bytes, the code a receiver must report)
Plan = tuple[int, bytes, ErrorCode]


async def play(stream: trio.abc.Stream, ex: Example, plan: Plan | None, timeout: float) -> None:
    """Serve one connection: handshake, SUBSCRIBED, messages + the hostile frame, EOF;
    then record the client's ERROR frames until it closes (or ``timeout``). Without a
    plan, only learn the client's HELLO.max_frame_size (into ``ex.limit``)."""
    peer = _Peer(stream)
    with trio.move_on_after(timeout) as scope:
        if not await peer.preface():
            ex.end = "the client closed before its preface"
            return
        await stream.send_all(encode_preface(1, 1))
        hello = await peer.until(F.Hello)
        if isinstance(hello, str):
            ex.end = f"no HELLO: {hello}"
            return
        welcome = F.Welcome(
            1,
            HEARTBEAT_MS,
            MAX_MAX_FRAME_SIZE,
            16,
            1000,
            SlowConsumerPolicy.DROP,
            "pushwire-testserver-hostile",
        )
        await stream.send_all(codec.encode_frame(welcome))
        sub = await peer.until(F.Subscribe)
        if isinstance(sub, str):
            ex.end = f"no SUBSCRIBE: {sub}"
            return
        ex.limit = hello.max_frame_size
        if plan is None:
            return
        ex.messages, ex.hostile, ex.expected = plan
        ex.messages = min(ex.messages, sub.initial_credit)
        pushes = b"".join(
            codec.encode_frame(F.Message(EPOCH, seq, sub.topic, b"m%d" % seq))
            for seq in range(1, ex.messages + 1)
        )
        await stream.send_all(
            codec.encode_frame(F.Subscribed(sub.sub_id, Outcome.NEW, EPOCH, 1, 0))
            + pushes
            + ex.hostile
        )
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
        while True:
            got = await peer.frame()
            if isinstance(got, str):
                ex.end = got
                return
            if isinstance(got, F.Error) and not got.request_type:
                ex.errors.append(got.code)
    if scope.cancelled_caught:
        ex.end = f"the client kept the connection open for {timeout:g} s"


async def run_example(command: str, plan: Plan | None, timeout: float) -> Example:
    """Start the client command, play one example on its first connection, stop it and
    read what it printed."""
    ex = Example()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    cmd = command.format(
        address=f"127.0.0.1:{port}", host="127.0.0.1", port=port, topic=shlex.quote(TOPIC)
    )
    out = bytearray()
    proc = await trio.lowlevel.open_process(
        cmd,
        shell=True,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with trio.open_nursery() as nursery:

            async def collect() -> None:
                assert proc.stdout is not None
                while chunk := await proc.stdout.receive_some(65536):
                    out.extend(chunk)

            nursery.start_soon(collect)
            with trio.move_on_after(timeout) as accepting:
                stream = await listeners[0].accept()
            if accepting.cancelled_caught:
                ex.end = f"the client did not connect within {timeout:g} s"
            else:
                async with stream:
                    await play(stream, ex, plan, timeout)
            for listener in listeners:
                await listener.aclose()  # a reconnect finds nobody
            with trio.move_on_after(0.5):  # time to print what it delivered
                await proc.wait()
            _stop(proc)
            with trio.move_on_after(2):
                await proc.wait()
            nursery.cancel_scope.deadline = trio.current_time() + 1
    finally:
        _stop(proc, signal.SIGKILL)
    for line in bytes(out).decode("utf-8", "replace").splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            ex.unreadable += 1
            continue
        if isinstance(obj, dict) and obj.get("event") == "message" and "seq" in obj:
            ex.printed.append(int(obj["seq"]))
    return ex


def _stop(proc: trio.Process, sig: int = signal.SIGTERM) -> None:
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


@dataclass
class HostileResult:
    #: examples played (up to the first finding)
    examples: int = 0
    findings: list[Finding] = field(default_factory=list)
    #: examples that could not be played (the client never connected, never subscribed)
    setup_problems: list[str] = field(default_factory=list)
    seed: int = 0


def fuzz_client(
    command: str, *, examples: int = 50, seed: int | None = None, timeout: float = 5.0
) -> HostileResult:
    """Run up to ``examples`` hostile examples against ``command``; stops at the first
    finding or setup problem."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as seed_decorator
    from hypothesis import strategies as st

    from pushwire.protocol.testing.strategies import malformed_frames

    result = HostileResult(seed=seed if seed is not None else int.from_bytes(os.urandom(4), "big"))
    probe = trio.run(run_example, command, None, timeout)
    if not probe.limit:
        result.setup_problems.append(probe.end)
        return result
    # the hostile frames are drawn for the client's own limit, learnt once up front
    plans = st.tuples(
        st.integers(1, 3),
        malformed_frames("to_client", max(probe.limit, INITIAL_MAX_FRAME_SIZE)),
    )

    class _Stop(Exception):
        """The first finding ends the run (hypothesis replays it once: not played again)."""

    @seed_decorator(result.seed)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
        print_blob=False,
    )
    @given(plans)
    def one(plan: tuple[int, Any]) -> None:
        if result.findings or result.setup_problems:
            raise _Stop
        k, bad = plan
        result.examples += 1
        ex = trio.run(run_example, command, (k, bad.data, bad.code), timeout)
        if ex.expected is None:
            result.setup_problems.append(ex.end)
            raise _Stop
        if (finding := judge(ex)) is not None:
            result.findings.append(finding)
            raise _Stop

    try:
        one()
    except _Stop:
        pass
    return result


def run(args: Any) -> int:
    """``pushwire testserver --hostile N --client-command CMD``."""
    if not args.client_command:
        print("pushwire testserver: error: --hostile needs --client-command", flush=True)
        return 2
    # hypothesis keeps caches in ./.hypothesis unless told otherwise: not in the user's
    # working directory (set HYPOTHESIS_STORAGE_DIRECTORY to keep them somewhere)
    scratch = None
    if "HYPOTHESIS_STORAGE_DIRECTORY" not in os.environ:
        scratch = tempfile.mkdtemp(prefix="pushwire-hostile-")
        os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = scratch
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        print("pushwire testserver: error: --hostile needs hypothesis (pip install hypothesis)")
        return 2
    try:
        result = fuzz_client(
            args.client_command, examples=args.hostile, seed=args.seed, timeout=args.timeout
        )
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"pushwire testserver --hostile: {result.examples} example(s), seed {result.seed}, "
        f"{len(result.findings)} finding(s)"
    )
    for problem in result.setup_problems:
        print(f"SETUP: {problem}")
    for i, f in enumerate(result.findings, 1):
        print(f"FINDING {i}:")
        print(f.render())
    if result.findings:
        print(f"reproduce: --hostile {args.hostile} --seed {result.seed}")
    return 1 if result.findings or result.setup_problems else 0
