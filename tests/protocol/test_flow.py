"""CreditLedger: the credit granted for a push is what was sent before its first byte came."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushwire.protocol.flow import CreditLedger

# A history: ("grant", increment) and ("push", count, bytes) in the order the client saw them.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), st.integers(1, 50)),
        st.tuples(st.just("push"), st.integers(1, 20), st.integers(1, 200)),
    ),
    max_size=40,
)


@pytest.mark.spec("PW-FLOW-5")
@given(initial=st.integers(0, 100), history=steps)
def test_the_ledger_agrees_with_a_list_of_what_was_sent_before_each_push(
    initial: int, history: list[tuple[object, ...]]
) -> None:
    """Model: a plain list of (bytes received when sent, increment); a push at offset X may
    use the initial credit plus every grant stamped <= X, less what earlier pushes used."""
    ledger = CreditLedger(initial)
    grants: list[tuple[int, int]] = []
    used = 0
    received = 0
    for step in history:
        if step[0] == "grant":
            increment = int(step[1])  # type: ignore[call-overload]
            ledger.grant(increment, received)
            grants.append((received, increment))
        else:
            count, size = int(step[1]), int(step[2])  # type: ignore[call-overload]
            offset = received
            received += size
            allowed = initial + sum(i for r, i in grants if r <= offset) - used
            assert ledger.usable_at(offset) == allowed
            ok = ledger.charge(count, offset)
            assert ok == (count <= allowed)
            if ok:
                used += count
        assert ledger.remaining == initial + sum(i for _, i in grants) - used


def test_a_grant_sent_after_the_first_byte_waits_for_the_next_push() -> None:
    ledger = CreditLedger(1)
    assert ledger.charge(1, 0)
    ledger.grant(5, 30)  # sent after 30 bytes arrived
    assert not ledger.charge(1, 20)  # this push began at byte 20: before the CREDIT left
    assert ledger.charge(1, 30)  # began exactly when the CREDIT had been sent
    assert ledger.remaining == 4
