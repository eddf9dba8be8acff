"""Topic names and patterns (SPEC.md §9.1, §9.4): syntax, matching, overlap and cover.

Matching is checked against a regular expression built from the pattern (the model), and
overlap and cover against a brute-force walk over every name of a small alphabet, so the
segment-walking code in ``protocol/topics.py`` is never compared with itself.
"""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushwire.protocol.errors import ErrorCode, LocalProtocolError
from pushwire.protocol.testing import strategies as ps
from pushwire.protocol.topics import (
    check_pattern,
    check_topic,
    pattern_covered,
    pattern_matches,
    pattern_problem,
    patterns_overlap,
    topic_problem,
)

pytestmark = pytest.mark.spec("PW-TOPIC-8", "PW-TOPIC-9")

#: Every name of up to three segments over this alphabet: enough to tell patterns apart.
ALPHABET = ("a", "b", "$s")
NAMES = ["/".join(parts) for n in (1, 2, 3) for parts in itertools.product(ALPHABET, repeat=n)]
SEGMENTS = st.sampled_from(ALPHABET)
PATTERNS = ps.topic_patterns(SEGMENTS)
NAMES_OR_PATTERNS = st.sampled_from(NAMES) | PATTERNS


def _model_matches(pattern: str, topic: str) -> bool:
    """The §9.4 rules as a regular expression over the whole name."""
    if topic.startswith("$") and pattern[:1] in "+#":
        return False
    regex = ""
    for i, segment in enumerate(pattern.split("/")):
        sep = "" if i == 0 else "/"
        if segment == "#":
            regex += "" if i == 0 else f"(?:{sep}[^/]+)*"
            regex = ".+" if i == 0 else regex
            break
        regex += sep + ("[^/]+" if segment == "+" else re.escape(segment))
    return re.fullmatch(regex, topic) is not None


def _matches(pattern_or_name: str, topic: str) -> bool:
    if pattern_problem(pattern_or_name) is None:
        return pattern_matches(pattern_or_name, topic)
    return pattern_or_name == topic


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("orders/+", "orders/eu", True),
        ("orders/+", "orders/us", True),
        ("orders/+", "orders", False),
        ("orders/+", "orders/eu/x", False),
        ("orders/+", "other/x", False),
        ("orders/#", "orders", True),
        ("orders/#", "orders/eu/x", True),
        ("orders/#", "ordersx", False),
        ("+/eu", "orders/eu", True),
        ("#", "a/b/c", True),
        ("#", "$sys/stats", False),
        ("+/stats", "$sys/stats", False),
        ("$sys/#", "$sys/stats", True),
    ],
)
def test_matching_examples_of_the_spec(pattern: str, topic: str, expected: bool) -> None:
    assert pattern_matches(pattern, topic) is expected


@pytest.mark.parametrize(
    "pattern", ["orders/#/eu", "orders/e+", "orders/##", "orders/eu", "+/", ""]
)
def test_rejects_patterns_that_break_the_syntax(pattern: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        check_pattern(pattern)
    assert info.value.code == ErrorCode.INVALID_TOPIC


@pytest.mark.spec("PW-TOPIC-7")
@pytest.mark.parametrize("topic", ["orders/+", "orders/#", "a#b", "+", "c++"])
def test_plus_and_hash_are_reserved_in_topic_names(topic: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        check_topic(topic)
    assert info.value.code == ErrorCode.INVALID_TOPIC


def test_star_and_greater_than_are_ordinary_characters() -> None:
    assert topic_problem("a/*/>") is None


@given(ps.topic_patterns())
def test_generated_patterns_satisfy_the_pattern_syntax(pattern: str) -> None:
    assert pattern_problem(pattern) is None
    assert topic_problem(pattern) is not None  # a pattern is never a name


@given(PATTERNS, st.sampled_from(NAMES))
def test_matching_agrees_with_the_regular_expression_model(pattern: str, topic: str) -> None:
    assert pattern_matches(pattern, topic) is _model_matches(pattern, topic)


@given(NAMES_OR_PATTERNS, NAMES_OR_PATTERNS)
def test_overlap_is_a_shared_name(a: str, b: str) -> None:
    shared = any(_matches(a, t) and _matches(b, t) for t in [*NAMES, a, b])
    assert patterns_overlap(a, b) is shared


@given(PATTERNS, NAMES_OR_PATTERNS)
def test_cover_is_every_name_matched(pattern: str, by: str) -> None:
    # Deeper names than the alphabet's three segments: '#' reaches below them.
    names = NAMES + [n + "/a/b" for n in NAMES]
    covered = all(_matches(by, t) for t in names if pattern_matches(pattern, t))
    assert pattern_covered(pattern, by) is covered
