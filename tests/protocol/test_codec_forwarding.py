"""Encode-once forwarding: push frames spliced from publish bytes are exactly the frames the
codec would encode, so the server may skip decoding and re-encoding (SPEC.md §7.8)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder
from pushwire.protocol.errors import ErrorCode, LocalProtocolError
from pushwire.protocol.layouts import HEADER_SIZE, FrameType
from pushwire.protocol.testing import strategies as ps

U64 = st.integers(0, (1 << 64) - 1)
publishes = ps.frames(types=[FrameType.PUBLISH], max_items=3, max_payload=64)
publish_batches = ps.frames(types=[FrameType.PUBLISH_BATCH], max_items=5, max_payload=32)
message_batches = ps.frames(types=[FrameType.MESSAGE_BATCH], max_items=6, max_payload=32)


@pytest.mark.spec("PW-PUB-7", "PW-PUB-8")
@given(publishes, U64, U64)
def test_a_publish_becomes_the_message_the_codec_would_encode(
    publish: F.Publish, epoch: int, seq: int
) -> None:
    expected = codec.encode_frame(
        F.Message(epoch, seq, publish.topic, publish.payload, publish.headers)
    )
    data = codec.encode_frame(publish)
    assert codec.publish_to_message(data, epoch, seq) == expected
    assert codec.publish_to_message(memoryview(bytearray(data)), epoch, seq) == expected
    assert codec.publish_to_message(publish, epoch, seq) == expected
    assert expected[5] == data[5]  # the flags byte is forwarded as is
    assert len(expected) == len(data) + 12


@pytest.mark.spec("PW-PUB-7", "PW-PUB-8")
@given(publish_batches, U64, U64)
def test_a_publish_batch_becomes_the_message_batch_the_codec_would_encode(
    publish: F.PublishBatch, epoch: int, base_seq: int
) -> None:
    expected = codec.encode_frame(F.MessageBatch(epoch, base_seq, publish.topic, publish.records))
    data = codec.encode_frame(publish)
    assert codec.publish_batch_to_message_batch(data, epoch, base_seq) == expected
    assert codec.publish_batch_to_message_batch(publish, epoch, base_seq) == expected


@given(message_batches)
def test_record_offsets_mark_where_each_record_starts_and_the_frame_ends(
    batch: F.MessageBatch,
) -> None:
    data = codec.encode_frame(batch)
    offsets = codec.batch_record_offsets(data)
    assert len(offsets) == len(batch.records) + 1
    assert offsets[-1] == len(data)
    sizes = [b - a for a, b in itertools.pairwise(offsets)]
    single = [
        len(codec.encode_frame(F.MessageBatch(0, 0, "", (r,)))) - HEADER_SIZE - 19
        for r in batch.records
    ]
    assert sizes == single  # 19 = epoch, base_seq, empty topic, count


@pytest.mark.spec("PW-FLOW-3")
@given(message_batches, st.data())
def test_a_slice_of_a_batch_is_the_batch_of_those_records(
    batch: F.MessageBatch, data: st.DataObject
) -> None:
    count = len(batch.records)
    start = data.draw(st.integers(0, count - 1))
    stop = data.draw(st.integers(start + 1, count))
    base = batch.base_seq + start
    if base >= 1 << 64:
        with pytest.raises(LocalProtocolError):
            codec.slice_batch(codec.encode_frame(batch), start, stop)
        return
    expected = codec.encode_frame(
        F.MessageBatch(batch.epoch, base, batch.topic, batch.records[start:stop])
    )
    raw = codec.encode_frame(batch)
    assert codec.slice_batch(raw, start, stop) == expected
    assert codec.slice_batch(raw, start, stop, codec.batch_record_offsets(raw)) == expected
    assert codec.slice_batch(batch, start, stop) == expected
    decoder = FrameDecoder(1 << 24)
    decoder.feed(expected)
    assert decoder.next_frame() == F.MessageBatch(
        batch.epoch, base, batch.topic, batch.records[start:stop]
    )


def test_slicing_a_whole_batch_gives_it_back_unchanged() -> None:
    batch = codec.encode_frame(
        F.MessageBatch(5, 10, "t", (F.Record(b"a", ()), F.Record(b"b", (("k", b"v"),))))
    )
    assert codec.slice_batch(batch, 0, 2) == batch


# -- the body-level parts, for a broker that stores publish bodies ------------------------------


@given(publishes | publish_batches)
def test_a_publish_body_is_what_follows_the_request_id(publish: F.Publish | F.PublishBatch) -> None:
    data = codec.encode_frame(publish)
    flags, body = codec.publish_body(data)
    assert (flags, body) == (data[5], data[HEADER_SIZE + 4 :])
    assert codec.publish_body(memoryview(bytearray(data))) == (flags, body)
    assert codec.publish_body(bytearray(data)) == (flags, body)


@pytest.mark.spec("PW-PUB-7", "PW-PUB-8")
@given(publishes, U64, U64)
def test_a_message_from_a_publish_body_is_the_message_from_the_publish(
    publish: F.Publish, epoch: int, seq: int
) -> None:
    data = codec.encode_frame(publish)
    flags, body = codec.publish_body(data)
    assert codec.body_to_message(flags, body, epoch, seq) == codec.publish_to_message(
        data, epoch, seq
    )


@given(publish_batches, U64, U64)
def test_body_record_offsets_moved_by_the_prefix_are_the_batch_record_offsets(
    publish: F.PublishBatch, epoch: int, base_seq: int
) -> None:
    flags, body = codec.publish_body(codec.encode_frame(publish))
    batch = codec.body_to_message_batch(flags, body, epoch, base_seq)
    assert batch == codec.publish_batch_to_message_batch(publish, epoch, base_seq)
    offsets = codec.body_record_offsets(flags, body)
    assert offsets[-1] == len(body)
    shift = len(batch) - len(body)  # the body is the tail of the push
    assert tuple(shift + o for o in offsets) == codec.batch_record_offsets(batch)


@pytest.mark.spec("PW-FLOW-3")
@given(message_batches, st.data())
def test_the_size_of_a_slice_is_known_without_building_it(
    batch: F.MessageBatch, data: st.DataObject
) -> None:
    assume(batch.base_seq + len(batch.records) < 1 << 64)
    raw = codec.encode_frame(batch)
    offsets = codec.batch_record_offsets(raw)
    start = data.draw(st.integers(0, len(batch.records) - 1))
    stop = data.draw(st.integers(start + 1, len(batch.records)))
    sliced = codec.slice_batch(raw, start, stop, offsets)
    assert codec.slice_batch_size(offsets, start, stop) == len(sliced) - HEADER_SIZE


def test_all_of_a_stored_batch_is_the_same_object() -> None:
    batch = codec.encode_frame(F.MessageBatch(5, 10, "t", (F.Record(b"a"), F.Record(b"b"))))
    assert codec.slice_batch(batch, 0, 2) is batch
    assert codec.slice_batch(bytearray(batch), 0, 2) == batch


BAD_CALLS = [
    (
        "a MESSAGE given as a publish",
        lambda: codec.publish_to_message(codec.encode_frame(F.Message(1, 1, "t", b"")), 1, 1),
    ),
    (
        "a frame cut short",
        lambda: codec.publish_to_message(codec.encode_frame(F.Publish(1, "t", b"x"))[:-1], 1, 1),
    ),
    ("less than a header", lambda: codec.publish_to_message(b"\x00\x00", 1, 1)),
    (
        "a publish body without its prefix",
        lambda: codec.publish_to_message(bytes.fromhex("00000002220000ff"), 1, 1),
    ),
    (
        "an epoch above u64",
        lambda: codec.publish_to_message(codec.encode_frame(F.Publish(1, "t", b"")), 1 << 64, 1),
    ),
    (
        "a PUBLISH_BATCH sliced",
        lambda: codec.slice_batch(
            codec.encode_frame(F.PublishBatch(1, "t", (F.Record(b""),))), 0, 1
        ),
    ),
    (
        "an empty slice",
        lambda: codec.slice_batch(
            codec.encode_frame(F.MessageBatch(1, 1, "t", (F.Record(b""),))), 1, 1
        ),
    ),
    (
        "a slice past the end",
        lambda: codec.slice_batch(
            codec.encode_frame(F.MessageBatch(1, 1, "t", (F.Record(b""),))), 0, 2
        ),
    ),
    (
        "a slice of a decoded batch past the end",
        lambda: codec.slice_batch(F.MessageBatch(1, 1, "t", (F.Record(b""),)), 0, 2),
    ),
    (
        "record lengths that overrun",
        lambda: codec.batch_record_offsets(
            codec.encode_frame(F.MessageBatch(1, 1, "t", (F.Record(b"ab"),)))[:-1].replace(
                b"\x00\x00\x00\x1a", b"\x00\x00\x00\x19", 1
            )
        ),
    ),
    (
        "a MESSAGE given as a publish body",
        lambda: codec.publish_body(codec.encode_frame(F.Message(1, 1, "t", b""))),
    ),
    ("a publish body without its frame", lambda: codec.publish_body(b"\x01t")),
    (
        "a publish frame cut short for its body",
        lambda: codec.publish_body(codec.encode_frame(F.Publish(1, "t", b"x"))[:-1]),
    ),
    (
        "batch body offsets of a body whose records overrun",
        lambda: codec.body_record_offsets(0, b"\x01t\x00\x01\x00\x00\x00\x05ab"),
    ),
    (
        "batch body offsets of a body with bytes after its records",
        lambda: codec.body_record_offsets(0, b"\x01t\x00\x01\x00\x00\x00\x01ab"),
    ),
]


@pytest.mark.parametrize(("why", "call"), BAD_CALLS, ids=[w for w, _ in BAD_CALLS])
def test_misuse_of_the_forwarding_helpers_is_a_local_error(why: str, call: object) -> None:
    with pytest.raises(LocalProtocolError) as info:
        call()  # type: ignore[operator]
    assert info.value.code == ErrorCode.FIELD_OUT_OF_RANGE
