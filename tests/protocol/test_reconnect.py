"""The reconnect planner: retry classes, backoff growth and reset, GOAWAY delays (§8.9)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushwire.protocol.errors import REGISTRY, ErrorCode, Scope
from pushwire.protocol.reconnect import (
    Ending,
    GoawayHint,
    ReconnectPlanner,
    RetryClass,
    retry_class,
)

CONNECTION_CODES = [c for c, info in REGISTRY.items() if info.scope is Scope.CONNECTION]
TERMINAL = [c for c in CONNECTION_CODES if not REGISTRY[c].temporary]
TEMPORARY = [c for c in CONNECTION_CODES if REGISTRY[c].temporary]
KNOWN = {int(c) for c in ErrorCode}
unknown_codes = st.integers(0, 0xFFFF).filter(lambda c: c not in KNOWN)


@pytest.mark.spec("PW-CLIENT-1")
@pytest.mark.parametrize("ending", [Ending.PEER_ERROR, Ending.OWN_ERROR, Ending.GOAWAY])
@pytest.mark.parametrize("code", TERMINAL)
def test_terminal_codes_are_not_retried_whichever_side_sent_them(
    ending: Ending, code: ErrorCode
) -> None:
    assert retry_class(ending, code) is RetryClass.TERMINAL
    planner = ReconnectPlanner(rng=random.Random(1))
    goaway = GoawayHint(0.0, 100, 0) if ending is Ending.GOAWAY else None
    assert not planner.ended(ending, code, 1.0, goaway=goaway).reconnect


@pytest.mark.parametrize("code", TEMPORARY)
def test_temporary_codes_are_retried(code: ErrorCode) -> None:
    assert retry_class(Ending.OWN_ERROR, code) is RetryClass.TEMPORARY
    assert ReconnectPlanner().ended(Ending.PEER_ERROR, code, 0.0).reconnect


def test_the_clients_own_heartbeat_timeout_is_temporary_and_its_violations_terminal() -> None:
    assert retry_class(Ending.OWN_ERROR, ErrorCode.HEARTBEAT_TIMEOUT) is RetryClass.TEMPORARY
    for code in (ErrorCode.PROTOCOL_ERROR, ErrorCode.FLOW_CONTROL_ERROR):
        assert retry_class(Ending.OWN_ERROR, code) is RetryClass.TERMINAL


@pytest.mark.spec("PW-CLIENT-2")
@given(code=unknown_codes, ending=st.sampled_from([Ending.PEER_ERROR, Ending.GOAWAY]))
def test_unknown_connection_codes_are_temporary(code: int, ending: Ending) -> None:
    assert retry_class(ending, code) is RetryClass.TEMPORARY


@pytest.mark.spec("PW-CLIENT-5")
def test_eof_is_a_lost_connection_and_a_preface_failure_terminal() -> None:
    assert retry_class(Ending.EOF) is RetryClass.LOST
    assert retry_class(Ending.PREFACE, ErrorCode.BAD_PREFACE) is RetryClass.TERMINAL
    assert retry_class(Ending.CLOSED) is RetryClass.CLOSED
    assert ReconnectPlanner().ended(Ending.EOF, None, 0.0).reconnect


@pytest.mark.spec("PW-CLIENT-6")
@given(
    base=st.floats(0.01, 1.0),
    factor=st.floats(1.0, 100.0),
    seed=st.integers(0, 2**32),
    attempts=st.integers(1, 40),
)
def test_delays_are_uniform_in_the_upper_half_of_a_doubling_ceiling(
    base: float, factor: float, seed: int, attempts: int
) -> None:
    planner = ReconnectPlanner(base, base * factor, rng=random.Random(seed))
    for n in range(attempts):
        d = min(base * factor, base * 2.0**n)
        delay = planner.next_delay()
        assert d / 2 <= delay <= d


@pytest.mark.spec("PW-CLIENT-7")
@given(seed=st.integers(0, 2**32), cuts=st.integers(2, 12), up_for=st.floats(0, 0.99))
def test_a_server_that_admits_and_cuts_sees_the_delays_grow(
    seed: int, cuts: int, up_for: float
) -> None:
    """WELCOME alone never resets the counter: each cut comes sooner than the stable time."""
    planner = ReconnectPlanner(0.1, 10.0, rng=random.Random(seed))
    now, delays = 0.0, []
    for _ in range(cuts):
        planner.opened(now)
        now += up_for
        plan = planner.ended(Ending.EOF, None, now)
        assert plan.reconnect and plan.at is not None
        delays.append(plan.delay)
        now = plan.at
    # upper half of a doubling ceiling: two attempts apart, a delay is never shorter
    for early, late in zip(delays, delays[2:], strict=False):
        assert late >= early or late >= 10.0 / 2
    assert planner.attempt == cuts


@pytest.mark.spec("PW-CLIENT-7")
def test_the_counter_resets_after_a_stable_connection_or_a_delivered_message() -> None:
    planner = ReconnectPlanner(0.1, 2.0, stable=5.0, rng=random.Random(2))
    for _ in range(3):
        planner.next_delay()
    planner.opened(0.0)
    planner.ended(Ending.EOF, None, 4.9)
    assert planner.attempt == 4  # 3 + this one: 4.9 s is below the stable time
    planner.opened(10.0)
    planner.ended(Ending.EOF, None, 15.0)
    assert planner.attempt == 1  # reset, then this attempt counted
    planner.opened(20.0)
    planner.delivered()
    planner.ended(Ending.PEER_ERROR, ErrorCode.SHUTTING_DOWN, 20.1)
    assert planner.attempt == 1
    assert ReconnectPlanner(0.1, 30.0, stable=1.0).stable == 30.0  # never below the cap


@pytest.mark.spec("PW-GOAWAY-7")
@pytest.mark.spec("PW-CLIENT-3")
@given(
    received=st.floats(0, 1000),
    later=st.floats(0, 10),
    after=st.integers(0, 100_000),
    jitter=st.integers(0, 100_000),
    seed=st.integers(0, 2**32),
)
def test_a_goaway_delay_counts_from_its_receipt_and_leaves_the_counter_alone(
    received: float, later: float, after: int, jitter: int, seed: int
) -> None:
    planner = ReconnectPlanner(rng=random.Random(seed))
    planner.next_delay()
    hint = GoawayHint(received, after, jitter)
    plan = planner.ended(Ending.GOAWAY, ErrorCode.SHUTTING_DOWN, received + later, goaway=hint)
    assert plan.reconnect and plan.at is not None
    assert received + after / 1000 <= plan.at <= received + (after + jitter) / 1000 + 1e-9
    assert planner.attempt == 1


def test_an_error_after_goaway_decides_by_its_own_code() -> None:
    hint = GoawayHint(0.0, 1000, 0)
    plan = ReconnectPlanner().ended(Ending.PEER_ERROR, ErrorCode.UNAUTHENTICATED, 0.5, goaway=hint)
    assert not plan.reconnect


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        ReconnectPlanner(0, 1)
    with pytest.raises(ValueError):
        ReconnectPlanner(2, 1)
