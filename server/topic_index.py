"""Tries over topic segments: which topics a pattern matches, which patterns a topic
matches (SPEC.md §9.4), each answered by a walk over segments rather than a scan.

Theory of operation: :class:`TopicIndex` holds the names of existing topics in a trie
keyed by segment. Matching a pattern walks it: a literal segment follows one child, ``+``
follows every child one level down, a last ``#`` takes the whole subtree, including the
node it stands on (``a/#`` matches ``a``). :class:`PatternIndex` holds the patterns of
live pattern subscriptions in a trie of the same shape, keyed by the pattern's segments;
matching a new topic walks the topic's segments, at each level following the literal
child, the ``+`` child, and collecting the ``#`` child. Both walks visit only the nodes
that can match, so a new topic costs O(depth x wildcard fan-out) whatever the number of
topics, and a new pattern costs what it matches plus the literal path to it.

A wildcard in the first segment never matches a reserved topic (first segment starting
with ``$``, SPEC.md §9.3); both walks apply that rule at the root.
"""

from __future__ import annotations

from collections.abc import Iterator

from pushwire.protocol.topics import ONE, RESERVED_PREFIX, REST, SEPARATOR

__all__ = ["PatternIndex", "TopicIndex"]


class _Node:
    __slots__ = ("children", "terminal")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.terminal: str | None = None  # the full name ending here, if one does


class TopicIndex:
    """The names of existing topics, matched by pattern."""

    def __init__(self) -> None:
        self._root = _Node()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, name: str) -> None:
        node = self._root
        for segment in name.split(SEPARATOR):
            node = node.children.setdefault(segment, _Node())
        if node.terminal is None:
            node.terminal = name
            self._size += 1

    def remove(self, name: str) -> None:
        """Forget ``name``; prunes the branches left empty. Unknown names are ignored."""
        path = [self._root]
        for segment in name.split(SEPARATOR):
            child = path[-1].children.get(segment)
            if child is None:
                return
            path.append(child)
        if path[-1].terminal is None:
            return
        path[-1].terminal = None
        self._size -= 1
        segments = name.split(SEPARATOR)
        for depth in range(len(segments), 0, -1):
            node = path[depth]
            if node.terminal is not None or node.children:
                break
            del path[depth - 1].children[segments[depth - 1]]

    def match(self, pattern: str) -> Iterator[str]:
        """The names ``pattern`` (a valid pattern, or a name) matches, in no set order."""
        return self._walk(self._root, pattern.split(SEPARATOR), 0)

    def _walk(self, node: _Node, segments: list[str], depth: int) -> Iterator[str]:
        if depth == len(segments):
            if node.terminal is not None:
                yield node.terminal
            return
        segment = segments[depth]
        if segment == REST:
            yield from self._subtree(node, root=depth == 0)
        elif segment == ONE:
            for key, child in node.children.items():
                if depth == 0 and key.startswith(RESERVED_PREFIX):
                    continue
                yield from self._walk(child, segments, depth + 1)
        else:
            found = node.children.get(segment)
            if found is not None:
                yield from self._walk(found, segments, depth + 1)

    @staticmethod
    def _subtree(node: _Node, *, root: bool) -> Iterator[str]:
        stack = [node]
        if root:  # '#' alone: every name, reserved ones excepted
            stack = [c for k, c in node.children.items() if not k.startswith(RESERVED_PREFIX)]
        while stack:
            current = stack.pop()
            if current.terminal is not None:
                yield current.terminal
            stack.extend(current.children.values())


class _PatternNode:
    __slots__ = ("children", "keys")

    def __init__(self) -> None:
        self.children: dict[str, _PatternNode] = {}
        self.keys: set[object] = set()  # subscriptions whose pattern ends here


class PatternIndex:
    """Live patterns, each under one or more keys, matched by topic name."""

    def __init__(self) -> None:
        self._root = _PatternNode()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, pattern: str, key: object) -> None:
        node = self._root
        for segment in pattern.split(SEPARATOR):
            node = node.children.setdefault(segment, _PatternNode())
        if key not in node.keys:
            node.keys.add(key)
            self._count += 1

    def remove(self, pattern: str, key: object) -> None:
        segments = pattern.split(SEPARATOR)
        path = [self._root]
        for segment in segments:
            child = path[-1].children.get(segment)
            if child is None:
                return
            path.append(child)
        if key not in path[-1].keys:
            return
        path[-1].keys.discard(key)
        self._count -= 1
        for depth in range(len(segments), 0, -1):
            node = path[depth]
            if node.keys or node.children:
                break
            del path[depth - 1].children[segments[depth - 1]]

    def match(self, name: str) -> set[object]:
        """The keys of every pattern that matches the topic ``name``."""
        found: set[object] = set()
        segments = name.split(SEPARATOR)
        reserved = segments[0].startswith(RESERVED_PREFIX)
        frontier = [self._root]
        for depth, segment in enumerate(segments):
            following = []
            for node in frontier:
                wild = not (depth == 0 and reserved)
                rest = node.children.get(REST)
                if rest is not None and wild:
                    found |= rest.keys
                literal = node.children.get(segment)
                if literal is not None:
                    following.append(literal)
                one = node.children.get(ONE)
                if one is not None and wild:
                    following.append(one)
            frontier = following
            if not frontier:
                return found
        for node in frontier:
            found |= node.keys
            rest = node.children.get(REST)  # 'a/#' matches 'a' itself
            if rest is not None:
                found |= rest.keys
        return found
