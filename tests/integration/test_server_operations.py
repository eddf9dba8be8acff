"""What an operator sees and does: the Prometheus endpoint, the $sys/stats topic and
``pushwire stats``, the operator's topic reset through $sys/reset, and the reserved topics
that clients may not write."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import trio
from integration.cli_support import PUSHWIRE, serve
from integration.server_peer import RawPeer
from prometheus_client.parser import text_string_to_metric_families

import pushwire.client as pw
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.server import Permissions, ServerConfig, open_server

TIMEOUT = 20


async def http_get(host: str, port: int, path: str) -> tuple[str, str]:
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    return head.split("\r\n")[0], body


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_the_metrics_endpoint_counts_traffic_connections_and_refusals() -> None:
    auth = {"t": Permissions(subscribe=("a/#",), publish=("a/#",))}
    with trio.fail_after(TIMEOUT):
        async with open_server(port=0, auth=auth, metrics_address="127.0.0.1:0") as server:
            assert server.metrics_bound is not None
            host, port = server.metrics_bound
            sub = await RawPeer.connect(server.port)
            await sub.handshake(auth_token=b"t")
            await sub.subscribe(1, "a/x")
            pub = await RawPeer.connect(server.port)
            await pub.handshake(auth_token=b"t")
            for i in range(5):
                await pub.send(F.Publish(0, "a/x", b"m%d" % i, None))
            await pub.send(F.Publish(9, "b/forbidden", b"no", None))
            frame, _ = await pub.recv_until(F.Error)
            assert frame.code == ErrorCode.FORBIDDEN  # type: ignore[attr-defined]
            assert len(await sub.messages(5)) == 5
            bad = await RawPeer.connect(server.port)
            with pytest.raises(AssertionError):
                await bad.handshake(auth_token=b"wrong")
            await bad.aclose()
            while server.counters.closed["UNAUTHENTICATED"] < 1:
                await trio.sleep(0.01)
            status, body = await http_get(host, port, "/metrics")
            assert status == "HTTP/1.1 200 OK"
            got = samples(body)
            assert got[("pushwire_connections", (("state", "open"),))] == 2
            assert got[("pushwire_subscriptions", ())] == 1
            assert got[("pushwire_messages_in_total", ())] == 5
            assert got[("pushwire_messages_out_total", ())] == 5
            assert got[("pushwire_bytes_out_total", ())] > 5 * 20
            assert got[("pushwire_topics", ())] >= 1
            assert got[("pushwire_handshake_failures_total", ())] == 1
            assert (
                got[("pushwire_errors_total", (("code", "FORBIDDEN"), ("scope", "request")))] == 1
            )
            key = ("pushwire_connections_closed_total", (("code", "UNAUTHENTICATED"),))
            assert got[key] == 1
            assert (await http_get(host, port, "/other"))[0] == "HTTP/1.1 404 Not Found"
            await sub.aclose()
            await pub.aclose()


async def test_the_server_publishes_its_figures_on_sys_stats() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_server(port=0, stats_interval=1) as server:
            await server.publish("news", b"hello")
            async with (
                pw.connect(f"127.0.0.1:{server.port}", reconnect=False) as conn,
                conn.subscribe("$sys/stats", since=("last", 1), credit=2) as sub,
            ):
                msg = await sub.__anext__()
            stats = json.loads(msg.payload)
            assert set(stats) == {"server", "connections", "topics", "memory", "totals"}
            assert stats["connections"]["open"] >= 1
            assert stats["topics"]["count"] >= 1


async def test_pushwire_stats_prints_a_table_and_json() -> None:
    with trio.fail_after(TIMEOUT * 2):
        async with serve("--stats-interval", "1") as address:
            table = await trio.run_process(
                [*PUSHWIRE, "stats", "--server", address],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert table.returncode == 0, table.stderr
            lines = table.stdout.decode().splitlines()
            assert lines[0].startswith("server ")
            assert any(line.startswith("connections ") for line in lines)
            doc = await trio.run_process(
                [*PUSHWIRE, "stats", "--server", address, "--json"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert doc.returncode == 0, doc.stderr
            assert json.loads(doc.stdout)["server"]["address"] == address


@pytest.mark.spec("PW-TOPIC-6")
async def test_clients_cannot_write_reserved_topics_and_wildcards_do_not_reach_them() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_server(port=0) as server:  # no auth: everyone may do everything ...
            peer = await RawPeer.connect(server.port)
            await peer.handshake()
            for i, topic in enumerate(("$sys/stats", "$sys/reset/news", "$other"), 1):
                await peer.send(F.Publish(i, topic, b"x", None))
                frame, _ = await peer.recv_until(F.Error)
                assert frame.code == ErrorCode.FORBIDDEN, topic  # type: ignore[attr-defined]
            await peer.aclose()
    assert not Permissions(subscribe=("#",)).allows("subscribe", "$sys/stats")
    assert Permissions(subscribe=("$sys/#",)).allows("subscribe", "$sys/stats")


async def test_an_authorised_operator_resets_a_topic_through_sys_reset() -> None:
    auth = {
        "op": Permissions(subscribe=("#",), publish=("$sys/reset/#",)),
        "app": Permissions(subscribe=("orders/#",), publish=("orders/#",)),
    }
    with trio.fail_after(TIMEOUT):
        async with open_server(ServerConfig(port=0, auth=auth)) as server:
            address = f"127.0.0.1:{server.port}"
            async with (
                pw.connect(address, auth_token=b"app", reconnect=False) as app,
                app.subscribe("orders/eu", since="oldest", credit=16) as sub,
            ):
                assert await app.publish("orders/eu", b"before") == 1
                first = await sub.__anext__()
                async with pw.connect(address, auth_token=b"op", reconnect=False) as op:
                    await op.publish("$sys/reset/orders/eu", b"RH-12")
                assert await app.publish("orders/eu", b"after") == 1
                with pytest.raises(pw.EpochChanged) as change:
                    await sub.__anext__()
                assert change.value.old_epoch == first.epoch
                msg = await sub.__anext__()
                assert (msg.seq, msg.payload) == (1, b"after") and msg.epoch != first.epoch


async def test_conformance_reset_cases_run_against_the_reference_server_with_a_reset_command(
    tmp_path: Path,
) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(
        json.dumps(
            {
                "op": {"subscribe": ["#"], "publish": ["$sys/reset/#"]},
                "kit": {"subscribe": ["conformance/#"], "publish": ["conformance/#"]},
            }
        )
    )
    with trio.fail_after(TIMEOUT * 3):
        async with serve("--auth", str(auth)) as address:
            command = " ".join(shlex.quote(part) for part in PUSHWIRE)
            reset = f"{command} pub '$sys/reset/{{topic}}' reset --server {address} --token op"
            result = await trio.run_process(
                [
                    *PUSHWIRE,
                    "conformance",
                    address,
                    "--case",
                    "RH-12",
                    "--case",
                    "PT-10",
                    "--token",
                    "kit",
                    "--reset-command",
                    reset,
                    "--json",
                    str(tmp_path / "report.json"),
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            report = json.loads((tmp_path / "report.json").read_text())
            statuses = {r["id"]: r["status"] for r in report["results"]}
            assert statuses == {"RH-12": "pass", "PT-10": "pass"}, (result.stdout, result.stderr)
            assert result.returncode == 0
