"""The incremental decoder: bytes in any chunks, whole frames out, errors from the bytes alone.

Every parser is tested three ways (whole input, one byte at a time, with trailing data) plus
arbitrary split points; the size limit is proven to be decided from the 6-byte header
before any payload exists; and no input, however hostile, gets anything but a
RemoteProtocolError out of it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from unittest.mock import patch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushwire.protocol import codec, reference
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder, choose_version, encode_preface, parse_preface
from pushwire.protocol.errors import ErrorCode, RemoteProtocolError
from pushwire.protocol.layouts import (
    HEADER_SIZE,
    INITIAL_MAX_FRAME_SIZE,
    MAGIC,
    PREFACE_SIZE,
    FrameType,
    Header,
)
from pushwire.protocol.testing import strategies as ps

PING = codec.encode_frame(F.Ping(7))
MESSAGE = codec.encode_frame(F.Message(1, 2, "a/b", b"payload", (("k", b"v"),)))
IGNORABLE = codec.encode_frame(F.Unknown(0x80, 0xFF, b"skip me"))


def drain(decoder: FrameDecoder) -> list[F.Frame]:
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


def chunks(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` split at the offsets ``cuts`` (empty pieces dropped: b"" means EOF)."""
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def feed_in_chunks(
    data: bytes, cuts: Sequence[int], max_frame_size: int = INITIAL_MAX_FRAME_SIZE
) -> list[F.Frame]:
    """Feed ``data`` split at ``cuts``, draining after every chunk, then EOF."""
    decoder = FrameDecoder(max_frame_size)
    frames: list[F.Frame] = []
    for chunk in chunks(data, cuts):
        decoder.feed(chunk)
        frames += drain(decoder)
    decoder.feed(b"")
    frames += drain(decoder)
    return frames


def first_error(
    data: bytes, cuts: Sequence[int] = (), max_frame_size: int = INITIAL_MAX_FRAME_SIZE
) -> ErrorCode:
    with pytest.raises(RemoteProtocolError) as info:
        feed_in_chunks(data, cuts, max_frame_size)
    return info.value.code


@contextmanager
def reference_bodies() -> Iterator[None]:
    """Run the decoder with the construct reference parsing each payload."""
    with patch.object(codec, "decode_body", reference.decode_body):
        yield


# -- whole, bytewise, trailing -----------------------------------------------------------------


def test_a_whole_frame_in_one_chunk_decodes() -> None:
    assert feed_in_chunks(PING, []) == [F.Ping(7)]


def test_a_frame_fed_one_byte_at_a_time_decodes_only_when_complete() -> None:
    decoder = FrameDecoder()
    for byte in MESSAGE[:-1]:
        decoder.feed(bytes([byte]))
        assert decoder.next_frame() is None
    decoder.feed(MESSAGE[-1:])
    assert decoder.next_frame() == codec.decode_body(MESSAGE[4], MESSAGE[5], MESSAGE[6:])
    assert decoder.buffered == 0


def test_trailing_bytes_of_the_next_frame_stay_buffered() -> None:
    decoder = FrameDecoder()
    decoder.feed(PING + MESSAGE[:10])
    assert decoder.next_frame() == F.Ping(7)
    assert decoder.next_frame() is None
    assert decoder.buffered == 10
    decoder.feed(MESSAGE[10:])
    assert decoder.next_frame() is not None
    assert decoder.buffered == 0


def test_frames_back_to_back_decode_in_order() -> None:
    assert feed_in_chunks(PING + MESSAGE + PING, []) == [F.Ping(7), drain_one(MESSAGE), F.Ping(7)]


def drain_one(data: bytes) -> F.Frame:
    (frame,) = feed_in_chunks(data, [])
    return frame


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[F.Frame], bytes]:
    """Valid and ignorable frames back to back, and the frames a receiver gets from them."""
    expected: list[F.Frame] = []
    data = b""
    for item in draw(
        st.lists(ps.frames(max_items=2, max_payload=32) | ps.unknown_frames(), max_size=6)
    ):
        encoded = reference.encode_frame(item)
        if len(encoded) - HEADER_SIZE > INITIAL_MAX_FRAME_SIZE:
            continue
        data += encoded
        if not isinstance(item, F.Unknown):
            expected.append(item)
    return expected, data


@pytest.mark.spec("PW-FRAME-1", "PW-FRAME-8")
@given(streams(), st.data())
def test_any_split_of_a_stream_gives_the_same_frames(
    stream: tuple[list[F.Frame], bytes], data: st.DataObject
) -> None:
    expected, raw = stream
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    assert feed_in_chunks(raw, cuts) == expected


@given(streams())
def test_a_stream_fed_bytewise_gives_the_same_frames(stream: tuple[list[F.Frame], bytes]) -> None:
    expected, raw = stream
    assert feed_in_chunks(raw, range(len(raw))) == expected


# -- the size limit -------------------------------------------------------------------------------


@pytest.mark.spec("PW-FRAME-2", "PW-LIMIT-4", "PW-SEC-5")
@given(
    st.integers(INITIAL_MAX_FRAME_SIZE + 1, (1 << 32) - 1),
    st.integers(0, 255),
    st.integers(0, 255),
)
def test_an_oversized_frame_is_refused_from_its_header_alone(
    length: int, type_: int, flags: int
) -> None:
    # Only the six header bytes exist: the payload never arrives, so the decision cannot
    # have waited for it or buffered it. Type and flags do not matter (§3.5 step 1).
    decoder = FrameDecoder()
    decoder.feed(Header.build({"length": length, "type": type_, "flags": flags}))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE
    assert info.value.requirement == "PW-FRAME-2"


@pytest.mark.spec("PW-FRAME-2")
def test_a_header_fed_one_byte_at_a_time_is_refused_on_its_sixth_byte() -> None:
    header = Header.build({"length": 20_000, "type": FrameType.PUBLISH, "flags": 0})
    decoder = FrameDecoder()
    for byte in header[:-1]:
        decoder.feed(bytes([byte]))
        assert decoder.next_frame() is None
    decoder.feed(header[-1:])
    with pytest.raises(RemoteProtocolError, match="20000"):
        decoder.next_frame()


@pytest.mark.spec("PW-FRAME-2", "PW-FRAME-10")
def test_the_limit_is_the_receivers_own_and_a_frame_at_the_limit_is_accepted() -> None:
    limit = 20_000
    at_limit = codec.encode_frame(F.Publish(1, "t", bytes(limit - 6)))
    assert len(at_limit) - HEADER_SIZE == limit
    assert first_error(at_limit, max_frame_size=limit - 1) == ErrorCode.FRAME_TOO_LARGE
    assert feed_in_chunks(at_limit, [], max_frame_size=limit) == [
        F.Publish(1, "t", bytes(limit - 6))
    ]
    decoder = FrameDecoder()  # the limit may be raised once the peer learned it (WELCOME)
    decoder.max_frame_size = limit
    decoder.feed(at_limit)
    assert decoder.next_frame() is not None


def test_an_ignorable_frame_above_the_limit_is_refused_not_skipped() -> None:
    header = Header.build({"length": INITIAL_MAX_FRAME_SIZE + 1, "type": 0xC0, "flags": 0})
    assert first_error(header) == ErrorCode.FRAME_TOO_LARGE


# -- ignorable frames, EOF -------------------------------------------------------------------------


@pytest.mark.spec("PW-FRAME-8")
@given(ps.unknown_frames(ignorable=True))
def test_unknown_ignorable_frames_are_skipped_whatever_their_flags_and_payload(
    unknown: F.Unknown,
) -> None:
    data = codec.encode_frame(unknown)
    assert feed_in_chunks(data + PING + data, []) == [F.Ping(7)]


@pytest.mark.spec("PW-FRAME-5")
@given(ps.unknown_frames(ignorable=False))
def test_unknown_fatal_frames_are_refused(unknown: F.Unknown) -> None:
    assert first_error(codec.encode_frame(unknown)) == ErrorCode.UNKNOWN_FRAME_TYPE


def test_end_of_input_between_frames_is_clean() -> None:
    assert feed_in_chunks(PING + PING, [HEADER_SIZE + 8]) == [F.Ping(7), F.Ping(7)]
    decoder = FrameDecoder()
    decoder.feed(b"")
    assert decoder.next_frame() is None


@pytest.mark.spec("PW-FRAME-4")
@pytest.mark.parametrize("kept", [1, HEADER_SIZE - 1, HEADER_SIZE, len(MESSAGE) - 1])
def test_end_of_input_inside_a_frame_is_malformed(kept: int) -> None:
    assert first_error(PING + MESSAGE[:kept]) == ErrorCode.MALFORMED_FRAME


@pytest.mark.spec("PW-FRAME-14")
@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("000000087d00", ErrorCode.UNKNOWN_FRAME_TYPE),
        ("000000087d0000", ErrorCode.UNKNOWN_FRAME_TYPE),
        ("00000008200200", ErrorCode.RESERVED_BITS_SET),
        ("000000080301", ErrorCode.RESERVED_BITS_SET),
        ("00000008c00000", ErrorCode.MALFORMED_FRAME),  # an ignorable frame cut short
        ("000000087d", ErrorCode.MALFORMED_FRAME),  # the header itself is cut short
    ],
)
def test_end_of_input_inside_a_payload_keeps_the_code_the_header_decides(
    data: str, code: ErrorCode
) -> None:
    raw = bytes.fromhex(data)
    for cut in range(len(raw) + 1):
        assert first_error(PING + raw, [len(PING) + cut]) == code


@pytest.mark.spec("PW-FRAME-4", "PW-FRAME-14")
def test_a_cut_short_payload_is_not_examined() -> None:
    bad_topic = reference.build_frame(FrameType.SUBSCRIBE, 0, bytes(9) + b"\x02\xff\xff")
    assert first_error(bad_topic) == ErrorCode.INVALID_UTF8
    # the same header and every payload byte but the last, then EOF: the bad topic byte has
    # arrived, but a cut-short payload is MALFORMED_FRAME whatever it holds
    assert first_error(bad_topic[:-1]) == ErrorCode.MALFORMED_FRAME


# -- hostile input ---------------------------------------------------------------------------------


@pytest.mark.spec(
    "PW-FRAME-2", "PW-FRAME-3", "PW-FRAME-4", "PW-FRAME-5", "PW-FRAME-6", "PW-FRAME-7"
)
@given(ps.malformed_frames(), st.data())
def test_every_malformed_frame_gets_its_code_in_any_chunking(
    malformed: ps.Malformed, data: st.DataObject
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(malformed.data)), max_size=4))
    decoder = FrameDecoder()
    with pytest.raises(RemoteProtocolError) as info:
        for chunk in chunks(malformed.data, cuts):
            decoder.feed(chunk)
            assert drain(decoder) == []
    assert info.value.code == malformed.code
    with reference_bodies(), pytest.raises(RemoteProtocolError) as info:
        feed_in_chunks(malformed.data, [])
    assert info.value.code == malformed.code


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=6))
def test_arbitrary_bytes_only_ever_raise_remote_protocol_errors(
    data: bytes, cuts: list[int]
) -> None:
    # Anything else (struct.error, IndexError, UnicodeDecodeError, construct errors) would
    # escape as a crash instead of a close with a code.
    try:
        feed_in_chunks(data, [c for c in cuts if c <= len(data)])
    except RemoteProtocolError as exc:
        assert isinstance(exc.code, ErrorCode)
        assert exc.requirement is not None


@given(st.binary(min_size=HEADER_SIZE, max_size=64), st.integers(0, 255), st.integers(0, 255))
def test_arbitrary_payloads_of_known_types_only_raise_remote_protocol_errors(
    payload: bytes, type_: int, flags: int
) -> None:
    data = Header.build({"length": len(payload), "type": type_, "flags": flags}) + payload
    try:
        feed_in_chunks(data, [])
    except RemoteProtocolError:
        pass


# -- conversations --------------------------------------------------------------------------------


@given(ps.conversations("client") | ps.conversations("server"), st.data())
def test_whole_conversations_decode_in_any_chunking(
    conversation: ps.Conversation, data: st.DataObject
) -> None:
    raw = conversation.data()
    assert parse_preface(raw[:PREFACE_SIZE]) == (1, 1)
    body = raw[PREFACE_SIZE:]
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=8))
    assert feed_in_chunks(body, cuts) == list(conversation.frames)


# -- prefaces --------------------------------------------------------------------------------------


def test_a_preface_is_the_magic_two_version_bytes_and_a_zero_u16() -> None:
    assert encode_preface(1, 3) == MAGIC + b"\x01\x03\x00\x00"
    assert parse_preface(encode_preface(1, 3)) == (1, 3)
    assert parse_preface(bytearray(encode_preface(0, 1))) == (0, 1)


@pytest.mark.spec("PW-PREFACE-1")
@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",
        bytes.fromhex("1603010200010000"),
        b"\x89PW\r\n\x01\x01\x00",
        b"",
        MAGIC,
    ],
    ids=["http", "tls", "newline-translated", "empty", "magic-only"],
)
def test_a_preface_without_the_magic_or_too_short_is_bad_preface(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_preface(data)
    assert info.value.code == ErrorCode.BAD_PREFACE


@pytest.mark.spec("PW-PREFACE-2")
@pytest.mark.parametrize("reserved", [b"\x00\x01", b"\x80\x00", b"\xff\xff"])
def test_a_preface_with_reserved_bits_set_is_refused(reserved: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_preface(MAGIC + b"\x01\x01" + reserved)
    assert info.value.code == ErrorCode.RESERVED_BITS_SET


@pytest.mark.spec("PW-PREFACE-1", "PW-PREFACE-2")
@given(st.binary(min_size=PREFACE_SIZE, max_size=PREFACE_SIZE))
def test_any_eight_bytes_parse_or_raise_a_preface_code(data: bytes) -> None:
    try:
        versions = parse_preface(data)
    except RemoteProtocolError as exc:
        expected = ErrorCode.BAD_PREFACE if data[:4] != MAGIC else ErrorCode.RESERVED_BITS_SET
        assert exc.code == expected
    else:
        assert data[:4] == MAGIC and data[6:] == b"\x00\x00"
        assert versions == (data[4], data[5])


@pytest.mark.spec("PW-PREFACE-6")
@pytest.mark.parametrize(
    ("offer", "chosen"),
    [((1, 1), 1), ((1, 5), 1), ((0, 1), 1), ((2, 3), None), ((3, 2), None), ((0, 0), None)],
)
def test_the_version_chosen_is_the_highest_common_one(
    offer: tuple[int, int], chosen: int | None
) -> None:
    assert choose_version(*offer) == chosen


# -- options: raw bytes and the header hook -----------------------------------------------------

PUBLISH = codec.encode_frame(F.Publish(3, "a/b", b"payload", (("k", b"v"),)))
RAW_PUBLISHES = (FrameType.PUBLISH, FrameType.PUBLISH_BATCH)


def drain_with_raw(decoder: FrameDecoder) -> list[tuple[F.Frame, bytes | None]]:
    items = []
    while (item := decoder.next_frame_with_raw()) is not None:
        items.append(item)
    return items


def raw_in_chunks(data: bytes, cuts: Sequence[int]) -> list[tuple[F.Frame, bytes | None]]:
    decoder = FrameDecoder(raw_types=RAW_PUBLISHES)
    items: list[tuple[F.Frame, bytes | None]] = []
    for chunk in chunks(data, cuts):
        decoder.feed(chunk)
        items += drain_with_raw(decoder)
    decoder.feed(b"")
    items += drain_with_raw(decoder)
    return items


def test_a_raw_type_comes_with_its_whole_frame_as_received() -> None:
    decoder = FrameDecoder(raw_types=RAW_PUBLISHES)
    decoder.feed(PUBLISH)
    assert decoder.next_frame_with_raw() == (drain_one(PUBLISH), PUBLISH)
    assert decoder.next_frame_with_raw() is None


def test_a_raw_frame_fed_one_byte_at_a_time_comes_only_when_complete() -> None:
    decoder = FrameDecoder(raw_types=RAW_PUBLISHES)
    for byte in PUBLISH[:-1]:
        decoder.feed(bytes([byte]))
        assert decoder.next_frame_with_raw() is None
    decoder.feed(PUBLISH[-1:])
    assert decoder.next_frame_with_raw() == (drain_one(PUBLISH), PUBLISH)


def test_other_types_come_without_raw_bytes_and_trailing_bytes_stay_buffered() -> None:
    decoder = FrameDecoder(raw_types=RAW_PUBLISHES)
    decoder.feed(PING + PUBLISH + PING[:3])
    assert drain_with_raw(decoder) == [(F.Ping(7), None), (drain_one(PUBLISH), PUBLISH)]
    assert decoder.buffered == 3


def test_without_options_the_raw_bytes_are_always_none() -> None:
    decoder = FrameDecoder()
    decoder.feed(PUBLISH + PING)
    assert drain_with_raw(decoder) == [(drain_one(PUBLISH), None), (F.Ping(7), None)]


@given(streams(), st.data())
def test_raw_bytes_are_each_frames_own_bytes_in_any_chunking(
    stream: tuple[list[F.Frame], bytes], data: st.DataObject
) -> None:
    expected, raw = stream
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    items = raw_in_chunks(raw, cuts)
    assert [frame for frame, _ in items] == expected
    for frame, kept in items:
        if frame.TYPE in RAW_PUBLISHES:
            assert kept == codec.encode_frame(frame)  # the stream was made by the encoder
        else:
            assert kept is None


def test_the_raw_bytes_of_a_publish_after_a_skipped_frame_are_its_own() -> None:
    items = raw_in_chunks(IGNORABLE + PUBLISH + IGNORABLE + PING, [])
    assert items == [(drain_one(PUBLISH), PUBLISH), (F.Ping(7), None)]


@pytest.mark.spec("PW-FRAME-3")
def test_reserved_flag_bits_of_a_known_type_are_refused() -> None:
    header = codec.decode_header(PING)
    data = codec.encode_header(header.length, header.type, 0x40) + PING[HEADER_SIZE:]
    decoder = FrameDecoder()
    decoder.feed(data)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == ErrorCode.RESERVED_BITS_SET


def test_the_bytes_before_the_first_frame_are_peeked_and_taken() -> None:
    decoder = FrameDecoder()
    preface = encode_preface(1, 1)
    decoder.feed(preface + PING[:2])
    assert decoder.peek(PREFACE_SIZE) == preface
    assert decoder.buffered == PREFACE_SIZE + 2
    assert decoder.take(PREFACE_SIZE) == preface
    decoder.feed(PING[2:])
    assert decoder.next_frame() == F.Ping(7)


def test_holds_a_frame_only_once_the_whole_frame_is_buffered() -> None:
    decoder = FrameDecoder()
    assert not decoder.holds_a_frame()
    for byte in PING[:-1]:
        decoder.feed(bytes([byte]))
        assert not decoder.holds_a_frame()
    decoder.feed(PING[-1:])
    assert decoder.holds_a_frame()
    assert not decoder.eof
    decoder.feed(b"")
    assert decoder.eof


# -- out-of-range selectors (§3.5) ------------------------------------------------------------


def _str8(text: bytes) -> bytes:
    return bytes([len(text)]) + text


@pytest.mark.spec("PW-FRAME-17")
@given(
    kind=st.integers(4, 255),
    extra=st.sampled_from([b"", b"\x00" * 12, b"\x00" * 8, b"\x01"]),
    with_reference=st.booleans(),
)
def test_an_out_of_range_since_kind_selects_no_fields(
    kind: int, extra: bytes, with_reference: bool
) -> None:
    """The topic follows since_kind at once; any byte more (say, the since fields an AFTER
    would have) is MALFORMED_FRAME, judged before the range."""
    payload = (1).to_bytes(4, "big") + (8).to_bytes(4, "big") + bytes([kind]) + _str8(b"t")
    frame = codec.encode_raw_frame(FrameType.SUBSCRIBE, 0, payload + extra)
    expected = ErrorCode.MALFORMED_FRAME if extra else ErrorCode.FIELD_OUT_OF_RANGE
    if with_reference:
        with reference_bodies():
            assert first_error(frame) == expected
    else:
        assert first_error(frame) == expected


@pytest.mark.spec("PW-FRAME-17")
@given(outcome=st.integers(4, 255), extra=st.sampled_from([b"", b"\x00" * 19, b"\x01"]))
def test_an_out_of_range_outcome_selects_no_gap_fields(outcome: int, extra: bytes) -> None:
    """SUBSCRIBED: sub_id, outcome, epoch, start_seq, head, and nothing for the outcome;
    the gap fields a GAP outcome would have are leftover bytes."""
    payload = (
        (1).to_bytes(4, "big")
        + bytes([outcome])
        + (7).to_bytes(8, "big")
        + (1).to_bytes(8, "big")
        + (0).to_bytes(8, "big")
    )
    frame = codec.encode_raw_frame(FrameType.SUBSCRIBED, 0, payload + extra)
    expected = ErrorCode.MALFORMED_FRAME if extra else ErrorCode.FIELD_OUT_OF_RANGE
    assert first_error(frame) == expected
    with reference_bodies():
        assert first_error(frame) == expected
