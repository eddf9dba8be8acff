"""protocol/vectors.json is what the declarations generate, and every vector holds for both
codecs and for the decoder.

Implementers in other languages test against this file, so three things are checked: it
cannot drift from the construct declarations (``pushwire vectors --check``), each vector is
true of pushwire itself (valid ones decode to their fields and re-encode to their bytes,
invalid ones fail with their code from the bytes alone, ignored ones vanish), and the file
covers every frame type, every layout-changing flag and enumeration, and every decode-time
error code. The file also validates against its JSON Schema.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from pushwire.client.commands import cli
from pushwire.protocol import codec, reference
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder, choose_version, encode_preface, parse_preface
from pushwire.protocol.errors import ErrorCode, RemoteProtocolError
from pushwire.protocol.layouts import (
    BODIES,
    CLIENT_SENDS,
    DEFINED_FLAGS,
    EXCLUDED_FLAGS,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    SERVER_SENDS,
    FrameType,
    Outcome,
    SinceKind,
    SlowConsumerPolicy,
)
from pushwire.protocol.spec import vectors
from pushwire.protocol.spec.requirements import BY_ID

DOCUMENT = vectors.load()
SCHEMA = json.loads(vectors.SCHEMA_FILE.read_text(encoding="utf-8"))
FRAMES = DOCUMENT["frames"]
PREFACES = DOCUMENT["prefaces"]
VALID = [v for v in FRAMES if v["kind"] == "valid"]
INVALID = [v for v in FRAMES if v["kind"] == "invalid"]
IGNORED = [v for v in FRAMES if v["kind"] == "ignored"]
INCOMPLETE = [v for v in FRAMES if v["kind"] == "incomplete"]
DECODE_ERRORS = {
    ErrorCode.MALFORMED_FRAME,
    ErrorCode.FRAME_TOO_LARGE,
    ErrorCode.UNKNOWN_FRAME_TYPE,
    ErrorCode.RESERVED_BITS_SET,
    ErrorCode.INVALID_UTF8,
    ErrorCode.FIELD_OUT_OF_RANGE,
}


def names(group: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in group]


@contextmanager
def reference_bodies() -> Iterator[None]:
    """Run the decoder with the construct reference parsing each payload."""
    with patch.object(codec, "decode_body", reference.decode_body):
        yield


def decode_all(data: bytes, max_frame_size: int, *, bytewise: bool = False) -> list[F.Frame]:
    """Every frame in ``data``, without signalling EOF: an error must come from the bytes."""
    decoder = FrameDecoder(max_frame_size)
    frames: list[F.Frame] = []
    for chunk in [data[i : i + 1] for i in range(len(data))] if bytewise else [data]:
        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    return frames


# -- the file is what the declarations generate -------------------------------------------------


def test_the_committed_vectors_and_schema_are_what_the_declarations_generate() -> None:
    assert vectors.VECTORS_FILE.read_text(encoding="utf-8") == vectors.render()
    assert vectors.SCHEMA_FILE.read_text(encoding="utf-8") == vectors.render_schema()


def test_generation_is_deterministic_and_sorted() -> None:
    assert vectors.render() == vectors.render(vectors.generate())
    for group in (FRAMES, PREFACES):
        assert names(group) == sorted(set(names(group)))


def test_pushwire_vectors_check_passes_on_the_committed_files(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["vectors", "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_pushwire_vectors_check_names_what_is_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = copy.deepcopy(DOCUMENT)
    stale["frames"][0]["hex"] = "00"
    del stale["frames"][1]
    path, schema = tmp_path / "vectors.json", tmp_path / "vectors.schema.json"
    path.write_text(vectors.render(stale))
    schema.write_text(vectors.render_schema())
    assert cli.main(["vectors", "--check", "--file", str(path), "--schema-file", str(schema)]) == 1
    err = capsys.readouterr().err
    assert f"{FRAMES[0]['name']}: differs in hex" in err
    assert f"{FRAMES[1]['name']}: missing from the committed file" in err
    assert "pushwire vectors --write" in err


def test_pushwire_vectors_write_regenerates_both_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, schema = tmp_path / "v.json", tmp_path / "s.json"
    assert cli.main(["vectors", "--write", "--file", str(path), "--schema-file", str(schema)]) == 0
    assert path.read_text() == vectors.render() and schema.read_text() == vectors.render_schema()
    assert cli.main(["vectors", "--check", "--file", str(path), "--schema-file", str(schema)]) == 0


def test_pushwire_vectors_prints_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert cli.main(["vectors"]) == 0
    assert json.loads(capsys.readouterr().out) == DOCUMENT
    assert cli.main(["vectors", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == SCHEMA


# -- every vector holds ------------------------------------------------------------------------


@pytest.mark.spec("PW-FRAME-1", "PW-FRAME-11")
@pytest.mark.parametrize("vector", VALID, ids=names(VALID))
def test_valid_vectors_decode_to_their_fields_and_encode_to_their_bytes(
    vector: dict[str, Any],
) -> None:
    data = bytes.fromhex(vector["hex"])
    expected = vectors.frame_from_json(vector["frame"])
    type_, flags, body = data[4], data[5], data[HEADER_SIZE:]
    assert FrameType(type_).name == vector["frame"]["type"] and flags == vector["frame"]["flags"]
    assert codec.decode_body(type_, flags, body) == expected
    assert reference.decode_body(type_, flags, body) == expected
    assert codec.encode_frame(expected) == data
    assert reference.encode_frame(expected) == data
    assert vectors.frame_json(expected, u64_text=True) == vector["frame"]
    fields = vectors._from_json(vector["frame"]["fields"])
    assert BODIES[FrameType(type_)].build(fields, flags=flags) == body
    size = vector["max_frame_size"]
    assert decode_all(data, size) == decode_all(data, size, bytewise=True) == [expected]
    with reference_bodies():
        assert decode_all(data, size) == [expected]


@pytest.mark.parametrize("vector", INVALID, ids=names(INVALID))
def test_invalid_vectors_fail_with_their_code_from_the_bytes_alone(vector: dict[str, Any]) -> None:
    data, size = bytes.fromhex(vector["hex"]), vector["max_frame_size"]
    code = ErrorCode[vector["error"]]
    assert vector["code"] == code
    for bytewise in (False, True):
        with pytest.raises(RemoteProtocolError) as info:
            decode_all(data, size, bytewise=bytewise)
        assert info.value.code == code, info.value
        assert info.value.requirement in vector["requirements"]
    with reference_bodies(), pytest.raises(RemoteProtocolError) as info:
        decode_all(data, size)
    assert info.value.code == code


@pytest.mark.spec("PW-FRAME-8", "PW-FRAME-15")
@pytest.mark.parametrize("vector", IGNORED, ids=names(IGNORED))
def test_ignored_vectors_decode_to_nothing_and_the_stream_goes_on(vector: dict[str, Any]) -> None:
    data, size = bytes.fromhex(vector["hex"]), vector["max_frame_size"]
    ping = codec.encode_frame(F.Ping(1))
    assert decode_all(data, size) == []
    assert decode_all(data + ping + data, size, bytewise=True) == [F.Ping(1)]
    with reference_bodies():
        assert decode_all(data + ping, size) == [F.Ping(1)]
    assert reference.decode_body(data[4], data[5], data[HEADER_SIZE:]) is None


@pytest.mark.spec("PW-FRAME-4", "PW-FRAME-14")
@pytest.mark.parametrize("vector", INCOMPLETE, ids=names(INCOMPLETE))
def test_incomplete_vectors_fail_with_their_code_when_the_stream_ends_in_any_chunking(
    vector: dict[str, Any],
) -> None:
    data, size = bytes.fromhex(vector["hex"]), vector["max_frame_size"]
    code = ErrorCode[vector["error"]]
    assert vector["code"] == code
    for cut in range(len(data) + 1):
        decoder = FrameDecoder(size)
        for chunk in (data[:cut], data[cut:]):
            if chunk:
                decoder.feed(chunk)
                assert decoder.next_frame() is None  # a frame is still arriving
        decoder.feed(b"")
        with pytest.raises(RemoteProtocolError) as info:
            decoder.next_frame()
        assert info.value.code == code, (cut, info.value)
        assert info.value.requirement in vector["requirements"]


def test_incomplete_vectors_cover_every_header_code_and_a_cut_inside_each_part() -> None:
    codes = {v["error"] for v in INCOMPLETE}
    assert codes == {"MALFORMED_FRAME", "UNKNOWN_FRAME_TYPE", "RESERVED_BITS_SET"}
    sizes = [len(v["hex"]) // 2 for v in INCOMPLETE]
    assert any(n < HEADER_SIZE for n in sizes) and HEADER_SIZE in sizes
    assert any(n > HEADER_SIZE for n in sizes)


@pytest.mark.parametrize("vector", PREFACES, ids=names(PREFACES))
def test_preface_vectors_hold(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    code = ErrorCode[vector["error"]] if "error" in vector else None
    if code in (ErrorCode.BAD_PREFACE, ErrorCode.RESERVED_BITS_SET):
        with pytest.raises(RemoteProtocolError) as info:
            parse_preface(data)
        assert info.value.code == code
        assert info.value.requirement in vector["requirements"]
        return
    first, second = parse_preface(data)
    if vector["sender"] == "client":  # received by a server that speaks only version 1
        chosen = choose_version(first, second)
        assert (chosen is None) == (code == ErrorCode.UNSUPPORTED_VERSION)
        if code is None:
            assert vector["preface"] == {"min_version": first, "max_version": second}
        assert bytes.fromhex(vector["reply_hex"]) == encode_preface(chosen or 0, PROTOCOL_VERSION)
    else:  # received by a client that offered 1..1
        accepted = 1 <= first <= 1
        assert accepted == (code is None)
        if code is None:
            assert vector["preface"] == {"version": first, "max_version": second}


# -- the file covers what it must -----------------------------------------------------------------


def _valid_frames() -> list[tuple[FrameType, int, F.Frame]]:
    return [
        (FrameType[v["frame"]["type"]], v["frame"]["flags"], vectors.frame_from_json(v["frame"]))
        for v in VALID
    ]


def test_every_type_and_every_defined_flag_value_has_a_valid_vector() -> None:
    legal = {
        (t, f)
        for t in FrameType
        for f in range(256)
        if not f & ~DEFINED_FLAGS[t] and f not in EXCLUDED_FLAGS.get(t, ())
    }
    assert {(t, f) for t, f, _ in _valid_frames()} == legal


def test_every_since_kind_outcome_and_policy_has_a_valid_vector() -> None:
    frames = [frame for _, _, frame in _valid_frames()]
    assert {f.since_kind for f in frames if isinstance(f, F.Subscribe)} == set(SinceKind)
    assert {f.outcome for f in frames if isinstance(f, F.Subscribed)} == set(Outcome)
    policies = {f.slow_consumer_policy for f in frames if isinstance(f, F.Welcome)}
    assert policies == set(SlowConsumerPolicy)


def test_every_decode_error_code_has_an_invalid_vector() -> None:
    assert {ErrorCode[v["error"]] for v in INVALID} == DECODE_ERRORS
    assert any("truncated" in v["name"] for v in INVALID)
    assert any("trailing" in v["name"] for v in INVALID)


def test_every_range_rule_has_an_invalid_vector() -> None:
    broken = set()
    for v in INVALID:
        if v["error"] != "FIELD_OUT_OF_RANGE":
            continue
        data = bytes.fromhex(v["hex"])
        frame = reference.from_container(
            FrameType(data[4]), data[5], BODIES[FrameType(data[4])].parse(data[6:], flags=data[5])
        )
        match frame:
            case F.Subscribe():
                broken.add("since_kind")
            case F.Subscribed(outcome=Outcome.GAP):
                broken.add(
                    "subscribed gap first = 0"
                    if frame.gap_first == 0
                    else "subscribed gap first > last"
                )
            case F.Subscribed():
                broken.add("outcome")
            case F.Welcome():
                broken.add("slow_consumer_policy")
            case F.MessageBatch() | F.PublishBatch():
                broken.add(f"{frame.TYPE.name} count 0")
            case F.Credit():
                broken.add("increment 0")
            case F.Gap():
                broken.add("gap first = 0" if frame.first == 0 else "gap first > last")
    assert broken == {
        "since_kind",
        "outcome",
        "subscribed gap first = 0",
        "subscribed gap first > last",
        "slow_consumer_policy",
        "MESSAGE_BATCH count 0",
        "PUBLISH_BATCH count 0",
        "increment 0",
        "gap first = 0",
        "gap first > last",
    }


@pytest.mark.spec("PW-FRAME-2")
def test_frame_too_large_vectors_are_a_bare_header_above_the_stated_limit() -> None:
    oversized = [v for v in INVALID if v["error"] == "FRAME_TOO_LARGE"]
    assert oversized
    for v in oversized:
        data = bytes.fromhex(v["hex"])
        assert len(data) == HEADER_SIZE
        assert int.from_bytes(data[:4], "big") > v["max_frame_size"] == 16384


def test_directions_match_who_receives_each_type() -> None:
    for v in FRAMES:
        data = bytes.fromhex(v["hex"])
        if len(data) <= 4:  # an incomplete header without its type byte reaches anyone
            assert v["kind"] == "incomplete" and v["direction"] == "both", v["name"]
            continue
        type_ = data[4]
        known = type_ in {int(t) for t in FrameType}
        to_server, to_client = type_ in CLIENT_SENDS, type_ in SERVER_SENDS
        if v["direction"] == "to_server":
            assert to_server, v["name"]
        elif v["direction"] == "to_client":
            assert to_client, v["name"]
        else:
            assert not known or (to_server and to_client) or v["name"].startswith("precedence"), v[
                "name"
            ]


def test_invalid_vectors_for_a_server_are_frames_a_server_receives_after_the_handshake() -> None:
    for v in INVALID:
        if v["direction"] in ("to_server", "both"):
            type_ = bytes.fromhex(v["hex"])[4]
            assert type_ not in (FrameType.HELLO, FrameType.WELCOME), v["name"]
    assert len([v for v in INVALID if v["direction"] in ("to_server", "both")]) >= 30


def test_vectors_cite_only_requirements_the_spec_defines() -> None:
    cited = {r for v in FRAMES + PREFACES for r in v["requirements"]}
    assert cited <= set(BY_ID), sorted(cited - set(BY_ID))


def test_preface_vectors_cover_every_preface_error() -> None:
    for sender in ("client", "server"):
        group = [v for v in PREFACES if v["sender"] == sender]
        assert {v.get("error") for v in group} == {
            None,
            "BAD_PREFACE",
            "RESERVED_BITS_SET",
            "UNSUPPORTED_VERSION",
        }


# -- the JSON Schema ------------------------------------------------------------------------------


def schema_errors(instance: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """The subset of JSON Schema (2020-12) that vectors.schema.json uses; an unknown
    keyword fails, so the schema cannot silently use one this checker ignores."""
    known = {
        "$schema", "title", "description", "$defs", "$ref", "type", "const", "enum",
        "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
        "uniqueItems", "pattern", "minLength", "maxLength", "minimum", "maximum", "anyOf",
        "oneOf", "not",
    }  # fmt: skip
    unknown = set(schema) - known
    assert not unknown, f"schema keyword(s) {unknown} at {path}"
    if "$ref" in schema:
        target: Any = SCHEMA
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return schema_errors(instance, target, path)
    types = {
        "object": dict, "array": list, "string": str, "null": type(None), "boolean": bool,
        "integer": int,
    }  # fmt: skip
    errors: list[str] = []
    if "type" in schema:
        wanted = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(
            isinstance(instance, types[t]) and not (t == "integer" and isinstance(instance, bool))
            for t in wanted
        ):
            return [f"{path}: not of type {schema['type']}"]
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{path}: is not {schema['const']!r}")
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} not in {schema['enum']}")
    if isinstance(instance, dict):
        errors += [f"{path}: missing {k}" for k in schema.get("required", []) if k not in instance]
        properties = schema.get("properties", {})
        for key, value in instance.items():
            if key in properties:
                errors += schema_errors(value, properties[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected {key}")
    if isinstance(instance, list):
        for i, item in enumerate(instance):
            if "items" in schema:
                errors += schema_errors(item, schema["items"], f"{path}[{i}]")
        if len(instance) < schema.get("minItems", 0) or len(instance) > schema.get(
            "maxItems", len(instance)
        ):
            errors.append(f"{path}: {len(instance)} items")
        if schema.get("uniqueItems") and len({json.dumps(i) for i in instance}) != len(instance):
            errors.append(f"{path}: items not unique")
    if isinstance(instance, str):
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errors.append(f"{path}: does not match {schema['pattern']}")
        if (
            not schema.get("minLength", 0)
            <= len(instance)
            <= schema.get("maxLength", len(instance))
        ):
            errors.append(f"{path}: length {len(instance)}")
    number = isinstance(instance, int) and not isinstance(instance, bool)
    if number and not schema.get("minimum", instance) <= instance <= schema.get(
        "maximum", instance
    ):
        errors.append(f"{path}: {instance} out of range")
    if "anyOf" in schema and all(schema_errors(instance, s, path) for s in schema["anyOf"]):
        errors.append(f"{path}: matches none of anyOf")
    if "oneOf" in schema:
        matching = sum(not schema_errors(instance, s, path) for s in schema["oneOf"])
        if matching != 1:
            errors.append(f"{path}: matches {matching} of oneOf")
    if "not" in schema and not schema_errors(instance, schema["not"], path):
        errors.append(f"{path}: matches a 'not' schema")
    return errors


def test_the_vectors_validate_against_their_schema() -> None:
    assert schema_errors(DOCUMENT, SCHEMA) == []


def _broken(edit: Any) -> dict[str, Any]:
    document = copy.deepcopy(DOCUMENT)
    edit(document)
    return document


def _vector(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in document["frames"] + document["prefaces"] if v["name"] == name)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: _vector(d, "message")["frame"]["fields"].pop("seq"),
        lambda d: _vector(d, "message")["frame"]["fields"].update(extra=1),
        lambda d: _vector(d, "message")["frame"].update(flags=2),
        lambda d: _vector(d, "message")["frame"]["fields"].update(epoch=1 << 64),
        lambda d: _vector(d, "message")["frame"]["fields"].update(payload="ABCD"),
        lambda d: _vector(d, "subscribe-last")["frame"]["fields"].update(since={"epoch": 1}),
        lambda d: _vector(d, "credit-truncated").pop("error"),
        lambda d: _vector(d, "credit-truncated").update(frame=_vector(d, "credit")["frame"]),
        lambda d: _vector(d, "credit-truncated").update(error="UNAUTHENTICATED"),
        lambda d: _vector(d, "ignorable-type-0x80-empty").update(code=2),
        lambda d: _vector(d, "incomplete-ping-header-only").pop("code"),
        lambda d: _vector(d, "client-v1").update(error="BAD_PREFACE", code=9),
        lambda d: _vector(d, "ack").update(requirements=["PW-frame-1"]),
    ],
    ids=[
        "missing field",
        "extra field",
        "undefined flags",
        "u64 overflow",
        "uppercase hex",
        "wrong since shape",
        "invalid without error",
        "invalid with frame",
        "not a decode error",
        "ignored with code",
        "incomplete without code",
        "preface with both",
        "malformed requirement",
    ],
)
def test_the_schema_rejects_a_broken_document(edit: Any) -> None:
    assert schema_errors(_broken(edit), SCHEMA) != []


def test_client_sessions_cite_known_requirements_and_end_as_described() -> None:
    sessions = DOCUMENT["client_sessions"]
    assert [s["name"] for s in sessions] == sorted(s["name"] for s in sessions)
    for session in sessions:
        assert set(session["requirements"]) <= set(BY_ID), session["name"]
    by_name = {s["name"]: s for s in sessions}
    assert by_name["credit-sent-after-the-push-arrived"]["steps"][-1]["error"] == (
        "FLOW_CONTROL_ERROR"
    )
    assert "error" not in by_name["credit-sent-before-the-push-arrived"]["steps"][-1]
    last = by_name["eof-inside-a-frame"]["steps"][-1]
    assert "error" not in last and last["events"][0]["event"] == "ConnectionClosed"
