"""The hot-path codec gives back every frame it encodes, over the whole range of every field.

Generated frames cover the ranges; the explicit tables pin the limits themselves (0 and the
maximum of every integer width, empty and maximum-length text and bytes, header blocks on,
off and empty, the largest counts), where a hand-written codec is most likely to slip.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushwire.protocol import codec, reference
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode, LocalProtocolError
from pushwire.protocol.layouts import (
    DEFINED_FLAGS,
    HAS_HEADERS,
    HEADER_SIZE,
    FrameType,
    Outcome,
    SinceKind,
    SlowConsumerPolicy,
)
from pushwire.protocol.testing import strategies as ps

U8, U16, U32, U64 = (1 << 8) - 1, (1 << 16) - 1, (1 << 32) - 1, (1 << 64) - 1
STR8_MAX = "\u00e9" * 127 + "a"  # 255 UTF-8 bytes, mostly two-byte characters
TEXT16_MAX = "\u20ac" * 21845  # 65535 UTF-8 bytes of three-byte characters
BYTES16_MAX = b"\xff" * U16

#: Every type with every field at its smallest legal value.
SMALLEST: list[F.Frame] = [
    F.Hello(0, 0, "", b""),
    F.Welcome(0, 0, 0, 0, 0, SlowConsumerPolicy.DISCONNECT, ""),
    F.Ping(0),
    F.Pong(0),
    F.Goaway(0, 0, 0, (), ""),
    F.Error(0, 0, 0, ""),
    F.Subscribe(0, ""),
    F.Subscribed(0, Outcome.NEW, 0, 0, 0),
    F.Unsubscribe(0),
    F.Unsubscribed(0, 0, 0),
    F.Credit(0, 1),
    F.Ack(0, 0),
    F.Gap(0, 0, 1, 1, 0),
    F.Message(0, 0, "", b""),
    F.MessageBatch(0, 0, "", (F.Record(b""),)),
    F.Publish(0, "", b""),
    F.PublishBatch(0, "", (F.Record(b""),)),
    F.Puback(0, 0, 0, 0),
]

#: Every type with every field at its largest value (counts kept to one; see below).
LARGEST: list[F.Frame] = [
    F.Hello(U32, U32, STR8_MAX, BYTES16_MAX),
    F.Welcome(U64, U32, U32, U32, U32, SlowConsumerPolicy.DROP, STR8_MAX),
    F.Ping(U64),
    F.Pong(U64),
    F.Goaway(U16, U32, U32, (F.Position(U32, U64, U64),), TEXT16_MAX),
    F.Error(U16, U8, U32, TEXT16_MAX),
    F.Subscribe(U32, STR8_MAX, SinceKind.AFTER, U64, U64, 0, U32, True),
    F.Subscribe(U32, STR8_MAX, SinceKind.LAST, 0, 0, U32, U32, True),
    F.Subscribe(U32, STR8_MAX, SinceKind.OLDEST, 0, 0, 0, U32, True),
    F.Subscribed(U32, Outcome.GAP, U64, U64, U64, U64, U64, U16),
    F.Subscribed(U32, Outcome.EPOCH_CHANGED, U64, U64, U64),
    F.Unsubscribe(U32),
    F.Unsubscribed(U32, U64, U64),
    F.Credit(U32, U32),
    F.Ack(U32, U64),
    F.Gap(U32, U64, U64, U64, U16),
    F.Message(U64, U64, STR8_MAX, b"\xff" * 70000, ((STR8_MAX, BYTES16_MAX),)),
    F.MessageBatch(U64, U64, STR8_MAX, (F.Record(b"\xff" * 70000, ((STR8_MAX, BYTES16_MAX),)),)),
    F.Publish(U32, STR8_MAX, b"\xff" * 70000, ((STR8_MAX, BYTES16_MAX),)),
    F.PublishBatch(U32, STR8_MAX, (F.Record(b"\xff" * 70000, ((STR8_MAX, BYTES16_MAX),)),)),
    F.Puback(U32, U64, U64, U16),
]


def _roundtrip(frame: F.Frame) -> bytes:
    data = codec.encode_frame(frame)
    length, type_, flags = int.from_bytes(data[:4], "big"), data[4], data[5]
    assert length == len(data) - HEADER_SIZE
    assert type_ == frame.TYPE  # type: ignore[union-attr]
    assert not flags & ~DEFINED_FLAGS[FrameType(type_)]
    assert codec.decode_body(type_, flags, data[HEADER_SIZE:]) == frame
    assert codec.decode_body(type_, flags, memoryview(data)[HEADER_SIZE:]) == frame
    return data


def test_the_limit_tables_cover_every_frame_type() -> None:
    assert {f.TYPE for f in SMALLEST} == set(FrameType)  # type: ignore[union-attr]
    assert {f.TYPE for f in LARGEST} == set(FrameType)  # type: ignore[union-attr]


@pytest.mark.parametrize("frame", SMALLEST, ids=lambda f: type(f).__name__)
def test_every_type_roundtrips_with_every_field_at_its_minimum(frame: F.Frame) -> None:
    assert _roundtrip(frame) == reference.encode_frame(frame)


@pytest.mark.parametrize("frame", LARGEST, ids=lambda f: type(f).__name__)
def test_every_type_roundtrips_with_every_field_at_its_maximum(frame: F.Frame) -> None:
    assert _roundtrip(frame) == reference.encode_frame(frame)


@given(ps.frames())
def test_every_generated_frame_roundtrips(frame: F.Frame) -> None:
    _roundtrip(frame)


@pytest.mark.parametrize("type_", list(FrameType), ids=lambda t: t.name)
@given(data=st.data())
def test_each_type_roundtrips_on_its_own(type_: FrameType, data: st.DataObject) -> None:
    # One test per type, so a type that hypothesis rarely draws from frames() still gets
    # the full example budget.
    _roundtrip(data.draw(ps.frames(types=[type_])))


def test_header_block_with_no_pairs_is_distinct_from_no_headers() -> None:
    without = codec.encode_frame(F.Message(1, 2, "t", b"p"))
    empty = codec.encode_frame(F.Message(1, 2, "t", b"p", ()))
    assert without[5] == 0 and empty[5] == HAS_HEADERS
    assert len(empty) == len(without) + 1  # the zero count byte
    assert codec.decode_body(empty[4], empty[5], empty[HEADER_SIZE:]) == F.Message(
        1, 2, "t", b"p", ()
    )


def test_header_order_and_repeated_keys_survive() -> None:
    headers = (("k", b"2"), ("a", b""), ("k", b"1"), ("k", b"2"))
    _roundtrip(F.Publish(1, "t", b"", headers))
    _roundtrip(F.PublishBatch(1, "t", (F.Record(b"x", headers), F.Record(b"y", ()))))


@pytest.mark.parametrize("kind", list(SinceKind), ids=lambda k: k.name)
def test_subscribe_carries_only_the_position_fields_of_its_kind(kind: SinceKind) -> None:
    frame = F.Subscribe(
        7,
        "t",
        kind,
        1 if kind == SinceKind.AFTER else 0,
        2 if kind == SinceKind.AFTER else 0,
        3 if kind == SinceKind.LAST else 0,
    )
    extra = {SinceKind.AFTER: 16, SinceKind.LAST: 4}.get(kind, 0)
    assert len(_roundtrip(frame)) == HEADER_SIZE + 4 + 4 + 1 + extra + 2


@pytest.mark.parametrize("outcome", list(Outcome), ids=lambda o: o.name)
def test_subscribed_carries_the_gap_range_only_for_outcome_gap(outcome: Outcome) -> None:
    gap = (1, 2, 3) if outcome == Outcome.GAP else (0, 0, 0)
    data = _roundtrip(F.Subscribed(1, outcome, 2, 3, 4, *gap))
    assert len(data) == HEADER_SIZE + 29 + (18 if outcome == Outcome.GAP else 0)


def test_the_largest_counts_roundtrip() -> None:
    tiny = tuple((str(i % 10), bytes([i % 256])) for i in range(U8))
    _roundtrip(F.Message(1, 1, "t", b"p", tiny))
    assert codec.encode_frame(F.Message(1, 1, "t", b"p", tiny)) == reference.encode_frame(
        F.Message(1, 1, "t", b"p", tiny)
    )
    _roundtrip(F.MessageBatch(1, 1, "t", tuple(F.Record(bytes([i % 256])) for i in range(U16))))
    _roundtrip(F.PublishBatch(1, "t", tuple(F.Record(b"", ()) for _ in range(U16))))
    _roundtrip(F.Goaway(0, 0, 0, tuple(F.Position(i, i, i) for i in range(U16)), ""))


TOO_LARGE: list[tuple[str, F.Frame]] = [
    ("u32 above its width", F.Credit(U32 + 1, 1)),
    ("u64 above its width", F.Ping(U64 + 1)),
    ("negative integer", F.Ack(-1, 0)),
    ("u8 field above 255", F.Error(0, 256, 0, "")),
    ("u16 field above 65535", F.Puback(0, 0, 0, U16 + 1)),
    ("topic of 256 bytes", F.Message(0, 0, "t" * 256, b"")),
    ("text16 of 65536 bytes", F.Error(0, 0, 0, "x" * (U16 + 1))),
    ("bytes16 of 65536 bytes", F.Hello(0, 0, "", b"x" * (U16 + 1))),
    ("header value of 65536 bytes", F.Publish(0, "t", b"", (("k", b"x" * (U16 + 1)),))),
    ("lone surrogate in text", F.Subscribe(0, "a\udc80b")),
    ("256 header pairs", F.Message(0, 0, "t", b"", (("k", b""),) * 256)),
    ("65536 records", F.PublishBatch(0, "t", (F.Record(b""),) * (U16 + 1))),
    ("65536 positions", F.Goaway(0, 0, 0, (F.Position(0, 0, 0),) * (U16 + 1), "")),
    (
        "records mixing headers and none",
        F.MessageBatch(0, 0, "t", (F.Record(b""), F.Record(b"", ()))),
    ),
    ("text that is not a str", F.Message(0, 0, b"bytes", b"")),  # type: ignore[arg-type]
    ("payload that is not bytes", F.Publish(0, "t", "text")),  # type: ignore[arg-type]
    ("float where an integer belongs", F.Ping(1.0)),  # type: ignore[arg-type]
    ("unknown frame type above 255", F.Unknown(256, 0, b"")),
]


@pytest.mark.parametrize(("why", "frame"), TOO_LARGE, ids=[w for w, _ in TOO_LARGE])
def test_encoding_what_the_layout_cannot_hold_is_a_local_error(why: str, frame: F.Frame) -> None:
    for encode in (codec.encode_frame, reference.encode_frame):
        with pytest.raises(LocalProtocolError) as info:
            encode(frame)
        assert info.value.code == ErrorCode.FIELD_OUT_OF_RANGE


def test_encoding_something_that_is_not_a_frame_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        codec.encode_frame(object())  # type: ignore[arg-type]


def test_range_rules_are_receive_rules_so_the_encoder_builds_hostile_frames() -> None:
    # Tests and fuzzers build out-of-range frames with the same codec; the receiver
    # rejects them (tests/protocol/test_codec_equivalence.py and the vectors prove it).
    for frame in (
        F.Credit(1, 0),
        F.Subscribe(1, "t", since_kind=9),
        F.Gap(1, 1, 5, 4, 0),
        F.MessageBatch(1, 1, "t", ()),
    ):
        assert codec.encode_frame(frame) == reference.encode_frame(frame)


def test_unknown_frames_encode_verbatim() -> None:
    data = codec.encode_frame(F.Unknown(0x99, 0xFF, b"\x01\x02"))
    assert data == bytes.fromhex("00000002 99 ff 0102")
    assert codec.decode_body(data[4], data[5], data[HEADER_SIZE:]) is None


def test_decoded_fields_do_not_alias_the_receive_buffer() -> None:
    frame = F.Message(1, 2, "t", b"payload", (("k", b"value"),))
    buffer = bytearray(codec.encode_frame(frame))
    with memoryview(buffer) as view:
        decoded = codec.decode_body(buffer[4], buffer[5], view[HEADER_SIZE:])
    buffer[:] = bytes(len(buffer))  # the decoder reuses its buffer after each frame
    assert decoded == frame
