"""The topic and pattern tries agree with plain pattern matching (SPEC.md §9.4)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushwire.protocol.testing import strategies as ps
from pushwire.protocol.topics import pattern_matches
from pushwire.server.topic_index import PatternIndex, TopicIndex

pytestmark = pytest.mark.spec("PW-TOPIC-9", "PW-SUB-29")

ALPHABET = ("a", "b", "$s")
NAMES = ["/".join(p) for n in (1, 2, 3) for p in itertools.product(ALPHABET, repeat=n)]
PATTERNS = ps.topic_patterns(st.sampled_from(ALPHABET))


def test_orders_example() -> None:
    index = TopicIndex()
    for name in ("orders/eu", "orders/us", "other/x", "orders", "orders/eu/late"):
        index.add(name)
    assert sorted(index.match("orders/+")) == ["orders/eu", "orders/us"]
    assert sorted(index.match("orders/#")) == ["orders", "orders/eu", "orders/eu/late", "orders/us"]
    assert sorted(index.match("#")) == sorted(
        ["orders/eu", "orders/us", "other/x", "orders", "orders/eu/late"]
    )


@given(st.sets(st.sampled_from(NAMES)), st.sets(st.sampled_from(NAMES)), PATTERNS)
def test_topic_index_matches_as_the_rules_do(
    names: set[str], removed: set[str], pattern: str
) -> None:
    index = TopicIndex()
    for name in names:
        index.add(name)
    for name in removed:
        index.remove(name)
    present = names - removed
    assert len(index) == len(present)
    assert sorted(index.match(pattern)) == sorted(n for n in present if pattern_matches(pattern, n))


@given(st.lists(PATTERNS, max_size=8), st.sets(st.integers(0, 7)), st.sampled_from(NAMES))
def test_pattern_index_matches_as_the_rules_do(
    patterns: list[str], removed: set[int], name: str
) -> None:
    index = PatternIndex()
    for key, pattern in enumerate(patterns):
        index.add(pattern, key)
    for key in removed:
        if key < len(patterns):
            index.remove(patterns[key], key)
    live = {k for k in range(len(patterns)) if k not in removed}
    assert len(index) == len(live)
    assert index.match(name) == {k for k in live if pattern_matches(patterns[k], name)}
