"""Reports of the conformance kit: table, JSON, JUnit XML, coverage, and the command line."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import trio
from faults import server_options

from pushwire.client.commands import cli
from pushwire.client.conformance import cases as _registered  # noqa: F401  (registers the cases)
from pushwire.client.conformance import coverage
from pushwire.client.conformance.registry import Case
from pushwire.client.conformance.runner import Target, run_cases, select_cases
from pushwire.protocol.spec.requirements import BY_ID
from pushwire.protocol.testing import report
from pushwire.protocol.testing.model import Result, Status
from pushwire.server import ServerConfig, open_server


def test_every_observable_server_must_is_covered_or_explained() -> None:
    cov = coverage.coverage()
    uncovered = {r.id for r, _ in cov.uncovered}
    # the explanations are exact: no stale entry, no unexplained gap
    assert uncovered == set(coverage.UNCOVERED_REASONS)
    for rid in coverage.UNCOVERED_REASONS:
        req = BY_ID[rid]
        assert req.is_must and req.observable and req.applies_to in ("server", "both")
    # a ratchet: ERR-11, FLOW-8, FRAME-17, SLOW-6, SLOW-7, SUB-21, HB-8, five that need
    # the operator's configuration (expiring tokens, idle closing, throttling limits, the
    # per-frame bound, the memory budget), and the four of several nodes sharing a store
    # (SPEC §15)
    # and four of pattern subscriptions (limits, permission shapes)
    assert len(cov.covered) >= cov.total_observable - 20
    # observable on the wire, and checked: SO-06 (header order), SO-15 (subscriptions end
    # with the connection), PH-16 (nothing behind the preface read before the version)
    assert {"PW-TOPIC-4", "PW-SUB-19", "PW-PREFACE-9", "PW-SEC-4"} <= {r.id for r in cov.covered}


async def test_reports_show_expected_and_observed_for_failures(tmp_path: Path) -> None:
    config = ServerConfig(host="127.0.0.1", port=0)
    async with open_server(config, **server_options("ignore-reserved-bits")) as server:
        target = Target("127.0.0.1", server.port, timeout=2.0)
        results = await run_cases(target, select_cases(["ER-01", "ER-03", "SD-02"]))
    by_id = {r.id: r for r in results}
    assert by_id["ER-01"].status is Status.FAIL
    assert by_id["ER-03"].status is Status.PASS
    assert by_id["SD-02"].status is Status.NOT_APPLICABLE

    table = report.render_table(results, tool=coverage.TOOL, noun="cases", target="127.0.0.1:1")
    assert "FAIL     ER-01" in table and "expected" in table and "observed" in table
    assert "--shutdown-command" in table
    assert table.rstrip().endswith("1 pass, 1 fail, 1 n/a")
    not_checked = coverage.render_unchecked(coverage.unchecked(results))
    assert "PW-GOAWAY-1   SD-02 n/a" in not_checked  # SD-02 needs --shutdown-command

    doc = json.loads(coverage.report_json(results, target="t"))
    assert doc["passed"] is False
    assert doc["results"][0]["id"] == "ER-01" and doc["results"][0]["observed"]
    assert doc["coverage"]["uncovered"][0]["why"]

    root = ET.fromstring(report.to_junit(results, tool=coverage.TOOL, target="t"))
    assert root.tag == "testsuites" and root.get("failures") == "1"
    cases = root.findall(".//testcase")
    assert len(cases) == 3
    assert cases[0].find("failure") is not None
    assert any(c.find("skipped") is not None for c in cases)


async def test_command_line_exit_codes_and_files(tmp_path: Path) -> None:
    """`pushwire conformance` returns 0 on a clean run, 1 with a failure, and writes the
    reports it was asked for (run in a thread: the command runs its own trio loop)."""
    out_json, out_xml = tmp_path / "r.json", tmp_path / "r.xml"
    async with open_server(ServerConfig(host="127.0.0.1", port=0)) as good:
        ok = await trio.to_thread.run_sync(
            cli.main,
            [
                "conformance",
                f"127.0.0.1:{good.port}",
                "--category",
                "extensibility",
                "--json",
                str(out_json),
                "--junit",
                str(out_xml),
            ],
        )
    assert ok == 0
    assert json.loads(out_json.read_text())["passed"] is True
    ET.fromstring(out_xml.read_text())
    bad_config = ServerConfig(host="127.0.0.1", port=0)
    async with open_server(bad_config, **server_options("accept-oversized")) as bad:
        failed = await trio.to_thread.run_sync(
            cli.main, ["conformance", f"127.0.0.1:{bad.port}", "--case", "FL-01"]
        )
    assert failed == 1
    assert cli.main(["conformance", "--list"]) == 0
    assert cli.main(["conformance", "--case", "NOPE-1", "127.0.0.1:1"]) == 2


def test_a_run_lists_the_covered_musts_it_did_not_check() -> None:
    """Static coverage says which MUSTs the kit can check; a run without the operator's
    options checks fewer. A MUST is unchecked when every case of the run citing it is n/a,
    skipped or an error; one pass or fail anywhere checks it."""

    async def nothing(ctx: object) -> None:
        pass

    def result(cid: str, reqs: tuple[str, ...], status: Status, detail: str = "") -> Result:
        return Result.about(
            Case(cid, cid, "shutdown", reqs, "MUST", nothing), status, detail=detail
        )

    needs = "needs --shutdown-command (an operator action)"
    results = [
        result("XX-01", ("PW-GOAWAY-1", "PW-HB-2"), Status.NOT_APPLICABLE, needs),
        result("XX-02", ("PW-HB-2",), Status.PASS),
        result("XX-03", ("PW-HB-3",), Status.FAIL),
        result("XX-04", ("PW-HS-11",), Status.SKIPPED, "SHOULD case: run with --strict"),
        result("XX-05", ("PW-RESUME-4", "PW-ACK-6"), Status.NOT_APPLICABLE, needs),
        result("XX-06", ("PW-HS-12",), Status.ERROR),
    ]
    got = coverage.unchecked(results)
    assert [(u.requirement.id, [r.id for r in u.results]) for u in got] == [
        ("PW-HS-11", ["XX-04"]),
        ("PW-HS-12", ["XX-06"]),
        ("PW-GOAWAY-1", ["XX-01"]),
    ]  # not PW-HB-2 (XX-02 passed), PW-RESUME-4 (not observable), PW-ACK-6 (a client MUST)
    text = coverage.render_unchecked(got)
    assert text.splitlines()[0].startswith("Not checked in this run: 3 covered server MUST")
    assert "  PW-GOAWAY-1   XX-01 n/a" in text and needs in text
    doc = json.loads(coverage.report_json(results))
    assert doc["coverage"]["unchecked_this_run"][2] == {
        "id": "PW-GOAWAY-1",
        "text": BY_ID["PW-GOAWAY-1"].text,
        "cases": [{"id": "XX-01", "status": "n/a", "detail": needs}],
    }
    assert coverage.render_unchecked(coverage.unchecked(results[1:3])) == ""
