"""``pushwire bench server`` with tiny numbers against a real ``pushwire serve`` subprocess: a
smoke test of the report and of delivery (every subscriber got every message, once, in
order), never of speed (speed and memory targets live in the benchmark itself)."""

from __future__ import annotations

import array
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from pushwire.client.bench import idle
from pushwire.client.bench import server as bench_server
from pushwire.client.commands import cli
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import encode_preface
from pushwire.protocol.layouts import FrameType

SMALL = [
    *("--subscribers", "1,2", "--messages", "200", "--payload", "100", "--probe", "20"),
    *("--batch", "50", "--concurrency", "4", "--duration-limit", "20"),
]


def _serve_children() -> list[int]:
    """Pids of ``pushwire serve`` processes that are children of this test process."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == os.getpid() and b"serve" in cmdline:
            children.append(int(stat.parent.name))
    return children


def test_every_subscriber_receives_every_message_in_order_and_every_figure_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "server.json"
    status = cli.main(["bench", "server", *SMALL, "--json", str(report)])
    out = capsys.readouterr().out
    assert status == 0, out
    for heading in ("fan-out:", "stalled subscribers:", "publish with PUBACK"):
        assert heading in out
    figures: dict[str, Any] = json.loads(report.read_text())
    assert figures["target"] == "server" and figures["complete"] is True
    assert figures["options"]["scenarios"] == ["fanout", "stall", "acks"]

    fanout = figures["fanout"]
    assert [(r["subscribers"], r["payload_bytes"]) for r in fanout] == [(1, 100), (2, 100)]
    for r in fanout:
        # ``received`` counts messages taken in order; a subscriber stops at the first one
        # out of order, so 220 means messages 0..219 exactly once and in order.
        assert r["expected_per_subscriber"] == 220
        assert r["received"] == [220] * r["subscribers"], r["errors"]
        assert r["acked"] == 220 and r["errors"] == []
        assert r["latency_us"]["samples"] == 200 * r["subscribers"]
        assert r["probe_latency_us"]["samples"] == 20 * r["subscribers"]
        assert r["deliveries_per_s"] > 0 and r["mb_per_s"] > 0
        assert 0 < r["latency_us"]["p50"] <= r["latency_us"]["p99"] <= r["latency_us"]["max"]

    stall = figures["stall"]
    alone, stalled = stall["runs"]
    assert (alone["run"], stalled["run"]) == ("alone", "with_stalled")
    for r in (alone, stalled):
        assert r["received"] == r["acked"] == 200 and r["errors"] == []
    assert stalled["zero_credit_received"] == 0
    assert set(stalled["stuck"]) == {"server_send_queue_bytes", "subscriber_receive_queue_bytes"}
    assert {"rss_growth_due_to_stalled_kib", "normal_rate_ratio"} <= set(stall)

    acks = figures["acks"]
    assert [(r["mode"], r["records_per_call"], r["in_flight"], r["calls"]) for r in acks] == [
        ("single", 1, 1, 200),
        ("batch", 50, 1, 4),
        ("concurrent", 1, 4, 200),
        ("window", 1, 1, 1),
    ]
    for r in acks:
        assert r["messages"] == 200 and r["complete"] and r["errors"] == []

    if Path("/proc/self/stat").exists():
        assert _serve_children() == []  # every server was stopped and reaped


def test_a_run_cut_short_by_the_duration_limit_is_reported_incomplete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "server.json"
    args = [*("--scenario", "fanout", "--subscribers", "1", "--payload", "100"), "--json"]
    status = cli.main(
        ["bench", "server", *args, str(report), "--messages", "1000000", "--duration-limit", "0.2"]
    )
    assert status == 1
    assert "stopped by --duration-limit" in capsys.readouterr().err
    (run,) = json.loads(report.read_text())["fanout"]
    assert run["complete"] is False and run["received"][0] < 1_000_000
    if Path("/proc/self/stat").exists():
        assert _serve_children() == []


def test_a_subscriber_stops_at_the_first_message_out_of_order() -> None:
    sub = bench_server.Subscriber(conn=None, next_seq=7)  # type: ignore[arg-type]
    sub.phase_end = 10
    stamp = bench_server.STAMP.pack
    assert sub._take(7, stamp(0, 0) + b"pad", 5) and sub._take(8, stamp(1, 0), 6)
    assert not sub._take(9, stamp(3, 0), 7)  # message 2 is missing
    assert sub.received == 2 and sub.error == "expected message 2 (seq 9), got message 3 (seq 9)"
    assert sub.loaded == array.array("q", [5, 6])


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--subscribers", "0"], "--subscribers"),
        (["--payload", "8"], "--payload"),
        (["--messages", "0"], "--messages"),
        (["--duration-limit", "0"], "--duration-limit"),
    ],
)
def test_bench_server_refuses_nonsense_arguments(
    args: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["bench", "server", *args]) == 2
    assert complaint in capsys.readouterr().err


def test_a_report_that_cannot_be_written_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def measured(*args: Any) -> dict[str, Any]:  # stands in for the whole run
        return {}

    monkeypatch.setattr(bench_server, "_main", measured)
    report = tmp_path / "missing-dir" / "server.json"
    assert cli.main(["bench", "server", "--scenario", "fanout", "--json", str(report)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"pushwire bench server: error: cannot write {report}: No such file or directory"
    ]


def test_idle_subscribers_in_worker_processes_get_every_message_and_answer_heartbeats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """40 subscribers in two epoll worker processes, a 1 s heartbeat: they outlive three
    heartbeat timeouts (the server PINGs while it has nothing to send, and they PING it
    while messages flow), and every one gets the three messages once and in order."""
    import multiprocessing

    report = tmp_path / "idle.json"
    status = cli.main(
        [
            *("bench", "server", "--scenario", "idle", "--idle-connections", "40"),
            *("--idle-workers", "2", "--idle-heartbeat-ms", "1000", "--idle-seconds", "3.5"),
            *("--idle-publishes", "3", "--duration-limit", "60", "--json", str(report)),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    (run,) = json.loads(report.read_text())["idle"]
    assert run["complete"] is True and run["errors"] == []
    assert (run["connected"], run["workers"], run["dropped"]) == (40, 2, 0)
    assert run["latency_us"]["samples"] == 40 * 3
    assert 0 < run["latency_us"]["p50"] <= run["latency_us"]["p99"]
    assert run["rss_kib_per_connection"] is not None
    assert multiprocessing.active_children() == []
    if Path("/proc/self/stat").exists():
        assert _serve_children() == []


def test_churn_opens_every_connection_and_reads_the_servers_own_close_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """300 connections of random behaviour: each is counted by the server (its $sys/stats),
    garbage among them ends some with protocol codes, none as INTERNAL_ERROR, and RSS is
    read after each fifth."""
    report = tmp_path / "churn.json"
    status = cli.main(
        [
            *("bench", "server", "--scenario", "churn", "--churn-connections", "300"),
            *("--churn-concurrency", "30", "--churn-seed", "7", "--duration-limit", "60"),
            *("--json", str(report)),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    (run,) = json.loads(report.read_text())["churn"]
    assert run["complete"] is True and run["errors"] == []
    assert run["connections"] == 300
    closed = run["closed_by_code"]
    assert sum(closed.values()) == 300, closed
    assert "INTERNAL_ERROR" not in closed and closed.get("NO_ERROR", 0) > 0
    assert set(closed) - {"NO_ERROR"}, "garbage and cut frames end some with a protocol code"
    if Path("/proc/self/status").exists():
        assert len(run["rss_mib_by_fifth"]) == 5
    assert "| ok |" in out


def test_churn_options_out_of_range_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "server", "--scenario", "churn", "--churn-concurrency", "0"]
    assert cli.main(args) == 2
    assert "--churn-concurrency must be 1 to 500" in capsys.readouterr().err


def _server_side(loop: idle._Loop) -> tuple[socket.socket, idle._Peer]:
    """A worker's connection whose far end the test plays as the server, past SUBSCRIBED
    (start_seq 5)."""
    ours, theirs = socket.socketpair()
    ready = loop.ready
    peer = loop.adopt(ours)
    theirs.settimeout(5)
    assert theirs.recv(1024).startswith(encode_preface(1, 1))  # preface and HELLO
    welcome = F.Welcome(1, 1000, 1 << 20, 16, 100, 0, "test")
    theirs.sendall(encode_preface(1, 1) + codec.encode_frame(welcome))
    loop.readable(peer)
    assert theirs.recv(1024) == codec.encode_frame(F.Subscribe(1, "t", initial_credit=7))
    theirs.sendall(codec.encode_frame(F.Subscribed(1, 0, 9, 5, 4)))
    loop.readable(peer)
    assert (loop.ready, loop.setting_up, loop.interval) == (ready + 1, 0, 1.0)
    return theirs, peer


def _message(seq: int, index: int) -> bytes:
    payload = bench_server.STAMP.pack(index, time.monotonic_ns()) + b"pad"
    return codec.encode_frame(F.Message(9, seq, "t", payload))


def test_an_idle_worker_answers_pings_checks_order_and_counts_a_closed_connection() -> None:
    loop = idle._Loop("t", 1000, 1 << 20, 7, expected=3)
    ends: list[socket.socket] = []
    try:
        server, peer = _server_side(loop)
        ends.append(server)
        server.sendall(codec.encode_frame(F.Ping(42)) + _message(5, 0) + _message(6, 1))
        loop.readable(peer)
        assert server.recv(1024) == codec.encode_frame(F.Pong(42))
        assert (peer.received, peer.next_seq, len(loop.latencies)) == (2, 7, 2)
        server.sendall(_message(8, 3))  # message 2 (seq 7) is missing
        loop.readable(peer)
        assert peer.error == "expected message 2 (seq 7), got message 3 (seq 8)"
        assert (peer.received, loop.done, loop.dropped) == (2, 1, 0)

        server2, peer2 = _server_side(loop)
        ends.append(server2)
        peer2.last_sent -= 2.0
        loop.ping_idle(time.monotonic())  # nothing sent for an interval: PING
        assert server2.recv(1024)[4] == FrameType.PING
        server2.close()
        loop.readable(peer2)
        assert loop.dropped == 1 and peer2.error.startswith("the server closed")
        assert loop.figures()["received"] == [2, 0]
    finally:
        loop.close()
        for end in ends:
            end.close()
