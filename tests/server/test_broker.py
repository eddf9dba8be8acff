"""The in-memory broker and the resolution of start positions (no connections)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import Outcome, SinceKind
from pushwire.server.broker import (
    InvalidPosition,
    MemoryBroker,
    Resolution,
    TopicPosition,
    batch_body,
    message_body,
    resolve_since,
)


async def publish(broker: MemoryBroker, topic: str, payload: bytes) -> tuple[int, int]:
    return await broker.publish(topic, *message_body(topic, payload))


# -- resolve_since: SPEC §6.2 as a table --------------------------------------------------------

POS = TopicPosition(epoch=7, head_seq=20, oldest_seq=11)  # 11..20 retained
EMPTY = TopicPosition(epoch=7, head_seq=20, oldest_seq=21)  # nothing retained
HIST = ErrorCode.HISTORY_EXPIRED


@pytest.mark.spec("PW-SUB-8", "PW-SUB-9", "PW-SUB-10", "PW-SUB-11", "PW-SUB-12", "PW-SUB-13")
@pytest.mark.spec("PW-SUB-14")
@pytest.mark.parametrize(
    ("position", "since", "expected"),
    [
        (POS, (SinceKind.NEW,), Resolution(Outcome.NEW, 7, 21, 20)),
        (POS, (SinceKind.OLDEST,), Resolution(Outcome.RECOVERED, 7, 11, 20)),
        (EMPTY, (SinceKind.OLDEST,), Resolution(Outcome.RECOVERED, 7, 21, 20)),
        (POS, (SinceKind.AFTER, 7, 20), Resolution(Outcome.RECOVERED, 7, 21, 20)),
        (POS, (SinceKind.AFTER, 7, 10), Resolution(Outcome.RECOVERED, 7, 11, 20)),
        (POS, (SinceKind.AFTER, 7, 9), Resolution(Outcome.GAP, 7, 11, 20, 10, 10, HIST)),
        (POS, (SinceKind.AFTER, 7, 0), Resolution(Outcome.GAP, 7, 11, 20, 1, 10, HIST)),
        (EMPTY, (SinceKind.AFTER, 7, 15), Resolution(Outcome.GAP, 7, 21, 20, 16, 20, HIST)),
        (EMPTY, (SinceKind.AFTER, 7, 20), Resolution(Outcome.RECOVERED, 7, 21, 20)),
        (POS, (SinceKind.AFTER, 8, 999), Resolution(Outcome.EPOCH_CHANGED, 7, 11, 20)),
        (POS, (SinceKind.AFTER, 0, 0), Resolution(Outcome.EPOCH_CHANGED, 7, 11, 20)),
        (EMPTY, (SinceKind.AFTER, 1, 5), Resolution(Outcome.EPOCH_CHANGED, 7, 21, 20)),
        (POS, (SinceKind.LAST, 0, 0, 5), Resolution(Outcome.RECOVERED, 7, 16, 20)),
        (POS, (SinceKind.LAST, 0, 0, 10), Resolution(Outcome.RECOVERED, 7, 11, 20)),
        (POS, (SinceKind.LAST, 0, 0, 15), Resolution(Outcome.GAP, 7, 11, 20, 6, 10, HIST)),
        (POS, (SinceKind.LAST, 0, 0, 10**9), Resolution(Outcome.GAP, 7, 11, 20, 1, 10, HIST)),
        (POS, (SinceKind.LAST, 0, 0, 0), Resolution(Outcome.RECOVERED, 7, 21, 20)),
    ],
)
def test_start_positions_resolve_as_the_spec_says(
    position: TopicPosition, since: tuple[int, ...], expected: Resolution
) -> None:
    assert resolve_since(position, *since) == expected


@pytest.mark.spec("PW-SUB-5")
def test_a_position_beyond_the_head_of_the_current_epoch_is_invalid() -> None:
    with pytest.raises(InvalidPosition):
        resolve_since(POS, SinceKind.AFTER, 7, 21)


@given(
    head=st.integers(0, 50),
    retained=st.integers(0, 50),
    after=st.integers(0, 60),
)
def test_a_resolution_never_loses_a_message_silently(head: int, retained: int, after: int) -> None:
    """Whatever the position: every sequence after it is delivered or inside the gap."""
    retained = min(retained, head)
    position = TopicPosition(3, head, head - retained + 1)
    if after > head:
        return
    res = resolve_since(position, SinceKind.AFTER, 3, after)
    covered = set(range(res.start_seq, head + 1))
    if res.outcome == Outcome.GAP:
        covered |= set(range(res.gap_first, res.gap_last + 1))
        assert res.gap_last == res.start_seq - 1
    assert covered == set(range(after + 1, head + 1))


# -- the history ------------------------------------------------------------------------------


@pytest.mark.spec("PW-ORDER-1", "PW-ORDER-2", "PW-ORDER-3", "PW-ORDER-14")
async def test_sequences_start_at_one_and_a_reset_changes_the_epoch() -> None:
    broker = MemoryBroker()
    epochs = set()
    for _ in range(20):
        epoch, seq = await publish(broker, "t", b"x")
        assert seq == 1 and epoch != 0
        assert epoch not in epochs
        epochs.add(epoch)
        assert (await publish(broker, "t", b"y")) == (epoch, 2)
        await broker.reset_topic("t")
    assert len(epochs) == 20


@pytest.mark.spec("PW-LIMIT-2")
async def test_history_is_bounded_by_count() -> None:
    broker = MemoryBroker(history_count=5)
    for i in range(12):
        await publish(broker, "t", b"%d" % i)
    position = await broker.position("t")
    assert (position.head_seq, position.oldest_seq) == (12, 8)
    assert broker.stats()["t"].entries == 5


@pytest.mark.spec("PW-LIMIT-2")
async def test_history_is_bounded_by_bytes_but_keeps_the_newest_entry() -> None:
    broker = MemoryBroker(history_bytes=1000)
    for _ in range(10):
        await publish(broker, "t", b"x" * 300)
    stats = broker.stats()["t"]
    assert stats.bytes <= 1000
    assert stats.entries == 3
    await publish(broker, "t", b"x" * 5000)  # bigger than the whole budget: still kept
    stats = broker.stats()["t"]
    assert (stats.entries, stats.oldest_seq, stats.head_seq) == (1, 11, 11)


async def test_reads_start_inside_a_batch_and_respect_count_and_bytes() -> None:
    broker = MemoryBroker()
    await publish(broker, "t", b"a")  # 1
    flags, body, start, ends = batch_body("t", tuple(F.Record(b"%d" % i) for i in range(5)))
    _, first = await broker.publish_batch("t", flags, body, start, ends)  # 2..6
    await publish(broker, "t", b"z")  # 7
    assert first == 2
    result = await broker.read("t", 4, max_count=100, max_bytes=1 << 20)
    assert [(e.first_seq, e.count) for e in result.entries] == [(2, 5), (7, 1)]
    result = await broker.read("t", 4, max_count=3, max_bytes=1 << 20)
    assert [e.first_seq for e in result.entries] == [2]
    result = await broker.read("t", 1, max_count=100, max_bytes=1)  # at least one entry
    assert [e.first_seq for e in result.entries] == [1]
    assert (await broker.read("t", 8, max_count=5, max_bytes=100)).entries == []


async def test_a_sliced_batch_is_the_batch_its_records_would_make() -> None:
    broker = MemoryBroker()
    records = tuple(F.Record(b"r%d" % i, (("k", b"%d" % i),)) for i in range(6))
    flags, body, start, ends = batch_body("a/b", records)
    epoch, _ = await broker.publish_batch("a/b", flags, body, start, ends)
    (entry,) = (await broker.read("a/b", 1, max_count=10, max_bytes=1 << 20)).entries
    assert entry.frame == codec.encode_frame(F.MessageBatch(epoch, 1, "a/b", records))
    for i in range(6):
        for j in range(i + 1, 7):
            sliced = entry.sub_batch(i, j)
            assert sliced == codec.encode_frame(F.MessageBatch(epoch, 1 + i, "a/b", records[i:j]))
            assert entry.sub_batch_size(i, j) == len(sliced) - 6
    assert entry.sub_batch(0, 6) is entry.frame


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=5), st.booleans())
async def test_a_stored_batch_knows_where_its_records_are(
    payloads: list[bytes], with_headers: bool
) -> None:
    broker = MemoryBroker()
    records = tuple(F.Record(p, (("k", p),) if with_headers else None) for p in payloads)
    await broker.publish_batch("a/b", *batch_body("a/b", records))
    (entry,) = (await broker.read("a/b", 1, max_count=10, max_bytes=1 << 20)).entries
    assert entry.offsets == codec.batch_record_offsets(entry.frame)


@pytest.mark.spec("PW-LIMIT-5")
async def test_topics_beyond_the_bound_are_evicted_unless_subscribed() -> None:
    broker = MemoryBroker(max_topics=3)
    stop = broker.listen("kept", lambda *args: None)
    old_epoch, _ = await publish(broker, "a", b"")
    await publish(broker, "b", b"")
    await publish(broker, "c", b"")  # evicts "a", the least recently used unwatched topic
    assert set(broker.stats()) == {"kept", "b", "c"}
    new_epoch, seq = await publish(broker, "a", b"")
    assert seq == 1 and new_epoch != old_epoch
    assert "kept" in broker.stats()
    stop()


async def test_listeners_hear_appends_and_resets() -> None:
    broker = MemoryBroker()
    heard: list[tuple[int, int, int, int]] = []
    stop = broker.listen("t", lambda *args: heard.append(args))
    epoch, _ = await publish(broker, "t", b"abc")
    new = await broker.reset_topic("t")
    stop()
    await publish(broker, "t", b"unheard")
    assert [h[:3] for h in heard] == [(epoch, 1, 1), (new, 0, 0)]


async def test_a_failing_listener_does_not_break_the_publisher() -> None:
    broker = MemoryBroker()

    def explode(*args: int) -> None:
        raise RuntimeError("listener bug")

    broker.listen("t", explode)
    assert (await publish(broker, "t", b""))[1] == 1
