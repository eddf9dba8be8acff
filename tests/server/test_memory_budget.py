"""The broker's memory budget, its eviction order and topic ownership (no connections)."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import Outcome, SinceKind
from pushwire.server.admission import Admission, AdmissionLimits
from pushwire.server.broker import MemoryBroker, NoRoom, message_body

MiB = 1 << 20


def put(broker: MemoryBroker, topic: str, size: int) -> tuple[int, int]:
    return broker.append(topic, *message_body(topic, b"x" * size))


def held(broker: MemoryBroker) -> int:
    """What the running total should be: every log's bound (nothing charged besides), which
    is at least what the logs hold."""
    bound = sum(t.log.held for t in broker._topics.values())
    assert bound >= sum(t.memory for t in broker.stats().values())
    return bound


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 30), st.integers(0, 300_000), st.booleans()),
        min_size=1,
        max_size=60,
    )
)
def test_the_running_total_is_the_sum_of_the_logs_and_stays_within_the_budget(
    steps: list[tuple[int, int, bool]],
) -> None:
    broker = MemoryBroker(memory_limit=4 * MiB, max_topics=12, history_bytes=2 * MiB)
    handles = {}
    for topic, size, hold in steps:
        name = f"t/{topic}"
        if hold and name not in handles:
            handles[name] = broker.attach(name)
        try:
            put(broker, name, size)
        except NoRoom:
            pass
        assert broker.memory == held(broker)
        assert broker.memory <= broker.memory_limit  # type: ignore[operator]


def test_an_empty_subscribed_topic_is_charged_at_least_what_it_allocates() -> None:
    """A SUBSCRIBE alone makes a topic: the budget must not undercount such placeholders
    (the per-topic overhead covers the topic, its log and the broker's tables), and what
    it counts is what they cost, not the storage of a log that holds messages."""
    broker = MemoryBroker()
    names = [f"empty/{i}" for i in range(2000)]
    gc.collect()
    before = broker.memory
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        topics = [broker.attach(name) for name in names]
        allocated = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    charged = broker.memory - before
    allocated -= 8 * len(topics)  # less the test's own list
    assert allocated <= charged
    assert charged == len(names) * topics[0].log.memory
    assert all(t.log.placeholder for t in topics)
    put(broker, names[0], 100)
    assert not topics[0].log.placeholder and topics[0].log.memory > topics[1].log.memory
    assert broker.memory == held(broker)


@pytest.mark.spec("PW-LIMIT-7")
def test_the_largest_history_is_trimmed_first_and_the_small_one_is_untouched() -> None:
    broker = MemoryBroker(memory_limit=8 * MiB, history_bytes=64 * MiB)
    small = broker.attach("small")
    big = broker.attach("big")
    for _ in range(10):
        put(broker, "small", 1000)
    for _ in range(200):
        put(broker, "big", 64 * 1024)
    assert broker.memory <= 8 * MiB
    assert small.log.oldest == 1 and small.log.head == 10  # nothing of it went
    assert big.log.oldest > 1  # its oldest history went (a subscriber there gets GAP)
    assert broker.reclaimed > 0 and broker.evicted == 0


@pytest.mark.spec("PW-LIMIT-7")
def test_a_publish_that_cannot_fit_is_refused_and_nothing_is_stored() -> None:
    broker = MemoryBroker(memory_limit=4 * MiB)
    broker.attach("a")
    put(broker, "a", 1000)
    with pytest.raises(NoRoom) as info:
        put(broker, "a", MiB)  # more than an eighth of the budget
    assert info.value.code == ErrorCode.RESOURCE_EXHAUSTED
    assert broker.stats()["a"].head_seq == 1
    assert broker.refused == 1
    # subscribed topics each holding only their newest frame cannot be trimmed further
    for i in range(30):
        broker.attach(f"held/{i}")
        try:
            put(broker, f"held/{i}", 400_000)
        except NoRoom:
            break
    else:
        pytest.fail("the budget never ran out")
    assert broker.memory <= 4 * MiB


@pytest.mark.spec("PW-LIMIT-8", "PW-LIMIT-5")
async def test_placeholders_are_evicted_before_history_and_a_resume_then_recovers() -> None:
    broker = MemoryBroker(max_topics=10)
    epoch, _ = put(broker, "orders/eu/ledger", 100)
    put(broker, "orders/eu/ledger", 100)
    for i in range(1000):  # subscribe and unsubscribe to ever new names
        broker.detach(broker.attach(f"public/{i}"))
    assert len(broker.stats()) <= 10
    res = await broker.resolve("orders/eu/ledger", SinceKind.AFTER, epoch, 1)
    assert res.outcome == Outcome.RECOVERED and (res.start_seq, res.head_seq) == (2, 2)


@pytest.mark.spec("PW-LIMIT-8")
def test_with_only_history_left_the_least_recently_used_unheld_topic_goes() -> None:
    broker = MemoryBroker(max_topics=3)
    for name in ("a", "b", "c"):
        put(broker, name, 10)
    put(broker, "a", 10)  # b is now the least recently used
    put(broker, "d", 10)
    assert sorted(broker.stats()) == ["a", "c", "d"]


@pytest.mark.spec("PW-LIMIT-9")
def test_the_topic_quota_evicts_the_owners_own_topics_and_refuses_when_all_are_held() -> None:
    broker = MemoryBroker(max_topics_per_owner=3)
    assert broker.claim("orders/eu/ledger", "ledger")
    put(broker, "orders/eu/ledger", 10)
    for i in range(10):
        assert broker.claim(f"public/{i}", "anon@h")
        put(broker, f"public/{i}", 10)
    names = set(broker.stats())
    assert "orders/eu/ledger" in names
    assert {n for n in names if n.startswith("public/")} == {"public/7", "public/8", "public/9"}
    for i in (7, 8, 9):
        broker.attach(f"public/{i}")
    assert not broker.claim("public/10", "anon@h")
    assert broker.claim("public/9", "anon@h")  # its own topic: no new claim
    assert broker.claim("public/10", "someone-else")


def test_charged_connection_memory_counts_against_the_budget() -> None:
    broker = MemoryBroker(memory_limit=2 * MiB)
    broker.charge(MiB + MiB * 3 // 4)
    with pytest.raises(NoRoom):
        put(broker, "a", 200_000)
    broker.charge(-(MiB + MiB * 3 // 4))
    put(broker, "a", 200_000)


@pytest.mark.spec("PW-LIMIT-9")
def test_subscriptions_are_counted_per_identity_across_connections() -> None:
    admission = Admission(AdmissionLimits(subscriptions_per_identity=2))
    assert admission.subscribe("anon@h") and admission.subscribe("anon@h")
    assert not admission.subscribe("anon@h")
    assert admission.subscribe("other")
    admission.unsubscribe("anon@h")
    assert admission.subscribe("anon@h")
    assert admission.subscriptions_of("anon@h") == 2


def test_publish_bytes_are_rate_limited_per_identity() -> None:
    admission = Admission(AdmissionLimits(publish_bytes_burst=1000, publish_bytes_rate=100))
    assert admission.request("a", 0.0, nbytes=800)
    assert not admission.request("a", 0.0, nbytes=300)
    assert admission.request("b", 0.0, nbytes=300)
    assert admission.request("a", 1.0, nbytes=300)  # refilled 100 a second
