"""protocol/delivery.py: what a subscription gets per round, against a plain model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.delivery import Gap, Push, behind, lag, plan_round
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import HEADER_SIZE, SlowConsumerPolicy
from pushwire.protocol.log import MIN_SEGMENT, TopicLog

EPOCH = 11

appends = st.lists(
    st.one_of(
        st.integers(0, 1500),
        st.lists(st.integers(0, 300), min_size=1, max_size=10),
    ),
    min_size=1,
    max_size=40,
)


def build(items: list[int | list[int]]) -> tuple[TopicLog, dict[int, bytes]]:
    """The log and the model: each sequence's payload."""
    log = TopicLog(EPOCH, max_count=10_000, max_bytes=1 << 22, segment_size=MIN_SEGMENT)
    payloads: dict[int, bytes] = {}
    for item in items:
        seq = log.head + 1
        sizes = [item] if isinstance(item, int) else item
        records = [bytes([(seq + i) % 251]) * n for i, n in enumerate(sizes)]
        for i, r in enumerate(records):
            payloads[seq + i] = r
        if isinstance(item, int):
            log.append(codec.encode_frame(F.Message(EPOCH, seq, "t", records[0])))
        else:
            frame = F.MessageBatch(EPOCH, seq, "t", tuple(F.Record(r) for r in records))
            log.append(codec.encode_frame(frame), len(records))
    return log, payloads


def decode_all(data: bytes) -> list[F.Frame]:
    out = []
    offset = 0
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        frame = codec.decode_body(
            data[offset + 4],
            data[offset + 5],
            data[offset + HEADER_SIZE : offset + HEADER_SIZE + length],
        )
        assert frame is not None
        out.append(frame)
        offset += HEADER_SIZE + length
    return out


def too_large(payload: bytes, peer_max: int) -> bool:
    """A record or message that can never fit the peer (alone in the smallest frame: a
    MESSAGE, or a batch of one record, whichever it was published as)."""
    message = codec.encode_frame(F.Message(EPOCH, 1, "t", payload))
    batch = codec.encode_frame(F.MessageBatch(EPOCH, 1, "t", (F.Record(payload),)))
    return len(message) - HEADER_SIZE > peer_max or len(batch) - HEADER_SIZE > peer_max


@given(
    appends,
    st.data(),
    st.lists(st.integers(0, 7), min_size=1, max_size=30),
    st.lists(st.integers(1, 6000), min_size=1, max_size=30),
    st.sampled_from([1 << 20, 600, 200]),
)
def test_rounds_deliver_every_sequence_once_in_order_within_credit(
    items: list[int | list[int]],
    data: st.DataObject,
    grants: list[int],
    budgets: list[int],
    peer_max: int,
) -> None:
    log, payloads = build(items)
    start = data.draw(st.integers(1, log.head))
    seq, credit = start, 0
    seen: list[int] = []
    for round_ in range(200):
        credit += grants[round_ % len(grants)] if round_ < 60 else 50
        budget = budgets[round_ % len(budgets)]
        steps, nxt = plan_round(log, seq, credit, budget, peer_max)
        for step in steps:
            if isinstance(step, Gap):
                assert step.reason == ErrorCode.FRAME_TOO_LARGE
                assert step.first == seq
                for s in range(step.first, step.last + 1):
                    assert too_large(payloads[s], peer_max) or peer_max >= 1 << 20
                seen.extend(range(step.first, step.last + 1))
                seq = step.last + 1
                continue
            assert isinstance(step, Push)
            assert step.first == seq and step.count <= credit  # PW-FLOW-2
            credit -= step.count
            frames = decode_all(b"".join(bytes(d) for d in step.data))
            got: list[tuple[int, bytes]] = []
            for frame in frames:
                if isinstance(frame, F.Message):
                    got.append((frame.seq, frame.payload))
                else:
                    assert isinstance(frame, F.MessageBatch)
                    got.extend((frame.base_seq + i, r.payload) for i, r in enumerate(frame.records))
            assert [s for s, _ in got] == list(range(step.first, step.last + 1))
            assert all(payloads[s] == p for s, p in got)  # records unchanged (PW-FLOW-3)
            seen.extend(s for s, _ in got)
            seq = step.last + 1
        assert nxt == seq
        if seq > log.head:
            break
    assert seen == list(range(start, log.head + 1))  # contiguous, each once (PW-ORDER-6)


@given(appends, st.integers(1, 100_000))
def test_with_enough_credit_and_budget_a_round_is_one_slice_per_segment(
    items: list[int | list[int]], budget: int
) -> None:
    log, _ = build(items)
    steps, nxt = plan_round(log, 1, 1 << 32, 1 << 30, 1 << 20)
    assert nxt == log.head + 1
    assert len(steps) == 1  # one push: credit is charged once per round
    assert sum(len(d) for d in steps[0].data) <= log.size(1, log.head)  # type: ignore[union-attr]


def test_zero_credit_plans_nothing() -> None:
    log, _ = build([10, [1, 2, 3]])
    assert plan_round(log, 1, 0, 1 << 20, 1 << 20) == ([], 1)


def test_credit_ending_inside_a_batch_cuts_it() -> None:
    log, _ = build([[1, 2, 3, 4]])
    steps, nxt = plan_round(log, 2, 2, 1 << 20, 1 << 20)
    assert nxt == 4
    (push,) = steps
    assert isinstance(push, Push) and (push.first, push.last) == (2, 3)
    (frame,) = decode_all(b"".join(bytes(d) for d in push.data))
    assert isinstance(frame, F.MessageBatch) and frame.base_seq == 2 and len(frame.records) == 2


def test_behind_closes_under_disconnect_and_gaps_under_drop_once_there_is_credit() -> None:
    assert behind(SlowConsumerPolicy.DROP, 5, 5, 0) is None
    assert behind(SlowConsumerPolicy.DISCONNECT, 3, 5, 9) == behind(
        SlowConsumerPolicy.DISCONNECT, 3, 5, 0
    )
    closing = behind(SlowConsumerPolicy.DISCONNECT, 3, 5, 9)
    assert closing is not None and closing.close and closing.lost == (3, 4)
    dropping = behind(SlowConsumerPolicy.DROP, 3, 5, 1)
    assert dropping is not None and not dropping.close and dropping.gap == (3, 4)
    waiting = behind(SlowConsumerPolicy.DROP, 3, 5, 0)
    assert waiting is not None and waiting.gap is None


def test_lag_closes_only_under_disconnect_and_only_beyond_max_lag() -> None:
    assert lag(SlowConsumerPolicy.DISCONNECT, 20, 11, 10) is None  # lag 10 is not beyond 10
    assert lag(SlowConsumerPolicy.DISCONNECT, 21, 11, 10) == 11
    assert lag(SlowConsumerPolicy.DROP, 1000, 1, 10) is None
