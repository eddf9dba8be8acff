"""Conformance reports: a readable table, JSON, and JUnit XML; plus requirement coverage.

Coverage is computed from the case table and ``pushwire.protocol.spec.requirements``: every MUST
(or MUST NOT) that applies to a server (``applies_to`` server or both) and that a peer can
observe on the wire must be cited by at least one case. The ones no case cites are listed
with the reason, from :data:`UNCOVERED_REASONS` — so a gap in the kit is a visible,
explained decision rather than an accident.

That is the kit's coverage, not a run's: a MUST whose only cases were n/a in a run (the
GOAWAY MUSTs without --shutdown-command) was not checked by that run. :func:`unchecked`
lists those per run, so a clean report does not claim more than it checked.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from pushwire.protocol.spec.requirements import REQUIREMENTS, Requirement
from pushwire.protocol.testing.model import CATEGORIES, REGISTRY, Case, Result, Status

#: Observable server MUSTs that no case checks, and why. A test keeps this list exact.
UNCOVERED_REASONS: dict[str, str] = {
    "PW-PUB-2": "DUPLICATE_ID needs a request_id reused while the first request is still "
    "outstanding; a server that answers publishes in order never has two outstanding, so "
    "the wire cannot force the situation",
    "PW-ERR-11": "no client behaviour is specified to make a server answer PROTOCOL_ERROR "
    "(every server-side check has a more specific code)",
    "PW-HS-18": "needs a token that expires while connected; token formats and expiry are "
    "the operator's (the reference server's signed tokens are tested in its own suite)",
    "PW-LIMIT-6": "closing idle connections is optional (MAY) and its time is the operator's "
    "configuration, minutes by default",
    "PW-SEC-13": "needs the server's throttling limits low enough to reach from one client; "
    "they are the operator's configuration",
    "PW-SEC-4": "needs two forbidden topics, one existing and one not, and a look at whether "
    "the server created the second: the operator's configuration, not the wire, decides",
}


@dataclass(frozen=True, slots=True)
class Coverage:
    covered: list[Requirement]
    uncovered: list[tuple[Requirement, str]]
    not_observable: list[Requirement]

    @property
    def total_observable(self) -> int:
        return len(self.covered) + len(self.uncovered)


def server_musts() -> list[Requirement]:
    return [r for r in REQUIREMENTS if r.is_must and r.applies_to in ("server", "both")]


def coverage(cases: Sequence[Case] | None = None) -> Coverage:
    """Which observable server MUSTs the cases cite, and which not (with the reason)."""
    if cases is None:  # the registered cases (the conformance package registers them)
        cases = list(REGISTRY.values())
    cited = {rid for c in cases for rid in c.requirements}
    covered, uncovered, hidden = [], [], []
    for req in server_musts():
        if not req.observable:
            hidden.append(req)
        elif req.id in cited:
            covered.append(req)
        else:
            reason = UNCOVERED_REASONS.get(req.id) or "no case checks it yet"
            uncovered.append((req, reason))
    return Coverage(covered, uncovered, hidden)


@dataclass(frozen=True, slots=True)
class Unchecked:
    """A covered MUST that this run did not check: no case citing it reached pass or fail."""

    requirement: Requirement
    results: list[Result]  # the citing cases of the run, each n/a, skipped or error


def unchecked(results: Sequence[Result]) -> list[Unchecked]:
    """The observable server MUSTs cited by cases of this run of which none reached a
    verdict (every one n/a, skipped or an error of the kit), in requirement order."""
    by_req: dict[str, list[Result]] = {}
    for r in results:
        for rid in r.case.requirements:
            by_req.setdefault(rid, []).append(r)
    out = []
    for req in server_musts():
        cited = by_req.get(req.id)
        if not req.observable or not cited:
            continue
        if not any(r.status in (Status.PASS, Status.FAIL) for r in cited):
            out.append(Unchecked(req, cited))
    return out


# -- text ------------------------------------------------------------------------------------


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    if line:
        lines.append(line)
    return lines or [""]


def render_table(results: Sequence[Result], *, target: str = "", verbose: bool = False) -> str:
    """The human report: one line per case, expected/observed under each failure."""
    out: list[str] = []
    if target:
        out.append(f"pushwire conformance: {target}")
    category = None
    for r in results:
        if r.case.category != category:
            category = r.case.category
            out.append("")
            out.append(f"== {category}")
        status = r.status.value.upper() if r.status.is_failure else r.status.value
        line = f"  {status:<8} {r.case.id:<6} {r.case.level:<6} {r.case.title}"
        if r.duration >= 1.0:
            line += f"  ({r.duration:.1f} s)"
        out.append(line)
        pad = " " * 17
        if r.status.is_failure:
            out.append(f"{pad}requirements: {', '.join(r.case.requirements)}")
            for label, text in (("expected", r.expected), ("observed", r.observed)):
                if text:
                    for i, chunk in enumerate(_wrap(text, 80)):
                        out.append(f"{pad}{label if i == 0 else '':<9} {chunk}")
        elif r.status is Status.NOT_APPLICABLE and r.detail:
            out.extend(f"{pad}{chunk}" for chunk in _wrap(r.detail, 80))
        if verbose:
            out.extend(f"{pad}note: {n}" for n in r.notes)
    out.append("")
    out.append(summary_line(results))
    return "\n".join(out)


def summary_line(results: Sequence[Result]) -> str:
    counts = Counter(r.status for r in results)
    parts = [f"{counts.get(s, 0)} {s.value}" for s in Status if counts.get(s, 0)]
    verdict = "FAIL" if any(r.status.is_failure for r in results) else "PASS"
    return f"{verdict}: {len(results)} cases: " + ", ".join(parts)


def render_coverage(cov: Coverage) -> str:
    out = [
        f"Server MUSTs observable on the wire: {len(cov.covered)} of "
        f"{cov.total_observable} covered by a case."
    ]
    if cov.uncovered:
        out.append("Not covered:")
        for req, why in cov.uncovered:
            out.append(f"  {req.id:<13} {req.text}")
            out.extend(
                f"                why: {c}" if i == 0 else f"                     {c}"
                for i, c in enumerate(_wrap(why, 76))
            )
    out.append(
        f"{len(cov.not_observable)} further server MUSTs are not observable on the wire "
        "(memory bounds, logging, TLS settings...): " + ", ".join(r.id for r in cov.not_observable)
    )
    return "\n".join(out)


def render_unchecked(items: Sequence[Unchecked]) -> str:
    """The MUSTs this run did not check, with the cases that would have and why they did
    not (an empty string when the run checked every MUST its cases cite)."""
    if not items:
        return ""
    out = [
        f"Not checked in this run: {len(items)} covered server MUST(s) whose cases were all "
        "n/a, skipped or errors:"
    ]
    for u in items:
        cases = ", ".join(f"{r.case.id} {r.status.value}" for r in u.results)
        out.append(f"  {u.requirement.id:<13} {cases}")
    reasons = {r.detail for u in items for r in u.results if r.detail and not r.status.is_failure}
    if reasons:
        out.append("Why:")
    for why in sorted(reasons):
        out.extend(f"  - {c}" if i == 0 else f"    {c}" for i, c in enumerate(_wrap(why, 86)))
    return "\n".join(out)


# -- JSON ------------------------------------------------------------------------------------


def to_json(results: Sequence[Result], *, target: str = "", strict: bool = False) -> str:
    cov = coverage()
    doc = {
        "tool": "pushwire conformance",
        "target": target,
        "strict": strict,
        "summary": {s.value: sum(1 for r in results if r.status is s) for s in Status},
        "passed": not any(r.status.is_failure for r in results),
        "results": [r.to_json() for r in results],
        "coverage": {
            "observable_server_musts": cov.total_observable,
            "covered": [r.id for r in cov.covered],
            "uncovered": [{"id": r.id, "text": r.text, "why": why} for r, why in cov.uncovered],
            "not_observable": [r.id for r in cov.not_observable],
            "unchecked_this_run": [
                {
                    "id": u.requirement.id,
                    "text": u.requirement.text,
                    "cases": [
                        {"id": r.case.id, "status": r.status.value, "detail": r.detail}
                        for r in u.results
                    ],
                }
                for u in unchecked(results)
            ],
        },
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


# -- JUnit -----------------------------------------------------------------------------------


def to_junit(results: Sequence[Result], *, target: str = "") -> str:
    """JUnit XML: one testsuite per category, one testcase per case; n/a and skipped cases
    are <skipped/>, failures <failure/>, kit errors <error/>."""
    root = ET.Element("testsuites", name="pushwire conformance")
    total_time = 0.0
    for category in CATEGORIES:
        rs = [r for r in results if r.case.category == category]
        if not rs:
            continue
        suite = ET.SubElement(
            root,
            "testsuite",
            name=category,
            tests=str(len(rs)),
            failures=str(sum(r.status is Status.FAIL for r in rs)),
            errors=str(sum(r.status is Status.ERROR for r in rs)),
            skipped=str(sum(r.status in (Status.SKIPPED, Status.NOT_APPLICABLE) for r in rs)),
            time=f"{sum(r.duration for r in rs):.3f}",
        )
        if target:
            props = ET.SubElement(suite, "properties")
            ET.SubElement(props, "property", name="target", value=target)
        for r in rs:
            total_time += r.duration
            tc = ET.SubElement(
                suite,
                "testcase",
                classname=f"pushwire.conformance.{category}",
                name=f"{r.case.id} {r.case.title}",
                time=f"{r.duration:.3f}",
            )
            reqs = ", ".join(r.case.requirements)
            if r.status is Status.FAIL:
                el = ET.SubElement(tc, "failure", message=f"expected {r.expected}")
                el.text = f"requirements: {reqs}\nexpected: {r.expected}\nobserved: {r.observed}"
            elif r.status is Status.ERROR:
                el = ET.SubElement(tc, "error", message=r.observed)
                el.text = r.detail
            elif r.status in (Status.SKIPPED, Status.NOT_APPLICABLE):
                ET.SubElement(tc, "skipped", message=f"{r.status.value}: {r.detail}")
            if r.notes:
                ET.SubElement(tc, "system-out").text = "\n".join(r.notes)
    root.set("tests", str(len(results)))
    root.set("failures", str(sum(r.status is Status.FAIL for r in results)))
    root.set("errors", str(sum(r.status is Status.ERROR for r in results)))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def render_list(cases: Sequence[Case]) -> str:
    """``--list``: every case with its category, level and requirement IDs."""
    out: list[str] = []
    category = None
    for c in cases:
        if c.category != category:
            category = c.category
            out.append(f"== {category}")
        extra = f"  [needs {', '.join(sorted(c.needs))}]" if c.needs else ""
        out.append(f"  {c.id:<6} {c.level:<6} {c.title}{extra}")
        out.append(f"         {', '.join(c.requirements)}")
    counts = Counter(c.level for c in cases)
    out.append("")
    out.append(
        f"{len(cases)} cases: {counts.get('MUST', 0)} MUST, {counts.get('SHOULD', 0)} SHOULD "
        "(SHOULD cases run with --strict)"
    )
    return "\n".join(out)
