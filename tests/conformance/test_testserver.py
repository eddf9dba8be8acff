"""The client testserver: the reference client passes every scenario, broken clients don't.

A short heartbeat (300 ms) and GOAWAY hint (400 ms) keep the timing scenarios fast. The
broken clients are raw-wire peers speaking just enough pushwire to reach the scenario, each
missing one promise (no PONG, no credit, no resume) — the testserver must say so.
"""

from __future__ import annotations

import json
import math
import random
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import trio
from reference_client import app_matches, drive_reference_client

from pushwire.client.commands import cli
from pushwire.client.conformance.wire import TIMEOUT, CaseFailed, Closed, WireConnection
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder, encode_preface
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import FrameType, SinceKind, SlowConsumerPolicy
from pushwire.protocol.testing.model import Status
from pushwire.server.testserver import SCENARIOS, open_testserver
from pushwire.server.testserver.scenarios import REFUSALS

FAST = {"heartbeat_ms": 300, "timeout": 3.0, "goaway_after_ms": 400}
#: A broken client is expected to time out somewhere: keep those waits short.
BROKEN = {"timeout": 1.0, "reconnect_wait": 0.5}


async def test_reference_client_passes_every_scenario() -> None:
    async with open_testserver(**FAST) as ts:
        for name in SCENARIOS:
            run = ts.runs[name]
            ts.current = run
            topics: dict[str, list[tuple[object, ...]]] = {}
            address = f"127.0.0.1:{ts.port}"
            seen = await drive_reference_client(address, run, limit=15, topics=topics)
            failed = [c for c in run.checks if not c.passed]
            assert run.status is Status.PASS, (name, failed, run.notes)
            expected = run.scenario.app(run) if run.scenario.app else []
            assert app_matches(expected, seen), (name, expected, seen)
            if run.scenario.app_topics is not None:
                per_topic = run.scenario.app_topics(run)
                assert set(topics) == set(per_topic), (name, topics)
                for topic, items in per_topic.items():
                    wanted = [i for i in items if i[0] != "error"]  # a connection's, no topic's
                    assert app_matches(wanted, topics[topic]), (name, topic, items, topics)
                    assert len(wanted) == len(items) or ("error",) in seen, (name, seen)


async def broken_client(
    port: int, topic: str, *, credit: int, pong: bool, reconnect: bool = False
) -> None:
    """Just enough of a client: handshake, one SUBSCRIBE, then read until cancelled,
    answering PINGs only when ``pong`` and ignoring what it cannot decode; with
    ``reconnect``, it connects again at once whenever a connection ends, whatever the
    server said (a GOAWAY's delay, a terminal code)."""
    while True:
        await _one_broken_connection(port, topic, credit=credit, pong=pong, leave=reconnect)
        if not reconnect:
            return


async def _one_broken_connection(
    port: int, topic: str, *, credit: int, pong: bool, leave: bool
) -> None:
    """One connection; ``leave``: close as soon as a GOAWAY arrives."""
    conn = await WireConnection.open("127.0.0.1", port, timeout=10, auto_pong=False)
    conn.decoder = FrameDecoder(1 << 20)
    hello = F.Hello(1 << 20, 0, "broken-client", b"")
    sub = F.Subscribe(sub_id=1, topic=topic, initial_credit=credit)
    try:
        await conn.send_raw(
            encode_preface(1, 1) + codec.encode_frame(hello) + codec.encode_frame(sub)
        )
        await conn.read_preface()
        while True:
            try:
                obs = await conn.next_frame(math.inf)
            except CaseFailed:  # this client ignores what it cannot decode
                conn.decoder = FrameDecoder(1 << 20)
                continue
            if isinstance(obs, Closed) or (leave and isinstance(obs, F.Goaway)):
                return
            if pong and isinstance(obs, F.Ping):
                await conn.send(F.Pong(obs.opaque))
    finally:
        await trio.aclose_forcefully(conn.stream)


@pytest.mark.parametrize(
    ("scenario", "pong", "credit", "requirement", "reconnect"),
    [
        ("heartbeat", False, 64, "PW-HB-2", False),  # never answers PING
        ("credit", True, 4, "PW-FLOW-7", False),  # never grants more credit (a SHOULD: warn)
        ("resume-gap", True, 64, "PW-RESUME-1", False),  # never reconnects to resume
        ("unknown-fatal", True, 64, "PW-FRAME-5", False),  # ignores a fatal unknown frame type
        ("sequence-hole", True, 64, "PW-ORDER-7", False),  # takes 1, 2, 4: nothing lost?
        ("epoch-reset-bad-start", True, 64, "PW-ORDER-13", False),  # new epoch at seq 4
        ("reserved-bits", True, 64, "PW-FRAME-3", False),  # ignores an undefined flag bit
        ("malformed", True, 64, "PW-FRAME-4", False),  # skips a malformed frame
        ("too-large-frame", True, 64, "PW-FRAME-2", False),  # reads past its own limit
        ("over-credit", True, 4, "PW-FLOW-5", False),  # takes a push beyond its credit
        ("goaway", True, 64, "PW-GOAWAY-7", True),  # reconnects before the GOAWAY's delay
        ("bad-version", True, 64, "PW-PREFACE-7", True),  # reconnects after version 0
        ("unknown-code", True, 64, "PW-CLIENT-2", False),  # gives up on an unknown code
        ("admit-and-cut", True, 64, "PW-CLIENT-5", False),  # never comes back after EOF
    ],
)
async def test_testserver_catches_a_broken_client(
    scenario: str, pong: bool, credit: int, requirement: str, reconnect: bool
) -> None:
    async with open_testserver([scenario], **(FAST | BROKEN)) as ts:
        run = ts.runs[scenario]
        with trio.move_on_after(12):
            async with trio.open_nursery() as nursery:
                topic = f"conformance/{scenario}"
                nursery.start_soon(
                    partial(
                        broken_client,
                        ts.port,
                        topic,
                        credit=credit,
                        pong=pong,
                        reconnect=reconnect,
                    )
                )
                with trio.move_on_after(10):
                    await run.done.wait()
                nursery.cancel_scope.cancel()
    failed = [c for c in run.checks if not c.passed]
    assert any(requirement in c.requirements for c in failed), run.checks
    assert run.status in (Status.FAIL, Status.WARN)
    if requirement != "PW-FLOW-7":
        assert run.status is Status.FAIL


async def _acking_client(port: int, topic: str, *, ack_to: int, resume_after: int) -> None:
    """At-least-once, by the wire: on the first connection take the pushes and acknowledge
    up to ``ack_to`` only, as a client that coalesces ACKs may; on the next, resume after
    ``resume_after`` whatever was acknowledged, then acknowledge everything and answer PINGs."""
    epoch = 0
    for attempt in range(2):
        conn = await WireConnection.open("127.0.0.1", port, timeout=10, auto_pong=False)
        conn.decoder = FrameDecoder(1 << 20)
        hello = F.Hello(1 << 20, 0, "acking-client", b"")
        since = (SinceKind.AFTER, epoch, resume_after) if attempt else (SinceKind.NEW, 0, 0)
        sub = F.Subscribe(
            sub_id=1,
            topic=topic,
            since_kind=since[0],
            since_epoch=since[1],
            since_seq=since[2],
            initial_credit=64,
            at_least_once=True,
        )
        try:
            await conn.send_raw(
                encode_preface(1, 1) + codec.encode_frame(hello) + codec.encode_frame(sub)
            )
            await conn.read_preface()
            while True:
                obs = await conn.next_frame(math.inf)
                if isinstance(obs, Closed):
                    break
                if isinstance(obs, F.Subscribed):
                    epoch = obs.epoch
                elif isinstance(obs, F.Ping):
                    await conn.send(F.Pong(obs.opaque))
                elif isinstance(obs, F.Message) and (attempt or obs.seq == ack_to):
                    await conn.send(F.Ack(1, obs.seq))
        finally:
            await trio.aclose_forcefully(conn.stream)


@pytest.mark.spec("PW-RESUME-1")
@pytest.mark.parametrize(
    ("resume_after", "right"),
    [
        (4, True),  # the last ACK
        (7, True),  # processed beyond the last ACK: fewer repeats, just as safe
        (10, True),  # everything delivered was processed
        (3, False),  # before its own last ACK
        (11, False),  # after a message it never received
    ],
)
async def test_redelivery_accepts_any_resume_from_the_last_ack_to_the_last_delivered(
    resume_after: int, right: bool
) -> None:
    """At-least-once the recorded position is a processed message not below the last ACK
    (SPEC.md §8.4). Connection 1 delivers 1..10 and sees ACK(4); what the application
    processed beyond that is not on the wire, so any resume from 4 to 10 is right."""
    async with open_testserver(["redelivery"], **(FAST | BROKEN)) as ts:
        run = ts.runs["redelivery"]
        with trio.move_on_after(12):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    partial(
                        _acking_client,
                        ts.port,
                        "conformance/redelivery",
                        ack_to=4,
                        resume_after=resume_after,
                    )
                )
                with trio.move_on_after(10):
                    await run.done.wait()
                nursery.cancel_scope.cancel()
    resumes = [c for c in run.checks if "resumes with SUBSCRIBE" in c.text]
    assert len(resumes) == 1, run.checks
    assert "seq 4..10" in resumes[0].text
    assert resumes[0].passed is right, resumes[0]
    assert run.status is (Status.PASS if right else Status.FAIL), run.checks


@pytest.mark.parametrize(
    ("scenario", "policy"),
    [("resume-disconnect", SlowConsumerPolicy.DISCONNECT), ("gap", SlowConsumerPolicy.DROP)],
)
async def test_welcome_announces_the_slow_consumer_policy_of_the_scenario_that_runs(
    scenario: str, policy: SlowConsumerPolicy
) -> None:
    """resume-disconnect ends connections with ERROR(SLOW_CONSUMER), which only a
    DISCONNECT server sends; gap sends GAP(SLOW_CONSUMER), a DROP server's answer."""
    async with open_testserver(["gap", "resume-disconnect"], **FAST) as ts:
        ts.current = ts.runs[scenario]
        conn = await WireConnection.open("127.0.0.1", ts.port, timeout=3)
        try:
            hello = F.Hello(1 << 20, 0, "welcome-check", b"")
            await conn.send_raw(encode_preface(1, 1) + codec.encode_frame(hello))
            await conn.read_preface()
            welcome = await conn.next_frame()
        finally:
            await trio.aclose_forcefully(conn.stream)
    assert isinstance(welcome, F.Welcome), welcome
    assert welcome.slow_consumer_policy == policy


async def test_command_line_with_a_client_command(tmp_path: Path) -> None:
    """`pushwire testserver --client-command` starts the client per scenario, stops it at
    the end, and reports; here the client is the project's own `pushwire sub`."""
    exe = str(Path(sys.executable).parent / "pushwire")
    report = tmp_path / "ts.json"
    junit = tmp_path / "ts.xml"
    args = [
        "testserver",
        "--port",
        "0",
        "--scenario",
        "gap",
        "--scenario",
        "split-frames",
        "--heartbeat-ms",
        "300",
        "--timeout",
        "3",
        "--scenario-timeout",
        "20",
        "--json",
        str(report),
        "--junit",
        str(junit),
        "--client-command",
        f"{exe} sub {{topic}} --server {{address}} --format json",
    ]
    if not Path(exe).exists():
        pytest.skip("the pushwire command is not installed")
    code = await trio.to_thread.run_sync(cli.main, args)
    doc = json.loads(report.read_text())
    verdicts = {r["id"]: r["status"] for r in doc["results"]}
    assert verdicts == {"gap": "pass", "split-frames": "pass"}, doc
    assert doc["tool"] == "pushwire testserver" and doc["passed"] is True
    assert all(r["checks"] and r["topic"] == f"conformance/{r['id']}" for r in doc["results"])
    suites = ET.fromstring(junit.read_text())
    assert suites.get("tests") == "2" and suites.get("failures") == "0"
    assert code == 0
    # what the application saw came through the output contract, and stayed out of the report
    gap = next(r for r in doc["results"] if r["id"] == "gap")
    seen = [c for c in gap["checks"] if c["check"].startswith("the application sees")]
    assert seen and seen[0]["passed"], gap["checks"]
    assert "msg-1" not in report.read_text()


async def test_a_client_command_that_cannot_start_fails_the_scenario_at_once(
    tmp_path: Path,
) -> None:
    report = tmp_path / "ts.json"
    args = [
        "testserver",
        "--port",
        "0",
        "--scenario",
        "gap",
        "--scenario",
        "credit",
        "--json",
        str(report),
        "--client-command",
        "pushwire-no-such-client-program {topic}; echo 'it went wrong' >&2; exit 3",
    ]
    started = trio.current_time()
    code = await trio.to_thread.run_sync(cli.main, args)
    assert trio.current_time() - started < 15  # not the 60 s scenario timeout, twice
    doc = json.loads(report.read_text())
    assert code == 1
    for result in doc["results"]:
        assert result["status"] == "fail", result
        detail = " ".join(c["detail"] for c in result["checks"] if not c["passed"])
        assert "exited with status 3" in detail and "it went wrong" in detail, detail


HOSTILE_CLIENT = f"{sys.executable} {Path(__file__).parent / 'hostile_client.py'}"


@pytest.mark.parametrize(
    ("mistake", "observed"),
    [
        ("none", None),
        ("drop-read", "printed seqs []"),
        ("wrong-code", "ERROR(MALFORMED_FRAME)"),
        ("silent", "no ERROR"),
    ],
)
async def test_hostile_mode_catches_a_client_that_mishandles_a_bad_frame(
    mistake: str, observed: str | None
) -> None:
    from pushwire.server.testserver import hostile

    command = f"{HOSTILE_CLIENT} {mistake} {{address}} {{topic}}"
    result = await trio.to_thread.run_sync(
        partial(hostile.fuzz_client, command, examples=8, seed=5, timeout=3.0)
    )
    assert not result.setup_problems, result.setup_problems
    if observed is None:
        assert result.examples == 8 and not result.findings, [f.render() for f in result.findings]
    else:
        assert result.findings, f"{mistake} survived {result.examples} hostile examples"
        assert result.findings[0].observed.startswith(observed), result.findings[0].render()


async def test_hostile_mode_against_the_reference_client() -> None:
    exe = Path(sys.executable).parent / "pushwire"
    args = [
        "testserver",
        "--hostile",
        "6",
        "--seed",
        "2",
        "--timeout",
        "3",
        "--client-command",
        f"{exe} sub {{topic}} --server {{address}} --format json",
    ]
    assert await trio.to_thread.run_sync(cli.main, args) == 0


async def misbehaving_client(port: int, topic: str, mistake: str) -> None:
    """A raw client with one mistake about client behaviour over time (SPEC.md §8.9):

    * ``linger``: after a GOAWAY it waits the delay and opens the next connection, but keeps
      the old one open;
    * ``resubscribe``: it repeats a refused SUBSCRIBE at once, on the same connection;
    * ``frame-timeout``: only whole frames count as received, so it declares
      HEARTBEAT_TIMEOUT after 3 intervals without one;
    * ``backoff``: no mistake; it repeats a refused SUBSCRIBE after a growing delay.
    """
    async with trio.open_nursery() as nursery:
        await _misbehaving_connection(port, topic, mistake, nursery)


async def _misbehaving_connection(
    port: int, topic: str, mistake: str, nursery: trio.Nursery
) -> None:
    conn = await WireConnection.open("127.0.0.1", port, timeout=10, auto_pong=False)
    conn.decoder = FrameDecoder(1 << 20)
    hello = F.Hello(1 << 20, 0, f"{mistake}-client", b"")
    sub = F.Subscribe(sub_id=1, topic=topic, initial_credit=64)
    refused = 0
    try:
        await conn.send_raw(encode_preface(1, 1) + codec.encode_frame(hello))
        await conn.read_preface()
        welcome = await conn.next_frame(5)
        assert isinstance(welcome, F.Welcome), welcome
        silence = 3 * welcome.heartbeat_ms / 1000 if mistake == "frame-timeout" else math.inf
        await conn.send(sub)
        while True:
            obs = await conn.next_frame(silence)
            if obs is TIMEOUT:
                await conn.send(F.Error(ErrorCode.HEARTBEAT_TIMEOUT, 0, 0, "no whole frame"))
                return
            if isinstance(obs, Closed):
                return
            if isinstance(obs, F.Ping):
                await conn.send(F.Pong(obs.opaque))
            elif isinstance(obs, F.Goaway) and mistake == "linger":
                await trio.sleep(obs.reconnect_after_ms / 1000)
                nursery.start_soon(_misbehaving_connection, port, topic, mistake, nursery)
            elif isinstance(obs, F.Error) and obs.request_type == FrameType.SUBSCRIBE:
                if mistake == "backoff":
                    await trio.sleep(0.05 * 2**refused * random.uniform(0.5, 1))
                refused += 1
                await conn.send(sub)
    finally:
        await trio.aclose_forcefully(conn.stream)


async def stubborn_resumer(port: int, topic: str) -> None:
    """A raw client that resumes every reconnect from the last message it received and
    repeats a refused SUBSCRIBE unchanged at once, whatever the code."""
    position: tuple[int, int] | None = None
    while True:
        conn = await WireConnection.open("127.0.0.1", port, timeout=10, auto_pong=True)
        conn.decoder = FrameDecoder(1 << 20)
        sub = F.Subscribe(sub_id=1, topic=topic, initial_credit=64)
        if position is not None:
            sub = replace(sub, since_kind=SinceKind.AFTER, since_epoch=position[0])
            sub = replace(sub, since_seq=position[1])
        hello = F.Hello(1 << 20, 0, "stubborn-client", b"")
        try:
            await conn.send_raw(encode_preface(1, 1) + codec.encode_frame(hello))
            await conn.read_preface()
            await conn.send(sub)
            while True:
                obs = await conn.next_frame(math.inf)
                if isinstance(obs, Closed):
                    break
                if isinstance(obs, F.Message):
                    position = (obs.epoch, obs.seq)
                elif isinstance(obs, F.Error) and obs.request_type == FrameType.SUBSCRIBE:
                    await conn.send(sub)
        finally:
            await trio.aclose_forcefully(conn.stream)


@pytest.mark.spec("PW-CLIENT-9")
async def test_testserver_catches_a_client_that_resumes_again_from_a_refused_position() -> None:
    async with open_testserver(["invalid-position"], **(FAST | BROKEN)) as ts:
        run = ts.runs["invalid-position"]
        with trio.move_on_after(12):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stubborn_resumer, ts.port, run.scenario.topic)
                with trio.move_on_after(10):
                    await run.done.wait()
                nursery.cancel_scope.cancel()
    failed = [c for c in run.checks if not c.passed and c.level == "MUST"]
    assert any("PW-CLIENT-9" in c.requirements for c in failed), run.checks
    assert run.status is Status.FAIL


@pytest.mark.spec("PW-CLIENT-2", "PW-CLIENT-3", "PW-CLIENT-4", "PW-CLIENT-8", "PW-CLIENT-16")
@pytest.mark.parametrize(
    ("scenario", "mistake", "requirement"),
    [
        ("goaway-terminal", "reconnect", "PW-CLIENT-3"),  # comes back after GOAWAY(NO_ERROR)
        ("goaway-unknown-code", "reconnect", "PW-CLIENT-3"),  # ignores the GOAWAY's delay
        ("goaway-linger", "linger", "PW-CLIENT-4"),  # two connections at once
        ("rate-limited", "resubscribe", "PW-CLIENT-8"),  # repeats at once
        ("too-many-subscriptions", "resubscribe", "PW-CLIENT-8"),  # repeats on that connection
        ("trickle-frame", "frame-timeout", "PW-CLIENT-14"),  # counts whole frames only
        ("subscribed-twice", "ignore", "PW-CLIENT-16"),  # a second SUBSCRIBED goes unnoticed
        ("subscribed-unknown-id", "ignore", "PW-CLIENT-16"),  # so does an unknown sub_id
        ("subscribed-start-zero", "ignore", "PW-CLIENT-16"),  # and start_seq 0
    ],
)
async def test_testserver_catches_a_client_that_breaks_a_rule_of_client_behaviour(
    scenario: str, mistake: str, requirement: str
) -> None:
    async with open_testserver([scenario], **(FAST | BROKEN)) as ts:
        run = ts.runs[scenario]
        topic = f"conformance/{scenario}"
        with trio.move_on_after(12):
            async with trio.open_nursery() as nursery:
                if mistake in ("reconnect", "ignore"):
                    client = partial(
                        broken_client,
                        ts.port,
                        topic,
                        credit=64,
                        pong=True,
                        reconnect=mistake == "reconnect",
                    )
                else:
                    client = partial(misbehaving_client, ts.port, topic, mistake)
                nursery.start_soon(client)
                with trio.move_on_after(10):
                    await run.done.wait()
                nursery.cancel_scope.cancel()
    failed = [c for c in run.checks if not c.passed and c.level == "MUST"]
    assert any(requirement in c.requirements for c in failed), run.checks
    assert run.status is Status.FAIL


async def test_a_client_that_backs_off_passes_rate_limited() -> None:
    """The other side of rate-limited: repeats after growing delays are what it asks for."""
    async with open_testserver(["rate-limited"], **FAST) as ts:
        run = ts.runs["rate-limited"]
        with trio.move_on_after(12):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(misbehaving_client, ts.port, run.scenario.topic, "backoff")
                await run.done.wait()
                nursery.cancel_scope.cancel()
    assert run.status is Status.PASS, run.checks
    assert len(run.waits) == REFUSALS and run.delivered == 2, run.notes


PATTERN_CLIENT = f"{sys.executable} {Path(__file__).parent / 'pattern_client.py'}"
PATTERN_SCENARIOS = ["pattern-match", "pattern-hole", "pattern-resume", "pattern-status"]


async def run_pattern_client(
    tmp_path: Path, mistake: str, scenarios: list[str], *extra: str
) -> tuple[int, dict[str, dict[str, object]]]:
    """`pushwire testserver` with the raw pattern client as its client command; the exit
    status and each scenario's JSON result."""
    report = tmp_path / f"{mistake}.json"
    args = [
        "testserver",
        *("--port", "0", "--heartbeat-ms", "300", "--timeout", "2"),
        *("--scenario-timeout", "15", "--json", str(report)),
        *(a for name in scenarios for a in ("--scenario", name)),
        *("--client-command", f"{PATTERN_CLIENT} {mistake} {{address}} {{pattern}}"),
        *extra,
    ]
    code = await trio.to_thread.run_sync(cli.main, args)
    doc = json.loads(report.read_text())
    return code, {r["id"]: r for r in doc["results"]}


async def test_a_correct_raw_pattern_client_passes_the_pattern_scenarios(tmp_path: Path) -> None:
    """The raw client below is correct without a mistake, so the failures that follow are
    the mistakes' and not the client's."""
    code, results = await run_pattern_client(tmp_path, "none", PATTERN_SCENARIOS)
    assert {n: r["status"] for n, r in results.items()} == dict.fromkeys(PATTERN_SCENARIOS, "pass")
    assert code == 0


@pytest.mark.parametrize(
    ("mistake", "scenario", "requirement"),
    [
        ("no-pattern-flag", "pattern-match", "PW-TOPIC-8"),  # the pattern as a name
        ("one-counter", "pattern-match", "PW-ORDER-15"),  # one sequence for all topics
        ("no-check", "pattern-hole", "PW-ORDER-15"),  # takes us 4 after us 2
        ("no-positions", "pattern-resume", "PW-RESUME-6"),  # resubscribes from scratch
        ("silent-status", "pattern-status", "PW-RESUME-2"),  # gap not told to the app
        ("silent-status", "pattern-resume", "PW-RESUME-3"),  # epoch change not told
    ],
)
async def test_the_pattern_scenarios_catch_a_broken_client(
    tmp_path: Path, mistake: str, scenario: str, requirement: str
) -> None:
    code, results = await run_pattern_client(tmp_path, mistake, [scenario])
    result = results[scenario]
    failed = [c for c in result["checks"] if not c["passed"] and c["level"] == "MUST"]
    assert result["status"] == "fail", result
    assert any(requirement in c["requirements"] for c in failed), failed
    assert code == 1


async def test_pattern_scenarios_are_not_applicable_to_a_client_without_patterns(
    tmp_path: Path,
) -> None:
    """A command without {pattern}, or --no-patterns, declares a client that subscribes to
    names only: the pattern scenarios are n/a, not failures, and the command never runs."""
    report = tmp_path / "names.json"
    base = ["testserver", "--port", "0", "--json", str(report), "--scenario", "pattern-match"]
    never = "echo started >&2; exit 3"
    for extra in (["--client-command", f"{never} {{topic}}"], ["--no-patterns"]):
        code = await trio.to_thread.run_sync(cli.main, [*base, *extra])
        (result,) = json.loads(report.read_text())["results"]
        assert (code, result["status"], result["checks"]) == (0, "n/a", []), result
        assert "pattern" in result["detail"]
