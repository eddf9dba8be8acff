"""The acknowledgement planner (protocol/acks.py): what an at-least-once client acknowledges,
at each moment that asks for it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushwire.protocol.acks import AckMoment, AckView, plan_ack

moments = st.sampled_from(AckMoment)
seqs = st.integers(min_value=0, max_value=2**64 - 1)
epochs = st.integers(min_value=1, max_value=3)


@pytest.mark.spec("PW-ACK-1", "PW-ACK-6")
@given(moments, epochs, seqs, epochs, seqs, seqs)
def test_an_ack_is_the_processed_sequence_within_what_was_pushed_and_ahead_of_the_last(
    moment: AckMoment, epoch: int, seq: int, view_epoch: int, acked: int, delivered: int
) -> None:
    planned = plan_ack(moment, (epoch, seq), AckView(view_epoch, acked, delivered))
    if epoch == view_epoch and acked < seq <= delivered:
        assert planned == seq
    else:
        assert planned is None


@given(moments, st.none() | st.tuples(epochs, seqs))
def test_nothing_is_acknowledged_on_a_subscription_that_is_not_active(
    moment: AckMoment, processed: tuple[int, int] | None
) -> None:
    assert plan_ack(moment, processed, None) is None


def test_nothing_is_acknowledged_before_the_application_processed_anything() -> None:
    assert plan_ack(AckMoment.IDLE, None, AckView(1, 0, 5)) is None


# -- a stream, step by step ----------------------------------------------------------------

#: One step of the model: ("push", n) n messages arrive; ("gap", n) a GAP of n sequences
#: arrives and is reported; ("process", n) the application finishes n more messages;
#: ("wait", seconds) time passes; or a moment.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(1, 5)),
        st.tuples(st.just("gap"), st.integers(1, 5)),
        st.tuples(st.just("process"), st.integers(1, 3)),
        st.tuples(st.just("wait"), st.floats(0.0, 2.0)),
        st.tuples(st.just("moment"), moments),
    ),
    max_size=60,
)

H = 1.0  # heartbeat interval of the model


@pytest.mark.spec("PW-CLIENT-10", "PW-CLIENT-11")
@given(steps)
def test_with_a_tick_every_interval_everything_processed_is_acknowledged_within_one(
    program: list[tuple[str, object]],
) -> None:
    """The model is two numbers and a list: pushed (delivered) and processed positions,
    and the time each sequence was processed. The timer ticks at least once per H (as
    the client's heartbeat timer does); every ACK is checked against the model, and no
    processed sequence waits more than H for its ACK (PW-CLIENT-11). A reported gap counts
    as processed, so an ACK may cross it (PW-CLIENT-10)."""
    epoch, delivered, processed, acked, now, last_tick = 1, 0, 0, 0, 0.0, 0.0
    processed_at: dict[int, float] = {}
    queue: list[tuple[str, int]] = []  # pushed, not yet processed: ("msg", seq) / ("gap", last)

    def moment(m: AckMoment) -> None:
        nonlocal acked
        seq = plan_ack(
            m, (epoch, processed) if processed else None, AckView(epoch, acked, delivered)
        )
        if seq is not None:
            assert acked < seq <= processed <= delivered
            acked = seq
        else:
            assert processed == acked

    def advance(to: float) -> None:
        nonlocal now, last_tick
        while last_tick + H <= to:  # the timer wakes at least once per interval
            last_tick += H
            now = last_tick
            moment(AckMoment.TICK)
        now = to
        for seq, at in processed_at.items():
            assert seq <= acked or now - at <= H + 1e-9, (seq, at, now, acked)

    for op, arg in program:
        if op == "push":
            assert isinstance(arg, int)
            queue += [("msg", delivered + i) for i in range(1, arg + 1)]
            delivered += arg
        elif op == "gap":
            assert isinstance(arg, int)
            delivered += arg
            queue.append(("gap", delivered))
        elif op == "process":
            assert isinstance(arg, int)
            for _ in range(min(arg, len(queue))):
                _, last = queue.pop(0)
                processed = last
                processed_at[last] = now
            if not queue:
                moment(AckMoment.IDLE)
        elif op == "wait":
            assert isinstance(arg, float)
            advance(now + arg)
        else:
            assert isinstance(arg, AckMoment)
            moment(arg)
    advance(now + H)
    assert acked == processed
