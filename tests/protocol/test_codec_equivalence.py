"""The hot-path codec is the construct declarations, only faster.

``codec.py`` promises byte-identical encoding and, for every byte string, the same frame or
the same error code as ``reference.py`` (SPEC.md §3.5 order included). These tests hold it to
that over generated frames, arbitrary bytes, and valid frames with bytes flipped, inserted,
removed or cut, which is where a hand-written parser disagrees with a declaration.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushwire.protocol import codec, decoder, reference
from pushwire.protocol import frames as F
from pushwire.protocol.errors import LocalProtocolError, RemoteProtocolError
from pushwire.protocol.layouts import DEFINED_FLAGS, HEADER_SIZE, FrameType, Header
from pushwire.protocol.testing import strategies as ps

Outcome = tuple[str, Any]


def decoded(decode: Any, type_: int, flags: int, payload: bytes | memoryview) -> Outcome:
    try:
        return "frame", decode(type_, flags, payload)
    except RemoteProtocolError as exc:
        return "error", exc.code


def encoded(encode: Any, frame: F.Frame) -> Outcome:
    try:
        return "bytes", encode(frame)
    except LocalProtocolError as exc:
        return "error", exc.code


def assert_decoders_agree(type_: int, flags: int, payload: bytes) -> None:
    expected = decoded(reference.decode_body, type_, flags, payload)
    assert decoded(codec.decode_body, type_, flags, payload) == expected
    assert decoded(codec.decode_body, type_, flags, memoryview(payload)) == expected


@pytest.mark.spec("PW-FRAME-1", "PW-FRAME-11")
@given(ps.frames())
def test_fast_codec_encodes_the_same_bytes_as_the_declarations(frame: F.Frame) -> None:
    assert codec.encode_frame(frame) == reference.encode_frame(frame)


@given(ps.frames())
def test_fast_codec_decodes_the_same_frame_as_the_declarations(frame: F.Frame) -> None:
    data = reference.encode_frame(frame)
    assert_decoders_agree(data[4], data[5], data[HEADER_SIZE:])


_type_bytes = st.sampled_from([int(t) for t in FrameType]) | st.integers(0, 255)
_flag_bytes = st.sampled_from([0, 1]) | st.integers(0, 255)


@pytest.mark.spec("PW-FRAME-3", "PW-FRAME-4", "PW-FRAME-5", "PW-FRAME-6", "PW-FRAME-7")
@given(_type_bytes, _flag_bytes, st.binary(max_size=80))
def test_both_decoders_agree_on_arbitrary_bytes(type_: int, flags: int, payload: bytes) -> None:
    assert_decoders_agree(type_, flags, payload)


@st.composite
def mutated_frames(draw: st.DrawFn) -> tuple[int, int, bytes]:
    """A valid frame with a few random edits to its payload and, where the type defines
    one, its HAS_HEADERS / AT_LEAST_ONCE bit toggled (which changes the layout)."""
    data = draw(ps.frame_bytes(max_items=3, max_payload=24))
    type_, flags, body = data[4], data[5], bytearray(data[HEADER_SIZE:])
    if DEFINED_FLAGS[FrameType(type_)] and draw(st.booleans()):
        flags ^= DEFINED_FLAGS[FrameType(type_)]
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "insert", "delete", "cut", "extend"]))
        at = draw(st.integers(0, len(body)))
        if op == "set" and body:
            body[min(at, len(body) - 1)] = draw(st.integers(0, 255))
        elif op == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del body[at : at + draw(st.integers(1, 4))]
        elif op == "cut":
            del body[at:]
        elif op == "extend":
            body += draw(st.binary(min_size=1, max_size=4))
    return type_, flags, bytes(body)


@pytest.mark.spec("PW-FRAME-4", "PW-FRAME-6", "PW-FRAME-7", "PW-FRAME-14")
@given(mutated_frames())
def test_both_decoders_agree_on_mutated_frames(mutation: tuple[int, int, bytes]) -> None:
    assert_decoders_agree(*mutation)


@given(ps.malformed_frames())
def test_both_decoders_agree_on_the_payloads_of_malformed_frames(malformed: ps.Malformed) -> None:
    data = malformed.data
    length = int.from_bytes(data[:4], "big")
    if len(data) - HEADER_SIZE == length:  # not the oversized ones: those never get parsed
        assert_decoders_agree(data[4], data[5], data[HEADER_SIZE:])


@st.composite
def frames_with_a_field_out_of_its_width(draw: st.DrawFn) -> F.Frame:
    frame = draw(ps.frames(max_items=2, max_payload=8))
    ints = [
        f.name
        for f in dataclasses.fields(frame)  # type: ignore[arg-type]
        if type(getattr(frame, f.name)) is int
    ]
    name = draw(st.sampled_from(ints))
    bad = draw(st.integers(max_value=-1) | st.integers(min_value=1 << 8) | st.floats())
    return dataclasses.replace(frame, **{name: bad})  # type: ignore[type-var]


@given(frames_with_a_field_out_of_its_width())
def test_both_encoders_refuse_the_same_frames(frame: F.Frame) -> None:
    # A field outside its width is refused by both, unless the layout leaves that field
    # out (e.g. since_epoch of a SUBSCRIBE since NEW) and both then give the same bytes.
    assert encoded(codec.encode_frame, frame) == encoded(reference.encode_frame, frame)


@given(st.integers(0, (1 << 32) - 1), st.integers(0, 255), st.integers(0, 255))
def test_the_struct_headers_are_the_declared_header(length: int, type_: int, flags: int) -> None:
    declared = Header.build({"length": length, "type": type_, "flags": flags})
    for layout in (decoder._HEADER, codec._HDR):
        assert isinstance(layout, struct.Struct)
        assert layout.pack(length, type_, flags) == declared
        assert layout.unpack(declared) == (length, type_, flags)
    parsed = Header.parse(declared)
    assert (parsed.length, parsed.type, parsed.flags) == (length, type_, flags)


def test_the_dispatch_table_accepts_exactly_the_defined_flags() -> None:
    for type_ in FrameType:
        for flags in range(256):
            defined = not flags & ~DEFINED_FLAGS[type_]
            assert ((type_ << 8 | flags) in codec._DECODERS) == defined


@given(
    st.integers(1, 2**63 - 1),
    st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 2**40), st.integers(1, 0xFFFF)),
        max_size=20,
    ),
)
def test_encode_pubacks_is_each_wanted_puback_back_to_back(
    epoch: int, acks: list[tuple[int, int, int]]
) -> None:
    expected = b"".join(
        codec.encode_frame(F.Puback(rid, epoch, first, count)) for rid, first, count in acks if rid
    )
    assert codec.encode_pubacks(epoch, acks) == expected


@given(
    ps.topic_names() | st.text(max_size=300),
    st.none() | st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=8)), max_size=3),
    st.lists(st.tuples(st.integers(0, 2**32), st.binary(max_size=40)), min_size=1, max_size=12),
)
def test_encode_publishes_is_each_publish_frame_back_to_back(
    topic: str, headers: list[tuple[str, bytes]] | None, pairs: list[tuple[int, bytes]]
) -> None:
    hdrs = None if headers is None else tuple(headers)
    frames = [F.Publish(rid, topic, payload, hdrs) for rid, payload in pairs]
    try:
        expected: Outcome = "bytes", b"".join(reference.encode_frame(f) for f in frames)
    except LocalProtocolError as exc:
        expected = "error", exc.code
    rids, payloads = [rid for rid, _ in pairs], [payload for _, payload in pairs]
    try:
        got: Outcome = "bytes", codec.encode_publishes(topic, hdrs, rids, payloads)
    except LocalProtocolError as exc:
        got = "error", exc.code
    assert got == expected


@given(ps.frames(types=[FrameType.PUBACK]))
def test_puback_frame_struct_reads_the_declared_puback(frame: F.Puback) -> None:
    data = reference.encode_frame(frame)
    assert len(data) == codec.PUBACK_FRAME.size
    assert codec.PUBACK_FRAME.unpack(data) == (
        len(data) - HEADER_SIZE,
        FrameType.PUBACK,
        0,
        frame.request_id,
        frame.epoch,
        frame.first_seq,
        frame.count,
    )
