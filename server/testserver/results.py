"""What a test-server scenario run records: its checks, each with SPEC.md requirement IDs,
and the kit's shared :class:`~pushwire.protocol.testing.model.Result` it ends in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from pushwire.protocol.testing.model import Check, Result, Status

# -- results -----------------------------------------------------------------------------------

if TYPE_CHECKING:
    from pushwire.server.testserver.script import Scenario

#: The category of every scenario in the shared report.
CATEGORY = "client-scenarios"


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
    finished: float | None = None
    #: Epochs the scripts made up, by name ("epoch", "new-epoch"): the same on every connection.
    epochs: dict[str, int] = field(default_factory=dict)
    #: What connection 1 of a multi-connection scenario leaves for the later ones and for the
    #: expected application view; None until recorded.
    resume_at: int | None = None  # the position the client must resume from
    delivered: int | None = None  # messages delivered before the drop
    goaway_at: float | None = None  # when GOAWAY was sent (trio time)
    credit: int | None = None  # the client's initial credit (over-credit)
    reconnected: trio.Event = field(default_factory=trio.Event)
    #: When each connection of the scenario opened (trio time), for the backoff checks.
    opened: list[float] = field(default_factory=list)
    #: When each refusal of the client's SUBSCRIBE was sent, and how long the client waited
    #: before repeating it (the refused-request scenarios).
    refused: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    #: Connection 1 of goaway-linger, which the client must close before it opens the next.
    goaway_closed: bool | None = None
    #: With --client-command: the client's exit status once it exited, and an event for it.
    client_exit: int | None = None
    client_exited: trio.Event = field(default_factory=trio.Event)

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
        if not self.done.is_set():
            self.finished = trio.current_time()
        self.done.set()

    @property
    def status(self) -> Status:
        """n/a, fail (a MUST check failed), incomplete (the scenario never finished), warn
        (a SHOULD check failed) or pass, in that order of precedence."""
        if self.not_applicable:
            return Status.NOT_APPLICABLE
        if any(not c.passed and c.level == "MUST" for c in self.checks):
            return Status.FAIL
        if not self.done.is_set():
            return Status.INCOMPLETE
        if any(not c.passed for c in self.checks):
            return Status.WARN
        return Status.PASS

    def result(self) -> Result:
        """The run as the kit's shared result record (a snapshot)."""
        s = self.scenario
        began, ended = self.started, self.finished
        return Result(
            id=s.name,
            title=s.title,
            category=CATEGORY,
            level="MUST",
            requirements=tuple(s.requirements),
            status=self.status,
            expected=s.client_must,
            observed=""
            if self.done.is_set()
            else "the scenario did not finish (the client did not connect, subscribe or "
            "reconnect in time)",
            detail=self.not_applicable,
            duration=ended - began if began is not None and ended is not None else 0.0,
            notes=list(self.notes),
            checks=list(self.checks),
            hint=f"application should see: {s.expect_app}",
            properties={"topic": s.topic, "mode": s.mode, "connections": self.connections},
        )


# -- one client connection -------------------------------------------------------------------
