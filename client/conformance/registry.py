"""The conformance cases: what a case is, the registry the case modules fill, and ``--list``.

A case is data plus one coroutine: an ID that never changes meaning (reports are compared
across implementations and versions), a category, the SPEC.md requirement IDs it checks and
its level. MUST cases always run; SHOULD cases run with ``--strict`` (a SHOULD that fails is
a real finding, but not a violation of the protocol). A case is a subject of the kit's
shared :class:`~pushwire.protocol.testing.model.Result`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: What a case's coroutine receives: the runner's context (``CaseContext`` in
#: ``pushwire.client.conformance.runner``). Typed loosely here: the runner imports
#: this module.
CaseContext = Any

#: The categories, in report order. Shutdown runs last: it takes the target down.
CATEGORIES: tuple[str, ...] = (
    "preface-handshake",
    "framing-limits",
    "errors",
    "subscribe-ordering",
    "patterns",
    "resume-history",
    "acks-redelivery",
    "flow-control",
    "heartbeats",
    "extensibility",
    "shutdown",
)


#: What a case needs from the operator beyond HOST:PORT.
NEEDS_SHUTDOWN = "shutdown"  # --shutdown-command: the only way to make a server send GOAWAY
NEEDS_TOKEN = "token"  # --token: the target requires authentication
NEEDS_RESET = "reset"  # --reset-command: resets a topic's history (new epoch)
NEEDS_MAX_CONNECTIONS = "max-connections"  # --max-connections: the server's connection limit
NEEDS_FORBIDDEN_TOPIC = "forbidden-topic"  # --forbidden-topic: a topic the token may not use


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    title: str
    category: str
    requirements: tuple[str, ...]
    level: str  # "MUST" or "SHOULD"
    func: Callable[[CaseContext], Awaitable[None]]
    #: Operator-provided prerequisites (NEEDS_*); missing ones make the case n/a.
    needs: frozenset[str] = frozenset()
    #: Seconds this case may take beyond the per-reply timeout budget (heartbeat waits...).
    extra_time: Callable[[CaseContext], float] | None = None
    doc: str = ""


REGISTRY: dict[str, Case] = {}


def case(
    id: str,
    title: str,
    *,
    category: str,
    requirements: tuple[str, ...] | list[str],
    level: str = "MUST",
    needs: tuple[str, ...] = (),
    extra_time: Callable[[CaseContext], float] | None = None,
) -> Callable[[Callable[[CaseContext], Awaitable[None]]], Callable[[CaseContext], Awaitable[None]]]:
    """Register a case. IDs are unique and stable; the docstring of the function says what
    a correct implementation does and why, and goes into ``--list`` and the JSON report."""
    if category not in CATEGORIES:
        raise ValueError(f"{id}: unknown category {category!r}")
    if level not in ("MUST", "SHOULD"):
        raise ValueError(f"{id}: level must be MUST or SHOULD")

    def register(
        func: Callable[[CaseContext], Awaitable[None]],
    ) -> Callable[[CaseContext], Awaitable[None]]:
        if id in REGISTRY:
            raise ValueError(f"duplicate case id {id}")
        REGISTRY[id] = Case(
            id=id,
            title=title,
            category=category,
            requirements=tuple(requirements),
            level=level,
            func=func,
            needs=frozenset(needs),
            extra_time=extra_time,
            doc=" ".join((func.__doc__ or "").split()),
        )
        return func

    return register


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
