"""The kit's shared result model and reports, as pure functions of results.

Both ``pushwire conformance`` (cases, one verdict each) and ``pushwire testserver``
(scenarios, each a list of checks) render through these; the tests use one result of each
shape.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import pytest

from pushwire.protocol.testing import report
from pushwire.protocol.testing.model import Check, Result, Status


@dataclass(frozen=True)
class Subject:
    id: str
    title: str
    category: str
    requirements: tuple[str, ...]
    level: str = "MUST"


def case_result(status: Status, **fields: object) -> Result:
    subject = Subject("FL-01", "A case", "framing-limits", ("PW-FRAME-2",))
    return Result.about(subject, status, **fields)  # type: ignore[arg-type]


def scenario_result(status: Status, checks: list[Check]) -> Result:
    return Result(
        id="too-large-frame",
        title="A scenario",
        category="client-scenarios",
        level="MUST",
        requirements=("PW-FRAME-2",),
        status=status,
        checks=checks,
        hint="application should see: message 1",
        properties={"topic": "conformance/too-large-frame", "connections": 1},
    )


SHOULD_FAILED = Check("grants credit", ("PW-FLOW-7",), "SHOULD", False, "no CREDIT in 5 s")
MUST_PASSED = Check("answers PING", ("PW-HB-2",), "MUST", True)


@pytest.mark.parametrize(
    ("status", "fails", "fails_strict"),
    [
        (Status.PASS, False, False),
        (Status.WARN, False, True),
        (Status.FAIL, True, True),
        (Status.INCOMPLETE, True, True),
        (Status.ERROR, True, True),
        (Status.NOT_APPLICABLE, False, False),
        (Status.SKIPPED, False, False),
    ],
)
def test_a_warning_fails_a_run_only_when_strict(
    status: Status, fails: bool, fails_strict: bool
) -> None:
    assert status.fails() is fails
    assert status.fails(strict=True) is fails_strict
    assert report.passed([case_result(status)]) is not fails
    assert report.passed([case_result(status)], strict=True) is not fails_strict


def test_result_about_copies_the_subject() -> None:
    r = case_result(Status.FAIL, expected="ERROR", observed="PONG")
    assert (r.id, r.title, r.category, r.level, r.requirements) == (
        "FL-01",
        "A case",
        "framing-limits",
        "MUST",
        ("PW-FRAME-2",),
    )
    assert (r.expected, r.observed) == ("ERROR", "PONG")


def test_the_table_shows_failed_checks_and_the_hint() -> None:
    results = [
        scenario_result(Status.WARN, [MUST_PASSED, SHOULD_FAILED]),
        case_result(Status.FAIL, expected="ERROR(FRAME_TOO_LARGE)", observed="PONG"),
    ]
    table = report.render_table(results, tool="t", noun="things", target="here")
    lines = table.splitlines()
    assert lines[0] == "t: here"
    assert "  warn     too-large-frame MUST   A scenario" in lines
    assert any("SHOULD    PW-FLOW-7: grants credit" in line for line in lines)
    assert any("observed  no CREDIT in 5 s" in line for line in lines)
    assert any("application should see: message 1" in line for line in lines)
    assert not any("answers PING" in line for line in lines)  # passed checks stay quiet
    assert any("requirements: PW-FRAME-2" in line for line in lines)  # the case's own
    assert lines[-1] == "FAIL: 2 things: 1 fail, 1 warn"
    strict = report.render_table(results[:1], tool="t", strict=True)
    assert "  WARN     too-large-frame" in strict
    assert strict.splitlines()[-1] == "FAIL: 1 results: 1 warn"


def test_json_has_one_shape_for_cases_and_scenarios() -> None:
    results = [
        case_result(Status.PASS),
        scenario_result(Status.INCOMPLETE, [SHOULD_FAILED]),
    ]
    doc = json.loads(report.to_json(results, tool="t", target="x", extra={"seconds": 1.5}))
    assert doc["tool"] == "t" and doc["target"] == "x" and doc["seconds"] == 1.5
    assert doc["passed"] is False
    assert doc["summary"] == {s.value: int(s in (Status.PASS, Status.INCOMPLETE)) for s in Status}
    case, scenario = doc["results"]
    assert set(case) <= set(scenario)
    assert set(scenario) - set(case) == {"topic", "connections"}
    assert scenario["status"] == "incomplete"
    assert scenario["checks"] == [
        {
            "check": "grants credit",
            "requirements": ["PW-FLOW-7"],
            "level": "SHOULD",
            "passed": False,
            "detail": "no CREDIT in 5 s",
        }
    ]


def test_junit_counts_incomplete_as_failure_and_warn_only_when_strict() -> None:
    results = [
        scenario_result(Status.WARN, [SHOULD_FAILED]),
        scenario_result(Status.INCOMPLETE, []),
        case_result(Status.NOT_APPLICABLE, detail="needs --token"),
    ]
    root = ET.fromstring(report.to_junit(results, tool="pushwire testserver"))
    assert root.get("name") == "pushwire testserver"
    assert [s.get("name") for s in root.findall("testsuite")] == [
        "client-scenarios",
        "framing-limits",
    ]  # in order of appearance
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "0")
    warn, incomplete, na = root.findall(".//testcase")
    assert warn.get("classname") == "pushwire.testserver.client-scenarios"
    assert warn.find("failure") is None
    assert "grants credit" in (warn.findtext("system-out") or "")
    assert incomplete.find("failure") is not None
    assert na.find("skipped") is not None
    strict = ET.fromstring(report.to_junit(results, tool="t", strict=True))
    assert strict.get("failures") == "2"
