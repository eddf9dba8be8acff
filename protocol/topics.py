"""Topic-name and topic-pattern syntax (SPEC.md §9.1, §9.4), checked above the codec.

The decoder accepts any UTF-8 in a topic field; whether a name is *valid* is a request-level
question (INVALID_TOPIC answers one SUBSCRIBE or PUBLISH and keeps the connection), so the
check lives here and both state machines call it.

Patterns are MQTT's, and the same as the server's permission patterns: a segment ``+``
matches exactly one segment, a last segment ``#`` matches the rest of the name including
none of it (``a/#`` matches ``a`` and ``a/b/c``). A wildcard in the first segment never
matches a reserved topic (first segment starting with ``$``, §9.3). Because ``+`` and ``#``
are reserved, a name can never be mistaken for a pattern.
"""

from __future__ import annotations

from pushwire.protocol.errors import ErrorCode, LocalProtocolError

MAX_TOPIC_BYTES = 255  # the Str8 length prefix (layouts.Topic)
SEPARATOR = "/"
ONE = "+"  # matches exactly one segment
REST = "#"  # as the last segment: matches the remaining segments, zero or more
WILDCARDS = frozenset(ONE + REST)
RESERVED_PREFIX = "$"  # §9.3


def _text_problem(text: str, what: str) -> str | None:
    size = len(text.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_TOPIC_BYTES:
        return f"{what} is {size} bytes; it must be 1-{MAX_TOPIC_BYTES}"
    for ch in text:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            return f"{what} contains control character U+{ord(ch):04X}"
        if 0xD800 <= ord(ch) <= 0xDFFF:
            return f"{what} contains a lone surrogate"
    if "" in text.split(SEPARATOR):
        return f"{what} has an empty segment (leading, trailing or doubled '/')"
    return None


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` is not a valid name, or ``None`` when it is."""
    problem = _text_problem(topic, "topic")
    if problem is None and WILDCARDS & set(topic):
        return "topic contains '+' or '#', which are reserved for patterns"
    return problem


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid pattern (§9.4), or ``None`` when it is."""
    problem = _text_problem(pattern, "pattern")
    if problem is not None:
        return problem
    segments = pattern.split(SEPARATOR)
    for i, segment in enumerate(segments):
        if segment in (ONE, REST):
            if segment == REST and i != len(segments) - 1:
                return "'#' is allowed only as the last segment"
        elif WILDCARDS & set(segment):
            return f"segment {segment!r} mixes a wildcard with other characters"
    if not WILDCARDS & set(segments):
        return "a pattern has at least one '+' or '#' segment; subscribe to a name instead"
    return None


def is_pattern(text: str) -> bool:
    """Whether ``text`` names a pattern rather than a topic (it contains a wildcard)."""
    return bool(WILDCARDS & set(text))


def pattern_matches(pattern: str, topic: str) -> bool:
    """Whether the valid ``pattern`` matches the valid name ``topic`` (§9.4)."""
    if topic.startswith(RESERVED_PREFIX) and pattern[:1] in WILDCARDS:
        return False
    want, have = pattern.split(SEPARATOR), topic.split(SEPARATOR)
    for i, segment in enumerate(want):
        if segment == REST:
            return True
        if i >= len(have) or (segment != ONE and segment != have[i]):
            return False
    return len(want) == len(have)


def patterns_overlap(a: str, b: str) -> bool:
    """Whether some name matches both ``a`` and ``b`` (each a pattern or a name)."""
    sa, sb = a.split(SEPARATOR), b.split(SEPARATOR)
    for i in range(max(len(sa), len(sb))):
        x = sa[i] if i < len(sa) else None
        y = sb[i] if i < len(sb) else None
        if x == REST or y == REST:
            other = y if x == REST else x
            # the other side must be able to match a name whose first segment is reserved
            return not (i == 0 and other is not None and other.startswith(RESERVED_PREFIX))
        if x is None or y is None:
            return False
        if x == ONE and y == ONE:
            continue
        if x == ONE or y == ONE:
            literal = y if x == ONE else x
            if i == 0 and literal.startswith(RESERVED_PREFIX):
                return False
            continue
        if x != y:
            return False
    return True


def pattern_covered(pattern: str, by: str) -> bool:
    """Whether every name ``pattern`` matches is matched by ``by`` (a pattern or a name)."""
    want, have = pattern.split(SEPARATOR), by.split(SEPARATOR)
    if want[0].startswith(RESERVED_PREFIX) and have[0] in WILDCARDS:
        return False  # a wildcard first segment never matches a reserved topic
    if want == [REST] and have == [ONE, REST]:
        return True  # both match every name (a name has at least one segment)
    for i, segment in enumerate(have):
        if segment == REST:
            return True
        if i >= len(want) or want[i] == REST:
            return False
        if segment != ONE and segment != want[i]:
            return False
    return len(want) == len(have)


def check_topic(topic: str) -> str:
    """``topic`` itself, or LocalProtocolError(INVALID_TOPIC) for the caller's own mistake."""
    problem = topic_problem(topic)
    if problem is not None:
        raise LocalProtocolError(problem, code=ErrorCode.INVALID_TOPIC, requirement="PW-TOPIC-1")
    return topic


def check_pattern(pattern: str) -> str:
    """``pattern`` itself, or LocalProtocolError(INVALID_TOPIC) (§9.4)."""
    problem = pattern_problem(pattern)
    if problem is not None:
        raise LocalProtocolError(problem, code=ErrorCode.INVALID_TOPIC, requirement="PW-TOPIC-8")
    return pattern
