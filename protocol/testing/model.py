"""What the kit judges and what judging it produces, shared by both halves of the kit.

``pushwire conformance`` (a client testing a server) runs *cases*; ``pushwire testserver``
(a scripted server testing a client) plays *scenarios*. Both end in the same record: a
:class:`Result` about one subject (its stable ID, title, category, SPEC.md requirement IDs
and level), with one :class:`Status`, what was expected and observed, notes, the time it
took and the individual :class:`Check` records behind the verdict. The renderers in
``pushwire.protocol.testing.report`` turn a list of results into a table, JSON or JUnit XML
for either tool. Pure data: no I/O, no trio, nothing of the server or the client.

The conformance runner's case registry (``pushwire.client.conformance.registry``) and the
test server's scenarios (``pushwire.server.testserver``) are subjects of results; each half
keeps its own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol


class Status(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"  # only SHOULD checks failed: a finding, not a violation (fails with --strict)
    INCOMPLETE = "incomplete"  # the peer under test never let the subject finish
    NOT_APPLICABLE = "n/a"
    SKIPPED = "skipped"  # a SHOULD case without --strict, or not selected by a prerequisite
    ERROR = "error"  # the kit itself could not run the case (counts as a failure)

    @property
    def is_failure(self) -> bool:
        return self in (Status.FAIL, Status.ERROR, Status.INCOMPLETE)

    def fails(self, *, strict: bool = False) -> bool:
        """Whether this status fails a run (a warning does with ``--strict``)."""
        return self.is_failure or (strict and self is Status.WARN)


class Subject(Protocol):
    """What a result is about: a conformance case or a test-server scenario."""

    @property
    def id(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def requirements(self) -> tuple[str, ...]: ...
    @property
    def level(self) -> str: ...


@dataclass(slots=True)
class Check:
    """One judged observation behind a result: what the peer had to do, the requirement IDs
    it proves, its level, and whether the peer did it (``detail``: what was observed)."""

    text: str
    requirements: tuple[str, ...]
    level: str  # "MUST" or "SHOULD"
    passed: bool
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "check": self.text,
            "requirements": list(self.requirements),
            "level": self.level,
            "passed": self.passed,
            "detail": self.detail,
        }


@dataclass(slots=True)
class Result:
    """The verdict on one subject. ``expected``/``observed`` say what a failure broke;
    ``detail`` why a subject was n/a, skipped or could not run (or the kit's traceback);
    ``hint`` is shown under every judged result (for a client under test: what its
    application should have seen, which the wire cannot show); ``properties`` are the
    subject's own extra fields, kept in the JSON report."""

    id: str
    title: str
    category: str
    level: str  # "MUST" or "SHOULD"
    requirements: tuple[str, ...]
    status: Status
    expected: str = ""
    observed: str = ""
    detail: str = ""
    duration: float = 0.0
    notes: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    hint: str = ""
    properties: dict[str, object] = field(default_factory=dict)

    @classmethod
    def about(cls, subject: Subject, status: Status, **fields: Any) -> Result:
        return cls(
            subject.id,
            subject.title,
            subject.category,
            subject.level,
            tuple(subject.requirements),
            status,
            **fields,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "title": self.title,
            "category": self.category,
            "level": self.level,
            "requirements": list(self.requirements),
            "status": self.status.value,
            "expected": self.expected,
            "observed": self.observed,
            "detail": self.detail,
            "duration_s": round(self.duration, 3),
            "notes": list(self.notes),
            "checks": [c.to_json() for c in self.checks],
            "hint": self.hint,
            **self.properties,
        }
