"""Which server MUSTs the conformance cases cover, and which MUSTs one run checked.

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

from collections.abc import Sequence
from dataclasses import dataclass

from pushwire.client.conformance.registry import REGISTRY, Case
from pushwire.protocol.spec.requirements import REQUIREMENTS, Requirement
from pushwire.protocol.testing.model import Result, Status
from pushwire.protocol.testing.report import to_json, wrap

#: The tool's name in its reports.
TOOL = "pushwire conformance"

#: Observable server MUSTs that no case checks, and why. A test keeps this list exact.
UNCOVERED_REASONS: dict[str, str] = {
    "PW-ERR-11": "no client behaviour is specified to make a server answer PROTOCOL_ERROR "
    "(every server-side check has a more specific code)",
    "PW-HS-18": "needs a token that expires while connected; token formats and expiry are "
    "the operator's (the reference server's signed tokens are tested in its own suite)",
    "PW-LIMIT-6": "closing idle connections is optional (MAY) and its time is the operator's "
    "configuration, minutes by default",
    "PW-SEC-14": "needs a frame held incomplete for longer than the server's per-frame time "
    "bound (PW-SEC-7), which is its configuration (60 s in the reference server) and may be "
    "longer than a conformance run should wait",
    "PW-SEC-13": "needs the server's throttling limits low enough to reach from one client; "
    "they are the operator's configuration",
    "PW-FLOW-8": "credit left on a closed connection cannot be observed on the next one apart "
    "from the rules every flow case already checks; no case is dedicated to it yet",
    "PW-FRAME-17": "the out-of-range since_kind and outcome vectors pin the code; no case cites "
    "the parse-the-rest rule separately yet",
    "PW-SLOW-6": "needs the operator's slow-consumer policy DISCONNECT with a small max_lag and "
    "a retained backlog; no case covers it yet",
    "PW-SUB-21": "needs an operator's topic reset (--reset-command) while a subscription is "
    "open and before anything is pushed in the new epoch; no case covers it yet",
    "PW-HB-8": "needs the server's outbound queue filled by a client that stops reading, then a "
    "PING whose PONG must not wait behind pushes: TCP buffering hides the order on loopback",
    "PW-SLOW-7": "needs the DROP policy with a history short enough to lose messages twice "
    "before the subscription can push again; FC-06/FC-09 check one loss only",
    "PW-LIMIT-7": "needs the server's memory budget low enough for one client to fill; it is "
    "the operator's configuration (a quarter of physical memory in the reference server)",
    **dict.fromkeys(
        ("PW-NODE-1", "PW-NODE-2", "PW-NODE-3", "PW-NODE-4"),
        "needs several server nodes sharing one store, and control of that store (flush it, "
        "restart it, stop it); a run against one address has neither (the reference "
        "server's multi-node tests check these against Redis)",
    ),
    "PW-SUB-24": "max_patterns is the operator's configuration and not announced in WELCOME, "
    "so a run cannot know how many pattern subscriptions reach it",
    "PW-SUB-27": "max_pattern_topics is the operator's configuration and not announced; "
    "reaching it may need more topics than a conformance run should create",
    "PW-SUB-31": "as PW-SUB-27: the per-pattern topic limit is the operator's configuration",
    "PW-SUB-25": "needs a token whose permissions cover only part of a pattern's reach; "
    "--forbidden-topic names one topic, not a permission shape",
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
                for i, c in enumerate(wrap(why, 76))
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
        out.extend(f"  - {c}" if i == 0 else f"    {c}" for i, c in enumerate(wrap(why, 86)))
    return "\n".join(out)


def report_json(results: Sequence[Result], *, target: str = "", strict: bool = False) -> str:
    """``pushwire conformance --json``: the kit's shared JSON report plus the MUST coverage."""
    cov = coverage()
    return to_json(
        results,
        tool=TOOL,
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
