"""Machine-readable test vectors for pushwire v1 (``vectors.json``), generated from the
construct declarations.

Theory of operation: the vectors below are *declared* here as frames and byte mutations;
every byte string is built by ``reference.encode_frame`` / the construct declarations of
``layouts.py`` (never by the hot-path codec, which the vectors test), and every valid
vector's ``fields`` are what the declaration parses back from those bytes. ``vectors.json``
is the committed rendering of :func:`generate`; ``pushwire vectors --check`` and
``tests/spec/test_vectors.py`` fail when the two differ, so the file cannot drift from the
layouts, and the same test runs every vector through both codecs and the decoder.

The file is for implementers in any language. Its format is described by
``vectors.schema.json`` (JSON Schema) and by the ``conventions`` object inside the file:

* ``frames``: one frame each (``hex`` = 6-byte header + payload), of kind ``valid`` (decodes
  to ``frame``), ``invalid`` (the receiver MUST fail with ``error``/``code`` from these bytes
  alone, before any more input or EOF), ``ignored`` (an unknown ignorable frame: decodes
  to nothing, and the connection goes on), or ``incomplete`` (the start of a frame, then the
  end of the stream: the receiver fails with ``error``/``code`` when the stream ends, by the
  rule of SPEC.md §3.5 for a stream that ends inside a frame). ``max_frame_size`` is the
  receiver's limit the vector assumes; ``direction`` says who receives such a frame (``to_server``,
  ``to_client`` or ``both``): a live test sends the ``to_server``/``both`` invalid vectors
  to a server after the handshake and expects ERROR(code) and a close.
* ``prefaces``: 8-byte prefaces as a server receives them (``sender: client``; the server
  speaks only version 1) or as a client receives them (``sender: server``; the client
  offered versions 1..1).

Field values in ``fields`` follow the declarations' names and nesting: u8, u16 and u32
integers are JSON numbers; u64 integers are decimal strings (JavaScript's ``JSON.parse``
and other double-based readers silently round numbers above 2**53); text fields are JSON
strings, byte fields (``auth_token``, ``payload``, header ``value``) are lowercase hex
strings, and a field the layout leaves out (a flag clear, a ``since_kind`` or
``outcome`` without that part) is ``null``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from construct import (
    Array,
    Construct,
    Container,
    FocusedSeq,
    FormatField,
    GreedyBytes,
    IfThenElse,
    ListContainer,
    Pass,
    Prefixed,
    Rebuild,
    Renamed,
    StringEncoded,
    Struct,
    Switch,
    Terminated,
)

from pushwire.protocol import frames as F
from pushwire.protocol import reference
from pushwire.protocol.decoder import encode_preface
from pushwire.protocol.errors import DECODE_ERRORS, ErrorCode
from pushwire.protocol.layouts import (
    AT_LEAST_ONCE,
    BODIES,
    CLIENT_SENDS,
    DEFINED_FLAGS,
    HAS_HEADERS,
    HEADER_SIZE,
    INITIAL_MAX_FRAME_SIZE,
    MAGIC,
    MAX_MAX_FRAME_SIZE,
    PATTERN,
    PROTOCOL_VERSION,
    SERVER_SENDS,
    TOPIC_STATUS,
    FrameType,
    Header,
    Outcome,
    SinceKind,
    SlowConsumerPolicy,
)
from pushwire.protocol.reference import build_frame, build_header
from pushwire.protocol.spec import sessions

#: The vectors are a deliverable of the protocol package, not of this generator: they stay at
#: ``protocol/vectors.json`` where implementers look for them.
VECTORS_FILE = Path(__file__).parent.parent / "vectors.json"
SCHEMA_FILE = Path(__file__).parent.parent / "vectors.schema.json"
#: Version of the file format (not of the protocol): bumped when a reader must change.
#: 2: frame vectors of kind ``incomplete``. 3: u64 values as decimal strings. 4: the list
#: ``encoder_refusals``.
FORMAT = 4

#: Fields whose values are bytes, rendered as lowercase hex in ``fields``.
BYTES_FIELDS = frozenset({"auth_token", "payload", "value"})

Direction = Literal["to_server", "to_client", "both"]

CONVENTIONS = {
    "hex": "Every byte string is lowercase hexadecimal without separators.",
    "frame_hex": (
        "One frame: the 6-byte header (length u32, type u8, flags u8) then the payload. An "
        "invalid vector's error is decided from these bytes alone; for FRAME_TOO_LARGE they "
        "are the header only. An incomplete vector's bytes are the start of one frame (part "
        "of its header, or its header and part of its payload) and are followed by the end "
        "of the stream."
    ),
    "kind": (
        "valid: decodes to frame. invalid: error/code from the bytes alone, without more "
        "input or EOF. ignored: an unknown ignorable frame, skipped. incomplete: the stream "
        "ends after these bytes, inside a frame; error/code is what the receiver reports: "
        "the code of the header checks (FRAME_TOO_LARGE, UNKNOWN_FRAME_TYPE, "
        "RESERVED_BITS_SET) when the whole header is there and fails one, else "
        "MALFORMED_FRAME (SPEC.md 3.5). Feed the bytes in any chunking, then signal EOF."
    ),
    "integers": (
        "u8, u16 and u32 fields are JSON numbers. u64 fields (epoch, seq, base_seq, "
        "first_seq, start_seq, head_seq, last_seq, first, last, opaque, connection_id) are "
        'decimal strings such as "18446744073709551615": a double-based JSON reader '
        "(JavaScript's JSON.parse) would round them above 2^53."
    ),
    "nesting": (
        "A dotted field name in SPEC.md's tables (since.seq, gap.first) is a member of a nested "
        'object here: "gap": {"first": ...}.'
    ),
    "text": "Text fields are JSON strings (the UTF-8 bytes on the wire decoded).",
    "bytes_fields": sorted(BYTES_FIELDS),
    "absent": (
        "null: the layout leaves the field out (HAS_HEADERS clear, a since_kind or outcome "
        "without that part)."
    ),
    "max_frame_size": (
        "The receiver's frame limit the vector assumes: the initial limit 16384 (a receiver "
        "that advertised a larger limit must lower it to run the FRAME_TOO_LARGE vectors "
        "whose length is 16385; the ones above 16777216 hold for every legal limit)."
    ),
    "direction": (
        "Who receives such a frame: to_server (a client sends it), to_client, or both. "
        "Decode errors come before role and state checks, so an invalid vector gets its "
        "code in any state after the handshake."
    ),
    "prefaces": (
        "sender=client: as received by a server that speaks only version 1; reply_hex is "
        "the server preface it answers with. sender=server: as received by a client that "
        "offered min_version=1, max_version=1."
    ),
    "order": "Vectors are sorted by name; names are unique.",
    "encoder_refusals": (
        "Frames an encoder MUST refuse to send (PW-FRAME-16), as frame objects: they have no "
        "bytes. rule says which kind of rule each breaks: width (an integer wider than its "
        "field), prefix (text or a list longer than its length prefix or count holds), utf8 "
        "(text that no UTF-8 encodes: a lone surrogate, written as a \\u escape), range (a "
        "decode-time range of SPEC.md 3.5, step 5), flags (flags that are not the ones the "
        "fields imply, or that set a reserved bit). error/code is what the reference encoder "
        "reports and what a receiver would report for the bytes; the refusal is the rule, "
        "the code is informative."
    ),
    "client_sessions": sessions.CONVENTION,
}


# -- JSON <-> construct containers -----------------------------------------------------------


def _u64_names() -> frozenset[str]:
    """Names of the u64 fields of every frame body (a name is never u64 in one layout and
    narrower in another, which the walk checks)."""
    wide: set[str] = set()
    narrow: set[str] = set()

    def walk(con: Any, name: str | None) -> None:
        if isinstance(con, Renamed):
            walk(con.subcon, con.name or name)
        elif isinstance(con, FormatField):
            if name is not None:
                (wide if con.length == 8 else narrow).add(name)
        elif isinstance(con, Switch):
            for case in con.cases.values():
                walk(case, name)
        elif isinstance(con, IfThenElse):
            walk(con.thensubcon, name)
            walk(con.elsesubcon, name)
        elif hasattr(con, "subcons"):
            for sub in con.subcons:
                walk(sub, getattr(sub, "name", None) or name)
        elif isinstance(getattr(con, "subcon", None), Construct):
            walk(con.subcon, name)

    for body in BODIES.values():
        walk(body, None)
    if wide & narrow:
        raise TypeError(f"fields both u64 and narrower: {sorted(wide & narrow)}")
    return frozenset(wide)


#: Fields written as decimal strings (see CONVENTIONS["integers"]).
U64_FIELDS = _u64_names()


def _to_json(value: Any, key: str = "", *, u64_text: bool = True) -> Any:
    """A parsed construct value as JSON data, following the conventions above (u64 values
    as JSON numbers instead when ``u64_text`` is false)."""
    if isinstance(value, dict):  # Container
        return {
            k: _to_json(v, k, u64_text=u64_text) for k, v in value.items() if not k.startswith("_")
        }
    if isinstance(value, list | tuple):  # ListContainer
        return [_to_json(v, key, u64_text=u64_text) for v in value]
    if isinstance(value, bytes | bytearray):
        if key not in BYTES_FIELDS:
            raise ValueError(f"bytes in field {key!r}, which is not in BYTES_FIELDS")
        return bytes(value).hex()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value)) if u64_text and key in U64_FIELDS else int(value)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot render {type(value).__name__} in field {key!r}")


def _from_json(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return Container({k: _from_json(v, k) for k, v in value.items()})
    if isinstance(value, list):
        return ListContainer(_from_json(v, key) for v in value)
    if isinstance(value, str) and key in BYTES_FIELDS:
        return bytes.fromhex(value)
    if isinstance(value, str) and key in U64_FIELDS:
        return int(value)
    return value


def frame_json(frame: F.Frame, *, u64_text: bool = False) -> dict[str, Any]:
    """``{"type", "flags", "fields"}`` of a known frame, in the vectors' conventions; u64
    values are JSON numbers unless ``u64_text`` (as in ``vectors.json``), which is what
    ``pushwire decode`` and the decoder fuzzer's line protocol print.

    Goes through ``reference.to_container``, so the field names and nesting are the
    declarations'; ``tests/spec/test_vectors.py`` checks it against what the declarations
    parse from the bytes.
    """
    if isinstance(frame, F.Unknown):
        raise TypeError("unknown frames have no fields")
    flags, fields = reference.to_container(frame)
    return {"type": frame.TYPE.name, "flags": flags, "fields": _to_json(fields, u64_text=u64_text)}


def u64_as_numbers(value: Any, key: str = "") -> Any:
    """``value`` (JSON data) with u64 fields written as decimal strings turned into
    numbers: a reader's answer compared with :func:`frame_json`, whichever it chose."""
    if isinstance(value, dict):
        return {k: u64_as_numbers(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [u64_as_numbers(v, key) for v in value]
    if isinstance(value, str) and key in U64_FIELDS and value.isdigit():
        return int(value)
    return value


def frame_from_json(data: dict[str, Any]) -> F.Frame:
    """The frame a valid vector's ``frame`` object describes."""
    type_ = FrameType[data["type"]]
    return reference.from_container(type_, data["flags"], _from_json(data["fields"]))


# -- declaring vectors ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Vector:
    name: str
    description: str
    requirements: tuple[str, ...]
    data: bytes
    direction: Direction
    kind: Literal["valid", "invalid", "ignored", "incomplete"]
    code: ErrorCode | None = None
    max_frame_size: int = INITIAL_MAX_FRAME_SIZE

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "requirements": sorted(set(self.requirements)),
            "kind": self.kind,
            "hex": self.data.hex(),
            "direction": self.direction,
            "max_frame_size": self.max_frame_size,
        }
        if self.kind == "valid":
            out["frame"] = _parsed_frame(self.data)
        elif self.kind in ("invalid", "incomplete"):
            assert self.code is not None
            out["error"] = self.code.name
            out["code"] = int(self.code)
        return out


def _parsed_frame(data: bytes) -> dict[str, Any]:
    """The declaration's own reading of one valid frame (not the dataclass's)."""
    header = Header.parse(data[:HEADER_SIZE])
    body = data[HEADER_SIZE:]
    assert header.length == len(body)
    container = BODIES[FrameType(header.type)].parse(body, flags=header.flags)
    return {
        "type": FrameType(header.type).name,
        "flags": header.flags,
        "fields": _to_json(container),
    }


def _direction(type_: int) -> Direction:
    to_server, to_client = type_ in CLIENT_SENDS, type_ in SERVER_SENDS
    if to_server and to_client:
        return "both"
    if to_server:
        return "to_server"
    if to_client:
        return "to_client"
    return "both"  # unknown types: any receiver


def _body(frame: F.Frame) -> tuple[int, int, bytes]:
    data = reference.encode_frame(frame)
    return data[4], data[5], data[HEADER_SIZE:]


def _cut(frame: F.Frame, n: int) -> bytes:
    """``frame`` with the last ``n`` payload bytes removed (and its length fixed)."""
    type_, flags, body = _body(frame)
    return build_frame(type_, flags, body[:-n])


def _append(frame: F.Frame, extra: bytes) -> bytes:
    type_, flags, body = _body(frame)
    return build_frame(type_, flags, body + extra)


def _flags(frame: F.Frame, flags: int) -> bytes:
    type_, _, body = _body(frame)
    return build_frame(type_, flags, body)


def _replace(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and data.count(old) == 1, (data, old)
    return data.replace(old, new)


def _swap(frame: F.Frame, old: bytes, new: bytes, *, extra: bytes = b"") -> bytes:
    """``frame`` with the one occurrence of ``old`` in its payload replaced by ``new`` (same
    length, so every length prefix stays right), plus ``extra`` trailing bytes."""
    type_, flags, body = _body(frame)
    assert len(old) == len(new) and body.count(old) == 1, (frame, old)
    return build_frame(type_, flags, body.replace(old, new) + extra)


_E = 0x0123_4567_89AB_CDEF  # distinctive epoch: byte-order mistakes show
_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF
_VALID = ("PW-FRAME-1", "PW-FRAME-11")
_F2, _F3, _F4, _F5, _F6, _F7, _F8, _F14 = (f"PW-FRAME-{n}" for n in (2, 3, 4, 5, 6, 7, 8, 14))


def _valid_vectors() -> Iterable[_Vector]:
    topic_255 = "t" * 255
    records = (F.Record(b"first"), F.Record(b""), F.Record(b"\x00\xff" * 4))
    with_headers = (
        F.Record(b"a", (("k", b"1"), ("k", b"2"))),  # repeated keys keep their order
        F.Record(b"b", ()),  # a zero-pair block: legal, distinct from "no headers"
    )
    cases: list[tuple[str, str, F.Frame]] = [
        (
            "hello",
            "HELLO with a client name and an auth token",
            F.Hello(16384, 5000, "pushwire-test", b"\x00token\xff"),
        ),
        (
            "hello-anonymous-max-frame-size",
            "HELLO: the largest max_frame_size, heartbeat 0 (server decides), empty name and token",
            F.Hello(MAX_MAX_FRAME_SIZE, 0, "", b""),
        ),
        (
            "welcome-drop",
            "WELCOME, slow_consumer_policy DROP",
            F.Welcome(
                0x0102030405060708,
                5000,
                1 << 20,
                1024,
                10000,
                SlowConsumerPolicy.DROP,
                "pushwire/0.1.0",
            ),
        ),
        (
            "welcome-disconnect",
            "WELCOME, slow_consumer_policy DISCONNECT, empty server name",
            F.Welcome(_U64, 1000, 16384, 1, 0, SlowConsumerPolicy.DISCONNECT, ""),
        ),
        ("ping", "PING", F.Ping(0x0102030405060708)),
        ("pong-max-opaque", "PONG echoing the largest opaque", F.Pong(_U64)),
        (
            "goaway-shutting-down",
            "GOAWAY from a server: two positions and a reason",
            F.Goaway(
                ErrorCode.SHUTTING_DOWN,
                1000,
                500,
                (F.Position(1, _E, 42), F.Position(7, _E, 0)),
                "restarting",
            ),
        ),
        (
            "goaway-from-client",
            "GOAWAY as a client sends it: NO_ERROR, no delays, no positions",
            F.Goaway(ErrorCode.NO_ERROR, 0, 0, (), ""),
        ),
        (
            "error-connection",
            "connection-level ERROR (request_type 0, request_id 0)",
            F.Error(ErrorCode.FRAME_TOO_LARGE, 0, 0, "frame too large"),
        ),
        (
            "error-request",
            "request-level ERROR answering SUBSCRIBE sub_id 7, non-ASCII message",
            F.Error(
                ErrorCode.INVALID_TOPIC, FrameType.SUBSCRIBE, 7, "segment vide: \u00ab//\u00bb"
            ),
        ),
        (
            "subscribe-new",
            "SUBSCRIBE since NEW (no position fields)",
            F.Subscribe(1, "news/eu", SinceKind.NEW, initial_credit=100),
        ),
        (
            "subscribe-after-at-least-once",
            "SUBSCRIBE since AFTER(epoch, seq) with AT_LEAST_ONCE",
            F.Subscribe(
                2, "orders/eu", SinceKind.AFTER, _E, 41, initial_credit=10, at_least_once=True
            ),
        ),
        (
            "subscribe-last",
            "SUBSCRIBE since LAST(count), the largest initial credit",
            F.Subscribe(3, "ticks/EURUSD", SinceKind.LAST, since_count=10, initial_credit=_U32),
        ),
        (
            "subscribe-oldest",
            "SUBSCRIBE since OLDEST, UTF-8 topic",
            F.Subscribe(
                4, "m\u00e9t\u00e9o/z\u00fcrich/\u2600", SinceKind.OLDEST, initial_credit=1
            ),
        ),
        (
            "subscribe-pattern-new",
            "SUBSCRIBE with PATTERN: a one-segment wildcard, since NEW, no positions",
            F.Subscribe(5, "orders/+", SinceKind.NEW, initial_credit=100, positions=()),
        ),
        (
            "subscribe-pattern-resume",
            "SUBSCRIBE with PATTERN: a trailing wildcard, since OLDEST, two topic positions",
            F.Subscribe(
                6,
                "orders/#",
                SinceKind.OLDEST,
                initial_credit=50,
                positions=(
                    F.TopicPosition("orders/eu", _E, 41),
                    F.TopicPosition("orders/us/east", _E + 1, 7),
                ),
            ),
        ),
        (
            "subscribed-new",
            "SUBSCRIBED outcome NEW (no gap fields)",
            F.Subscribed(1, Outcome.NEW, _E, 101, 100),
        ),
        (
            "subscribed-recovered",
            "SUBSCRIBED outcome RECOVERED",
            F.Subscribed(2, Outcome.RECOVERED, _E, 42, 100),
        ),
        (
            "subscribed-gap",
            "SUBSCRIBED outcome GAP: gap.first, gap.last, gap.reason follow",
            F.Subscribed(2, Outcome.GAP, _E, 60, 100, 42, 59, ErrorCode.HISTORY_EXPIRED),
        ),
        (
            "subscribed-epoch-changed",
            "SUBSCRIBED outcome EPOCH_CHANGED",
            F.Subscribed(2, Outcome.EPOCH_CHANGED, _E + 1, 1, 3),
        ),
        (
            "subscribed-topic-recovered",
            "SUBSCRIBED with TOPIC_STATUS: outcome RECOVERED for one topic of a pattern",
            F.Subscribed(6, Outcome.RECOVERED, _E, 42, 100, topic="orders/eu"),
        ),
        (
            "subscribed-topic-gap",
            "SUBSCRIBED with TOPIC_STATUS: outcome GAP, the gap fields, then the topic",
            F.Subscribed(
                6, Outcome.GAP, _E, 60, 100, 42, 59, ErrorCode.HISTORY_EXPIRED, "orders/eu"
            ),
        ),
        ("unsubscribe", "UNSUBSCRIBE", F.Unsubscribe(3)),
        ("unsubscribed", "UNSUBSCRIBED with the last position", F.Unsubscribed(3, _E, 99)),
        ("credit", "CREDIT", F.Credit(1, 64)),
        ("credit-max", "CREDIT with the largest sub_id and increment", F.Credit(_U32, _U32)),
        ("ack", "ACK", F.Ack(2, 41)),
        (
            "gap-slow-consumer",
            "GAP of a lagging subscriber (DROP policy)",
            F.Gap(1, _E, 101, 150, ErrorCode.SLOW_CONSUMER),
        ),
        (
            "gap-frame-too-large",
            "GAP of one message too large for the subscriber (first = last)",
            F.Gap(1, _E, 151, 151, ErrorCode.FRAME_TOO_LARGE),
        ),
        ("message", "MESSAGE without headers", F.Message(_E, 1, "news/eu", b"hello")),
        (
            "message-headers",
            "MESSAGE with HAS_HEADERS: two pairs, repeated key order kept",
            F.Message(
                _E,
                2,
                "news/eu",
                b"{}",
                (("content-type", b"application/json"), ("trace", b"\x00\x01"), ("trace", b"")),
            ),
        ),
        (
            "message-headers-empty-block",
            "MESSAGE with HAS_HEADERS and a zero-pair header block",
            F.Message(_E, 3, "news/eu", b"x", ()),
        ),
        (
            "message-empty-payload",
            "MESSAGE with an empty payload: the frame ends after the topic",
            F.Message(_U64, _U64, "a", b""),
        ),
        (
            "message-topic-255-bytes",
            "MESSAGE whose topic is 255 bytes, the Str8 maximum",
            F.Message(1, 1, topic_255, b"p"),
        ),
        (
            "message-batch",
            "MESSAGE_BATCH of three records without headers",
            F.MessageBatch(_E, 10, "ticks/EURUSD", records),
        ),
        (
            "message-batch-headers",
            "MESSAGE_BATCH with HAS_HEADERS: every record has a header block",
            F.MessageBatch(_E, 13, "ticks/EURUSD", with_headers),
        ),
        (
            "message-batch-single-record",
            "MESSAGE_BATCH of one record",
            F.MessageBatch(_E, 15, "ticks/EURUSD", (F.Record(b"only"),)),
        ),
        (
            "publish",
            "PUBLISH with request_id 0 (no PUBACK wanted)",
            F.Publish(0, "news/eu", b"hello"),
        ),
        (
            "publish-headers",
            "PUBLISH with a request_id and HAS_HEADERS",
            F.Publish(7, "news/eu", b"{}", (("content-type", b"application/json"),)),
        ),
        (
            "publish-batch",
            "PUBLISH_BATCH of three records without headers",
            F.PublishBatch(8, "ticks/EURUSD", records),
        ),
        (
            "publish-batch-headers",
            "PUBLISH_BATCH with HAS_HEADERS",
            F.PublishBatch(9, "ticks/EURUSD", with_headers),
        ),
        ("puback", "PUBACK for a batch of three", F.Puback(8, _E, 10, 3)),
    ]
    for name, description, frame in cases:
        data = reference.encode_frame(frame)
        yield _Vector(name, description, _VALID, data, _direction(data[4]), "valid")


def _invalid_vectors() -> Iterable[_Vector]:
    T = FrameType
    ping, credit, ack = F.Ping(1), F.Credit(1, 5), F.Ack(1, 5)
    subscribe = F.Subscribe(1, "news/eu", SinceKind.NEW, initial_credit=10)
    publish = F.Publish(5, "news/eu", b"hello")
    publish_h = F.Publish(5, "news/eu", b"hello", (("kk", b"v"), ("k2", b"w")))
    pbatch = F.PublishBatch(6, "news/eu", (F.Record(b"one"), F.Record(b"two")))
    pbatch_h = F.PublishBatch(6, "news/eu", (F.Record(b"one", (("kk", b"v"),)),))
    message = F.Message(_E, 1, "news/eu", b"hello")
    mbatch = F.MessageBatch(_E, 1, "news/eu", (F.Record(b"one"), F.Record(b"two")))
    goaway = F.Goaway(ErrorCode.SHUTTING_DOWN, 1, 2, (F.Position(1, _E, 3),), "bye")
    error = F.Error(ErrorCode.INTERNAL_ERROR, 0, 0, "oops")
    too_large = INITIAL_MAX_FRAME_SIZE + 1

    M, TL, UT, RB, U8, R = (
        ErrorCode.MALFORMED_FRAME,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.UNKNOWN_FRAME_TYPE,
        ErrorCode.RESERVED_BITS_SET,
        ErrorCode.INVALID_UTF8,
        ErrorCode.FIELD_OUT_OF_RANGE,
    )

    cases: list[tuple[str, str, tuple[str, ...], bytes, ErrorCode, Direction | None]] = [
        # FRAME_TOO_LARGE: the header alone decides (no payload bytes follow)
        (
            "frame-too-large-publish",
            "PUBLISH header declaring 16385 bytes, one above the initial limit; no payload follows",
            (_F2,),
            build_header(too_large, T.PUBLISH, 0),
            TL,
            None,
        ),
        (
            "frame-too-large-message",
            "MESSAGE header declaring 16385 payload bytes; no payload follows",
            (_F2,),
            build_header(too_large, T.MESSAGE, 0),
            TL,
            None,
        ),
        (
            "frame-too-large-beyond-any-limit",
            "PING header declaring 2^24+1 bytes, above every limit a peer may advertise",
            (_F2,),
            build_header(MAX_MAX_FRAME_SIZE + 1, T.PING, 0),
            TL,
            None,
        ),
        (
            "frame-too-large-max-length",
            "SUBSCRIBE header declaring 2^32-1 bytes",
            (_F2,),
            build_header(_U32, T.SUBSCRIBE, 0),
            TL,
            None,
        ),
        (
            "precedence-length-before-type",
            "unknown fatal type 0x7f with a length above the limit: the length is checked first",
            (_F2, _F14),
            build_header(too_large, 0x7F, 0),
            TL,
            "both",
        ),
        (
            "precedence-length-before-ignorable",
            "unknown ignorable type 0xc0 with a length above the limit: too large, not skipped",
            (_F2, _F14),
            build_header(too_large, 0xC0, 0),
            TL,
            "both",
        ),
        # MALFORMED_FRAME: truncated
        (
            "credit-truncated",
            "CREDIT payload of 7 bytes (needs 8)",
            (_F4,),
            _cut(credit, 1),
            M,
            None,
        ),
        ("ack-truncated", "ACK payload of 11 bytes (needs 12)", (_F4,), _cut(ack, 1), M, None),
        ("ping-truncated", "PING payload of 7 bytes (needs 8)", (_F4,), _cut(ping, 1), M, None),
        ("ping-empty", "PING with an empty payload", (_F4,), build_frame(T.PING, 0, b""), M, None),
        (
            "subscribe-topic-truncated",
            "SUBSCRIBE whose topic length byte promises more bytes than remain",
            (_F4,),
            _cut(subscribe, 3),
            M,
            None,
        ),
        (
            "subscribe-pattern-without-positions",
            "SUBSCRIBE with PATTERN whose payload ends after the topic (no positions count)",
            (_F4,),
            _flags(F.Subscribe(5, "orders/+", initial_credit=1), PATTERN),
            M,
            None,
        ),
        (
            "subscribe-pattern-position-truncated",
            "SUBSCRIBE with PATTERN whose last topic position ends inside its seq",
            (_F4,),
            _cut(F.Subscribe(5, "a/#", positions=(F.TopicPosition("a/b", _E, 1),)), 1),
            M,
            None,
        ),
        (
            "subscribe-positions-without-pattern",
            "SUBSCRIBE without PATTERN followed by a positions list (trailing bytes)",
            (_F4,),
            _flags(F.Subscribe(5, "orders/+", initial_credit=1, positions=()), 0),
            M,
            None,
        ),
        (
            "subscribed-topic-status-without-topic",
            "SUBSCRIBED with TOPIC_STATUS whose payload ends before the topic",
            (_F4,),
            _flags(F.Subscribed(6, Outcome.RECOVERED, _E, 42, 100), TOPIC_STATUS),
            M,
            None,
        ),
        (
            "subscribe-after-missing-seq",
            "SUBSCRIBE since AFTER that ends inside the position fields",
            (_F4,),
            build_frame(T.SUBSCRIBE, 0, _body(subscribe)[2][:8] + b"\x01" + bytes(8)),
            M,
            None,
        ),
        (
            "publish-topic-truncated",
            "PUBLISH that ends inside its topic",
            (_F4,),
            build_frame(T.PUBLISH, 0, _body(publish)[2][:8]),
            M,
            None,
        ),
        (
            "publish-headers-truncated",
            "PUBLISH with HAS_HEADERS whose header block ends early",
            (_F4,),
            build_frame(T.PUBLISH, HAS_HEADERS, _body(publish_h)[2][: 4 + 1 + 7 + 1 + 1 + 2 + 2]),
            M,
            None,
        ),
        (
            "publish-batch-record-missing",
            "PUBLISH_BATCH with count 2 and one record",
            (_F4,),
            _cut(pbatch, 7),
            M,
            None,
        ),
        (
            "publish-batch-payload-overrun",
            "PUBLISH_BATCH whose last record's u32 length promises more than remains",
            (_F4,),
            _cut(pbatch, 1),
            M,
            None,
        ),
        (
            "message-topic-truncated",
            "MESSAGE that ends inside its topic",
            (_F4,),
            build_frame(T.MESSAGE, 0, _body(message)[2][:20]),
            M,
            None,
        ),
        (
            "subscribed-gap-without-range",
            "SUBSCRIBED with outcome GAP but without gap.first, gap.last, gap.reason",
            (_F4,),
            _cut(F.Subscribed(1, Outcome.GAP, _E, 5, 9, 1, 4, ErrorCode.HISTORY_EXPIRED), 18),
            M,
            None,
        ),
        (
            "goaway-positions-overrun",
            "GOAWAY whose position count says 3 with one position present",
            (_F4,),
            build_frame(T.GOAWAY, 0, _body(goaway)[2][:10] + b"\x00\x03" + _body(goaway)[2][12:]),
            M,
            None,
        ),
        (
            "error-message-overrun",
            "ERROR whose Text16 length promises more bytes than remain",
            (_F4,),
            _cut(error, 1),
            M,
            None,
        ),
        # MALFORMED_FRAME: trailing bytes
        (
            "credit-trailing-byte",
            "CREDIT payload of 9 bytes (exactly 8 allowed)",
            (_F4,),
            _append(credit, b"\x00"),
            M,
            None,
        ),
        (
            "ack-trailing-byte",
            "ACK with one byte after the last field",
            (_F4,),
            _append(ack, b"\x00"),
            M,
            None,
        ),
        ("ping-trailing-byte", "PING payload of 9 bytes", (_F4,), _append(ping, b"\x00"), M, None),
        (
            "unsubscribe-trailing-bytes",
            "UNSUBSCRIBE with bytes after the sub_id",
            (_F4,),
            _append(F.Unsubscribe(1), b"\x00\x00\x00\x00"),
            M,
            None,
        ),
        (
            "subscribe-trailing-byte",
            "SUBSCRIBE with a byte after the topic",
            (_F4,),
            _append(subscribe, b"!"),
            M,
            None,
        ),
        (
            "publish-batch-trailing-byte",
            "PUBLISH_BATCH with a byte after the last record",
            (_F4,),
            _append(pbatch, b"\x00"),
            M,
            None,
        ),
        (
            "message-batch-trailing-byte",
            "MESSAGE_BATCH with a byte after the last record",
            (_F4,),
            _append(mbatch, b"\x00"),
            M,
            None,
        ),
        (
            "goaway-trailing-byte",
            "GOAWAY with a byte after the reason",
            (_F4,),
            _append(goaway, b"\x00"),
            M,
            None,
        ),
        # UNKNOWN_FRAME_TYPE
        (
            "unknown-type-0x00",
            "type 0x00: unknown, ignorable bit clear",
            (_F5,),
            build_frame(0x00, 0, b""),
            UT,
            None,
        ),
        (
            "unknown-type-0x25",
            "type 0x25 (after PUBACK): unknown, ignorable bit clear",
            (_F5,),
            build_frame(0x25, 0, b"\x00\x01"),
            UT,
            None,
        ),
        (
            "unknown-type-0x7f",
            "type 0x7f with flags set: the type is checked before the flags",
            (_F5, _F14),
            build_frame(0x7F, 0xFF, b"\xff"),
            UT,
            None,
        ),
        # RESERVED_BITS_SET
        (
            "ping-flag-0x01",
            "PING with flag bit 0 set (PING defines no flags)",
            (_F3,),
            _flags(ping, 0x01),
            RB,
            None,
        ),
        ("credit-flag-0x80", "CREDIT with flag bit 7 set", (_F3,), _flags(credit, 0x80), RB, None),
        (
            "subscribe-flag-0x04",
            "SUBSCRIBE with flag bit 2 set (AT_LEAST_ONCE 0x01 and PATTERN 0x02 are defined)",
            (_F3,),
            _flags(subscribe, 0x05),
            RB,
            None,
        ),
        (
            "publish-flag-0x02",
            "PUBLISH with flag bit 1 set (only HAS_HEADERS = 0x01 is defined)",
            (_F3,),
            _flags(publish, 0x02),
            RB,
            None,
        ),
        (
            "message-flag-0x02",
            "MESSAGE with flag bit 1 set",
            (_F3,),
            _flags(message, 0x02),
            RB,
            None,
        ),
        (
            "precedence-flags-before-payload",
            "PING with a reserved flag and a truncated payload: flags are checked first",
            (_F3, _F14),
            build_frame(T.PING, 0x01, b"\x00\x00\x00"),
            RB,
            None,
        ),
        # INVALID_UTF8
        (
            "subscribe-topic-invalid-utf8",
            "SUBSCRIBE whose topic contains 0xff",
            (_F6,),
            _swap(subscribe, b"news/eu", b"news/e\xff"),
            U8,
            None,
        ),
        (
            "publish-topic-overlong-utf8",
            "PUBLISH whose topic has an overlong encoding of '/' (c0 af)",
            (_F6,),
            _swap(publish, b"news/eu", b"news\xc0\xafu"),
            U8,
            None,
        ),
        (
            "publish-topic-surrogate",
            "PUBLISH whose topic encodes the surrogate U+D800 (ed a0 80)",
            (_F6,),
            _swap(publish, b"news/eu", b"news\xed\xa0\x80"),
            U8,
            None,
        ),
        (
            "publish-header-key-invalid-utf8",
            "PUBLISH whose second header key is a lone continuation byte",
            (_F6,),
            _swap(publish_h, b"k2", b"k\x80"),
            U8,
            None,
        ),
        (
            "publish-batch-header-key-invalid-utf8",
            "PUBLISH_BATCH whose record header key is invalid UTF-8",
            (_F6,),
            _swap(pbatch_h, b"kk", b"\xc3k"),
            U8,
            None,
        ),
        (
            "message-topic-invalid-utf8",
            "MESSAGE whose topic ends inside a 3-byte sequence",
            (_F6,),
            _swap(message, b"news/eu", b"news/\xe2\x82"),
            U8,
            None,
        ),
        (
            "error-message-invalid-utf8",
            "ERROR whose message is above U+10FFFF (f4 90 80 80)",
            (_F6,),
            _swap(error, b"oops", b"\xf4\x90\x80\x80"),
            U8,
            None,
        ),
        (
            "goaway-reason-invalid-utf8",
            "GOAWAY whose reason contains 0xfe",
            (_F6,),
            _swap(goaway, b"bye", b"b\xfee"),
            U8,
            None,
        ),
        (
            "precedence-utf8-before-trailing",
            "SUBSCRIBE with an invalid topic and a trailing byte: the topic comes first",
            (_F6, _F14),
            _swap(subscribe, b"news/eu", b"news/e\xff", extra=b"!"),
            U8,
            None,
        ),
        (
            "precedence-utf8-before-range",
            "SUBSCRIBE with since_kind 9 and an invalid topic: fields before ranges",
            (_F6, _F14),
            _swap(F.Subscribe(1, "news/eu", 9), b"news/eu", b"\x80ews/eu"),
            U8,
            None,
        ),
        (
            "precedence-utf8-in-wire-order",
            "PUBLISH_BATCH with an invalid topic and a truncated record: the topic comes first",
            (_F6, _F14),
            _replace(
                _cut(F.PublishBatch(6, "news/e\u00e9", (F.Record(b"one"),)), 1),
                b"e\xc3\xa9",
                b"e\xa9\xc3",
            ),
            U8,
            None,
        ),
        # FIELD_OUT_OF_RANGE
        (
            "subscribe-since-kind-4",
            "SUBSCRIBE with since_kind 4 (defined: 0-3)",
            (_F7,),
            reference.encode_frame(F.Subscribe(1, "news/eu", 4, initial_credit=1)),
            R,
            None,
        ),
        (
            "subscribe-since-kind-255",
            "SUBSCRIBE with since_kind 255",
            (_F7,),
            reference.encode_frame(F.Subscribe(1, "news/eu", 255)),
            R,
            None,
        ),
        (
            "subscribe-pattern-at-least-once",
            "SUBSCRIBE with both PATTERN and AT_LEAST_ONCE (pattern subscriptions have no ACK)",
            ("PW-SUB-28", _F7),
            _flags(F.Subscribe(5, "orders/+", positions=()), PATTERN | AT_LEAST_ONCE),
            R,
            None,
        ),
        (
            "subscribed-flag-0x02",
            "SUBSCRIBED with flag bit 1 set (only TOPIC_STATUS = 0x01 is defined)",
            (_F3,),
            _flags(F.Subscribed(1, Outcome.NEW, _E, 101, 100), 0x02),
            RB,
            None,
        ),
        (
            "credit-increment-zero",
            "CREDIT with increment 0 (must be at least 1)",
            (_F7,),
            reference.encode_frame(F.Credit(1, 0)),
            R,
            None,
        ),
        (
            "publish-batch-count-zero",
            "PUBLISH_BATCH with count 0 (must be 1-65535)",
            (_F7,),
            reference.encode_frame(F.PublishBatch(6, "news/eu", ())),
            R,
            None,
        ),
        (
            "publish-batch-count-zero-with-headers-flag",
            "PUBLISH_BATCH with HAS_HEADERS and count 0",
            (_F7,),
            _flags(F.PublishBatch(6, "news/eu", ()), HAS_HEADERS),
            R,
            None,
        ),
        (
            "message-batch-count-zero",
            "MESSAGE_BATCH with count 0",
            (_F7,),
            reference.encode_frame(F.MessageBatch(_E, 1, "news/eu", ())),
            R,
            None,
        ),
        (
            "subscribed-outcome-4",
            "SUBSCRIBED with outcome 4 (defined: 0-3)",
            (_F7,),
            reference.encode_frame(F.Subscribed(1, 4, _E, 1, 0)),
            R,
            None,
        ),
        (
            "subscribed-gap-first-zero",
            "SUBSCRIBED outcome GAP with gap.first 0",
            (_F7,),
            reference.encode_frame(
                F.Subscribed(1, Outcome.GAP, _E, 5, 9, 0, 4, ErrorCode.HISTORY_EXPIRED)
            ),
            R,
            None,
        ),
        (
            "subscribed-gap-first-after-last",
            "SUBSCRIBED outcome GAP with gap.first > gap.last",
            (_F7,),
            reference.encode_frame(
                F.Subscribed(1, Outcome.GAP, _E, 5, 9, 4, 3, ErrorCode.HISTORY_EXPIRED)
            ),
            R,
            None,
        ),
        (
            "gap-first-zero",
            "GAP with first 0 (sequences start at 1)",
            (_F7,),
            reference.encode_frame(F.Gap(1, _E, 0, 4, ErrorCode.SLOW_CONSUMER)),
            R,
            None,
        ),
        (
            "gap-first-after-last",
            "GAP with first > last (an empty range)",
            (_F7,),
            reference.encode_frame(F.Gap(1, _E, 5, 4, ErrorCode.SLOW_CONSUMER)),
            R,
            None,
        ),
        (
            "welcome-policy-2",
            "WELCOME with slow_consumer_policy 2 (defined: 0-1)",
            (_F7,),
            reference.encode_frame(F.Welcome(1, 5000, 16384, 16, 100, 2, "s")),
            R,
            None,
        ),
        (
            "precedence-trailing-before-range",
            "CREDIT with increment 0 and a trailing byte: layout before ranges",
            (_F4, _F14),
            _append(F.Credit(1, 0), b"\x00"),
            M,
            None,
        ),
    ]
    for name, description, reqs, data, code, direction in cases:
        yield _Vector(
            name, description, reqs, data, direction or _direction(data[4]), "invalid", code
        )


def _ignored_vectors() -> Iterable[_Vector]:
    cases = [
        (
            "ignorable-type-0x80-empty",
            "type 0x80 (ignorable bit set, unknown) with no payload",
            build_frame(0x80, 0, b""),
        ),
        (
            "ignorable-type-0xff-flags-set",
            "type 0xff with every flag bit set: flags of an unknown type are not examined",
            build_frame(0xFF, 0xFF, b"\x00\x01\x02"),
        ),
        (
            "ignorable-type-0xa0-any-payload",
            "type 0xa0 (MESSAGE | 0x80 is another, unknown type) with a payload no layout accepts",
            build_frame(0xA0, 0x00, b"\xff" * 5),
        ),
    ]
    for name, description, data in cases:
        yield _Vector(name, description, (_F8, "PW-FRAME-15"), data, "both", "ignored")


def _incomplete_vectors() -> Iterable[_Vector]:
    """The start of a frame, then the end of the stream (SPEC.md §3.5, PW-FRAME-4, PW-FRAME-14)."""
    T = FrameType
    M, UT, RB = (
        ErrorCode.MALFORMED_FRAME,
        ErrorCode.UNKNOWN_FRAME_TYPE,
        ErrorCode.RESERVED_BITS_SET,
    )
    ping = reference.encode_frame(F.Ping(0x0102030405060708))
    message = reference.encode_frame(F.Message(_E, 1, "news/eu", b"hello"))
    bad_topic = _swap(F.Message(_E, 1, "news/eu", b"hello"), b"news/eu", b"news/e\xff")
    cases: list[tuple[str, str, tuple[str, ...], bytes, ErrorCode]] = [
        (
            "incomplete-header-1-byte",
            "one byte of a header, then the end of the stream",
            (),
            ping[:1],
            M,
        ),
        (
            "incomplete-header-5-bytes-unknown-type",
            "five header bytes with the unknown fatal type 0x7f: the header is not whole, so the "
            "type is not judged",
            (_F14,),
            build_header(8, 0x7F, 0)[:5],
            M,
        ),
        (
            "incomplete-header-4-bytes-above-limit",
            "four header bytes declaring 16385: the length alone is not a whole header",
            (_F14,),
            build_header(INITIAL_MAX_FRAME_SIZE + 1, T.PING, 0)[:4],
            M,
        ),
        (
            "incomplete-ping-header-only",
            "PING header (length 8) and no payload",
            (),
            ping[:HEADER_SIZE],
            M,
        ),
        (
            "incomplete-ping-mid-payload",
            "PING header and 2 of its 8 payload bytes",
            (),
            ping[: HEADER_SIZE + 2],
            M,
        ),
        (
            "incomplete-message-last-byte-missing",
            "MESSAGE without its last payload byte",
            (),
            message[:-1],
            M,
        ),
        (
            "incomplete-message-invalid-utf8-topic",
            "MESSAGE whose topic is not UTF-8, cut inside its payload: a cut-short payload is "
            "not examined",
            (_F14,),
            bad_topic[:-2],
            M,
        ),
        (
            "incomplete-ignorable-type-mid-payload",
            "unknown ignorable type 0xc0 declaring 8 bytes, 3 present: the skip is cut short",
            (_F8,),
            build_header(8, 0xC0, 0) + b"\x00\x01\x02",
            M,
        ),
        (
            "incomplete-unknown-type-header-only",
            "unknown fatal type 0x7d declaring 8 bytes, no payload: decided from the header",
            (_F5, _F14),
            build_header(8, 0x7D, 0),
            UT,
        ),
        (
            "incomplete-unknown-type-mid-payload",
            "unknown fatal type 0x7d declaring 8 bytes, 1 present: decided from the header",
            (_F5, _F14),
            build_header(8, 0x7D, 0) + b"\x00",
            UT,
        ),
        (
            "incomplete-reserved-flag-header-only",
            "PING with flag bit 0 set and no payload: decided from the header",
            (_F3, _F14),
            build_header(8, T.PING, 0x01),
            RB,
        ),
        (
            "incomplete-reserved-flag-mid-payload",
            "MESSAGE with flag bit 1 set declaring 8 bytes, 1 present: decided from the header",
            (_F3, _F14),
            build_header(8, T.MESSAGE, 0x02) + b"\x00",
            RB,
        ),
    ]
    for name, description, reqs, data, code in cases:
        direction = _direction(data[4]) if len(data) > 4 else "both"
        reqs = (_F4, *reqs) if code == M else (_F14, *reqs)
        yield _Vector(name, description, reqs, data, direction, "incomplete", code)


# -- prefaces -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Preface:
    name: str
    description: str
    requirements: tuple[str, ...]
    sender: Literal["client", "server"]
    data: bytes
    code: ErrorCode | None = None
    reply: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "requirements": sorted(set(self.requirements)),
            "sender": self.sender,
            "hex": self.data.hex(),
        }
        if self.code is None:
            a, b = self.data[len(MAGIC)], self.data[len(MAGIC) + 1]
            keys = (
                ("min_version", "max_version")
                if self.sender == "client"
                else ("version", "max_version")
            )
            out["preface"] = dict(zip(keys, (a, b), strict=True))
        else:
            out["error"] = self.code.name
            out["code"] = int(self.code)
        if self.reply is not None:
            out["reply_hex"] = self.reply.hex()
        return out


def _preface_vectors() -> Iterable[_Preface]:
    v = PROTOCOL_VERSION
    good = encode_preface(v, v)
    none = encode_preface(0, v)
    bad, rb, uv = ErrorCode.BAD_PREFACE, ErrorCode.RESERVED_BITS_SET, ErrorCode.UNSUPPORTED_VERSION
    reserved = good[:-1] + b"\x01"
    yield _Preface(
        "client-v1",
        "client offers versions 1..1; the server chooses 1",
        ("PW-PREFACE-5", "PW-PREFACE-6"),
        "client",
        good,
        reply=good,
    )
    yield _Preface(
        "client-v1-to-v3",
        "client offers 1..3; a v1-only server chooses 1",
        ("PW-PREFACE-6",),
        "client",
        encode_preface(1, 3),
        reply=good,
    )
    yield _Preface(
        "client-no-common-version",
        "client offers 2..3: the server answers version 0 and closes",
        ("PW-PREFACE-6",),
        "client",
        encode_preface(2, 3),
        uv,
        reply=none,
    )
    yield _Preface(
        "client-min-above-max",
        "client offers min 3 > max 2: no version in range",
        ("PW-PREFACE-5", "PW-PREFACE-6"),
        "client",
        encode_preface(3, 2),
        uv,
        reply=none,
    )
    yield _Preface(
        "client-bad-magic-http",
        "an HTTP request line instead of a preface",
        ("PW-PREFACE-1",),
        "client",
        b"GET / HT",
        bad,
    )
    yield _Preface(
        "client-bad-magic-tls",
        "a TLS ClientHello sent to a plain-TCP server",
        ("PW-PREFACE-1",),
        "client",
        bytes.fromhex("1603010200010000"),
        bad,
    )
    yield _Preface(
        "client-magic-newline-translated",
        "the magic with its 0x0a turned into 0x0d 0x0a by a text-mode channel",
        ("PW-PREFACE-1",),
        "client",
        MAGIC[:3] + b"\r\n" + bytes([v, v, 0]),
        bad,
    )
    yield _Preface(
        "client-reserved-nonzero",
        "client preface with reserved = 0x0001",
        ("PW-PREFACE-2",),
        "client",
        reserved,
        rb,
    )
    yield _Preface(
        "client-bad-magic-and-reserved",
        "bad magic and non-zero reserved: the magic is checked first",
        ("PW-PREFACE-1",),
        "client",
        b"\x89PX\n" + reserved[4:],
        bad,
    )
    yield _Preface("server-v1", "server chose version 1", ("PW-PREFACE-6",), "server", good)
    yield _Preface(
        "server-version-0", "server found no common version", ("PW-PREFACE-7",), "server", none, uv
    )
    yield _Preface(
        "server-version-outside-offer",
        "server chose 2, outside the 1..1 the client offered",
        ("PW-PREFACE-7",),
        "server",
        encode_preface(2, 2),
        uv,
    )
    yield _Preface(
        "server-bad-magic",
        "server preface with a wrong magic",
        ("PW-PREFACE-1",),
        "server",
        b"\x89PWX" + good[4:],
        bad,
    )
    yield _Preface(
        "server-reserved-nonzero",
        "server preface with reserved = 0x0100",
        ("PW-PREFACE-2",),
        "server",
        good[:-2] + b"\x01\x00",
        rb,
    )


# -- frames an encoder refuses ---------------------------------------------------------------

RefusalRule = Literal["width", "prefix", "utf8", "range", "flags"]


@dataclass(frozen=True)
class _Refusal:
    """A frame an encoder must not send (PW-FRAME-16). ``flags``: the flags the vector
    states, when they are the point (otherwise those the fields imply)."""

    name: str
    description: str
    rule: RefusalRule
    frame: F.Frame
    code: ErrorCode = ErrorCode.FIELD_OUT_OF_RANGE
    requirements: tuple[str, ...] = ()
    flags: int | None = None

    def render(self) -> dict[str, Any]:
        frame = _refused_frame_json(self.frame, self.flags)
        return {
            "name": self.name,
            "description": self.description,
            "requirements": sorted({"PW-FRAME-16", *self.requirements}),
            "rule": self.rule,
            "frame": frame,
            "direction": _direction(FrameType[frame["type"]]),
            "error": self.code.name,
            "code": int(self.code),
        }


def _refused_frame_json(frame: F.Frame, flags: int | None) -> dict[str, Any]:
    """:func:`frame_json` of a frame that cannot be encoded; a batch whose records disagree
    on having headers has no flags the declarations could derive, so its records are
    written out here."""
    if isinstance(frame, F.MessageBatch | F.PublishBatch):
        uniform = tuple(F.Record(r.payload, r.headers or ()) for r in frame.records)
        data = frame_json(dataclasses.replace(frame, records=uniform), u64_text=True)
        data["fields"]["records"] = [
            {
                "headers": None
                if r.headers is None
                else [{"key": k, "value": v.hex()} for k, v in r.headers],
                "payload": r.payload.hex(),
            }
            for r in frame.records
        ]
        data["flags"] = HAS_HEADERS if frame.records and frame.records[0].headers else 0
    else:
        data = frame_json(frame, u64_text=True)
    if flags is not None:
        data["flags"] = flags
    return data


def refused_frame(vector: dict[str, Any]) -> tuple[F.Frame, int]:
    """The frame and the stated flags of an ``encoder_refusals`` vector."""
    data = vector["frame"]
    return frame_from_json(data), data["flags"]


def _refusal_vectors() -> Iterable[_Refusal]:
    t, gap = "news/eu", ErrorCode.SLOW_CONSUMER
    f7 = (_F7,)
    yield from (
        _Refusal(
            "refuse-credit-increment-zero", "CREDIT of 0", "range", F.Credit(1, 0), requirements=f7
        ),
        _Refusal(
            "refuse-gap-first-zero",
            "GAP 0..5: sequences start at 1",
            "range",
            F.Gap(1, _E, 0, 5, gap),
            requirements=f7,
        ),
        _Refusal(
            "refuse-gap-empty",
            "GAP 7..6, an empty range",
            "range",
            F.Gap(1, _E, 7, 6, gap),
            requirements=f7,
        ),
        _Refusal(
            "refuse-message-batch-no-records",
            "MESSAGE_BATCH with count 0",
            "range",
            F.MessageBatch(_E, 1, t, ()),
            requirements=f7,
        ),
        _Refusal(
            "refuse-publish-batch-no-records",
            "PUBLISH_BATCH with count 0",
            "range",
            F.PublishBatch(1, t, ()),
            requirements=f7,
        ),
        _Refusal(
            "refuse-subscribe-since-kind-4",
            "SUBSCRIBE with since_kind 4, which no version defines",
            "range",
            F.Subscribe(1, t, since_kind=4, initial_credit=10),
            requirements=f7,
        ),
        _Refusal(
            "refuse-subscribed-outcome-4",
            "SUBSCRIBED with outcome 4, which no version defines",
            "range",
            F.Subscribed(1, 4, _E, 1, 0),
            requirements=f7,
        ),
        _Refusal(
            "refuse-subscribed-gap-empty",
            "SUBSCRIBED with outcome GAP and the gap 0..59",
            "range",
            F.Subscribed(1, Outcome.GAP, _E, 60, 100, 0, 59, int(ErrorCode.HISTORY_EXPIRED)),
            requirements=f7,
        ),
        _Refusal(
            "refuse-welcome-policy-2",
            "WELCOME with slow_consumer_policy 2",
            "range",
            F.Welcome(1, 30000, 16384, 64, 1000, 2, "s"),
            requirements=f7,
        ),
        _Refusal(
            "refuse-subscribe-pattern-at-least-once",
            "SUBSCRIBE with both PATTERN and AT_LEAST_ONCE",
            "range",
            F.Subscribe(1, "news/+", initial_credit=10, at_least_once=True, positions=()),
            requirements=f7,
        ),
        _Refusal(
            "refuse-credit-sub-id-above-u32",
            "CREDIT for sub_id 2^32: wider than u32",
            "width",
            F.Credit(_U32 + 1, 1),
        ),
        _Refusal(
            "refuse-message-seq-above-u64",
            "MESSAGE with seq 2^64: wider than u64",
            "width",
            F.Message(_E, _U64 + 1, t, b"x"),
        ),
        _Refusal(
            "refuse-error-code-above-u16",
            "ERROR with code 65536: wider than u16",
            "width",
            F.Error(0x1_0000, 0, 0, ""),
        ),
        _Refusal(
            "refuse-message-topic-256-bytes",
            "MESSAGE whose topic is 256 bytes: more than its u8 length holds",
            "prefix",
            F.Message(_E, 1, "t" * 256, b"x"),
        ),
        _Refusal(
            "refuse-message-header-key-256-bytes",
            "MESSAGE with a 256-byte header key",
            "prefix",
            F.Message(_E, 1, t, b"x", (("k" * 256, b"v"),)),
        ),
        _Refusal(
            "refuse-message-256-headers",
            "MESSAGE with 256 headers: more than its u8 count holds",
            "prefix",
            F.Message(_E, 1, t, b"x", tuple(("k", b"") for _ in range(256))),
        ),
        _Refusal(
            "refuse-message-topic-not-utf8",
            "MESSAGE whose topic holds a lone surrogate, which no UTF-8 encodes",
            "utf8",
            F.Message(_E, 1, "news/\ud800", b"x"),
            requirements=(_F6,),
        ),
        _Refusal(
            "refuse-error-message-not-utf8",
            "ERROR whose message holds a lone surrogate",
            "utf8",
            F.Error(ErrorCode.PROTOCOL_ERROR, 0, 0, "bad \udcff"),
            requirements=(_F6,),
        ),
        _Refusal(
            "refuse-message-reserved-flag",
            "MESSAGE with flag bit 0x02, which MESSAGE does not define",
            "flags",
            F.Message(_E, 1, t, b"x"),
            ErrorCode.RESERVED_BITS_SET,
            (_F3,),
            flags=0x02,
        ),
        _Refusal(
            "refuse-message-has-headers-without-block",
            "MESSAGE with HAS_HEADERS but no header block",
            "flags",
            F.Message(_E, 1, t, b"x"),
            flags=HAS_HEADERS,
        ),
        _Refusal(
            "refuse-message-batch-mixed-headers",
            "MESSAGE_BATCH whose records disagree on having headers (one flag covers all)",
            "flags",
            F.MessageBatch(_E, 1, t, (F.Record(b"a", ()), F.Record(b"b"))),
        ),
    )


# -- the document ---------------------------------------------------------------------------


def generate() -> dict[str, Any]:
    """The whole vector document, from the declarations. Deterministic: same input, same
    output, vectors sorted by name."""
    frames = [
        *_valid_vectors(),
        *_invalid_vectors(),
        *_ignored_vectors(),
        *_incomplete_vectors(),
    ]
    prefaces = list(_preface_vectors())
    refusals = list(_refusal_vectors())
    for group in (frames, prefaces, refusals):
        names = [v.name for v in group]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"duplicate vector names: {sorted(duplicates)}")
    return {
        "format": FORMAT,
        "protocol_version": PROTOCOL_VERSION,
        "description": (
            "pushwire v1 test vectors, generated from the construct declarations "
            "(pushwire.protocol.layouts) by pushwire.protocol.spec.vectors. See conventions."
        ),
        "conventions": CONVENTIONS,
        "frames": sorted((v.render() for v in frames), key=lambda v: v["name"]),
        "prefaces": sorted((v.render() for v in prefaces), key=lambda v: v["name"]),
        "client_sessions": sessions.generate(),
        "encoder_refusals": sorted((v.render() for v in refusals), key=lambda v: v["name"]),
    }


def render(document: dict[str, Any] | None = None) -> str:
    """A document as committed text: sorted keys, two-space indent, ASCII only, final
    newline. Without an argument, the generated vectors."""
    doc = generate() if document is None else document
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


# -- the JSON Schema -----------------------------------------------------------------------


def _field_schema(con: Construct) -> dict[str, Any]:
    """JSON Schema of one declared field, as the vectors render it. Raises TypeError for a
    construct this walker does not know, so a new kind of field cannot slip through."""
    if isinstance(con, Renamed):
        return _field_schema(con.subcon)
    if isinstance(con, FormatField):
        if con.length == 8:
            return {"type": "string", "pattern": _U64_PATTERN, "description": "u64, decimal"}
        return {"type": "integer", "minimum": 0, "maximum": (1 << (8 * con.length)) - 1}
    if isinstance(con, Rebuild):
        return _field_schema(con.subcon)
    if isinstance(con, StringEncoded):
        limit = (1 << (8 * con.subcon.lengthfield.length)) - 1
        return {"type": "string", "description": f"text, 0-{limit} UTF-8 bytes"}
    if isinstance(con, Prefixed) and con.subcon is GreedyBytes:
        limit = (1 << (8 * con.lengthfield.length)) - 1
        return {"type": "string", "pattern": _HEX_PATTERN, "maxLength": 2 * limit}
    if con is GreedyBytes:
        return {"type": "string", "pattern": _HEX_PATTERN}
    if isinstance(con, IfThenElse) and isinstance(con.elsesubcon, Pass.__class__):
        return {"anyOf": [_field_schema(con.thensubcon), {"type": "null"}]}
    if isinstance(con, Switch) and isinstance(con.default, Pass.__class__):
        cases = [_field_schema(c) for _, c in sorted(con.cases.items())]
        return {"anyOf": [*cases, {"type": "null"}]}
    if isinstance(con, FocusedSeq):  # PrefixedArray(count, items)
        count, items = (sc.subcon for sc in con.subcons)
        return {
            "type": "array",
            "items": _field_schema(items.subcon),
            "maxItems": _field_schema(count)["maximum"],
        }
    if isinstance(con, Array):
        return {"type": "array", "items": _field_schema(con.subcon), "minItems": 0}
    if isinstance(con, Struct):
        named = [sc for sc in con.subcons if sc.name is not None]
        unnamed = [sc for sc in con.subcons if sc.name is None]
        if any(sc is not Terminated for sc in unnamed):
            raise TypeError(f"unnamed field in {con!r}")
        return {
            "type": "object",
            "properties": {sc.name: _field_schema(sc) for sc in named},
            "required": [sc.name for sc in named],
            "additionalProperties": False,
        }
    raise TypeError(f"no JSON Schema rule for {con!r}")


_HEX_PATTERN = "^([0-9a-f]{2})*$"
#: A u64 in decimal: no sign, no leading zero, at most 20 digits (2^64 - 1 has 20).
_U64_PATTERN = "^(0|[1-9][0-9]{0,19})$"


def _flag_values(type_: FrameType) -> list[int]:
    defined = DEFINED_FLAGS[type_]
    return [f for f in range(256) if not f & ~defined]


def schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of ``vectors.json``, generated from the same declarations,
    so a valid vector's ``fields`` are checked against its type's layout."""
    frames = [
        {
            "properties": {
                "type": {"const": t.name},
                "flags": {"enum": _flag_values(t)},
                "fields": _field_schema(BODIES[t]),
            }
        }
        for t in FrameType
    ]
    decode_errors = sorted(c.name for c in DECODE_ERRORS)
    preface_errors = sorted(
        c.name
        for c in (
            ErrorCode.BAD_PREFACE,
            ErrorCode.RESERVED_BITS_SET,
            ErrorCode.UNSUPPORTED_VERSION,
        )
    )
    u8 = {"type": "integer", "minimum": 0, "maximum": 255}
    common = {
        "name": {"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"},
        "description": {"type": "string", "minLength": 1},
        "requirements": {
            "type": "array",
            "items": {"type": "string", "pattern": "^PW-[A-Z]+-[1-9][0-9]*$"},
            "minItems": 1,
            "uniqueItems": True,
        },
        "hex": {"type": "string", "pattern": _HEX_PATTERN},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "pushwire v1 test vectors",
        "description": (
            "Generated from the construct declarations by pushwire.protocol.spec.vectors; see the "
            "'conventions' object of vectors.json for how values are written."
        ),
        "type": "object",
        "required": [
            "format",
            "protocol_version",
            "description",
            "conventions",
            "frames",
            "prefaces",
            "client_sessions",
            "encoder_refusals",
        ],
        "additionalProperties": False,
        "properties": {
            "format": {"const": FORMAT},
            "protocol_version": {"const": PROTOCOL_VERSION},
            "description": {"type": "string"},
            "conventions": {"type": "object"},
            "client_sessions": {"type": "array", "items": {"$ref": "#/$defs/client_session"}},
            "frames": {"type": "array", "items": {"$ref": "#/$defs/frame_vector"}},
            "prefaces": {"type": "array", "items": {"$ref": "#/$defs/preface_vector"}},
            "encoder_refusals": {"type": "array", "items": {"$ref": "#/$defs/refusal_vector"}},
        },
        "$defs": {
            "refusal_vector": {
                "type": "object",
                "required": [
                    "name",
                    "description",
                    "requirements",
                    "rule",
                    "frame",
                    "direction",
                    "error",
                    "code",
                ],
                "additionalProperties": False,
                "properties": {
                    "name": common["name"],
                    "description": common["description"],
                    "requirements": common["requirements"],
                    "rule": {"enum": ["width", "prefix", "utf8", "range", "flags"]},
                    "frame": {
                        "type": "object",
                        "required": ["type", "flags", "fields"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"enum": [t.name for t in FrameType]},
                            "flags": u8,
                            "fields": {"type": "object"},
                        },
                    },
                    "direction": {"enum": ["to_server", "to_client", "both"]},
                    "error": {"enum": sorted(c.name for c in ErrorCode)},
                    "code": {"type": "integer", "minimum": 0, "maximum": 65535},
                },
            },
            "client_session": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "description", "requirements", "steps"],
                "properties": {
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "requirements": {"type": "array", "items": {"type": "string"}},
                    "steps": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["do", "events", "sent_hex"],
                            "properties": {
                                "do": {
                                    "enum": ["initiate", "receive", "subscribe", "credit", "ack"]
                                },
                                "events": {"type": "array", "items": {"type": "object"}},
                                "sent_hex": {"type": "string", "pattern": _HEX_PATTERN},
                                "hex": {"type": "string", "pattern": _HEX_PATTERN},
                                "error": {"type": "string"},
                            },
                        },
                    },
                },
            },
            "frame": {
                "type": "object",
                "required": ["type", "flags", "fields"],
                "additionalProperties": False,
                "properties": {
                    "type": {"enum": [t.name for t in FrameType]},
                    "flags": u8,
                    "fields": {"type": "object"},
                },
                "oneOf": frames,
            },
            "frame_vector": {
                "type": "object",
                "required": [
                    "name",
                    "description",
                    "requirements",
                    "kind",
                    "hex",
                    "direction",
                    "max_frame_size",
                ],
                "additionalProperties": False,
                "properties": {
                    **common,
                    "kind": {"enum": ["valid", "invalid", "ignored", "incomplete"]},
                    "direction": {"enum": ["to_server", "to_client", "both"]},
                    "max_frame_size": {"type": "integer", "minimum": 0},
                    "frame": {"$ref": "#/$defs/frame"},
                    "error": {"enum": decode_errors},
                    "code": {"type": "integer", "minimum": 0, "maximum": 65535},
                },
                "oneOf": [
                    {
                        "properties": {"kind": {"const": "valid"}},
                        "required": ["frame"],
                        "not": {"anyOf": [{"required": ["error"]}, {"required": ["code"]}]},
                    },
                    {
                        "properties": {"kind": {"enum": ["invalid", "incomplete"]}},
                        "required": ["error", "code"],
                        "not": {"required": ["frame"]},
                    },
                    {
                        "properties": {"kind": {"const": "ignored"}},
                        "not": {
                            "anyOf": [
                                {"required": ["frame"]},
                                {"required": ["error"]},
                                {"required": ["code"]},
                            ]
                        },
                    },
                ],
            },
            "preface_vector": {
                "type": "object",
                "required": ["name", "description", "requirements", "sender", "hex"],
                "additionalProperties": False,
                "properties": {
                    **common,
                    "sender": {"enum": ["client", "server"]},
                    "preface": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"min_version": u8, "max_version": u8, "version": u8},
                    },
                    "reply_hex": {"type": "string", "pattern": _HEX_PATTERN},
                    "error": {"enum": preface_errors},
                    "code": {"type": "integer", "minimum": 0, "maximum": 65535},
                },
                "oneOf": [
                    {
                        "required": ["preface"],
                        "not": {"anyOf": [{"required": ["error"]}, {"required": ["code"]}]},
                    },
                    {"required": ["error", "code"], "not": {"required": ["preface"]}},
                ],
            },
        },
    }


def render_schema() -> str:
    """The schema as the committed text (same formatting as :func:`render`)."""
    return render(schema())


def load(path: Path = VECTORS_FILE) -> dict[str, Any]:
    """The committed vectors (``protocol/vectors.json`` by default)."""
    with path.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def diff(committed: dict[str, Any], generated: dict[str, Any]) -> list[str]:
    """Human-readable differences between two documents, vector by vector."""
    lines: list[str] = []
    for key in sorted(set(committed) | set(generated)):
        old, new = committed.get(key), generated.get(key)
        if key in ("frames", "prefaces", "client_sessions", "encoder_refusals"):
            old_by = {v["name"]: v for v in old or []}
            new_by = {v["name"]: v for v in new or []}
            for name in sorted(set(old_by) | set(new_by)):
                if name not in new_by:
                    lines.append(f"{key}: {name}: only in the committed file (removed)")
                elif name not in old_by:
                    lines.append(f"{key}: {name}: missing from the committed file (new)")
                elif old_by[name] != new_by[name]:
                    fields = sorted(
                        k
                        for k in set(old_by[name]) | set(new_by[name])
                        if old_by[name].get(k) != new_by[name].get(k)
                    )
                    lines.append(f"{key}: {name}: differs in {', '.join(fields)}")
            if (
                old is not None
                and new is not None
                and [v["name"] for v in old] != [v["name"] for v in new]
            ):
                lines.append(f"{key}: order differs")
        elif old != new:
            lines.append(f"{key}: differs")
    return lines
