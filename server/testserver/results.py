"""What a test-server scenario run records: its checks, each with SPEC.md requirement IDs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

# -- results -----------------------------------------------------------------------------------

if TYPE_CHECKING:
    from pushwire.server.testserver.script import Scenario


@dataclass(slots=True)
class Check:
    text: str
    requirements: tuple[str, ...]
    level: str  # MUST or SHOULD
    passed: bool
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.text,
            "requirements": list(self.requirements),
            "level": self.level,
            "passed": self.passed,
            "detail": self.detail,
        }


@dataclass
class ScenarioRun:
    """One scenario's state and findings across the connections of the client under test."""

    scenario: Scenario
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)
    connections: int = 0
    not_applicable: str = ""
    started: float | None = None
    #: Epochs the scripts made up, by name ("epoch", "new-epoch"): the same on every connection.
    epochs: dict[str, int] = field(default_factory=dict)
    #: What connection 1 of a multi-connection scenario leaves for the later ones and for the
    #: expected application view; None until recorded.
    resume_at: int | None = None  # the position the client must resume from
    delivered: int | None = None  # messages delivered before the drop
    goaway_at: float | None = None  # when GOAWAY was sent (trio time)
    credit: int | None = None  # the client's initial credit (over-credit)
    reconnected: trio.Event = field(default_factory=trio.Event)

    def check(
        self,
        text: str,
        requirements: tuple[str, ...],
        passed: bool,
        detail: str = "",
        level: str = "MUST",
    ) -> bool:
        self.checks.append(Check(text, requirements, level, bool(passed), detail))
        return bool(passed)

    def finish(self) -> None:
        self.done.set()

    @property
    def verdict(self) -> str:
        if self.not_applicable:
            return "n/a"
        if any(not c.passed and c.level == "MUST" for c in self.checks):
            return "fail"
        if not self.done.is_set():
            return "incomplete"
        if any(not c.passed for c in self.checks):
            return "warn"
        return "pass"

    def to_json(self) -> dict[str, Any]:
        s = self.scenario
        return {
            "scenario": s.name,
            "topic": s.topic,
            "mode": s.mode,
            "verdict": self.verdict,
            "requirements": list(s.requirements),
            "client_must": s.client_must,
            "expect_app": s.expect_app,
            "connections": self.connections,
            "not_applicable": self.not_applicable,
            "checks": [c.to_json() for c in self.checks],
            "notes": self.notes,
        }


# -- one client connection -------------------------------------------------------------------
