"""The kit's reports: a readable table, JSON and JUnit XML of a list of results, the same
for ``pushwire conformance`` and ``pushwire testserver``. Pure functions of
:class:`~pushwire.protocol.testing.model.Result` lists: they return text and write nothing.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping, Sequence

from pushwire.protocol.testing.model import Result, Status

# -- text ------------------------------------------------------------------------------------


def wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters (longer words stay whole)."""
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
    tool: str,
    target: str = "",
    noun: str = "results",
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
            out.extend(f"{pad}{chunk}" for chunk in wrap(r.detail, 80))
        if r.hint and r.status not in (Status.NOT_APPLICABLE, Status.SKIPPED):
            out.extend(f"{pad}{chunk}" for chunk in wrap(r.hint, 80))
        if verbose:
            out.extend(f"{pad}note: {n}" for n in r.notes)
    out.append("")
    out.append(summary_line(results, strict=strict, noun=noun))
    return "\n".join(out)


def _labelled(pad: str, label: str, text: str) -> list[str]:
    return [f"{pad}{label if i == 0 else '':<9} {chunk}" for i, chunk in enumerate(wrap(text, 80))]


def passed(results: Sequence[Result], *, strict: bool = False) -> bool:
    """Whether a run passed: no result fails (with ``strict``, no warning either)."""
    return not any(r.status.fails(strict=strict) for r in results)


def summary_line(results: Sequence[Result], *, strict: bool = False, noun: str = "results") -> str:
    counts = Counter(r.status for r in results)
    parts = [f"{counts.get(s, 0)} {s.value}" for s in Status if counts.get(s, 0)]
    verdict = "PASS" if passed(results, strict=strict) else "FAIL"
    return f"{verdict}: {len(results)} {noun}: " + ", ".join(parts)


# -- JSON ------------------------------------------------------------------------------------


def to_json(
    results: Sequence[Result],
    *,
    tool: str,
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


# -- JUnit -----------------------------------------------------------------------------------


def to_junit(
    results: Sequence[Result],
    *,
    tool: str,
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
    for category in dict.fromkeys(r.category for r in results):  # in order of appearance
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
