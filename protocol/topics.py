"""Topic-name syntax (SPEC.md §9.1), checked above the codec.

The decoder accepts any UTF-8 in a topic field; whether a name is *valid* is a request-level
question (INVALID_TOPIC answers one SUBSCRIBE or PUBLISH and keeps the connection), so the
check lives here and both state machines call it.
"""

from __future__ import annotations

from pushwire.protocol.errors import ErrorCode, LocalProtocolError

MAX_TOPIC_BYTES = 255  # the Str8 length prefix (layouts.Topic)
SEPARATOR = "/"


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` is not a valid name, or ``None`` when it is."""
    size = len(topic.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_TOPIC_BYTES:
        return f"topic is {size} bytes; it must be 1-{MAX_TOPIC_BYTES}"
    for ch in topic:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            return f"topic contains control character U+{ord(ch):04X}"
        if 0xD800 <= ord(ch) <= 0xDFFF:
            return "topic contains a lone surrogate"
    if "" in topic.split(SEPARATOR):
        return "topic has an empty segment (leading, trailing or doubled '/')"
    return None


def check_topic(topic: str) -> str:
    """``topic`` itself, or LocalProtocolError(INVALID_TOPIC) for the caller's own mistake."""
    problem = topic_problem(topic)
    if problem is not None:
        raise LocalProtocolError(problem, code=ErrorCode.INVALID_TOPIC, requirement="PW-TOPIC-1")
    return topic
