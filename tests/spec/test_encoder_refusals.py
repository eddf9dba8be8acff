"""The ``encoder_refusals`` of protocol/vectors.json (SPEC.md §14, PW-FRAME-16): frames an
encoder must not send, each refused by both encoders, the construct declarations
(``reference.validate``) and the hand codec (``codec.validate``), with the vector's code.

A refusal of the layout (an integer wider than its field, text longer than its length
prefix or not encodable as UTF-8) needs no validation step: plain ``encode_frame`` refuses
it too. A refusal of a range is the receive rule of §3.5 step 5 turned round, so the bytes
the layout would hold for it are rejected by a decoder with the same code.
"""

from __future__ import annotations

from typing import Any

import pytest

from pushwire.protocol import codec, reference
from pushwire.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from pushwire.protocol.spec import vectors

DOCUMENT = vectors.load()
REFUSALS = DOCUMENT["encoder_refusals"]
VALID = [v for v in DOCUMENT["frames"] if v["kind"] == "valid"]
LAYOUT = [v for v in REFUSALS if v["rule"] in ("width", "prefix", "utf8")]
RANGE = [v for v in REFUSALS if v["rule"] == "range"]


def name(vector: dict[str, Any]) -> str:
    return str(vector["name"])


@pytest.mark.spec("PW-FRAME-16")
@pytest.mark.parametrize("vector", REFUSALS, ids=name)
def test_both_encoders_refuse_the_frame_with_its_code(vector: dict[str, Any]) -> None:
    frame, flags = vectors.refused_frame(vector)
    for validate in (reference.validate, codec.validate):
        with pytest.raises(LocalProtocolError) as refused:
            validate(frame, flags)
        assert refused.value.code == vector["code"] == ErrorCode[vector["error"]], validate


@pytest.mark.parametrize("vector", REFUSALS, ids=name)
def test_the_frame_object_reads_back_as_it_is_written(vector: dict[str, Any]) -> None:
    frame, flags = vectors.refused_frame(vector)
    assert vectors._refused_frame_json(frame, flags) == vector["frame"]


@pytest.mark.parametrize("vector", LAYOUT, ids=name)
def test_a_frame_the_layout_cannot_hold_is_refused_by_plain_encoding(
    vector: dict[str, Any],
) -> None:
    frame, _ = vectors.refused_frame(vector)
    for encode in (reference.encode_frame, codec.encode_frame):
        with pytest.raises(LocalProtocolError) as refused:
            encode(frame)
        assert refused.value.code == vector["code"]


@pytest.mark.parametrize("vector", RANGE, ids=name)
def test_a_range_refusal_is_what_a_receiver_rejects_in_those_bytes(vector: dict[str, Any]) -> None:
    frame, _ = vectors.refused_frame(vector)
    data = reference.encode_frame(frame)  # the layout holds it; only the range forbids it
    assert codec.encode_frame(frame) == data
    for decode in (reference.decode_body, codec.decode_body):
        with pytest.raises(RemoteProtocolError) as rejected:
            decode(data[4], data[5], data[6:])
        assert rejected.value.code == vector["code"]


def test_every_rule_kind_and_every_range_of_the_table_has_a_refusal() -> None:
    assert {v["rule"] for v in REFUSALS} == {"width", "prefix", "utf8", "range", "flags"}
    ranged = {v["frame"]["type"] for v in RANGE}
    table = {"SUBSCRIBE", "SUBSCRIBED", "WELCOME", "CREDIT", "GAP"}
    assert table | {"MESSAGE_BATCH", "PUBLISH_BATCH"} <= ranged
    assert any(v["code"] == ErrorCode.RESERVED_BITS_SET for v in REFUSALS)


@pytest.mark.parametrize("vector", VALID, ids=name)
def test_a_valid_vector_passes_validation_as_its_plain_encoding(vector: dict[str, Any]) -> None:
    frame = vectors.frame_from_json(vector["frame"])
    data = bytes.fromhex(vector["hex"])
    assert codec.validate(frame) == reference.validate(frame, data[5]) == data
