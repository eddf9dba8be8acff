"""The public strategies keep their promises.

Implementers of other languages test against these strategies, so a strategy that drew an
invalid "valid" frame, or a malformed frame with the wrong expected code, would mislead them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import storage_directory

from pushwire.protocol import codec, reference
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder, parse_preface
from pushwire.protocol.errors import ErrorCode, RemoteProtocolError
from pushwire.protocol.layouts import (
    CLIENT_SENDS,
    HEADER_SIZE,
    INITIAL_MAX_FRAME_SIZE,
    SERVER_SENDS,
    FrameType,
    Header,
    Outcome,
)
from pushwire.protocol.spec.vectors import frame_json
from pushwire.protocol.testing import strategies as ps
from pushwire.protocol.topics import topic_problem


@given(ps.frames())
def test_frames_are_valid_and_pass_every_receive_check(frame: F.Frame) -> None:
    data = reference.encode_frame(frame)
    assert reference.decode_body(data[4], data[5], data[HEADER_SIZE:]) == frame


@pytest.mark.parametrize("direction", ["to_server", "to_client"])
@given(data=st.data())
def test_frames_of_a_direction_are_frames_that_receiver_gets(
    direction: ps.Direction, data: st.DataObject
) -> None:
    frame = data.draw(ps.frames(direction=direction))
    assert frame.TYPE in (CLIENT_SENDS if direction == "to_server" else SERVER_SENDS)  # type: ignore[union-attr]


def test_frames_refuse_an_unknown_direction_or_an_empty_choice() -> None:
    with pytest.raises(ValueError):
        ps.frames(direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ps.frames(types=[FrameType.WELCOME], direction="to_server")


@pytest.mark.parametrize("max_bytes", [0, 1, 255, 65535])
def test_utf8_text_reaches_exactly_its_byte_limit_and_never_more(max_bytes: int) -> None:
    seen = set()

    @settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
    @given(ps.utf8_text(max_bytes))
    def check(text: str) -> None:
        size = len(text.encode("utf-8"))
        assert size <= max_bytes
        seen.add(size)

    check()
    assert max_bytes in seen and 0 in seen


@given(ps.invalid_utf8())
def test_invalid_utf8_is_never_valid(data: bytes) -> None:
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")


@given(ps.topic_names())
def test_topic_names_satisfy_the_topic_syntax(topic: str) -> None:
    assert topic_problem(topic) is None


@given(ps.unknown_frames(ignorable=True), ps.unknown_frames(ignorable=False))
def test_unknown_frames_never_use_a_known_type(ignorable: F.Unknown, fatal: F.Unknown) -> None:
    assert ignorable.type >= 0x80 > fatal.type
    assert ignorable.type not in set(FrameType) and fatal.type not in set(FrameType)


@given(ps.malformed_frames())
def test_malformed_frames_hold_one_frame_or_an_oversized_header(malformed: ps.Malformed) -> None:
    header = Header.parse(malformed.data[:HEADER_SIZE])
    if malformed.code == ErrorCode.FRAME_TOO_LARGE:
        assert header.length > INITIAL_MAX_FRAME_SIZE
        assert len(malformed.data) - HEADER_SIZE < header.length
    else:
        assert header.length == len(malformed.data) - HEADER_SIZE <= INITIAL_MAX_FRAME_SIZE


DECODE_ERRORS = [
    ErrorCode.MALFORMED_FRAME,
    ErrorCode.FRAME_TOO_LARGE,
    ErrorCode.UNKNOWN_FRAME_TYPE,
    ErrorCode.RESERVED_BITS_SET,
    ErrorCode.INVALID_UTF8,
    ErrorCode.FIELD_OUT_OF_RANGE,
]


@pytest.mark.parametrize("code", DECODE_ERRORS, ids=lambda c: c.name)
@pytest.mark.parametrize("direction", ["to_server", "to_client", None])
def test_malformed_frames_draw_every_decode_error_code(
    direction: ps.Direction | None, code: ErrorCode
) -> None:
    # Searched for rather than counted: hypothesis skips duplicate examples, so the share
    # of each kind in a fixed budget varies; every kind must still be reachable.
    found = find(
        ps.malformed_frames(direction=direction),
        lambda m: m.code == code,
        settings=settings(
            max_examples=2000,
            database=None,
            phases=[Phase.generate],  # any example will do: no need to shrink it
            suppress_health_check=list(HealthCheck),
        ),
    )
    decoder = FrameDecoder()
    decoder.feed(found.data)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == code


@given(ps.malformed_frames(max_frame_size=2000))
def test_malformed_frames_respect_a_smaller_limit(malformed: ps.Malformed) -> None:
    decoder = FrameDecoder(2000)
    decoder.feed(malformed.data)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == malformed.code


@pytest.mark.spec("PW-FRAME-14")
@given(ps.incomplete_frames(max_frame_size=20_000))
def test_incomplete_frames_end_inside_a_frame_and_get_their_code_at_the_end(
    incomplete: ps.Malformed,
) -> None:
    decoder = FrameDecoder(20_000)
    decoder.feed(incomplete.data)
    if len(incomplete.data) >= HEADER_SIZE:
        header = Header.parse(incomplete.data[:HEADER_SIZE])
        assert len(incomplete.data) < HEADER_SIZE + header.length
    if incomplete.code != ErrorCode.FRAME_TOO_LARGE:
        assert decoder.next_frame() is None  # still waiting for the rest of the frame
    decoder.feed(b"")
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == incomplete.code


@pytest.mark.parametrize(
    "code",
    [
        ErrorCode.MALFORMED_FRAME,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.UNKNOWN_FRAME_TYPE,
        ErrorCode.RESERVED_BITS_SET,
    ],
    ids=lambda c: c.name,
)
def test_incomplete_frames_draw_every_code_the_header_decides(code: ErrorCode) -> None:
    config = settings(
        max_examples=2000,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    find(ps.incomplete_frames(), lambda m: m.code == code, settings=config)


@given(ps.frames(max_items=2, max_payload=8))
def test_text_fields_replace_each_text_field_and_nothing_else(frame: F.Frame) -> None:
    for set_text in ps.text_fields(frame):
        changed = set_text("\ufeffchanged")
        assert type(changed) is type(frame)
        assert "\ufeffchanged" in json.dumps(frame_json(changed), ensure_ascii=False)


def test_utf8_text_starts_with_a_byte_order_mark_now_and_then() -> None:
    config = settings(max_examples=500, database=None, phases=[Phase.generate])
    assert find(ps.utf8_text(255), lambda t: t.startswith("\ufeff"), settings=config)


# -- conversations -----------------------------------------------------------------------------


def _check_conversation(c: ps.Conversation) -> None:
    sends = CLIENT_SENDS if c.role == "client" else SERVER_SENDS
    assert all(f.TYPE in sends for f in c.frames)  # type: ignore[union-attr]
    assert parse_preface(c.preface) == (1, 1) and parse_preface(c.peer_preface) == (1, 1)
    assert c.frames == tuple(f for who, f in c.exchange if who == c.role)
    assert c.peer_frames == tuple(f for who, f in c.exchange if who != c.role)
    assert type(c.exchange[0][1]) is F.Hello and type(c.exchange[1][1]) is F.Welcome
    for _, frame in c.exchange:
        assert len(codec.encode_frame(frame)) - HEADER_SIZE <= INITIAL_MAX_FRAME_SIZE
    goaways = [who for who, f in c.exchange if isinstance(f, F.Goaway)]
    assert len(goaways) <= 1 and (not goaways or isinstance(c.exchange[-1][1], F.Goaway))


def _check_server_rules(exchange: tuple[tuple[str, F.Frame], ...]) -> None:
    """The rules a receiving client enforces: sequences contiguous per subscription,
    pushes within credit, acks within what was sent, sub_ids unique while active."""
    active: dict[int, dict[str, Any]] = {}
    by_topic: dict[str, int] = {}
    pending: dict[int, F.Subscribe] = {}
    for i, (who, frame) in enumerate(exchange):
        match frame:
            case F.Subscribe():
                assert frame.sub_id not in active and frame.topic not in by_topic
                pending[frame.sub_id] = frame
            case F.Subscribed():
                request = pending.pop(frame.sub_id)
                if frame.outcome == Outcome.GAP:
                    assert frame.gap_last == frame.start_seq - 1
                active[frame.sub_id] = {
                    "next": frame.start_seq,
                    "credit": request.initial_credit,
                    "acked": frame.start_seq - 1,
                    "alo": request.at_least_once,
                    "topic": request.topic,
                }
                by_topic[request.topic] = frame.sub_id
            case F.Error(request_type=FrameType.SUBSCRIBE):
                pending.pop(frame.request_id)
            case F.Message() | F.MessageBatch():
                sub = active[by_topic[frame.topic]]
                first = frame.seq if isinstance(frame, F.Message) else frame.base_seq
                count = 1 if isinstance(frame, F.Message) else len(frame.records)
                assert first == sub["next"] and count <= sub["credit"]
                sub["next"] += count
                sub["credit"] -= count
            case F.Gap():
                sub = active[frame.sub_id]
                assert frame.first == sub["next"] <= frame.last
                sub["next"] = frame.last + 1
            case F.Credit():
                sub = active[frame.sub_id]
                sub["credit"] += frame.increment
                assert sub["credit"] <= 0xFFFF_FFFF
            case F.Ack():
                sub = active[frame.sub_id]
                assert sub["alo"] and sub["acked"] <= frame.seq < sub["next"]
                sub["acked"] = frame.seq
            case F.Unsubscribed():
                sub = active.pop(frame.sub_id)
                assert frame.last_seq == sub["next"] - 1
                del by_topic[sub["topic"]]
            case F.Pong():
                asker, ping = exchange[i - 1]
                assert asker != who and ping == F.Ping(frame.opaque)
    assert not pending


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(ps.conversations("client"), ps.conversations("server"))
def test_conversations_follow_the_rules_a_receiver_checks(
    client: ps.Conversation, server: ps.Conversation
) -> None:
    for conversation in (client, server):
        _check_conversation(conversation)
        _check_server_rules(conversation.exchange)


def test_hypothesis_storage_goes_to_a_temporary_directory_and_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HYPOTHESIS_STORAGE_DIRECTORY", raising=False)
    before = storage_directory("x", intent_to_write=False).path
    with ps.hypothesis_storage():
        inside = storage_directory("x", intent_to_write=False).path
        assert inside.parent.exists() and inside.parent != before.parent
    assert not inside.parent.exists()  # removed
    assert storage_directory("x", intent_to_write=False).path == before
    with ps.hypothesis_storage(tmp_path / "kept"):
        assert storage_directory("x", intent_to_write=False).path == tmp_path / "kept" / "x"
