"""The conformance kit proves itself by mutation: every server of tests/faults.py breaks one
MUST of SPEC.md, and the cases that check that MUST fail against it. A mutant no case
fails is a missing case.

Each mutant runs only the cases meant to catch it (the whole kit against the healthy
server is test_conformance_cases.py), so the table stays fast. Where the issue is that an
older case let the mutant through, the table also names that case as one the mutant
*passes*: the new case is what catches it, not a side effect of the old one.

The other tools are proved the same way next to their own tests: ``pushwire fuzz`` against
the "ignore-reserved-bits" and "accept-oversized" servers (test_fuzz.py), the test server
against broken clients and ``--hostile`` against clients that mishandle a bad frame
(test_testserver.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from faults import FAULTS
from kit_servers import failures, reference, statuses

from pushwire.client.conformance.runner import run_cases, select_cases
from pushwire.protocol.layouts import SlowConsumerPolicy
from pushwire.protocol.testing.model import Status

#: The heartbeat the kit asks for against the heartbeat mutants: long enough that 2, 3 and 6
#: intervals stay apart on a loaded machine.
SLOW_BEAT = {"heartbeat_ms": 400}


@dataclass(frozen=True)
class Mutant:
    #: cases that must fail against the mutant (others may fail too: every case that uses
    #: PING as a barrier fails against "no-pong")
    caught_by: frozenset[str]
    #: cases the mutant passes: the older cases that let this mistake through
    passes: frozenset[str] = frozenset()
    config: dict[str, Any] = field(default_factory=dict)
    kit: dict[str, Any] = field(default_factory=dict)


def m(caught_by: str, passes: str = "", **kw: Any) -> Mutant:
    return Mutant(frozenset(caught_by.split()), frozenset(passes.split()), **kw)


MUTANTS: dict[str, Mutant] = {
    "reorder": m("SO-02 SO-12 RH-01"),
    "ignore-credit": m("FC-01 FC-02 FC-03"),
    "accept-oversized": m("FL-01 PH-12 EX-03"),
    "skip-gap": m("FL-05 RH-07 RH-09 FC-06"),
    "no-pong": m("HB-01 FL-04"),
    "no-heartbeat-timeout": m("HB-03 HB-07"),
    "ignore-reserved-bits": m("ER-01 ER-02 ER-09"),
    "heartbeat-timeout-after-2": m("HB-07", "HB-03", kit=SLOW_BEAT),
    "heartbeat-timeout-after-6": m("HB-07", kit=SLOW_BEAT),
    "frames-only-liveness": m("HB-08", "HB-03 HB-04"),
    "drop-gap-says-history-expired": m("FC-09", "FC-06"),
    "limit-before-already-subscribed": m("ER-27", "ER-19 ER-23"),
    "topic-before-going-away": m("SD-08", "SD-04"),
    "unsubscribed-reports-head": m("SO-16", "SO-09"),
    "ignores-history-loss": m(
        "FC-08", "FC-07", config={"slow_consumer_policy": SlowConsumerPolicy.DISCONNECT}
    ),
    "drops-too-large-batch-record": m("FL-07", "FL-05 FL-06"),
    "crashes-at-shutdown": m("SD-09", "SD-02 SD-03 SD-04 SD-05 SD-07"),
    "silent-shutdown-in-handshake": m("SD-10", "SD-02"),
    "pattern-skip-as-gap": m("PT-09", "FC-06 PT-03 PT-10"),
    "pattern-reset-unannounced": m("PT-03 PT-10", "RH-12 PT-09"),
}


@pytest.mark.parametrize("fault", sorted(MUTANTS))
async def test_every_mutant_fails_the_cases_that_check_its_must(fault: str) -> None:
    mutant = MUTANTS[fault]
    ids = sorted(mutant.caught_by | mutant.passes)
    async with reference(fault, kit=mutant.kit, **mutant.config) as target:
        results = await run_cases(target, select_cases(ids), strict=True, jobs=8)
    got = statuses(results)
    failed = {cid for cid, s in got.items() if s is Status.FAIL}
    assert failed == set(mutant.caught_by), failures(results)
    assert {got[cid] for cid in mutant.passes} <= {Status.PASS}, failures(results)
    for r in results:  # a failure report says what was expected and what happened
        if r.status is Status.FAIL:
            assert r.expected and r.observed and r.requirements


def test_every_faulty_server_is_in_the_table() -> None:
    assert set(MUTANTS) == set(FAULTS)
