"""The server conformance kit against the reference server, healthy and broken.

The healthy server passes every case (test_mutation.py shows that the cases fail against
servers that each break one promise). Everything runs over loopback TCP with short
heartbeat, handshake, history and drain settings, so the whole kit finishes in seconds.
"""

from __future__ import annotations

import pytest
from kit_servers import failures, reference, statuses

from pushwire.client.conformance.registry import REGISTRY
from pushwire.client.conformance.runner import run_cases, select_cases
from pushwire.protocol.layouts import SlowConsumerPolicy
from pushwire.protocol.testing.model import Status
from pushwire.server import Permissions


async def test_reference_server_passes_every_case() -> None:
    async with reference() as target:
        results = await run_cases(target, select_cases(), strict=True, jobs=8)
    assert not failures(results), failures(results)
    not_applicable = {cid for cid, s in statuses(results).items() if s is Status.NOT_APPLICABLE}
    # DISCONNECT policy, authentication and a connection limit are configured below
    assert not_applicable == {"FC-07", "FC-08", "PH-11", "PH-15", "ER-25", "ER-28"}


async def test_reference_server_with_auth_limits_and_disconnect_policy() -> None:
    """The cases that need an operator's configuration: a token, a forbidden topic, a
    connection limit and the DISCONNECT slow-consumer policy; and, with no way to reset a
    topic, the reset cases are n/a."""
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
        target.reset = None
        ids = ["PH-01", "PH-11", "PH-15", "ER-25", "ER-28", "FC-06", "FC-07", "FC-08", "FC-09"]
        ids += ["PT-09", "PT-10", "RH-12"]
        results = await run_cases(target, select_cases([*ids, "SO-02"]), strict=True)
    assert not failures(results), failures(results)
    # DROP only (FC-06, FC-09, PT-09), or a reset (PT-10, RH-12)
    not_applicable = {"FC-06", "FC-09", "PT-09", "PT-10", "RH-12"}
    assert {statuses(results)[cid] for cid in not_applicable} == {Status.NOT_APPLICABLE}
    others = {s for cid, s in statuses(results).items() if cid not in not_applicable}
    assert others == {Status.PASS}


def test_case_table_is_consistent() -> None:
    from pushwire.protocol.spec.requirements import BY_ID

    cases = select_cases()
    assert len(cases) == len(REGISTRY) >= 100
    for c in cases:
        assert c.requirements, c.id
        assert all(rid in BY_ID for rid in c.requirements), c.id
        assert c.doc, f"{c.id} needs a docstring saying what a correct server does"


@pytest.mark.spec("PW-GOAWAY-13")
async def test_a_shutdown_tells_a_connection_in_the_handshake_shutting_down() -> None:
    async with reference() as target:
        (result,) = await run_cases(target, select_cases(["SD-10"]))
    assert result.status is Status.PASS, failures([result])
