"""What the application of a client under test saw, read from its output contract.

The contract (IMPLEMENTING.md, "Client output contract"): a client run by ``pushwire
testserver --client-command`` prints one JSON object per line on stdout for every message,
gap and epoch change it hands to its application, in the order the application sees them:

* ``{"event": "message", "topic": T, "epoch": E, "seq": S, ...}``
* ``{"event": "gap", "topic": T, "epoch": E, "first": F, "last": L, "reason": R}``
* ``{"event": "epoch_changed", "topic": T, "epoch": E, ...}``

u64 values may be JSON numbers or decimal strings; other members are ignored, and so are
lines that are not such objects (a client may print other things). ``pushwire sub --format
json`` is the reference implementation. Only the event, the sequence numbers and the gap
range are kept: payloads can be megabytes and never reach the report. For a pattern
scenario the items are kept per topic (every line must then name its topic), and compared
topic by topic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pushwire.protocol.topics import pattern_matches, topic_problem

__all__ = [
    "AppItem",
    "matches",
    "matches_topics",
    "parse_line",
    "parse_pattern_line",
    "render",
    "render_topics",
]

#: ("msg", seq), ("gap", first, last), ("epoch",) or ("error",), as ``Scenario.app`` states.
AppItem = tuple[Any, ...]


def _u64(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _object(line: bytes | str) -> dict[str, Any] | None:
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def parse_line(line: bytes | str, topic: str) -> AppItem | None:
    """The application item a contract line states for ``topic``, or None."""
    obj = _object(line)
    if obj is None or obj.get("topic", topic) != topic:
        return None
    return _item(obj)


def parse_pattern_line(line: bytes | str, pattern: str) -> tuple[str, AppItem] | None:
    """(topic, item) for a contract line about a topic ``pattern`` matches, or None. A
    line of a pattern subscription must name its topic: the topic is what tells the
    topics' sequences apart."""
    obj = _object(line)
    if obj is None:
        return None
    topic = obj.get("topic")
    if not isinstance(topic, str) or topic_problem(topic) or not pattern_matches(pattern, topic):
        return None
    item = _item(obj)
    return None if item is None else (topic, item)


def _item(obj: dict[str, Any]) -> AppItem | None:
    match obj.get("event"):
        case "message":
            seq = _u64(obj.get("seq"))
            return None if seq is None else ("msg", seq)
        case "gap":
            first, last = _u64(obj.get("first")), _u64(obj.get("last"))
            return None if first is None or last is None else ("gap", first, last)
        case "epoch_changed":
            return ("epoch",)
    return None


def matches(expected: Sequence[AppItem], seen: Sequence[AppItem]) -> bool:
    """``seen`` begins with ``expected`` (connection errors left out: the contract has no
    line for them); a message repeated right after itself is one delivery."""
    wanted = [item for item in expected if item[0] != "error"]
    dedup: list[AppItem] = []
    for item in seen:
        if item[0] == "msg" and dedup and dedup[-1] == item:
            continue
        dedup.append(item)
    return dedup[: len(wanted)] == wanted


def matches_topics(
    expected: Mapping[str, Sequence[AppItem]], seen: Mapping[str, Sequence[AppItem]]
) -> bool:
    """Per topic, ``seen`` begins with ``expected`` (:func:`matches`); between topics no
    order is promised, so none is checked."""
    return all(matches(items, seen.get(topic, ())) for topic, items in expected.items())


def render_topics(items: Mapping[str, Sequence[AppItem]], limit: int = 12) -> str:
    """``orders/eu: msg 1..3, gap 4..6; orders/us: msg 1..2``, topics in name order."""
    return "; ".join(f"{t}: {render(items[t], limit)}" for t in sorted(items)) or "nothing"


def render(items: Sequence[AppItem], limit: int = 12) -> str:
    """A short human form: ``msg 1..5, gap 6..10, epoch, msg 1..3``."""
    parts: list[str] = []
    run: list[int] = []

    def flush() -> None:
        if run:
            parts.append(f"msg {run[0]}" if len(run) == 1 else f"msg {run[0]}..{run[-1]}")
            run.clear()

    for item in items:
        if item[0] == "msg" and (not run or item[1] == run[-1] + 1):
            run.append(item[1])
            continue
        flush()
        if item[0] == "msg":
            run.append(item[1])
        elif item[0] == "gap":
            parts.append(f"gap {item[1]}..{item[2]}")
        else:
            parts.append(str(item[0]))
    flush()
    if len(parts) > limit:
        parts = [*parts[:limit], f"... ({len(parts) - limit} more)"]
    return ", ".join(parts) or "nothing"
