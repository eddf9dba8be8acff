"""Who may do what: permissions as topic patterns, shared by the token file and signed
tokens (``tokens.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pushwire.protocol.topics import pattern_covered, pattern_matches

__all__ = ["OPEN", "Identity", "Permissions", "topic_matches"]


def topic_matches(pattern: str, topic: str) -> bool:
    """``#`` matches every topic, ``a/b/#`` matches ``a/b`` and everything below it, ``+``
    one segment (SPEC.md §9.4, the same syntax as pattern subscriptions); a pattern without
    a wildcard only the topic it names. A reserved topic (first segment starting with
    ``$``) is matched only by a pattern that starts with ``$`` too, as in MQTT."""
    if topic.startswith("$") and not pattern.startswith("$"):
        return False  # reserved topics (SPEC.md §9.3) are only matched by name
    return pattern_matches(pattern, topic)


@dataclass(frozen=True, slots=True)
class Permissions:
    """What one auth token may do: topic patterns (see :func:`topic_matches`)."""

    subscribe: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()

    def allows(self, action: str, topic: str) -> bool:
        patterns = self.subscribe if action == "subscribe" else self.publish
        return any(topic_matches(p, topic) for p in patterns)

    def allows_pattern(self, action: str, pattern: str) -> bool:
        """Whether one of the identity's patterns matches every topic ``pattern`` can match
        (SPEC.md §6.7: a pattern subscription needs permission for all it may deliver)."""
        patterns = self.subscribe if action == "subscribe" else self.publish
        return any(pattern_covered(pattern, p) for p in patterns)

    @classmethod
    def from_json(cls, value: Any) -> Permissions:
        """``{"subscribe": [...], "publish": [...]}`` (both optional) as in an auth file."""
        if not isinstance(value, dict) or set(value) - {"subscribe", "publish"}:
            raise ValueError('expected {"subscribe": [patterns], "publish": [patterns]}')
        out = {}
        for key in ("subscribe", "publish"):
            patterns = value.get(key, [])
            if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
                raise ValueError(f"{key!r} must be a list of topic patterns")
            out[key] = tuple(patterns)
        return cls(**out)


#: The permissions of every client when the server has no auth configured.
OPEN = Permissions(subscribe=("#", "$sys/stats"), publish=("#",))


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a connection is, as its HELLO token established it."""

    #: For logs and per-identity limits: the signed token's ``sub``, ``token:<digest>`` for
    #: a token of the token file (never the token itself, PW-SEC-10), "" when anonymous.
    name: str
    permissions: Permissions
    #: When a signed token stops being valid (seconds since the epoch); None: never.
    expires_at: float | None = None

    @property
    def named(self) -> bool:
        return bool(self.name)
