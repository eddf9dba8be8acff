"""The raw-wire helpers are the construct declarations, only without judging the bytes.

Tools that talk to a peer byte by byte build headers that lie and prefaces with any version
or reserved bits; ``codec.encode_header`` / ``decode_header`` / ``encode_raw_frame`` and
``decoder.encode_preface`` / ``read_preface`` are how they do it. These tests hold them to
``layouts.Header``, ``ClientPreface`` and ``ServerPreface``.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushwire.protocol import codec, reference
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import Preface, encode_preface, parse_preface, read_preface
from pushwire.protocol.errors import ErrorCode, LocalProtocolError
from pushwire.protocol.layouts import (
    HEADER_SIZE,
    MAGIC,
    PREFACE_SIZE,
    ClientPreface,
    Header,
    ServerPreface,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)


@given(length=u32, type_=u8, flags=u8)
def test_encode_header_is_the_declaration(length: int, type_: int, flags: int) -> None:
    built = Header.build({"length": length, "type": type_, "flags": flags})
    assert codec.encode_header(length, type_, flags) == built
    assert codec.encode_header(length, type_, flags) == reference.build_header(length, type_, flags)


@given(data=st.binary(min_size=HEADER_SIZE, max_size=3 * HEADER_SIZE))
def test_decode_header_reads_what_the_declaration_parses(data: bytes) -> None:
    parsed = Header.parse(data[:HEADER_SIZE])
    assert codec.decode_header(data) == (parsed.length, parsed.type, parsed.flags)
    assert codec.decode_header(memoryview(data)) == codec.decode_header(bytearray(data))


@given(data=st.binary(max_size=HEADER_SIZE - 1))
def test_decode_header_refuses_fewer_bytes_than_a_header(data: bytes) -> None:
    with pytest.raises(ValueError):
        codec.decode_header(data)


@pytest.mark.parametrize(("length", "type_", "flags"), [(2**32, 1, 0), (0, 256, 0), (0, 1, -1)])
def test_encode_header_refuses_values_that_do_not_fit(length: int, type_: int, flags: int) -> None:
    with pytest.raises(LocalProtocolError) as info:
        codec.encode_header(length, type_, flags)
    assert info.value.code == ErrorCode.FIELD_OUT_OF_RANGE


@given(type_=u8, flags=u8, payload=st.binary(max_size=64))
def test_raw_frame_is_the_reference_frame(type_: int, flags: int, payload: bytes) -> None:
    frame = codec.encode_raw_frame(type_, flags, payload)
    assert frame == reference.build_frame(type_, flags, payload)
    assert codec.frame_payload(frame) == payload
    assert codec.payload_size(frame) == len(payload)
    assert codec.decode_header(frame) == (len(payload), type_, flags)


def test_encode_payload_is_the_frame_without_its_header() -> None:
    frame = F.Credit(7, 3)
    type_, flags, payload = reference.encode_body(frame)
    assert codec.encode_payload(frame) == payload
    assert codec.encode_raw_frame(type_, flags, payload) == codec.encode_frame(frame)


@given(first=u8, second=u8, reserved=u16)
def test_encode_preface_is_both_declarations(first: int, second: int, reserved: int) -> None:
    client = ClientPreface.build(
        {"magic": MAGIC, "min_version": first, "max_version": second, "reserved": reserved}
    )
    server = ServerPreface.build(
        {"magic": MAGIC, "version": first, "max_version": second, "reserved": reserved}
    )
    assert encode_preface(first, second, reserved=reserved) == client == server


@given(data=st.binary(min_size=PREFACE_SIZE, max_size=2 * PREFACE_SIZE))
def test_read_preface_reads_what_the_declaration_parses(data: bytes) -> None:
    parsed = ClientPreface.parse(data[:PREFACE_SIZE])
    got = read_preface(data)
    assert got == Preface(parsed.magic, parsed.min_version, parsed.max_version, parsed.reserved)
    again = encode_preface(got.first, got.second, reserved=got.reserved, magic=got.magic)
    assert again == data[:PREFACE_SIZE]
    assert got.valid == (parsed.magic == MAGIC and parsed.reserved == 0)


@given(first=u8, second=u8)
def test_a_valid_preface_reads_back_as_parse_preface_accepts_it(first: int, second: int) -> None:
    data = encode_preface(first, second)
    assert read_preface(data).valid
    assert parse_preface(data) == (first, second)


def test_read_preface_refuses_fewer_bytes_than_a_preface() -> None:
    with pytest.raises(ValueError):
        read_preface(MAGIC)


@given(
    before=st.binary(max_size=12),
    type_=u8,
    flags=u8,
    payload=st.binary(max_size=40),
    cut=st.integers(0, 50),
)
def test_frame_span_finds_a_frame_by_its_header_whole_or_cut_short(
    before: bytes, type_: int, flags: int, payload: bytes, cut: int
) -> None:
    frame = codec.encode_raw_frame(type_, flags, payload)
    data = before + frame[: HEADER_SIZE + cut]
    span = codec.frame_span(data, len(before))
    assert span is not None
    assert span.header == codec.decode_header(frame)
    assert data[span.body : span.end] == payload[:cut]
    assert span.end == len(before) + len(frame)
    assert codec.frame_span(data[: len(before) + HEADER_SIZE - 1], len(before)) is None
