"""The kit's reports: a readable table, JSON, and JUnit XML of a list of :class:`Result`,
the same for ``pushwire conformance`` and ``pushwire testserver``; plus the conformance
kit's requirement coverage.

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
from collections.abc import Mapping, Sequence
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
        for rid in r.requirements:
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


def render_table(
    results: Sequence[Result],
    *,
    tool: str = "pushwire conformance",
    target: str = "",
    verbose: bool = False,
    strict: bool = False,
) -> str:
    """The human report: one line per result, expected/observed (or the failed checks)
    under each failure, the hint under each judged result."""
    out: list[str] = []
    if target:
        out.append(f"{tool}: {target}")
    status_w = max([8, *(len(r.status.value) for r in results)])
    id_w = max([6, *(len(r.id) for r in results)])
    pad = " " * (3 + status_w + 6)
    category = None
    for r in results:
        if r.category != category:
            category = r.category
            out.append("")
            out.append(f"== {category}")
        status = r.status.value.upper() if r.status.fails(strict=strict) else r.status.value
        line = f"  {status:<{status_w}} {r.id:<{id_w}} {r.level:<6} {r.title}"
        if r.duration >= 1.0:
            line += f"  ({r.duration:.1f} s)"
        out.append(line)
        failed = [c for c in r.checks if not c.passed]
        if r.status.is_failure and not r.checks:
            out.append(f"{pad}requirements: {', '.join(r.requirements)}")
        for c in failed:
            out.extend(_labelled(pad, f"{c.level}", f"{', '.join(c.requirements)}: {c.text}"))
            if c.detail:
                out.extend(_labelled(pad + "  ", "observed", c.detail))
        if r.status.is_failure:
            for label, text in (("expected", r.expected), ("observed", r.observed)):
                if text:
                    out.extend(_labelled(pad, label, text))
        elif r.status is Status.NOT_APPLICABLE and r.detail:
            out.extend(f"{pad}{chunk}" for chunk in _wrap(r.detail, 80))
        if r.hint and r.status not in (Status.NOT_APPLICABLE, Status.SKIPPED):
            out.extend(f"{pad}{chunk}" for chunk in _wrap(r.hint, 80))
        if verbose:
            out.extend(f"{pad}note: {n}" for n in r.notes)
    out.append("")
    out.append(summary_line(results, strict=strict, noun=_noun(tool)))
    return "\n".join(out)


def _labelled(pad: str, label: str, text: str) -> list[str]:
    return [f"{pad}{label if i == 0 else '':<9} {chunk}" for i, chunk in enumerate(_wrap(text, 80))]


def _noun(tool: str) -> str:
    return "scenarios" if tool.endswith("testserver") else "cases"


def passed(results: Sequence[Result], *, strict: bool = False) -> bool:
    """Whether a run passed: no result fails (with ``strict``, no warning either)."""
    return not any(r.status.fails(strict=strict) for r in results)


def summary_line(results: Sequence[Result], *, strict: bool = False, noun: str = "cases") -> str:
    counts = Counter(r.status for r in results)
    parts = [f"{counts.get(s, 0)} {s.value}" for s in Status if counts.get(s, 0)]
    verdict = "PASS" if passed(results, strict=strict) else "FAIL"
    return f"{verdict}: {len(results)} {noun}: " + ", ".join(parts)


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
        cases = ", ".join(f"{r.id} {r.status.value}" for r in u.results)
        out.append(f"  {u.requirement.id:<13} {cases}")
    reasons = {r.detail for u in items for r in u.results if r.detail and not r.status.is_failure}
    if reasons:
        out.append("Why:")
    for why in sorted(reasons):
        out.extend(f"  - {c}" if i == 0 else f"    {c}" for i, c in enumerate(_wrap(why, 86)))
    return "\n".join(out)


# -- JSON ------------------------------------------------------------------------------------


def to_json(
    results: Sequence[Result],
    *,
    tool: str = "pushwire conformance",
    target: str = "",
    strict: bool = False,
    extra: Mapping[str, object] | None = None,
) -> str:
    """The JSON report: the run's summary and one object per result (``Result.to_json``);
    ``extra`` adds the tool's own top-level fields."""
    doc = {
        "tool": tool,
        "target": target,
        "strict": strict,
        "summary": {s.value: sum(1 for r in results if r.status is s) for s in Status},
        "passed": passed(results, strict=strict),
        "results": [r.to_json() for r in results],
        **(extra or {}),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


def conformance_json(results: Sequence[Result], *, target: str = "", strict: bool = False) -> str:
    """``pushwire conformance --json``: the shared report plus the kit's MUST coverage."""
    cov = coverage()
    return to_json(
        results,
        target=target,
        strict=strict,
        extra={
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
                            {"id": r.id, "status": r.status.value, "detail": r.detail}
                            for r in u.results
                        ],
                    }
                    for u in unchecked(results)
                ],
            }
        },
    )


# -- JUnit -----------------------------------------------------------------------------------


def to_junit(
    results: Sequence[Result],
    *,
    tool: str = "pushwire conformance",
    target: str = "",
    strict: bool = False,
) -> str:
    """JUnit XML: one testsuite per category, one testcase per result; n/a and skipped
    results are <skipped/>, failures (an incomplete scenario, a warning with ``strict``)
    <failure/>, kit errors <error/>."""

    def failure(r: Result) -> bool:
        return r.status is not Status.ERROR and r.status.fails(strict=strict)

    root = ET.Element("testsuites", name=tool)
    prefix = tool.replace(" ", ".")
    total_time = 0.0
    order = {name: i for i, name in enumerate(CATEGORIES)}
    categories = sorted(
        dict.fromkeys(r.category for r in results), key=lambda c: order.get(c, len(order))
    )
    for category in categories:
        rs = [r for r in results if r.category == category]
        suite = ET.SubElement(
            root,
            "testsuite",
            name=category,
            tests=str(len(rs)),
            failures=str(sum(failure(r) for r in rs)),
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
                classname=f"{prefix}.{category}",
                name=f"{r.id} {r.title}",
                time=f"{r.duration:.3f}",
            )
            reqs = ", ".join(r.requirements)
            failed = "".join(
                f"\n{c.level} {', '.join(c.requirements)}: {c.text}"
                + (f"\n  observed: {c.detail}" if c.detail else "")
                for c in r.checks
                if not c.passed
            )
            if failure(r):
                message = f"expected {r.expected}" if r.expected else r.status.value
                el = ET.SubElement(tc, "failure", message=message)
                el.text = (
                    f"requirements: {reqs}\nexpected: {r.expected}\nobserved: {r.observed}" + failed
                )
            elif r.status is Status.ERROR:
                el = ET.SubElement(tc, "error", message=r.observed)
                el.text = r.detail
            elif r.status in (Status.SKIPPED, Status.NOT_APPLICABLE):
                ET.SubElement(tc, "skipped", message=f"{r.status.value}: {r.detail}")
            out = [*r.notes, *([failed.strip()] if failed and not failure(r) else [])]
            if out:
                ET.SubElement(tc, "system-out").text = "\n".join(out)
    root.set("tests", str(len(results)))
    root.set("failures", str(sum(failure(r) for r in results)))
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
