"""The server conformance kit against the reference server, healthy and broken.

The kit is only worth something if its cases can fail: each faulty reference server of
tests/faults.py breaks one promise of SPEC.md, and the cases that
check that promise must fail against it, while the healthy server passes every case.
Everything runs over loopback TCP with short heartbeat, handshake, history and drain
settings, so the whole kit finishes in seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from faults import FAULTS, server_options

from pushwire.client.conformance.registry import REGISTRY
from pushwire.client.conformance.runner import Target, run_cases, select_cases
from pushwire.protocol.layouts import SlowConsumerPolicy
from pushwire.protocol.testing.model import Status
from pushwire.server import Permissions, ServerConfig, open_server

#: Small limits so that every case runs quickly (history expiry needs > 40 publishes).
FAST: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 0,
    "heartbeat_min_ms": 100,
    "history_count": 40,
    "max_lag": 60,
    "max_subscriptions": 16,
    "handshake_timeout": 0.8,
    "drain_timeout": 0.8,
}


@asynccontextmanager
async def reference(fault: str | None = None, **overrides: Any) -> AsyncIterator[Target]:
    """A reference server with FAST limits (and ``fault``, one of tests/faults.py), and the
    Target that tests it (with the operator hooks wired to the server's own shutdown and
    topic reset)."""
    config = ServerConfig(**(FAST | overrides))
    async with open_server(config, **(server_options(fault) if fault else {})) as server:

        async def reset(topic: str) -> None:
            await server.reset_topic(topic)

        async def shutdown() -> int:
            """The in-process server's "exit status": 1 when a connection ended in an
            internal error (its session crashed) during the shutdown, as a process that
            crashed on its way out would exit."""
            before = server.counters.closed["INTERNAL_ERROR"]
            await server.shutdown()
            return 1 if server.counters.closed["INTERNAL_ERROR"] > before else 0

        yield Target(
            host="127.0.0.1",
            port=server.port,
            timeout=2.0,
            heartbeat_ms=200,
            handshake_timeout=config.handshake_timeout,
            drain_timeout=config.drain_timeout,
            shutdown=shutdown,
            reset=reset,
        )


def statuses(results: list[Any]) -> dict[str, Status]:
    return {r.id: r.status for r in results}


def failures(results: list[Any]) -> str:
    return "\n".join(
        f"{r.id}: {r.status.value}: expected {r.expected}; observed {r.observed} {r.detail}"
        for r in results
        if r.status.is_failure
    )


async def test_reference_server_passes_every_case() -> None:
    async with reference() as target:
        results = await run_cases(target, select_cases(), strict=True, jobs=8)
    assert not failures(results), failures(results)
    not_applicable = {cid for cid, s in statuses(results).items() if s is Status.NOT_APPLICABLE}
    # DISCONNECT policy, authentication and a connection limit are configured below
    assert not_applicable == {"FC-07", "FC-08", "PH-11", "PH-15", "ER-25", "ER-28"}


async def test_reference_server_with_auth_limits_and_disconnect_policy() -> None:
    """The cases that need an operator's configuration: a token, a forbidden topic, a
    connection limit and the DISCONNECT slow-consumer policy."""
    auth = {b"secret": Permissions(subscribe=("conformance/#",), publish=("conformance/#",))}
    async with reference(
        auth=auth,
        max_connections=6,
        max_connections_per_source=6,  # the kit connects from one address
        slow_consumer_policy=SlowConsumerPolicy.DISCONNECT,
    ) as target:
        target.token = b"secret"
        target.forbidden_topic = "private/area"
        target.max_connections = 6
        ids = ["PH-01", "PH-11", "PH-15", "ER-25", "ER-28", "FC-06", "FC-07", "FC-08", "FC-09"]
        results = await run_cases(target, select_cases([*ids, "SO-02"]), strict=True)
    assert not failures(results), failures(results)
    drop_only = {"FC-06", "FC-09"}
    assert {statuses(results)[cid] for cid in drop_only} == {Status.NOT_APPLICABLE}
    assert {s for cid, s in statuses(results).items() if cid not in drop_only} == {Status.PASS}


#: fault -> cases that must fail against it (a subset: others may fail too, e.g. every
#: case that uses PING as a barrier fails against "no-pong").
CAUGHT_BY: dict[str, set[str]] = {
    "reorder": {"SO-02", "SO-12", "RH-01"},
    "ignore-credit": {"FC-01", "FC-02", "FC-03"},
    "accept-oversized": {"FL-01", "PH-12", "EX-03"},
    "skip-gap": {"FL-05", "RH-07", "RH-09", "FC-06"},
    "no-pong": {"HB-01", "FL-04"},
    "no-heartbeat-timeout": {"HB-03"},
    "ignore-reserved-bits": {"ER-01", "ER-02", "ER-09"},
}


@pytest.mark.parametrize("fault", sorted(CAUGHT_BY))
async def test_faulted_server_fails_the_cases_that_check_that_promise(fault: str) -> None:
    ids = sorted(CAUGHT_BY[fault])
    async with reference(fault) as target:
        results = await run_cases(target, select_cases(ids), strict=True, jobs=8)
    got = statuses(results)
    assert {cid for cid, s in got.items() if s is Status.FAIL} == set(ids), failures(results)
    for r in results:  # a failure report says what was expected and what happened
        assert r.expected and r.observed and r.requirements


def test_every_faulty_server_is_caught_by_some_case() -> None:
    assert set(CAUGHT_BY) == set(FAULTS)


def test_case_table_is_consistent() -> None:
    from pushwire.protocol.spec.requirements import BY_ID

    cases = select_cases()
    assert len(cases) == len(REGISTRY) >= 100
    for c in cases:
        assert c.requirements, c.id
        assert all(rid in BY_ID for rid in c.requirements), c.id
        assert c.doc, f"{c.id} needs a docstring saying what a correct server does"
