"""protocol/log.py: frames appended once, sliced by sequence, trimmed within the limits."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol import log as log_module
from pushwire.protocol.layouts import HEADER_SIZE, FrameType
from pushwire.protocol.log import MIN_SEGMENT, TOPIC_OVERHEAD, TopicLog

MESSAGE = int(FrameType.MESSAGE)

EPOCH = 7


def message(seq: int, size: int) -> bytes:
    return codec.encode_frame(F.Message(EPOCH, seq, "t", bytes([seq % 251]) * size))


def batch(seq: int, sizes: list[int]) -> bytes:
    records = tuple(F.Record(bytes([(seq + i) % 251]) * n) for i, n in enumerate(sizes))
    return codec.encode_frame(F.MessageBatch(EPOCH, seq, "t", records))


#: (payload size, or a list of record sizes for a batch), in append order
appends = st.lists(
    st.one_of(
        st.integers(0, 3000),
        st.lists(st.integers(0, 400), min_size=1, max_size=12),
    ),
    min_size=1,
    max_size=60,
)


def build(
    items: list[int | list[int]], max_count: int, max_bytes: int
) -> tuple[TopicLog, dict[int, tuple[int, bytes]]]:
    """The log, and the model: each frame by its first sequence. Odd appends go through
    append_push (the publish path), even ones through append; both must store the same."""
    log = TopicLog(EPOCH, max_count=max_count, max_bytes=max_bytes, segment_size=MIN_SEGMENT)
    frames: dict[int, tuple[int, bytes]] = {}  # first seq -> (count, frame)
    for n, item in enumerate(items):
        seq = log.head + 1
        if isinstance(item, int):
            frame, count = message(seq, item), 1
        else:
            frame, count = batch(seq, item), len(item)
        if n % 2:
            flags, body = frame[5], frame[HEADER_SIZE + 16 :]
            assert log.append_push(flags, body, count if frame[4] != MESSAGE else 0) == seq
        else:
            assert log.append(frame, count) == seq
        frames[seq] = (count, frame)
    return log, frames


def retained(log: TopicLog, frames: dict[int, tuple[int, bytes]]) -> list[tuple[int, int, bytes]]:
    return [(s, c, f) for s, (c, f) in sorted(frames.items()) if s >= log.oldest]


@given(appends, st.integers(1, 200), st.integers(1, 40_000))
def test_retains_whole_newest_frames_within_the_limits(
    items: list[int | list[int]], max_count: int, max_bytes: int
) -> None:
    log, frames = build(items, max_count, max_bytes)
    kept = retained(log, frames)
    assert kept and kept[-1][0] + kept[-1][1] - 1 == log.head  # the newest frame is kept
    assert kept[0][0] == log.oldest  # trimmed by whole frames
    assert log.frame_bytes == sum(len(f) for _, _, f in kept)
    if len(kept) > 1:
        assert log.count <= max_count and log.frame_bytes <= max_bytes
    # one frame more would have fit neither limit less its 1/64 hysteresis (trimming stops
    # as soon as it may)
    older = [(s, c, f) for s, (c, f) in sorted(frames.items()) if s < log.oldest]
    if older:
        _, c, f = older[-1]
        assert log.count + c > max_count - (max_count >> 6) or log.frame_bytes + len(
            f
        ) > max_bytes - (max_bytes >> 6)


@given(appends, st.data())
def test_slices_of_whole_frames_are_the_frames_back_to_back(
    items: list[int | list[int]], data: st.DataObject
) -> None:
    log, frames = build(items, 10_000, 30_000)
    kept = retained(log, frames)
    i = data.draw(st.integers(0, len(kept) - 1))
    j = data.draw(st.integers(i, len(kept) - 1))
    lo, hi = kept[i][0], kept[j][0] + kept[j][1] - 1
    assert b"".join(bytes(v) for v in log.slices(lo, hi)) == b"".join(
        f for _, _, f in kept[i : j + 1]
    )
    for s, c, f in kept:
        assert log.is_frame_start(s) and log.is_frame_end(s + c - 1)
        assert all(not log.is_frame_start(s + k) for k in range(1, c))
        first, count, view = log.frame(s + c - 1)
        assert (first, count, bytes(view)) == (s, c, f)


@given(appends)
def test_memory_counts_segments_and_frees_them_when_trimmed(items: list[int | list[int]]) -> None:
    log, _ = build(items * 4, 10_000, 8_000)
    # the history's frames, at most one partly used segment, a few segment tails, arrays
    assert log.memory >= log.frame_bytes
    assert log.segment_bytes <= log.frame_bytes * 4 // 3 + 2 * MIN_SEGMENT


def storage_bytes(log: TopicLog) -> int:
    """What the log really holds, by ``sys.getsizeof``: itself, and unless it is a
    placeholder (whose storage every placeholder shares) its arrays, its segment tables,
    every segment and the int objects those tables keep (each object once)."""
    held = sys.getsizeof(log)
    if log.placeholder:
        return held
    arrays = (log._starts, log._frames, log._cum)
    tables = (log._segs, log._ends)
    held += sum(sys.getsizeof(a) for a in arrays) + sum(sys.getsizeof(t) for t in tables)
    held += sum(sys.getsizeof(b) for b in log._segs.values())
    ints = {id(i): i for t in tables for i in t} | {id(i): i for i in log._ends.values()}
    return held + sum(sys.getsizeof(i) for i in ints.values())


@given(appends, st.integers(1, 200), st.integers(1, 40_000), st.booleans())
def test_the_accounted_memory_covers_what_the_log_really_holds(
    items: list[int | list[int]], max_count: int, max_bytes: int, shed: bool
) -> None:
    log, _ = build(items, max_count, max_bytes)
    if shed:
        log.shed(log.frame_bytes // 2)
    real = storage_bytes(log)
    # memory is what the budget is told at most (held); it covers what the log holds, and
    # overstates it by no more than the per-topic and per-segment overheads
    assert real <= log.memory <= log.held
    assert log.memory - real <= TOPIC_OVERHEAD + len(log._segs) * 224


@pytest.mark.parametrize("segments", [171, 342, 683, 1366])
def test_the_accounted_memory_covers_hundreds_of_segments(segments: int) -> None:
    """Per segment costs (headers, table entries, int keys) add up beyond the fixed
    overhead: the per-segment allowance must cover them on its own, also just after the
    segment tables grew (the counts are one past a dict's resize)."""
    log = TopicLog(EPOCH, max_count=100_000, max_bytes=64 << 20, segment_size=MIN_SEGMENT)
    seq = 1
    while len(log._segs) < segments:
        # mostly small frames, some that take a segment of their own
        log.append(message(seq, 3 * MIN_SEGMENT if seq % 10 == 0 else 700))
        seq += 1
    assert storage_bytes(log) <= log.memory <= log.held


def test_a_new_log_is_a_placeholder_until_its_first_frame() -> None:
    log = TopicLog(EPOCH, max_count=10, max_bytes=1 << 20)
    assert log.placeholder and log.frames == 0 and log.count == 0
    assert log.memory == log.held == TOPIC_OVERHEAD >= storage_bytes(log)
    assert log.shed(1000) == 0 and log.placeholder  # nothing to shed, nothing allocated
    log.append_push(0, message(1, 10)[HEADER_SIZE + 16 :])
    assert not log.placeholder and log.memory > TOPIC_OVERHEAD
    # the storage placeholders share was replaced, not written: a new log is still empty
    other = TopicLog(EPOCH, max_count=10, max_bytes=1 << 20)
    assert other.placeholder and other.frames == 0 and storage_bytes(other) < 512
    assert other.memory == TOPIC_OVERHEAD
    assert [bytes(v) for v in log.slices(1, 1)] == [message(1, 10)]


def test_a_frame_larger_than_a_quarter_segment_gets_its_own_exact_segment() -> None:
    log = TopicLog(EPOCH, max_count=100, max_bytes=1 << 20, segment_size=MIN_SEGMENT)
    small, big = message(1, 10), message(2, 3 * MIN_SEGMENT)
    log.append(small)
    log.append(big)
    log.append(message(3, 10))
    assert [bytes(v) for v in log.slices(2, 2)] == [big]
    assert len(log.slices(1, 3)) == 3  # three segments: shared, own, shared
    # the first shared segment was sealed almost empty: it shrank to its one frame
    assert log.segment_bytes == len(small) + len(big) + MIN_SEGMENT


def test_trimming_frees_segments_at_once() -> None:
    log = TopicLog(EPOCH, max_count=1, max_bytes=1 << 20, segment_size=MIN_SEGMENT)
    for seq in range(1, 200):
        log.append(message(seq, 1000))
    assert log.count == 1
    assert log.segment_bytes == MIN_SEGMENT  # only the segment holding the newest frame


def test_a_log_may_begin_in_the_middle_of_an_epoch() -> None:
    """A node's cache of a history kept elsewhere starts at the first frame it holds."""
    log = TopicLog(EPOCH, max_count=100, max_bytes=1 << 20, first_seq=41)
    assert (log.oldest, log.head, log.count) == (41, 40, 0)
    assert log.append(message(41, 10)) == 41
    assert log.append(batch(42, [1, 2, 3]), 3) == 42
    assert (log.oldest, log.head) == (41, 44)
    assert log.frame(43)[:2] == (42, 3)
    assert b"".join(log.slices(41, 44)) == message(41, 10) + batch(42, [1, 2, 3])


def _state(log: TopicLog) -> tuple[object, ...]:
    head, oldest = log.head, log.oldest
    frames = log.slices(oldest, head) if head >= oldest else []
    return (
        head,
        oldest,
        b"".join(bytes(f) for f in frames),
        log.frame_bytes,
        log.frames_appended,
        log.max_payload,
        log.memory,
    )


@given(st.lists(appends, min_size=1, max_size=4), st.integers(1, 200), st.integers(1, 40_000))
def test_a_run_of_pushes_is_stored_as_each_push_would_be(
    runs: list[list[int | list[int]]], max_count: int, max_bytes: int
) -> None:
    """append_pushes of one read's publishes ends where append_push one by one ends:
    the same retained frames, counters and memory, whatever the limits trimmed."""
    logs = [
        TopicLog(EPOCH, max_count=max_count, max_bytes=max_bytes, segment_size=MIN_SEGMENT)
        for _ in range(2)
    ]
    for items in runs:
        bodies = bytearray()
        spans: list[tuple[int, int, int]] = []
        for item in items:
            seq = logs[0].head + 1 + sum(c or 1 for _, _, c in spans)
            if isinstance(item, int):
                frame, count = message(seq, item), 0
            else:
                frame, count = batch(seq, item), len(item)
            start = len(bodies)
            bodies += frame[HEADER_SIZE + 16 :]
            spans.append((start, len(bodies), count))
        view = memoryview(bytes(bodies))
        one_by_one, as_run = logs
        first = one_by_one.head + 1
        for start, end, count in spans:
            one_by_one.append_push(0, view[start:end], count)
        assert as_run.append_pushes(0, view, spans) == first
        assert _state(as_run) == _state(one_by_one)
    # every new topic shares the placeholders' empty arrays: nothing may have written to them
    assert len(log_module._NO_ITEMS) == 0
