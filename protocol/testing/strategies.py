"""Hypothesis strategies for pushwire v1: valid frames, hostile bytes, whole conversations.

These are public: an implementation of pushwire in any language can be fuzzed with them
(:mod:`pushwire.protocol.testing.fuzz_decoder` shows how). hypothesis is a *test*
dependency of pushwire (``pip install 'pushwire[test]'``), so it is imported here and
nowhere else in the package; importing this module without it raises ImportError with that
hint.

What each strategy promises
---------------------------
:func:`frames`
    Frames that every receiver MUST accept (they pass every check of SPEC.md §3.5), with
    each field drawn over its whole wire range: integers from 0 to the maximum of their
    width (hypothesis favours the limits), text from empty to the maximum number of bytes its
    length prefix holds (multi-byte characters included), header blocks on and off, batches
    of one or more records. Counted arrays are kept short (``max_items``) so examples stay
    fast, except that a header block has all 255 pairs now and then; the largest counts of
    records and positions (65535) are better tested with explicit examples. Topic names
    here are any UTF-8 the layout holds: topic *syntax* (§9.1) is a request rule above the
    codec; use :func:`topic_names` where a valid name matters.
:func:`frame_bytes`
    The same frames encoded by the construct declarations (``reference.encode_frame``): the
    normative bytes, independent of the hot-path codec under test.
:func:`malformed_frames`
    :class:`Malformed` ``(data, code)`` pairs: ``data`` is one frame and ``code`` the error a
    receiver whose limit is ``max_frame_size`` MUST report for it, from those bytes alone
    (no more bytes, no EOF needed): for FRAME_TOO_LARGE, ``data`` is a header followed by
    fewer payload bytes than it declares; otherwise a header followed by exactly the payload
    it declares. Built by mutating valid frames: truncation, trailing bytes, a length above
    the limit, reserved flag bits, invalid UTF-8 in any text field, unknown fatal types,
    out-of-range enumerations and counts. The expected code follows the check order of
    SPEC.md §3.5 (length, type, flags, fields in wire order, ranges).
:func:`incomplete_frames`
    :class:`Malformed` pairs whose ``data`` is the start of one frame, to be followed by the
    end of the stream, and ``code`` what a receiver MUST report then (SPEC.md §3.5: the
    header's code when the whole header is there and fails a check, else MALFORMED_FRAME).
:func:`conversations`
    Everything one side of a correct connection sends, in order: its preface, its handshake
    frame, then requests, replies and pushes that respect the other side's limits and the
    rules of SPEC.md §6-§8 (unique sub_ids, credit, contiguous sequences, acks within the
    delivered range, replies to requests, PONG for PING, at most one GOAWAY). Both sides are
    drawn together, so each side's frames are consistent with the other's; the
    :class:`Conversation` keeps the peer's frames and the interleaving too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

try:
    from hypothesis import assume, configuration
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "pushwire.protocol.testing.strategies needs hypothesis, a test dependency: "
        "pip install 'pushwire[test]'"
    ) from exc

from pushwire.protocol import frames as F
from pushwire.protocol import reference
from pushwire.protocol.decoder import encode_preface
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import (
    CLIENT_SENDS,
    DEFINED_FLAGS,
    HAS_HEADERS,
    HEADER_SIZE,
    IGNORABLE_BIT,
    INITIAL_MAX_FRAME_SIZE,
    MAX_MAX_FRAME_SIZE,
    MIN_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    SERVER_SENDS,
    FrameType,
    Outcome,
    SinceKind,
    SlowConsumerPolicy,
)

__all__ = [
    "Conversation",
    "Direction",
    "Malformed",
    "Role",
    "conversations",
    "frame_bytes",
    "frames",
    "hypothesis_storage",
    "incomplete_frames",
    "invalid_utf8",
    "malformed_frames",
    "text_fields",
    "topic_names",
    "topic_patterns",
    "unknown_frames",
    "utf8_text",
]

#: Who receives a frame: "to_server" are the frames a client sends (layouts.CLIENT_SENDS).
Direction = Literal["to_server", "to_client"]
#: Who sends a conversation.
Role = Literal["client", "server"]

U8_MAX = 0xFF
U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
#: The largest text of a Str8 / Text16 field and the largest Bytes16 value, in bytes.
STR8_MAX = U8_MAX
TEXT16_MAX = U16_MAX

_KNOWN = frozenset(int(t) for t in FrameType)
_UNKNOWN_IGNORABLE = tuple(t for t in range(IGNORABLE_BIT, U8_MAX + 1) if t not in _KNOWN)
_UNKNOWN_FATAL = tuple(t for t in range(IGNORABLE_BIT) if t not in _KNOWN)
#: Characters whose UTF-8 form is 1, 2, 3 and 4 bytes: text of an exact byte length is
#: built from them, so the length limits are hit with every sequence width.
_WIDE_CHARS = ("a", "\u00e9", "\u20ac", "\U0001f600")


def _types(types: Iterable[FrameType] | None, direction: Direction | None) -> list[FrameType]:
    chosen = list(FrameType) if types is None else [FrameType(t) for t in types]
    if direction == "to_server":
        chosen = [t for t in chosen if t in CLIENT_SENDS]
    elif direction == "to_client":
        chosen = [t for t in chosen if t in SERVER_SENDS]
    elif direction is not None:
        raise ValueError(f"direction must be 'to_server', 'to_client' or None, not {direction!r}")
    if not chosen:
        raise ValueError("no frame type matches types and direction")
    return chosen


def _uint(bits: int) -> st.SearchStrategy[int]:
    return st.integers(0, (1 << bits) - 1)


def _fill(char: str, size: int) -> str:
    """Text of exactly ``size`` UTF-8 bytes, made of ``char`` and ASCII padding."""
    width = len(char.encode("utf-8"))
    return char * (size // width) + "a" * (size % width)


def _fit(text: str, max_bytes: int) -> str:
    raw = text.encode("utf-8")
    return text if len(raw) <= max_bytes else raw[:max_bytes].decode("utf-8", "ignore")


#: Text a decoder is tempted to change: a leading byte order mark (which some UTF-8 decoders
#: strip by default, while SPEC.md §3.2 makes it part of the text), NUL, a noncharacter.
_TRICKY_PREFIXES = ("\ufeff", "\ufeff\ufeff", "\x00", "\ufffe")


@st.composite
def utf8_text(draw: st.DrawFn, max_bytes: int, *, typical: int = 24) -> str:
    """Text whose UTF-8 form is 0..``max_bytes`` bytes; about one draw in eight is exactly
    ``max_bytes`` long (with 1-, 2-, 3- or 4-byte characters), about one in eight starts
    with a byte order mark (U+FEFF) or another character a decoder may be tempted to drop,
    the rest short and varied."""
    choice = draw(st.integers(0, 7))
    if choice == 7:
        return _fill(draw(st.sampled_from(_WIDE_CHARS)), max_bytes)
    text = draw(st.text(st.characters(codec="utf-8"), max_size=min(typical, max_bytes)))
    if choice == 6:
        text = draw(st.sampled_from(_TRICKY_PREFIXES)) + text
    return _fit(text, max_bytes)


@st.composite
def _bytes_up_to(draw: st.DrawFn, max_size: int, *, typical: int = 32) -> bytes:
    """0..``max_size`` bytes; about one draw in eight exactly ``max_size``."""
    if draw(st.integers(0, 7)) == 7:
        return bytes([draw(_uint(8))]) * max_size
    return draw(st.binary(max_size=min(typical, max_size)))


_SEGMENT = st.text(
    st.characters(codec="utf-8", min_codepoint=0x20, exclude_characters="/\x7f+#"),
    min_size=1,
    max_size=8,
)


@st.composite
def topic_names(draw: st.DrawFn) -> str:
    """Topic names that satisfy SPEC.md §9.1: 1-255 bytes of UTF-8, non-empty segments
    separated by '/', no C0 control character or DEL. Now and then exactly 255 bytes."""
    if draw(st.integers(0, 15)) == 15:
        return _fill(draw(st.sampled_from(_WIDE_CHARS)), STR8_MAX)
    return "/".join(draw(st.lists(_SEGMENT, min_size=1, max_size=4)))


@st.composite
def topic_patterns(draw: st.DrawFn, segments: st.SearchStrategy[str] = _SEGMENT) -> str:
    """Patterns that satisfy SPEC.md §9.4: literal segments from ``segments`` and '+'
    segments, optionally ending in '#', with at least one wildcard. Pass a small alphabet
    of segments (as the stateful tests do) to make patterns that match the names drawn."""
    parts = draw(st.lists(st.one_of(segments, st.just("+")), min_size=0, max_size=3))
    if not parts or "+" not in parts or draw(st.booleans()):
        parts.append("#")
    return "/".join(parts)


@st.composite
def _headers(draw: st.DrawFn, max_items: int, max_text: int = U16_MAX) -> F.Headers:
    """A §9.2 header block: now and then all 255 pairs (kept tiny), else up to
    ``max_items`` pairs whose keys and values reach their own limits (values at most
    ``max_text`` bytes)."""
    if draw(st.integers(0, 15)) == 15:
        # The largest count; the pairs themselves matter less than getting there cheaply.
        first = draw(st.tuples(st.text(max_size=2), st.binary(max_size=2)))
        return (first,) + (("k", b"v"),) * (U8_MAX - 1)
    pair = st.tuples(utf8_text(STR8_MAX), _bytes_up_to(max_text))
    return tuple(draw(st.lists(pair, max_size=max_items)))


@st.composite
def _records(
    draw: st.DrawFn, max_items: int, max_payload: int, max_text: int = U16_MAX
) -> tuple[F.Record, ...]:
    """1..``max_items`` records that all have header blocks or none has (§7.2)."""
    with_headers = draw(st.booleans())
    count = draw(st.integers(1, max(1, max_items)))
    records = []
    for _ in range(count):
        headers = draw(_headers(max_items, max_text)) if with_headers else None
        records.append(F.Record(draw(_bytes_up_to(max_payload)), headers))
    return tuple(records)


@st.composite
def _subscribe(draw: st.DrawFn, topics: st.SearchStrategy[str]) -> F.Subscribe:
    """A SUBSCRIBE, a third of them with PATTERN and up to three topic positions (§6.7);
    PATTERN never comes with AT_LEAST_ONCE (the pair is out of range)."""
    kind = draw(st.sampled_from(SinceKind))
    positions: tuple[F.TopicPosition, ...] | None = None
    at_least_once = draw(st.booleans())
    if draw(st.integers(0, 2)) == 0:
        at_least_once = False
        entry = st.builds(F.TopicPosition, topics, _uint(64), _uint(64))
        positions = tuple(draw(st.lists(entry, max_size=3)))
    return F.Subscribe(
        sub_id=draw(_uint(32)),
        topic=draw(topics),
        since_kind=kind,
        since_epoch=draw(_uint(64)) if kind == SinceKind.AFTER else 0,
        since_seq=draw(_uint(64)) if kind == SinceKind.AFTER else 0,
        since_count=draw(_uint(32)) if kind == SinceKind.LAST else 0,
        initial_credit=draw(_uint(32)),
        at_least_once=at_least_once,
        positions=positions,
    )


@st.composite
def _range(draw: st.DrawFn) -> tuple[int, int]:
    """(first, last) with 1 <= first <= last <= u64 max: a non-empty gap (§3.5)."""
    first = draw(st.integers(1, U64_MAX))
    return first, draw(st.integers(first, U64_MAX))


@st.composite
def _subscribed(draw: st.DrawFn) -> F.Subscribed:
    outcome = draw(st.sampled_from(Outcome))
    first, last, reason = 0, 0, 0
    if outcome == Outcome.GAP:
        first, last = draw(_range())
        reason = draw(_uint(16))
    u64 = _uint(64)
    topic = draw(st.none() | utf8_text(STR8_MAX))  # TOPIC_STATUS when a name is drawn
    return F.Subscribed(
        draw(_uint(32)), outcome, draw(u64), draw(u64), draw(u64), first, last, reason, topic
    )


@st.composite
def _gap(draw: st.DrawFn) -> F.Gap:
    first, last = draw(_range())
    return F.Gap(draw(_uint(32)), draw(_uint(64)), first, last, draw(_uint(16)))


def _frame_strategy(
    ft: FrameType, max_items: int, max_payload: int, max_text: int = TEXT16_MAX
) -> st.SearchStrategy[Any]:
    """Valid frames of one type. ``max_text`` caps the u16-prefixed fields (Text16,
    Bytes16), which the public strategies draw up to 65535 bytes."""
    u8, u16, u32, u64 = _uint(8), _uint(16), _uint(32), _uint(64)
    str8, text16 = utf8_text(STR8_MAX), utf8_text(max_text)
    payload = _bytes_up_to(max_payload)
    headers = st.none() | _headers(max_items, max_text=max_text)
    records = _records(max_items, max_payload, max_text=max_text)
    builders: dict[FrameType, st.SearchStrategy[Any]] = {
        FrameType.HELLO: st.builds(F.Hello, u32, u32, str8, _bytes_up_to(max_text)),
        FrameType.WELCOME: st.builds(
            F.Welcome, u64, u32, u32, u32, u32, st.sampled_from(SlowConsumerPolicy), str8
        ),
        FrameType.PING: st.builds(F.Ping, u64),
        FrameType.PONG: st.builds(F.Pong, u64),
        FrameType.GOAWAY: st.builds(
            F.Goaway,
            u16,
            u32,
            u32,
            st.lists(st.builds(F.Position, u32, u64, u64), max_size=max_items).map(tuple),
            text16,
        ),
        FrameType.ERROR: st.builds(F.Error, u16, u8, u32, text16),
        FrameType.SUBSCRIBE: _subscribe(str8),
        FrameType.SUBSCRIBED: _subscribed(),
        FrameType.UNSUBSCRIBE: st.builds(F.Unsubscribe, u32),
        FrameType.UNSUBSCRIBED: st.builds(F.Unsubscribed, u32, u64, u64),
        FrameType.CREDIT: st.builds(F.Credit, u32, st.integers(1, U32_MAX)),
        FrameType.ACK: st.builds(F.Ack, u32, u64),
        FrameType.GAP: _gap(),
        FrameType.MESSAGE: st.builds(F.Message, u64, u64, str8, payload, headers),
        FrameType.MESSAGE_BATCH: st.builds(F.MessageBatch, u64, u64, str8, records),
        FrameType.PUBLISH: st.builds(F.Publish, u32, str8, payload, headers),
        FrameType.PUBLISH_BATCH: st.builds(F.PublishBatch, u32, str8, records),
        FrameType.PUBACK: st.builds(F.Puback, u32, u64, u64, u16),
    }
    return builders[ft]


def frames(
    types: Iterable[FrameType] | None = None,
    direction: Direction | None = None,
    *,
    max_items: int = 4,
    max_payload: int = 256,
    max_text: int = TEXT16_MAX,
) -> st.SearchStrategy[F.Frame]:
    """Valid frames of ``types`` (default: every type) that ``direction``'s receiver gets
    (default: either). ``max_items`` bounds counted arrays, ``max_payload`` the payloads,
    ``max_text`` the u16-prefixed fields (Text16, Bytes16: 65535 bytes by default, so a
    frame can exceed a receiver's limit; 512 keeps every frame under 16384 bytes when
    ``max_items`` and ``max_payload`` are small). Each reaches its bound now and then."""
    chosen = _types(types, direction)
    return st.one_of([_frame_strategy(t, max_items, max_payload, max_text) for t in chosen])


def frame_bytes(
    types: Iterable[FrameType] | None = None,
    direction: Direction | None = None,
    **sizes: int,
) -> st.SearchStrategy[bytes]:
    """:func:`frames` as whole frames (header + payload), built by the construct
    declarations."""
    return frames(types, direction, **sizes).map(reference.encode_frame)


@st.composite
def unknown_frames(draw: st.DrawFn, ignorable: bool = True) -> F.Unknown:
    """Frames of a type v1 does not define. With ``ignorable`` the type has bit 7 set and
    a receiver skips it whatever its flags and payload (PW-FRAME-8); without, it is fatal
    (UNKNOWN_FRAME_TYPE, PW-FRAME-5)."""
    type_ = draw(st.sampled_from(_UNKNOWN_IGNORABLE if ignorable else _UNKNOWN_FATAL))
    return F.Unknown(type_, draw(_uint(8)), draw(st.binary(max_size=64)))


# -- malformed frames ----------------------------------------------------------------------


class Malformed(NamedTuple):
    """One hostile frame and the code a receiver MUST close with."""

    data: bytes
    code: ErrorCode


#: Types whose payload ends with all remaining bytes (GreedyBytes): trailing bytes are
#: payload, and only a cut before the payload is a truncation.
_GREEDY = frozenset({FrameType.MESSAGE, FrameType.PUBLISH})

#: The invalid UTF-8 sequences that ``invalid_utf8`` embeds, one per way to get it wrong.
_BAD_UTF8 = (
    b"\x80",  # continuation byte without a lead byte
    b"\xbf",
    b"\xff",  # bytes that never occur in UTF-8
    b"\xfe",
    b"\xc0\xaf",  # overlong encoding of '/'
    b"\xe0\x80\xaf",  # overlong, 3 bytes
    b"\xed\xa0\x80",  # UTF-16 surrogate U+D800
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf8\x88\x80\x80\x80",  # 5-byte form
    b"\xc3",  # lead byte cut short (followed by ASCII or the end)
    b"\xe2\x82",
)


@st.composite
def invalid_utf8(draw: st.DrawFn, min_size: int = 1, max_size: int = 32) -> bytes:
    """``min_size``..``max_size`` bytes that are not valid UTF-8: one bad sequence with ASCII
    around it (ASCII cannot complete a cut-short sequence, so every result is invalid)."""
    core = draw(st.sampled_from([b for b in _BAD_UTF8 if len(b) <= max_size]))
    size = draw(st.integers(max(min_size, len(core)), max_size))
    before = draw(st.integers(0, size - len(core)))
    return b"x" * before + core + b"x" * (size - len(core) - before)


#: Text16 / Bytes16 cap for the frames that get mutated, so they fit a receiver's limit.
_MUTATED_TEXT = 512


@functools.cache
def _mutable_frames(types: tuple[FrameType, ...]) -> st.SearchStrategy[Any]:
    """Small valid frames of ``types``, built once per set of types (building strategies
    inside a draw would redo it for every example)."""
    return st.one_of([_frame_strategy(t, 3, 64, _MUTATED_TEXT) for t in types])


@st.composite
def _base(
    draw: st.DrawFn,
    direction: Direction | None,
    limit: int,
    room: int = 0,
    types: Iterable[FrameType] | None = None,
) -> tuple[F.Frame, bytes]:
    """A valid frame to mutate and its bytes (by the declarations), whose payload plus
    ``room`` more bytes fits under ``limit``."""
    frame = draw(_mutable_frames(tuple(_types(types, direction))))
    data = reference.encode_frame(frame)
    assume(len(data) - HEADER_SIZE + room <= limit)
    return frame, data


@st.composite
def _truncated(draw: st.DrawFn, direction: Direction | None, limit: int) -> Malformed:
    frame, data = draw(_base(direction, limit))
    body = data[HEADER_SIZE:]
    # Each layout is prefix-free up to its greedy payload (if it has one), so any cut
    # before that point stops the parse inside a field: a short read, whatever the field.
    keep = len(body)
    if isinstance(frame, F.Message | F.Publish):
        keep -= len(frame.payload)
    cut = draw(st.integers(0, keep - 1))
    return Malformed(reference.build_frame(data[4], data[5], body[:cut]), ErrorCode.MALFORMED_FRAME)


@st.composite
def _trailing(draw: st.DrawFn, direction: Direction | None, limit: int) -> Malformed:
    types = [t for t in _types(None, direction) if t not in _GREEDY]
    _, data = draw(_base(direction, limit, room=16, types=types))
    body = data[HEADER_SIZE:] + draw(st.binary(min_size=1, max_size=16))
    return Malformed(reference.build_frame(data[4], data[5], body), ErrorCode.MALFORMED_FRAME)


@st.composite
def _too_large(draw: st.DrawFn, direction: Direction | None, limit: int) -> Malformed:
    # The length is checked before the type and flags (§3.5 step 1), so any type and flags
    # go, unknown ignorable ones too: a receiver cannot skip what it must not buffer.
    length = draw(st.integers(limit + 1, U32_MAX))
    partial = draw(st.binary(max_size=16))
    header = reference.build_header(length, draw(_uint(8)), draw(_uint(8)))
    return Malformed(header + partial, ErrorCode.FRAME_TOO_LARGE)


@st.composite
def _reserved_bits(draw: st.DrawFn, direction: Direction | None, limit: int) -> Malformed:
    type_ = draw(st.sampled_from(_types(None, direction)))
    defined = DEFINED_FLAGS[type_]
    flags = draw(_uint(8)) & defined
    flags |= draw(st.integers(1, U8_MAX).map(lambda b: b & ~defined).filter(bool))
    # Flags are checked before the payload (§3.5 step 3), so any payload goes.
    body = draw(st.binary(max_size=min(64, limit)))
    return Malformed(reference.build_frame(type_, flags, body), ErrorCode.RESERVED_BITS_SET)


def text_fields(frame: F.Frame) -> list[Callable[[str], F.Frame]]:
    """One function per text field of ``frame`` (Str8 and Text16 fields, header keys of the
    frame and of its records), each returning ``frame`` with that field set to its
    argument. Empty for a frame without text."""
    slots: list[Callable[[str], F.Frame]] = []
    original: Any = frame  # dataclasses.replace cannot be typed over the Frame union

    def set_field(s: str, name: str) -> F.Frame:
        return dataclasses.replace(original, **{name: s})  # type: ignore[no-any-return]

    def with_key(headers: F.Headers, i: int, key: str) -> F.Headers:
        return (*headers[:i], (key, headers[i][1]), *headers[i + 1 :])

    def set_header_key(s: str, i: int) -> F.Frame:
        return dataclasses.replace(original, headers=with_key(headers, i, s))  # type: ignore[no-any-return]

    for name in ("client_name", "server_name", "reason", "message", "topic"):
        if isinstance(getattr(frame, name, None), str):
            slots.append(functools.partial(set_field, name=name))
    headers: F.Headers = getattr(frame, "headers", None) or ()
    slots += [functools.partial(set_header_key, i=i) for i in range(len(headers))]
    records: tuple[F.Record, ...] = getattr(frame, "records", ())
    for j, record in enumerate(records):
        for i in range(len(record.headers or ())):

            def set_key(s: str, j: int = j, i: int = i) -> F.Frame:
                old = records[j]
                new = F.Record(old.payload, with_key(old.headers or (), i, s))
                changed = (*records[:j], new, *records[j + 1 :])
                return dataclasses.replace(original, records=changed)  # type: ignore[no-any-return]

            slots.append(set_key)
    return slots


@st.composite
def _bad_text(draw: st.DrawFn, direction: Direction | None, limit: int) -> Malformed:
    frame, _ = draw(_base(direction, limit, room=32).filter(lambda fd: bool(text_fields(fd[0]))))
    set_text = draw(st.sampled_from(text_fields(frame)))
    bad = draw(invalid_utf8(max_size=32))
    # Encode the frame with two same-length texts that differ in every byte: the bytes
    # that differ are exactly the text field, wherever the layout puts it.
    a = reference.encode_frame(set_text("a" * len(bad)))
    b = reference.encode_frame(set_text("b" * len(bad)))
    start = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
    assume(len(a) - HEADER_SIZE <= limit)
    return Malformed(a[:start] + bad + a[start + len(bad) :], ErrorCode.INVALID_UTF8)


@st.composite
def _unknown_fatal(draw: st.DrawFn, direction: Direction | None, limit: int) -> Malformed:
    frame = draw(unknown_frames(ignorable=False))
    body = frame.payload[:limit]
    data = reference.build_frame(frame.type, frame.flags, body)
    return Malformed(data, ErrorCode.UNKNOWN_FRAME_TYPE)


@st.composite
def _bad_gap_range(draw: st.DrawFn) -> tuple[int, int]:
    """(first, last) that §3.5 rejects: first = 0, or first > last."""
    if draw(st.booleans()):
        return 0, draw(_uint(64))
    first = draw(st.integers(1, U64_MAX))
    return first, draw(st.integers(0, first - 1))


@functools.cache
def _out_of_range_frames(direction: Direction | None) -> st.SearchStrategy[Any]:
    """Frames each breaking one rule of the §3.5 range table (and nothing else)."""
    u16, u32, u64 = _uint(16), _uint(32), _uint(64)
    str8 = utf8_text(STR8_MAX)
    to_server = [
        st.builds(
            F.Subscribe,
            sub_id=u32,
            topic=str8,
            since_kind=st.integers(len(SinceKind), U8_MAX),
            initial_credit=u32,
            at_least_once=st.booleans(),
        ),
        st.builds(
            F.Subscribe,
            sub_id=u32,
            topic=str8,
            initial_credit=u32,
            at_least_once=st.just(True),
            positions=st.just(()),
        ),
        st.builds(F.Credit, u32, st.just(0)),
        st.builds(F.PublishBatch, u32, str8, st.just(())),
    ]
    to_client = [
        st.builds(F.MessageBatch, u64, u64, str8, st.just(())),
        st.builds(F.Subscribed, u32, st.integers(len(Outcome), U8_MAX), u64, u64, u64),
        st.builds(
            lambda sub, epoch, start, head, gap, why: F.Subscribed(
                sub, Outcome.GAP, epoch, start, head, gap[0], gap[1], why
            ),
            u32,
            u64,
            u64,
            u64,
            _bad_gap_range(),
            u16,
        ),
        st.builds(
            lambda sub, epoch, gap, why: F.Gap(sub, epoch, gap[0], gap[1], why),
            u32,
            u64,
            _bad_gap_range(),
            u16,
        ),
        st.builds(
            F.Welcome,
            u64,
            u32,
            u32,
            u32,
            u32,
            st.integers(len(SlowConsumerPolicy), U8_MAX),
            str8,
        ),
    ]
    options = {"to_server": to_server, "to_client": to_client}
    return st.one_of(options.get(direction or "", to_server + to_client))


@st.composite
def _out_of_range(draw: st.DrawFn, direction: Direction | None, limit: int) -> Malformed:
    """One frame breaking one range rule, encoded by the declarations (which build anything
    the layout holds, in range or not)."""
    frame = draw(_out_of_range_frames(direction))
    data = reference.encode_frame(frame)
    if isinstance(frame, F.MessageBatch | F.PublishBatch) and draw(st.booleans()):
        data = data[:5] + bytes([HAS_HEADERS]) + data[6:]  # count 0 with headers: same rule
    assume(len(data) - HEADER_SIZE <= limit)
    return Malformed(data, ErrorCode.FIELD_OUT_OF_RANGE)


def malformed_frames(
    direction: Direction | None = None, max_frame_size: int = INITIAL_MAX_FRAME_SIZE
) -> st.SearchStrategy[Malformed]:
    """Hostile frames and the code a receiver MUST report (see the module docstring).

    ``direction`` restricts the mutated frames to the types that receiver gets (unknown
    types and oversized headers go either way). ``max_frame_size`` is the receiver's limit
    (16384, the initial one, by default); keep it at least a few KiB, since the valid frames
    that get mutated must fit under it.
    """
    kinds = (
        _truncated,
        _trailing,
        _too_large,
        _reserved_bits,
        _bad_text,
        _unknown_fatal,
        _out_of_range,
    )
    return st.one_of([kind(direction, max_frame_size) for kind in kinds])


@st.composite
def incomplete_frames(
    draw: st.DrawFn,
    direction: Direction | None = None,
    max_frame_size: int = INITIAL_MAX_FRAME_SIZE,
) -> Malformed:
    """The start of one frame, to be followed by the end of the stream, with the code a
    receiver MUST report when the stream ends there (SPEC.md §3.5, PW-FRAME-14): the code of
    the header checks when all 6 header bytes are there and fail one (FRAME_TOO_LARGE,
    UNKNOWN_FRAME_TYPE, RESERVED_BITS_SET), else MALFORMED_FRAME. Cuts fall inside the
    header, right after it and inside the payload, of valid frames, of unknown fatal and
    ignorable types, of frames with reserved flag bits, and of frames above the limit."""
    kind = draw(st.sampled_from(("valid", "ignorable", "fatal", "reserved", "too_large")))
    code = ErrorCode.MALFORMED_FRAME
    if kind == "valid":
        _, data = draw(_base(direction, max_frame_size))
    elif kind in ("ignorable", "fatal"):
        unknown = draw(unknown_frames(ignorable=kind == "ignorable"))
        body = unknown.payload[:max_frame_size]
        data = reference.build_frame(unknown.type, unknown.flags, body)
        if kind == "fatal":
            code = ErrorCode.UNKNOWN_FRAME_TYPE
    elif kind == "reserved":
        data = draw(_reserved_bits(direction, max_frame_size)).data
        code = ErrorCode.RESERVED_BITS_SET
    else:
        data = draw(_too_large(direction, max_frame_size)).data
        code = ErrorCode.FRAME_TOO_LARGE
    declared = HEADER_SIZE + int.from_bytes(data[:4], "big")
    assume(declared > 1)
    # every cut of the frame: inside the header, or after it but before the last byte
    keep = draw(st.integers(1, min(len(data), declared - 1)))
    if keep < HEADER_SIZE:
        code = ErrorCode.MALFORMED_FRAME  # the header checks need the whole header
    return Malformed(data[:keep], code)


# -- conversations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversation:
    """What ``role`` sends on one correct connection, with the peer's side for context.

    ``exchange`` is the whole dialogue in the order the frames were sent, as
    ``(sender, frame)``; ``frames`` / ``peer_frames`` are its two projections. Each frame is
    sent only after everything before it in ``exchange`` was received, so replaying
    ``peer_frames`` against an implementation of ``role`` in that order is a valid test.
    """

    role: Role
    preface: bytes
    frames: tuple[F.Frame, ...]
    peer_preface: bytes
    peer_frames: tuple[F.Frame, ...]
    exchange: tuple[tuple[Role, F.Frame], ...]

    def data(self, encode: Callable[[F.Frame], bytes] = reference.encode_frame) -> bytes:
        """The byte stream ``role`` writes: its preface, then every frame."""
        return self.preface + b"".join(encode(f) for f in self.frames)


@dataclass
class _Topic:
    epoch: int
    head: int  # last assigned sequence, 0 if none
    oldest: int  # oldest retained sequence; head + 1 when nothing is retained


@dataclass
class _Sub:
    sub_id: int
    topic: str
    epoch: int
    at_least_once: bool
    credit: int
    position: int  # highest sequence sent in a MESSAGE, a record or a GAP range
    acked: int  # acknowledged level: start_seq - 1 at first (§8.3)


class _Dialogue:
    """Both sides of one connection, drawn step by step. The model is plain data: topics,
    subscriptions, credit, positions; each step appends what one side sends and, for a
    request, the other side's reply."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.out: list[tuple[Role, F.Frame]] = []
        self.topics: dict[str, _Topic] = {}
        self.subs: dict[int, _Sub] = {}
        self.next_request_id = 1
        u32, u64 = _uint(32), _uint(64)
        limits = st.integers(MIN_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE)
        self.hello = F.Hello(
            draw(limits), draw(u32), draw(utf8_text(STR8_MAX)), draw(st.binary(max_size=64))
        )
        self.welcome = F.Welcome(
            draw(u64),
            draw(st.integers(1, 600_000)),
            draw(limits),
            draw(st.integers(1, 4) | st.integers(1, U32_MAX)),
            draw(u32),
            draw(st.sampled_from(SlowConsumerPolicy)),
            draw(utf8_text(STR8_MAX)),
        )
        self.send("client", self.hello)
        self.send("server", self.welcome)

    def send(self, role: Role, frame: F.Frame) -> None:
        self.out.append((role, frame))

    # -- pieces -------------------------------------------------------------------------------

    def topic(self, name: str) -> _Topic:
        if name not in self.topics:
            head = self.draw(st.integers(0, 40))
            self.topics[name] = _Topic(
                epoch=self.draw(st.integers(1, U64_MAX)),
                head=head,
                oldest=self.draw(st.integers(1, head + 1)),
            )
        return self.topics[name]

    def payload(self) -> bytes:
        return self.draw(st.binary(max_size=64))

    def headers(self) -> F.Headers | None:
        pair = st.tuples(utf8_text(16, typical=8), st.binary(max_size=16))
        return self.draw(st.none() | st.lists(pair, max_size=2).map(tuple))

    def records(self, count: int) -> tuple[F.Record, ...]:
        with_headers = self.draw(st.booleans())
        return tuple(
            F.Record(self.payload(), self.headers() or () if with_headers else None)
            for _ in range(count)
        )

    def refused(self) -> bool:
        """Whether the server refuses this request for a reason the model does not track
        (authorisation): about one request in ten."""
        return bool(self.draw(st.integers(0, 9)) == 0)

    # -- steps --------------------------------------------------------------------------------

    def subscribe(self) -> None:
        d = self.draw
        sub_id = d(_uint(32).filter(lambda i: i not in self.subs))
        taken = {s.topic for s in self.subs.values()}
        name = d(topic_names().filter(lambda t: t not in taken))
        known = name in self.topics
        t = self.topic(name)
        kind = d(st.sampled_from(SinceKind))
        epoch = seq = count = 0
        if kind == SinceKind.AFTER:
            epoch = t.epoch if known and d(st.booleans()) else d(_uint(64))
            seq = d(st.integers(0, t.head + 2)) if epoch == t.epoch else d(_uint(64))
        elif kind == SinceKind.LAST:
            count = d(st.integers(0, t.head + 2) | _uint(32))
        credit = d(st.integers(0, 8) | _uint(32))
        at_least_once = d(st.booleans())
        self.send(
            "client", F.Subscribe(sub_id, name, kind, epoch, seq, count, credit, at_least_once)
        )

        def refuse(code: ErrorCode) -> None:
            self.send("server", F.Error(code, FrameType.SUBSCRIBE, sub_id, ""))

        if len(self.subs) >= self.welcome.max_subscriptions:
            return refuse(ErrorCode.TOO_MANY_SUBSCRIPTIONS)
        if self.refused():
            return refuse(ErrorCode.FORBIDDEN)
        if kind == SinceKind.AFTER and epoch == t.epoch and seq > t.head:
            return refuse(ErrorCode.INVALID_POSITION)
        gap_first = gap_last = gap_reason = 0
        if kind == SinceKind.NEW:
            outcome, start = Outcome.NEW, t.head + 1
        elif kind == SinceKind.OLDEST:
            outcome, start = Outcome.RECOVERED, t.oldest
        elif kind == SinceKind.AFTER and epoch != t.epoch:
            outcome, start = Outcome.EPOCH_CHANGED, t.oldest
        else:
            after = seq if kind == SinceKind.AFTER else max(0, t.head - count)
            if after >= t.oldest - 1:
                outcome, start = Outcome.RECOVERED, after + 1
            else:
                outcome, start = Outcome.GAP, t.oldest
                gap_first, gap_last, gap_reason = after + 1, t.oldest - 1, ErrorCode.HISTORY_EXPIRED
        self.send(
            "server",
            F.Subscribed(sub_id, outcome, t.epoch, start, t.head, gap_first, gap_last, gap_reason),
        )
        self.subs[sub_id] = _Sub(sub_id, name, t.epoch, at_least_once, credit, start - 1, start - 1)

    def pick(self, ok: Callable[[_Sub], bool]) -> _Sub | None:
        candidates = [s for s in self.subs.values() if ok(s)]
        return self.draw(st.sampled_from(candidates)) if candidates else None

    def push(self) -> None:
        sub = self.pick(lambda s: s.credit > 0)
        if sub is None:
            return
        t = self.topics[sub.topic]
        count = self.draw(st.integers(1, min(sub.credit, 4)))
        first = sub.position + 1
        if count == 1 and self.draw(st.booleans()):
            frame: F.Frame = F.Message(sub.epoch, first, sub.topic, self.payload(), self.headers())
        else:
            frame = F.MessageBatch(sub.epoch, first, sub.topic, self.records(count))
        self.send("server", frame)
        sub.credit -= count
        sub.position += count
        t.head = max(t.head, sub.position)

    def gap(self) -> None:
        sub = self.pick(lambda s: True)
        if sub is None:
            return
        t = self.topics[sub.topic]
        reasons = [ErrorCode.FRAME_TOO_LARGE]
        if self.welcome.slow_consumer_policy == SlowConsumerPolicy.DROP:
            reasons.append(ErrorCode.SLOW_CONSUMER)
        reason = self.draw(st.sampled_from(reasons))
        first = sub.position + 1
        last = first + self.draw(st.integers(0, 5))
        self.send("server", F.Gap(sub.sub_id, sub.epoch, first, last, reason))
        sub.position = last
        t.head = max(t.head, last)
        if reason == ErrorCode.SLOW_CONSUMER:
            t.oldest = max(t.oldest, last + 1)

    def credit(self) -> None:
        sub = self.pick(lambda s: s.credit < U32_MAX)
        if sub is None:
            return
        increment = self.draw(st.integers(1, U32_MAX - sub.credit))
        self.send("client", F.Credit(sub.sub_id, increment))
        sub.credit += increment

    def ack(self) -> None:
        sub = self.pick(lambda s: s.at_least_once and s.position > s.acked)
        if sub is None:
            return
        sub.acked = self.draw(st.integers(sub.acked, sub.position))
        self.send("client", F.Ack(sub.sub_id, sub.acked))

    def unsubscribe(self) -> None:
        sub = self.pick(lambda s: True)
        if sub is None:
            return
        self.send("client", F.Unsubscribe(sub.sub_id))
        self.send("server", F.Unsubscribed(sub.sub_id, sub.epoch, sub.position))
        del self.subs[sub.sub_id]

    def publish(self) -> None:
        name = self.draw(topic_names())
        batch = self.draw(st.booleans())
        request_id = 0
        if self.draw(st.integers(0, 3)):
            request_id, self.next_request_id = self.next_request_id, self.next_request_id + 1
        if batch:
            count = self.draw(st.integers(1, 4))
            frame: F.Frame = F.PublishBatch(request_id, name, self.records(count))
        else:
            count = 1
            frame = F.Publish(request_id, name, self.payload(), self.headers())
        self.send("client", frame)
        t = self.topic(name)
        if self.refused():
            request_type = FrameType.PUBLISH_BATCH if batch else FrameType.PUBLISH
            self.send("server", F.Error(ErrorCode.FORBIDDEN, request_type, request_id, ""))
            return
        if request_id:
            self.send("server", F.Puback(request_id, t.epoch, t.head + 1, count))
        t.head += count

    def ping(self) -> None:
        sender: Role = self.draw(st.sampled_from(["client", "server"]))
        opaque = self.draw(_uint(64))
        self.send(sender, F.Ping(opaque))
        self.send("server" if sender == "client" else "client", F.Pong(opaque))

    def goaway(self) -> None:
        if self.draw(st.booleans()):
            reason = self.draw(utf8_text(64))
            self.send("client", F.Goaway(ErrorCode.NO_ERROR, 0, 0, (), reason))
            return
        positions = tuple(
            F.Position(s.sub_id, s.epoch, s.acked if s.at_least_once else s.position)
            for s in self.subs.values()
        )
        self.send(
            "server",
            F.Goaway(
                ErrorCode.SHUTTING_DOWN,
                self.draw(_uint(32)),
                self.draw(_uint(32)),
                positions,
                self.draw(utf8_text(64)),
            ),
        )


@st.composite
def _exchanges(draw: st.DrawFn, max_steps: int) -> tuple[tuple[Role, F.Frame], ...]:
    dialogue = _Dialogue(draw)
    steps = [
        dialogue.subscribe,
        dialogue.push,
        dialogue.gap,
        dialogue.credit,
        dialogue.ack,
        dialogue.unsubscribe,
        dialogue.publish,
        dialogue.ping,
    ]
    for _ in range(draw(st.integers(0, max_steps))):
        draw(st.sampled_from(steps))()
    if draw(st.booleans()):
        dialogue.goaway()
    return tuple(dialogue.out)


def conversations(role: Role, *, max_steps: int = 12) -> st.SearchStrategy[Conversation]:
    """What a correct ``role`` ("client" or "server") sends on one connection (see the
    module docstring), in up to ``max_steps`` request/reply or push steps after the
    handshake, optionally closed by a GOAWAY.

    Every frame fits 16384 payload bytes (the smallest limit a peer may advertise), the
    prefaces offer and choose version 1, and the server's replies follow SPEC.md §6.2 for
    the topic state the model drew (epoch, head, oldest retained).
    """
    if role not in ("client", "server"):
        raise ValueError(f"role must be 'client' or 'server', not {role!r}")
    client_preface = encode_preface(PROTOCOL_VERSION, PROTOCOL_VERSION)
    server_preface = encode_preface(PROTOCOL_VERSION, PROTOCOL_VERSION)

    def project(exchange: tuple[tuple[Role, F.Frame], ...]) -> Conversation:
        mine = tuple(f for who, f in exchange if who == role)
        theirs = tuple(f for who, f in exchange if who != role)
        prefaces = (client_preface, server_preface)
        own, peer = prefaces if role == "client" else prefaces[::-1]
        return Conversation(role, own, mine, peer, theirs, exchange)

    return _exchanges(max_steps).map(project)


@contextlib.contextmanager
def hypothesis_storage(directory: Path | str | None = None) -> Iterator[None]:
    """Where hypothesis writes while a tool built on these strategies runs.

    Besides its example database, hypothesis caches Unicode tables in ``.hypothesis/`` under
    the working directory as soon as a text strategy draws, even with ``database=None``. A
    tool run in someone else's project must not leave that behind: without ``directory``
    (and without ``HYPOTHESIS_STORAGE_DIRECTORY`` in the environment, which wins) it writes
    to a temporary directory removed on exit; with one, there (kept).
    """
    if directory is None and os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        yield
        return
    with contextlib.ExitStack() as stack:
        home = directory
        if home is None:
            home = stack.enter_context(tempfile.TemporaryDirectory(prefix="pushwire-hypothesis-"))
        previous = getattr(configuration, "__hypothesis_home_directory", None)
        configuration.set_hypothesis_home_dir(home)
        try:
            yield
        finally:
            configuration.set_hypothesis_home_dir(previous)
