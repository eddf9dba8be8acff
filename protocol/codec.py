"""The hot-path frame codec: ``encode_frame`` and ``decode_body``, hand-written with ``struct``.

Theory of operation
-------------------
``reference.py`` walks the construct declarations of ``layouts.py``; it is normative and
slow (about 15 µs per MESSAGE each way). This module does the same job with precompiled
:class:`struct.Struct` objects and slicing, one function per frame type, and is what the
connection state machines and the decoder use. It must never disagree with the declarations:

* encoding: for every frame the declarations can represent, the bytes are identical to
  ``reference.encode_frame`` (``tests/protocol/test_codec_equivalence.py`` proves it over
  generated frames). Like the reference, the encoder checks only what the layout can hold
  (integer widths, length prefixes, text that is encodable as UTF-8): range rules such as
  "CREDIT.increment >= 1" are *receive* rules (SPEC.md §3.5), enforced by the state machines
  for what they send, and left out here so that tests and fuzzers can build hostile frames
  with the same codec. Anything the layout cannot hold is LocalProtocolError
  (FIELD_OUT_OF_RANGE). :func:`validate` adds the ranges and stated flags, for a caller
  that wants the whole PW-FRAME-16 refusal (the ``encoder_refusals`` vectors); it is kept
  off the fan-out path.
* decoding: the same frame, or the same error code, as ``reference.decode_body`` for every
  byte string, in the same precedence: header (``reference.check_header``) → fields in wire
  order (a short read or leftover bytes is MALFORMED_FRAME, text that is not UTF-8 is
  INVALID_UTF8) → ranges (``reference.check_ranges``). Fixed-width fields are read with one
  ``unpack_from`` per run of them; that is safe because a short run can only ever be
  MALFORMED_FRAME, whichever of its fields is short. A text field is always read on its own,
  so an INVALID_UTF8 in it wins over a short read further on, as in the declaration.

Only :class:`RemoteProtocolError` leaves ``decode_body``: every index is bounds-checked before
use, and ``struct.error`` / ``UnicodeDecodeError`` are turned into registry codes where they
arise.

The server's encode-once forwarding (SPEC.md §7.8, PW-PUB-9) lives here too, because it depends
on the byte layout: :func:`publish_to_message`, :func:`publish_batch_to_message_batch` and
:func:`slice_batch` (and their body-level parts :func:`publish_body`, :func:`body_to_message`,
:func:`body_record_offsets`, for a broker that stores publish bodies) build push frames by
splicing already-validated bytes instead of decoding and re-encoding every payload.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from pushwire.protocol.layouts import (
    AT_LEAST_ONCE,
    DEFINED_FLAGS,
    HAS_HEADERS,
    HEADER_SIZE,
    MESSAGE_PREFIX_SIZE,
    PATTERN,
    PUBLISH_PREFIX_SIZE,
    TOPIC_STATUS,
    FrameType,
    Header,
    Outcome,
    SinceKind,
)
from pushwire.protocol.reference import check_header, check_ranges, refuse_unsendable

Buffer = bytes | bytearray | memoryview

# -- precompiled layouts ----------------------------------------------------------------------
# Each Struct mirrors a run of fixed-width fields of one declaration in layouts.py; the
# property tests fail if one drifts. Names ending in H include the 6-byte frame header
# (length u32, type u8, flags u8) in front, for encoding a whole frame with one pack().

_HDR = struct.Struct(">IBB")
assert _HDR.size == HEADER_SIZE == Header.sizeof()

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_U64U64 = struct.Struct(">QQ")

_HELLO = struct.Struct(">II")  # max_frame_size, heartbeat_ms
_WELCOME = struct.Struct(">QIIIIB")  # connection_id .. slow_consumer_policy
_GOAWAY = struct.Struct(">HIIH")  # code, after, jitter, positions count
_POSITION = struct.Struct(">IQQ")
_ERROR = struct.Struct(">HBI")  # code, request_type, request_id
_SUBSCRIBE = struct.Struct(">IIB")  # sub_id, initial_credit, since_kind
_SUBSCRIBED = struct.Struct(">IBQQQ")  # sub_id, outcome, epoch, start_seq, head_seq
_GAPRANGE = struct.Struct(">QQH")
_UNSUBSCRIBED = struct.Struct(">IQQ")
_CREDIT = struct.Struct(">II")
_ACK = struct.Struct(">IQ")
_GAP = struct.Struct(">IQQQH")
_PUBACK = struct.Struct(">IQQH")
_MSG_FIXED = struct.Struct(">QQB")  # epoch, seq (or base_seq), topic length
_PUB_FIXED = struct.Struct(">IB")  # request_id, topic length

_PING_H = struct.Struct(">IBBQ")
_CREDIT_H = struct.Struct(">IBBII")
_ACK_H = struct.Struct(">IBBIQ")
_UNSUBSCRIBE_H = struct.Struct(">IBBI")
_UNSUBSCRIBED_H = struct.Struct(">IBBIQQ")
_GAP_H = struct.Struct(">IBBIQQQH")
_PUBACK_H = struct.Struct(">IBBIQQH")
_MSG_H = struct.Struct(">IBBQQB")  # header, epoch, seq, topic length
_PUB_H = struct.Struct(">IBBIB")  # header, request_id, topic length
_PUSH_H = struct.Struct(">IBBQQ")  # header, epoch, seq (the forwarding helpers)

_MSG_PREFIX = MESSAGE_PREFIX_SIZE + 1  # epoch + seq + topic length byte
_PUB_PREFIX = PUBLISH_PREFIX_SIZE + 1  # request_id + topic length byte
_PUB_BODY_AT = HEADER_SIZE + PUBLISH_PREFIX_SIZE  # where a publish body starts in its frame
assert _MSG_FIXED.size == _MSG_PREFIX and _PUB_FIXED.size == _PUB_PREFIX

_T_MESSAGE = int(FrameType.MESSAGE)
_T_MESSAGE_BATCH = int(FrameType.MESSAGE_BATCH)
_T_PUBLISH = int(FrameType.PUBLISH)
_T_PUBLISH_BATCH = int(FrameType.PUBLISH_BATCH)
_PUBLISH_TYPES = (_T_PUBLISH, _T_PUBLISH_BATCH)

# -- decode errors ------------------------------------------------------------------------------


def _malformed(ft: FrameType, why: str) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"{ft.name}: {why}", code=ErrorCode.MALFORMED_FRAME, requirement="PW-FRAME-4"
    )


def _short(ft: FrameType) -> RemoteProtocolError:
    return _malformed(ft, "payload ends inside a field")


def _trailing(ft: FrameType, extra: int) -> RemoteProtocolError:
    return _malformed(ft, f"{extra} bytes after the last field")


def _bad_text(ft: FrameType, exc: UnicodeDecodeError) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"{ft.name}: text field is not UTF-8 ({exc.reason} at byte {exc.start})",
        code=ErrorCode.INVALID_UTF8,
        requirement="PW-FRAME-6",
    )


# -- decode helpers: each reads one field at ``off`` and returns (value, next offset) -------


def _str8(p: Buffer, off: int, ft: FrameType) -> tuple[str, int]:
    if off >= len(p):
        raise _short(ft)
    end = off + 1 + p[off]
    if end > len(p):
        raise _short(ft)
    try:
        return str(p[off + 1 : end], "utf-8"), end
    except UnicodeDecodeError as exc:
        raise _bad_text(ft, exc) from exc


def _text16(p: Buffer, off: int, ft: FrameType) -> tuple[str, int]:
    if off + 2 > len(p):
        raise _short(ft)
    end = off + 2 + _U16.unpack_from(p, off)[0]
    if end > len(p):
        raise _short(ft)
    try:
        return str(p[off + 2 : end], "utf-8"), end
    except UnicodeDecodeError as exc:
        raise _bad_text(ft, exc) from exc


def _bytes16(p: Buffer, off: int, ft: FrameType) -> tuple[bytes, int]:
    if off + 2 > len(p):
        raise _short(ft)
    end = off + 2 + _U16.unpack_from(p, off)[0]
    if end > len(p):
        raise _short(ft)
    return bytes(p[off + 2 : end]), end


def _headers(p: Buffer, off: int, ft: FrameType) -> tuple[F.Headers, int]:
    """§9.2 header block: u8 count, then (Str8 key, Bytes16 value) pairs."""
    if off >= len(p):
        raise _short(ft)
    count = p[off]
    off += 1
    pairs = []
    for _ in range(count):
        key, off = _str8(p, off, ft)
        value, off = _bytes16(p, off, ft)
        pairs.append((key, value))
    return tuple(pairs), off


def _topic(p: Buffer, start: int, end: int, ft: FrameType) -> str:
    """A Str8 whose length byte was already read and whose end is known to be in range."""
    try:
        return str(p[start:end], "utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_text(ft, exc) from exc


def _records(
    p: Buffer, off: int, count: int, has_headers: bool, ft: FrameType
) -> tuple[F.Record, ...]:
    """``count`` records (§7.2) that must end exactly at the end of the payload."""
    size = len(p)
    records = []
    record = F.Record
    if has_headers:
        for _ in range(count):
            headers, off = _headers(p, off, ft)
            if off + 4 > size:
                raise _short(ft)
            end = off + 4 + _U32.unpack_from(p, off)[0]
            if end > size:
                raise _short(ft)
            records.append(record(bytes(p[off + 4 : end]), headers))
            off = end
    else:
        u32 = _U32.unpack_from
        for _ in range(count):
            if off + 4 > size:
                raise _short(ft)
            end = off + 4 + u32(p, off)[0]
            if end > size:
                raise _short(ft)
            records.append(record(bytes(p[off + 4 : end])))
            off = end
    if off != size:
        raise _trailing(ft, size - off)
    return tuple(records)


def _exact(p: Buffer, size: int, ft: FrameType) -> None:
    if len(p) != size:
        raise _short(ft) if len(p) < size else _trailing(ft, len(p) - size)


def _end(p: Buffer, off: int, ft: FrameType) -> None:
    if off != len(p):
        raise _trailing(ft, len(p) - off)


# -- decoders, one per type: (flags, payload) -> frame ------------------------------------------


def _dec_message(flags: int, p: Buffer) -> F.Frame:
    try:
        epoch, seq, n = _MSG_FIXED.unpack_from(p)
    except struct.error:
        raise _short(FrameType.MESSAGE) from None
    end = _MSG_PREFIX + n
    if end > len(p):
        raise _short(FrameType.MESSAGE)
    try:
        topic = str(p[_MSG_PREFIX:end], "utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_text(FrameType.MESSAGE, exc) from exc
    if flags:
        headers, end = _headers(p, end, FrameType.MESSAGE)
        return F.Message(epoch, seq, topic, bytes(p[end:]), headers)
    return F.Message(epoch, seq, topic, bytes(p[end:]))


def _dec_publish(flags: int, p: Buffer) -> F.Frame:
    try:
        request_id, n = _PUB_FIXED.unpack_from(p)
    except struct.error:
        raise _short(FrameType.PUBLISH) from None
    end = _PUB_PREFIX + n
    if end > len(p):
        raise _short(FrameType.PUBLISH)
    try:
        topic = str(p[_PUB_PREFIX:end], "utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_text(FrameType.PUBLISH, exc) from exc
    if flags:
        headers, end = _headers(p, end, FrameType.PUBLISH)
        return F.Publish(request_id, topic, bytes(p[end:]), headers)
    return F.Publish(request_id, topic, bytes(p[end:]))


def _batch_head(p: Buffer, prefix: int, ft: FrameType) -> tuple[str, int, int]:
    """(topic, count, offset of the first record) of a batch whose fixed prefix was read."""
    end = prefix + p[prefix - 1]
    if end > len(p):
        raise _short(ft)
    topic = _topic(p, prefix, end, ft)
    if end + 2 > len(p):
        raise _short(ft)
    return topic, _U16.unpack_from(p, end)[0], end + 2


def _dec_message_batch(flags: int, p: Buffer) -> F.Frame:
    ft = FrameType.MESSAGE_BATCH
    if len(p) < _MSG_PREFIX:
        raise _short(ft)
    epoch, base_seq, _ = _MSG_FIXED.unpack_from(p)
    topic, count, off = _batch_head(p, _MSG_PREFIX, ft)
    frame = F.MessageBatch(epoch, base_seq, topic, _records(p, off, count, bool(flags), ft))
    if not count:
        check_ranges(frame)
    return frame


def _dec_publish_batch(flags: int, p: Buffer) -> F.Frame:
    ft = FrameType.PUBLISH_BATCH
    if len(p) < _PUB_PREFIX:
        raise _short(ft)
    request_id = _PUB_FIXED.unpack_from(p)[0]
    topic, count, off = _batch_head(p, _PUB_PREFIX, ft)
    frame = F.PublishBatch(request_id, topic, _records(p, off, count, bool(flags), ft))
    if not count:
        check_ranges(frame)
    return frame


def _dec_ping(flags: int, p: Buffer) -> F.Frame:
    if len(p) != 8:
        _exact(p, 8, FrameType.PING)
    return F.Ping(_U64.unpack_from(p)[0])


def _dec_pong(flags: int, p: Buffer) -> F.Frame:
    if len(p) != 8:
        _exact(p, 8, FrameType.PONG)
    return F.Pong(_U64.unpack_from(p)[0])


def _dec_credit(flags: int, p: Buffer) -> F.Frame:
    if len(p) != _CREDIT.size:
        _exact(p, _CREDIT.size, FrameType.CREDIT)
    frame = F.Credit(*_CREDIT.unpack_from(p))
    if not frame.increment:
        check_ranges(frame)
    return frame


def _dec_ack(flags: int, p: Buffer) -> F.Frame:
    if len(p) != _ACK.size:
        _exact(p, _ACK.size, FrameType.ACK)
    return F.Ack(*_ACK.unpack_from(p))


def _dec_hello(flags: int, p: Buffer) -> F.Frame:
    ft = FrameType.HELLO
    if len(p) < _HELLO.size:
        raise _short(ft)
    max_frame_size, heartbeat_ms = _HELLO.unpack_from(p)
    name, off = _str8(p, _HELLO.size, ft)
    token, off = _bytes16(p, off, ft)
    _end(p, off, ft)
    return F.Hello(max_frame_size, heartbeat_ms, name, token)


def _dec_welcome(flags: int, p: Buffer) -> F.Frame:
    ft = FrameType.WELCOME
    if len(p) < _WELCOME.size:
        raise _short(ft)
    connection_id, heartbeat_ms, max_frame_size, max_subs, max_lag, policy = _WELCOME.unpack_from(p)
    name, off = _str8(p, _WELCOME.size, ft)
    _end(p, off, ft)
    frame = F.Welcome(connection_id, heartbeat_ms, max_frame_size, max_subs, max_lag, policy, name)
    check_ranges(frame)
    return frame


def _dec_goaway(flags: int, p: Buffer) -> F.Frame:
    ft = FrameType.GOAWAY
    if len(p) < _GOAWAY.size:
        raise _short(ft)
    code, after, jitter, count = _GOAWAY.unpack_from(p)
    off = _GOAWAY.size
    stop = off + count * _POSITION.size
    if stop > len(p):
        raise _short(ft)
    positions = tuple(
        F.Position(*_POSITION.unpack_from(p, at)) for at in range(off, stop, _POSITION.size)
    )
    reason, off = _text16(p, stop, ft)
    _end(p, off, ft)
    return F.Goaway(code, after, jitter, positions, reason)


def _dec_error(flags: int, p: Buffer) -> F.Frame:
    ft = FrameType.ERROR
    if len(p) < _ERROR.size:
        raise _short(ft)
    code, request_type, request_id = _ERROR.unpack_from(p)
    message, off = _text16(p, _ERROR.size, ft)
    _end(p, off, ft)
    return F.Error(code, request_type, request_id, message)


def _dec_subscribe(flags: int, p: Buffer) -> F.Frame:
    ft = FrameType.SUBSCRIBE
    if len(p) < _SUBSCRIBE.size:
        raise _short(ft)
    sub_id, credit, kind = _SUBSCRIBE.unpack_from(p)
    off = _SUBSCRIBE.size
    epoch = seq = count = 0
    if kind == SinceKind.AFTER:
        if off + _U64U64.size > len(p):
            raise _short(ft)
        epoch, seq = _U64U64.unpack_from(p, off)
        off += _U64U64.size
    elif kind == SinceKind.LAST:
        if off + _U32.size > len(p):
            raise _short(ft)
        count = _U32.unpack_from(p, off)[0]
        off += _U32.size
    topic, off = _str8(p, off, ft)
    positions: tuple[F.TopicPosition, ...] | None = None
    if flags & PATTERN:
        if off + _U16.size > len(p):
            raise _short(ft)
        n = _U16.unpack_from(p, off)[0]
        off += _U16.size
        entries = []
        for _ in range(n):
            name, off = _str8(p, off, ft)
            if off + _U64U64.size > len(p):
                raise _short(ft)
            entries.append(F.TopicPosition(name, *_U64U64.unpack_from(p, off)))
            off += _U64U64.size
        positions = tuple(entries)
    _end(p, off, ft)
    frame = F.Subscribe(
        sub_id, topic, kind, epoch, seq, count, credit, bool(flags & AT_LEAST_ONCE), positions
    )
    check_ranges(frame)
    return frame


def _dec_subscribed(flags: int, p: Buffer) -> F.Frame:
    ft = FrameType.SUBSCRIBED
    if len(p) < _SUBSCRIBED.size:
        raise _short(ft)
    fixed = _SUBSCRIBED.unpack_from(p)
    size = _SUBSCRIBED.size
    gap: tuple[int, int, int] = (0, 0, 0)
    if fixed[1] == Outcome.GAP:
        if size + _GAPRANGE.size > len(p):
            raise _short(ft)
        gap = _GAPRANGE.unpack_from(p, size)
        size += _GAPRANGE.size
    topic: str | None = None
    if flags & TOPIC_STATUS:
        topic, size = _str8(p, size, ft)
    _exact(p, size, ft)
    sub_id, outcome, epoch, start, head = fixed
    frame = F.Subscribed(sub_id, outcome, epoch, start, head, *gap, topic=topic)
    check_ranges(frame)
    return frame


def _dec_unsubscribe(flags: int, p: Buffer) -> F.Frame:
    _exact(p, _U32.size, FrameType.UNSUBSCRIBE)
    return F.Unsubscribe(_U32.unpack_from(p)[0])


def _dec_unsubscribed(flags: int, p: Buffer) -> F.Frame:
    _exact(p, _UNSUBSCRIBED.size, FrameType.UNSUBSCRIBED)
    return F.Unsubscribed(*_UNSUBSCRIBED.unpack_from(p))


def _dec_gap(flags: int, p: Buffer) -> F.Frame:
    _exact(p, _GAP.size, FrameType.GAP)
    frame = F.Gap(*_GAP.unpack_from(p))
    check_ranges(frame)
    return frame


def _dec_puback(flags: int, p: Buffer) -> F.Frame:
    _exact(p, _PUBACK.size, FrameType.PUBACK)
    return F.Puback(*_PUBACK.unpack_from(p))


_Decoder = Callable[[int, Buffer], F.Frame]

_DECODERS_BY_TYPE: dict[FrameType, _Decoder] = {
    FrameType.HELLO: _dec_hello,
    FrameType.WELCOME: _dec_welcome,
    FrameType.PING: _dec_ping,
    FrameType.PONG: _dec_pong,
    FrameType.GOAWAY: _dec_goaway,
    FrameType.ERROR: _dec_error,
    FrameType.SUBSCRIBE: _dec_subscribe,
    FrameType.SUBSCRIBED: _dec_subscribed,
    FrameType.UNSUBSCRIBE: _dec_unsubscribe,
    FrameType.UNSUBSCRIBED: _dec_unsubscribed,
    FrameType.CREDIT: _dec_credit,
    FrameType.ACK: _dec_ack,
    FrameType.GAP: _dec_gap,
    FrameType.MESSAGE: _dec_message,
    FrameType.MESSAGE_BATCH: _dec_message_batch,
    FrameType.PUBLISH: _dec_publish,
    FrameType.PUBLISH_BATCH: _dec_publish_batch,
    FrameType.PUBACK: _dec_puback,
}
assert set(_DECODERS_BY_TYPE) == set(FrameType), "every frame type needs a decoder"

#: ``type << 8 | flags`` -> decoder, for every flags value the type defines (layouts.
#: DEFINED_FLAGS). One dict lookup thus dispatches on the type and rejects reserved flag bits;
#: a miss goes to check_header, which raises UNKNOWN_FRAME_TYPE or RESERVED_BITS_SET with the
#: shared wording, or says the type is unknown but ignorable.
_DECODERS: dict[int, _Decoder] = {
    t << 8 | flags: fn
    for t, fn in _DECODERS_BY_TYPE.items()
    for flags in range(256)
    if not flags & ~DEFINED_FLAGS[t]
}


def decode_body(type_: int, flags: int, payload: bytes | memoryview) -> F.Frame | None:
    """Parse one frame's payload (the bytes after the 6-byte header).

    Returns ``None`` for an unknown type with the ignorable bit set (PW-FRAME-8). Raises
    only RemoteProtocolError, with the code ``reference.decode_body`` gives for the same
    bytes. ``payload`` may be a memoryview into the receive buffer: every field that
    outlives the call is copied out.
    """
    if type_ == _T_MESSAGE and not flags:
        # The hottest frame, decoded inline to save a call; _dec_message with the same
        # steps handles MESSAGE with headers.
        try:
            epoch, seq, n = _MSG_FIXED.unpack_from(payload)
        except struct.error:
            raise _short(FrameType.MESSAGE) from None
        end = _MSG_PREFIX + n
        if end > len(payload):
            raise _short(FrameType.MESSAGE)
        try:
            topic = str(payload[_MSG_PREFIX:end], "utf-8")
        except UnicodeDecodeError as exc:
            raise _bad_text(FrameType.MESSAGE, exc) from exc
        return F.Message(epoch, seq, topic, bytes(payload[end:]))
    decoder = _DECODERS.get(type_ << 8 | flags)
    if decoder is None:
        if not check_header(type_, flags):
            return None
        raise AssertionError(f"codec tables disagree with check_header on {type_:#x}/{flags:#x}")
    return decoder(flags, payload)


# -- encoders, one per type: frame -> whole frame bytes --------------------------------------


def _headers_bytes(headers: F.Headers) -> bytes:
    parts = [_U8.pack(len(headers))]
    for key, value in headers:
        k = key.encode("utf-8")
        parts += (_U8.pack(len(k)), k, _U16.pack(len(value)), value)
    return b"".join(parts)


def _frame(type_: int, flags: int, body: bytes) -> bytes:
    return _HDR.pack(len(body), type_, flags) + body


def _enc_message(f: Any) -> bytes:
    topic: bytes = f.topic.encode("utf-8")
    payload: bytes = f.payload
    if f.headers is None:
        n = len(topic)
        return (
            _MSG_H.pack(_MSG_PREFIX + n + len(payload), _T_MESSAGE, 0, f.epoch, f.seq, n)
            + topic
            + payload
        )
    body = _MSG_FIXED.pack(f.epoch, f.seq, len(topic)) + topic + _headers_bytes(f.headers) + payload
    return _frame(_T_MESSAGE, HAS_HEADERS, body)


def _enc_publish(f: Any) -> bytes:
    topic: bytes = f.topic.encode("utf-8")
    payload: bytes = f.payload
    if f.headers is None:
        n = len(topic)
        return (
            _PUB_H.pack(_PUB_PREFIX + n + len(payload), _T_PUBLISH, 0, f.request_id, n)
            + topic
            + payload
        )
    body = _PUB_FIXED.pack(f.request_id, len(topic)) + topic + _headers_bytes(f.headers) + payload
    return _frame(_T_PUBLISH, HAS_HEADERS, body)


def _records_bytes(records: tuple[F.Record, ...]) -> tuple[int, bytes]:
    """(flags, count + records) of a batch; every record must agree on having headers."""
    if not records:
        return 0, _U16.pack(0)
    has_headers = records[0].headers is not None
    parts = [_U16.pack(len(records))]
    u32 = _U32.pack
    for r in records:
        if (r.headers is not None) is not has_headers:
            raise LocalProtocolError(
                "a batch mixes records with and without headers",
                code=ErrorCode.FIELD_OUT_OF_RANGE,
            )
        if has_headers:
            parts.append(_headers_bytes(r.headers))  # type: ignore[arg-type]
        parts += (u32(len(r.payload)), r.payload)
    return (HAS_HEADERS if has_headers else 0), b"".join(parts)


def _enc_message_batch(f: Any) -> bytes:
    topic = f.topic.encode("utf-8")
    flags, records = _records_bytes(f.records)
    body = _MSG_FIXED.pack(f.epoch, f.base_seq, len(topic)) + topic + records
    return _frame(_T_MESSAGE_BATCH, flags, body)


def _enc_publish_batch(f: Any) -> bytes:
    topic = f.topic.encode("utf-8")
    flags, records = _records_bytes(f.records)
    body = _PUB_FIXED.pack(f.request_id, len(topic)) + topic + records
    return _frame(_T_PUBLISH_BATCH, flags, body)


def _enc_ping(f: Any) -> bytes:
    return _PING_H.pack(8, FrameType.PING, 0, f.opaque)


def _enc_pong(f: Any) -> bytes:
    return _PING_H.pack(8, FrameType.PONG, 0, f.opaque)


def _enc_credit(f: Any) -> bytes:
    return _CREDIT_H.pack(_CREDIT.size, FrameType.CREDIT, 0, f.sub_id, f.increment)


def _enc_ack(f: Any) -> bytes:
    return _ACK_H.pack(_ACK.size, FrameType.ACK, 0, f.sub_id, f.seq)


def _str8_bytes(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _U8.pack(len(raw)) + raw


def _text16_bytes(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _U16.pack(len(raw)) + raw


def _enc_hello(f: Any) -> bytes:
    body = (
        _HELLO.pack(f.max_frame_size, f.heartbeat_ms)
        + _str8_bytes(f.client_name)
        + _U16.pack(len(f.auth_token))
        + f.auth_token
    )
    return _frame(FrameType.HELLO, 0, body)


def _enc_welcome(f: Any) -> bytes:
    fixed = _WELCOME.pack(
        f.connection_id,
        f.heartbeat_ms,
        f.max_frame_size,
        f.max_subscriptions,
        f.max_lag,
        f.slow_consumer_policy,
    )
    return _frame(FrameType.WELCOME, 0, fixed + _str8_bytes(f.server_name))


def _enc_goaway(f: Any) -> bytes:
    parts = [_GOAWAY.pack(f.code, f.reconnect_after_ms, f.reconnect_jitter_ms, len(f.positions))]
    parts += [_POSITION.pack(p.sub_id, p.epoch, p.seq) for p in f.positions]
    parts.append(_text16_bytes(f.reason))
    return _frame(FrameType.GOAWAY, 0, b"".join(parts))


def _enc_error(f: Any) -> bytes:
    body = _ERROR.pack(f.code, f.request_type, f.request_id) + _text16_bytes(f.message)
    return _frame(FrameType.ERROR, 0, body)


def _enc_subscribe(f: Any) -> bytes:
    kind = f.since_kind
    body = _SUBSCRIBE.pack(f.sub_id, f.initial_credit, kind)
    if kind == SinceKind.AFTER:
        body += _U64U64.pack(f.since_epoch, f.since_seq)
    elif kind == SinceKind.LAST:
        body += _U32.pack(f.since_count)
    flags = AT_LEAST_ONCE if f.at_least_once else 0
    body += _str8_bytes(f.topic)
    if f.positions is not None:
        flags |= PATTERN
        parts = [body, _U16.pack(len(f.positions))]
        for pos in f.positions:
            parts += (_str8_bytes(pos.topic), _U64U64.pack(pos.epoch, pos.seq))
        body = b"".join(parts)
    return _frame(FrameType.SUBSCRIBE, flags, body)


def _enc_subscribed(f: Any) -> bytes:
    body = _SUBSCRIBED.pack(f.sub_id, f.outcome, f.epoch, f.start_seq, f.head_seq)
    if f.outcome == Outcome.GAP:
        body += _GAPRANGE.pack(f.gap_first, f.gap_last, f.gap_reason)
    if f.topic is None:
        return _frame(FrameType.SUBSCRIBED, 0, body)
    return _frame(FrameType.SUBSCRIBED, TOPIC_STATUS, body + _str8_bytes(f.topic))


def _enc_unsubscribe(f: Any) -> bytes:
    return _UNSUBSCRIBE_H.pack(_U32.size, FrameType.UNSUBSCRIBE, 0, f.sub_id)


def _enc_unsubscribed(f: Any) -> bytes:
    return _UNSUBSCRIBED_H.pack(
        _UNSUBSCRIBED.size, FrameType.UNSUBSCRIBED, 0, f.sub_id, f.epoch, f.last_seq
    )


def _enc_gap(f: Any) -> bytes:
    return _GAP_H.pack(_GAP.size, FrameType.GAP, 0, f.sub_id, f.epoch, f.first, f.last, f.reason)


def _enc_puback(f: Any) -> bytes:
    return _PUBACK_H.pack(
        _PUBACK.size, FrameType.PUBACK, 0, f.request_id, f.epoch, f.first_seq, f.count
    )


#: A whole PUBACK frame, header included (length, type, flags, request_id, epoch, first_seq,
#: count): a client reads a run of them with one ``unpack_from`` each.
PUBACK_FRAME = _PUBACK_H


def encode_pubacks(epoch: int, acks: Sequence[tuple[int, int, int]]) -> bytes:
    """PUBACK(request_id, epoch, first_seq, count) for each (request_id, first_seq, count)
    whose request_id is not 0 (those wanted no answer), back to back: the answers to a run
    of publishes on one topic, without a frame object each."""
    pack = _PUBACK_H.pack
    size, type_ = _PUBACK.size, int(FrameType.PUBACK)
    return b"".join(
        [pack(size, type_, 0, rid, epoch, first, count) for rid, first, count in acks if rid]
    )


_PUB_RID_H = struct.Struct(">IBBI")  # header, request_id: what differs between a run's frames


def encode_publishes(
    topic: str, headers: F.Headers | None, request_ids: Sequence[int], payloads: Sequence[bytes]
) -> bytes:
    """PUBLISH(request_id, topic, headers, payload) for each pair, back to back: a client's
    run of publishes on one topic. The topic and header block are encoded once; per frame
    only the header, the request_id and the payload are written. Byte-identical to
    :func:`encode_frame` of each frame (``tests/protocol/test_codec_equivalence.py``);
    LocalProtocolError (FIELD_OUT_OF_RANGE) for what the layout cannot hold, as there."""
    try:
        tail = _str8_bytes(topic)
        flags = 0
        if headers is not None:
            tail += _headers_bytes(headers)
            flags = HAS_HEADERS
        fixed = PUBLISH_PREFIX_SIZE + len(tail)
        pack, type_ = _PUB_RID_H.pack, _T_PUBLISH
        parts: list[bytes] = []
        add = parts.extend
        for request_id, payload in zip(request_ids, payloads, strict=True):
            add((pack(fixed + len(payload), type_, flags, request_id), tail, payload))
        return b"".join(parts)
    except (struct.error, ValueError, TypeError, OverflowError) as exc:
        raise LocalProtocolError(
            f"PUBLISH cannot be encoded: {exc}", code=ErrorCode.FIELD_OUT_OF_RANGE
        ) from exc


def _enc_unknown(f: Any) -> bytes:
    return _frame(f.type, f.flags, f.payload)


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    F.Hello: _enc_hello,
    F.Welcome: _enc_welcome,
    F.Ping: _enc_ping,
    F.Pong: _enc_pong,
    F.Goaway: _enc_goaway,
    F.Error: _enc_error,
    F.Subscribe: _enc_subscribe,
    F.Subscribed: _enc_subscribed,
    F.Unsubscribe: _enc_unsubscribe,
    F.Unsubscribed: _enc_unsubscribed,
    F.Credit: _enc_credit,
    F.Ack: _enc_ack,
    F.Gap: _enc_gap,
    F.Message: _enc_message,
    F.MessageBatch: _enc_message_batch,
    F.Publish: _enc_publish,
    F.PublishBatch: _enc_publish_batch,
    F.Puback: _enc_puback,
    F.Unknown: _enc_unknown,
}
assert set(_ENCODERS) == set(F.FRAME_CLASSES.values()) | {F.Unknown}


def encode_frame(frame: F.Frame) -> bytes:
    """Header and payload of ``frame``, byte-identical to ``reference.encode_frame``.

    LocalProtocolError (FIELD_OUT_OF_RANGE) when a field does not fit its layout: an
    integer outside its width, text longer than its length prefix or not encodable as
    UTF-8, a batch mixing records with and without headers, more items than a count holds.
    TypeError when ``frame`` is not a frame at all.
    """
    try:
        return _ENCODERS[type(frame)](frame)
    except KeyError:
        if type(frame) not in _ENCODERS:
            raise TypeError(f"not a pushwire frame: {frame!r}") from None
        raise
    except (struct.error, ValueError, TypeError, AttributeError, OverflowError) as exc:
        name = type(frame).__name__.upper()
        raise LocalProtocolError(
            f"{name} cannot be encoded: {exc}", code=ErrorCode.FIELD_OUT_OF_RANGE
        ) from exc


# -- raw frames -------------------------------------------------------------------------------
#
# Tools that speak to a peer byte by byte (the conformance kit, the test server, the fuzzer,
# the benchmarks, tests) build headers that lie, frames with undefined flags or types, and
# read headers off the wire before a decoder would accept them. These helpers are the only
# place outside this module and layouts.py that knows the header's fields and size.


class FrameHeader(NamedTuple):
    """The fields of a frame header (``layouts.Header``, SPEC.md §3.1)."""

    length: int  # payload bytes after the header
    type: int
    flags: int


def validate(frame: F.Frame, flags: int | None = None) -> bytes:
    """The bytes of ``frame`` once it passes every rule an encoder must enforce before
    sending (PW-FRAME-16): what :func:`encode_frame` checks, the decode-time ranges of
    SPEC.md §3.5, and, when ``flags`` is given, that they are the flags the fields imply.
    LocalProtocolError otherwise, with the same code as ``reference.validate``.

    Not for the fan-out path: :func:`encode_frame` leaves the ranges out so that tests and
    fuzzers build hostile frames with it, and the state machines check the values they
    send themselves; this is the whole rule at once, which the encoder-refusal vectors
    exercise."""
    data = encode_frame(frame)
    refuse_unsendable(frame, data, flags)
    return data


def encode_header(length: int, type_: int, flags: int) -> bytes:
    """A frame header, byte-identical to ``layouts.Header.build``. ``length`` need not be that
    of any payload that follows: hostile tests declare lengths they never send.
    LocalProtocolError (FIELD_OUT_OF_RANGE) when a value does not fit its field."""
    try:
        return _HDR.pack(length, type_, flags)
    except struct.error as exc:
        raise LocalProtocolError(
            f"frame header cannot be encoded: {exc}", code=ErrorCode.FIELD_OUT_OF_RANGE
        ) from exc


def decode_header(data: Buffer) -> FrameHeader:
    """The header at the start of ``data`` (which may go on with the payload and more), as
    ``layouts.Header.parse`` reads it: no check of the type, flags or length. ValueError
    when ``data`` is shorter than a header."""
    if len(data) < HEADER_SIZE:
        raise ValueError(f"a frame header is {HEADER_SIZE} bytes, got {len(data)}")
    return FrameHeader(*_HDR.unpack_from(data))


class FrameSpan(NamedTuple):
    """Where one frame lies in a byte string: its header, where its payload starts and the
    offset just past it (beyond the end of the string when the frame is cut short)."""

    header: FrameHeader
    body: int
    end: int


def frame_span(data: Buffer, start: int = 0) -> FrameSpan | None:
    """The frame that starts at ``start`` in ``data``, by its header alone (nothing else is
    checked); None when fewer than a header's bytes are left."""
    if len(data) - start < HEADER_SIZE:
        return None
    header = FrameHeader(*_HDR.unpack_from(data, start))
    body = start + HEADER_SIZE
    return FrameSpan(header, body, body + header.length)


def encode_raw_frame(type_: int, flags: int, payload: Buffer) -> bytes:
    """One frame of any type and flags around any payload (valid or not): header + payload,
    byte-identical to ``reference.build_frame``."""
    return encode_header(len(payload), type_, flags) + bytes(payload)


def frame_payload(frame: Buffer) -> bytes:
    """The payload of one whole encoded frame: what follows its header."""
    return bytes(frame[HEADER_SIZE:])


def payload_size(frame: Buffer) -> int:
    """How many payload bytes one whole encoded frame carries (what max_frame_size limits)."""
    return len(frame) - HEADER_SIZE


def encode_payload(frame: F.Frame) -> bytes:
    """The payload ``encode_frame`` puts behind the header: for splicing a body under another
    header (a type or flags the frame does not have)."""
    return frame_payload(encode_frame(frame))


# -- encode-once forwarding ---------------------------------------------------------------------
#
# A MESSAGE body is epoch u64 + seq u64 followed by exactly the bytes of a PUBLISH body after
# its request_id (topic, optional header block, payload), and the flags byte means the same
# in both (layouts.Message / layouts.Publish); likewise MESSAGE_BATCH and PUBLISH_BATCH. So
# the server turns a received publish into the push it fans out by swapping a 4-byte prefix
# for 16 bytes: no field is parsed, no payload is copied twice, no text is re-validated, and
# the one resulting bytes object is shared by every subscriber's outbound queue.
#
# "Publish body" below means that shared part: the bytes after request_id in a PUBLISH or
# PUBLISH_BATCH, which are the bytes after epoch and seq (or base_seq) in the push.


def _frame_view(frame: Buffer, expected: tuple[int, ...], helper: str) -> tuple[memoryview, int]:
    """(view of the body, flags) of a whole frame of one of the types ``expected``;
    LocalProtocolError if the bytes are not such a frame (the helper's caller passed the
    wrong thing)."""
    view = memoryview(frame)
    if len(view) < HEADER_SIZE:
        raise LocalProtocolError(
            f"{helper}: {len(view)} bytes is not a whole frame", code=ErrorCode.FIELD_OUT_OF_RANGE
        )
    length, type_, flags = _HDR.unpack_from(view)
    if type_ not in expected or length != len(view) - HEADER_SIZE:
        names = " or ".join(FrameType(t).name for t in expected)
        raise LocalProtocolError(
            f"{helper}: expected one whole {names} frame, got type "
            f"0x{type_:02x} declaring {length} of {len(view) - HEADER_SIZE} bytes",
            code=ErrorCode.FIELD_OUT_OF_RANGE,
        )
    return view[HEADER_SIZE:], flags


def _publish_view(
    publish: Buffer, expected: tuple[int, ...], helper: str
) -> tuple[memoryview, int]:
    """(view of the publish body, flags) of a whole frame of one of the publish types
    ``expected``: the body after its request_id."""
    body, flags = _frame_view(publish, expected, helper)
    if len(body) < _PUB_PREFIX:
        name = FrameType(decode_header(publish).type).name
        raise LocalProtocolError(
            f"{helper}: {name} body is too short", code=ErrorCode.FIELD_OUT_OF_RANGE
        )
    return body[PUBLISH_PREFIX_SIZE:], flags


def _push(type_: int, flags: int, epoch: int, seq: int, rest: Buffer) -> bytes:
    try:
        head = _PUSH_H.pack(MESSAGE_PREFIX_SIZE + len(rest), type_, flags, epoch, seq)
    except struct.error as exc:
        raise LocalProtocolError(
            f"push frame cannot be encoded: {exc}", code=ErrorCode.FIELD_OUT_OF_RANGE
        ) from exc
    return b"".join((head, rest))


#: Bytes a push adds in front of a publish body: header, epoch and seq.
PUSH_OVERHEAD = _PUSH_H.size


def push_into(
    buf: bytearray, offset: int, type_: int, flags: int, epoch: int, seq: int, rest: Buffer
) -> int:
    """Write the push frame :func:`body_to_message` (or its batch counterpart) would return
    into ``buf`` at ``offset``, without building it first; returns its size. ``buf`` must
    have the room (``PUSH_OVERHEAD + len(rest)`` bytes); it is never resized."""
    size = len(rest)
    _PUSH_H.pack_into(buf, offset, MESSAGE_PREFIX_SIZE + size, type_, flags, epoch, seq)
    start = offset + _PUSH_H.size
    buf[start : start + size] = rest
    return _PUSH_H.size + size


def publish_body(publish: Buffer) -> tuple[int, bytes]:
    """(flags, publish body) of one whole PUBLISH or PUBLISH_BATCH frame: the bytes after
    request_id, which a push carries after its epoch and seq (see :func:`body_to_message`).

    ``flags`` is the byte as it stands in the frame. The bytes are not re-validated; pass
    only what the decoder accepted. LocalProtocolError if ``publish`` is not such a frame.
    """
    if len(publish) >= _PUB_BODY_AT + 1:  # the checks of _publish_view, inline: hot path
        length, type_, flags = _HDR.unpack_from(publish)
        if type_ in _PUBLISH_TYPES and length == len(publish) - HEADER_SIZE:
            return flags, bytes(publish[_PUB_BODY_AT:])  # one copy, whatever the buffer
    body, flags = _publish_view(publish, _PUBLISH_TYPES, "publish_body")
    return flags, bytes(body)


def body_to_message(flags: int, body: Buffer, epoch: int, seq: int) -> bytes:
    """The MESSAGE frame (SPEC.md §7.1) carrying the publish body ``body`` (with the PUBLISH's
    ``flags``) as ``(epoch, seq)``: a header, epoch and seq, then ``body`` unchanged.

    This is what a broker that stores publish bodies (:func:`publish_body`) calls once per
    publish; the result is shared by every subscriber."""
    return _push(_T_MESSAGE, flags, epoch, seq, body)


def body_to_message_batch(flags: int, body: Buffer, epoch: int, base_seq: int) -> bytes:
    """The MESSAGE_BATCH frame (SPEC.md §7.2) carrying the PUBLISH_BATCH body ``body`` as
    ``base_seq``, ``base_seq + 1``, ...: the batch counterpart of :func:`body_to_message`.
    The body stands at the end of the result, so an offset ``o`` into ``body`` (from
    :func:`body_record_offsets`) is ``o + len(result) - len(body)`` in the frame."""
    return _push(_T_MESSAGE_BATCH, flags, epoch, base_seq, body)


def publish_to_message(publish: F.Publish | Buffer, epoch: int, seq: int) -> bytes:
    """The MESSAGE frame (SPEC.md §7.1) that delivers ``publish`` as ``(epoch, seq)``.

    ``publish`` is either one whole PUBLISH frame as received (header + body, already
    accepted by the decoder), or a decoded :class:`~pushwire.protocol.frames.Publish`.
    From bytes, the result is the header with the length grown by 12 and the same flags,
    then epoch and seq, then the publish body after its 4-byte request_id: zero per-field
    work, which is why the server builds each push once and shares it between subscribers.
    The bytes are not re-validated; pass only what the decoder accepted.
    """
    if isinstance(publish, F.Publish):
        return encode_frame(F.Message(epoch, seq, publish.topic, publish.payload, publish.headers))
    body, flags = _publish_view(publish, (_T_PUBLISH,), "publish_to_message")
    return body_to_message(flags, body, epoch, seq)


def publish_batch_to_message_batch(
    publish: F.PublishBatch | Buffer, epoch: int, base_seq: int
) -> bytes:
    """The MESSAGE_BATCH frame (SPEC.md §7.2) delivering ``publish`` as ``base_seq``,
    ``base_seq + 1``, ...: the PUBLISH_BATCH counterpart of :func:`publish_to_message`.
    The records are shared byte for byte (layouts.Record), so nothing is re-encoded."""
    if isinstance(publish, F.PublishBatch):
        return encode_frame(F.MessageBatch(epoch, base_seq, publish.topic, publish.records))
    body, flags = _publish_view(publish, (_T_PUBLISH_BATCH,), "publish_batch_to_message_batch")
    return body_to_message_batch(flags, body, epoch, base_seq)


def body_record_offsets(flags: int, body: Buffer) -> tuple[int, ...]:
    """Offsets, within the batch publish body ``body`` (topic, count, records: what follows
    request_id in a PUBLISH_BATCH and epoch + base_seq in a MESSAGE_BATCH), where each
    record starts, followed by the body's end: ``count + 1`` numbers.

    Walks only the length prefixes (header-block lengths and the payload's u32), never the
    payloads, so it is cheap enough to call once per batch. ``flags`` says whether records
    carry header blocks. The bytes must be a batch the codec built or the decoder accepted
    (not re-validated beyond what the walk needs); LocalProtocolError if the walk fails.
    """
    u16, u32 = _U16.unpack_from, _U32.unpack_from
    try:
        off = 1 + body[0]
        count = u16(body, off)[0]
        off += 2
        offsets = []
        if flags & HAS_HEADERS:
            for _ in range(count):
                offsets.append(off)
                pairs = body[off]
                off += 1
                for _ in range(pairs):
                    off += 1 + body[off]
                    off += 2 + u16(body, off)[0]
                off += 4 + u32(body, off)[0]
        else:
            for _ in range(count):
                offsets.append(off)
                off += 4 + u32(body, off)[0]
    except (IndexError, struct.error) as exc:
        raise LocalProtocolError(
            "not a well-formed batch: a length prefix runs past the end",
            code=ErrorCode.FIELD_OUT_OF_RANGE,
        ) from exc
    if off != len(body):
        raise LocalProtocolError(
            "not a well-formed batch: record lengths do not add up to the frame length",
            code=ErrorCode.FIELD_OUT_OF_RANGE,
        )
    offsets.append(off)
    return tuple(offsets)


def batch_record_offsets(batch: Buffer) -> tuple[int, ...]:
    """Offsets, within the whole MESSAGE_BATCH frame ``batch``, where each record starts,
    followed by the frame's end: ``count + 1`` numbers (:func:`body_record_offsets` moved
    to frame coordinates).

    :func:`slice_batch` and :func:`slice_batch_size` take the result to cut many sub-ranges
    of one batch in O(1) each. The bytes must be a batch the codec built or the decoder
    accepted (not re-validated beyond what the walk needs).
    """
    body, flags = _frame_view(batch, (_T_MESSAGE_BATCH,), "batch_record_offsets")
    if len(body) < _MSG_PREFIX:
        raise LocalProtocolError(
            "batch_record_offsets: MESSAGE_BATCH body is too short",
            code=ErrorCode.FIELD_OUT_OF_RANGE,
        )
    shift = HEADER_SIZE + MESSAGE_PREFIX_SIZE
    return tuple(shift + off for off in body_record_offsets(flags, body[MESSAGE_PREFIX_SIZE:]))


def slice_batch_size(offsets: tuple[int, ...], start: int, stop: int) -> int:
    """The length field (payload size, what a receiver compares with its max_frame_size) of
    ``slice_batch(batch, start, stop, offsets)``, without building it; ``offsets`` is
    :func:`batch_record_offsets` of the batch. The indexes are not checked."""
    # everything before record 0 (epoch, base_seq, topic, count) plus the chosen records
    return offsets[0] - HEADER_SIZE + offsets[stop] - offsets[start]


def slice_batch(
    batch: F.MessageBatch | Buffer,
    start: int,
    stop: int,
    offsets: tuple[int, ...] | None = None,
) -> bytes:
    """A MESSAGE_BATCH frame carrying records ``start:stop`` of ``batch`` (0-based), with
    ``base_seq`` moved up by ``start``.

    The server needs this when a subscriber's remaining credit, its resume position, or its
    max_frame_size falls inside a stored batch (SPEC.md §8.1): the part it may send is cut
    out of the stored bytes by copying the topic and the chosen records' bytes verbatim.
    ``offsets`` is :func:`batch_record_offsets` of ``batch``, to avoid walking the same
    batch again for every cut. ``0 <= start < stop <= count``; a batch of one record is
    still a MESSAGE_BATCH (same flags), never silently turned into a MESSAGE. All of a
    ``bytes`` batch is that very object (still shared, not copied).
    """
    if isinstance(batch, F.MessageBatch):
        if not 0 <= start < stop <= len(batch.records):
            raise _bad_slice(start, stop, len(batch.records))
        return encode_frame(
            F.MessageBatch(
                batch.epoch, batch.base_seq + start, batch.topic, batch.records[start:stop]
            )
        )
    if offsets is None:
        offsets = batch_record_offsets(batch)
    count = len(offsets) - 1
    if not 0 <= start < stop <= count:
        raise _bad_slice(start, stop, count)
    if start == 0 and stop == count and type(batch) is bytes:
        return batch
    view = memoryview(batch)
    _, _, flags = _HDR.unpack_from(view)
    epoch, base_seq, topic_len = _MSG_FIXED.unpack_from(view, HEADER_SIZE)
    topic_end = HEADER_SIZE + _MSG_PREFIX + topic_len
    records = view[offsets[start] : offsets[stop]]
    length = _MSG_PREFIX + topic_len + 2 + len(records)
    try:
        head = _MSG_H.pack(length, _T_MESSAGE_BATCH, flags, epoch, base_seq + start, topic_len)
    except struct.error as exc:
        raise LocalProtocolError(f"slice_batch: {exc}", code=ErrorCode.FIELD_OUT_OF_RANGE) from exc
    return b"".join(
        (head, view[HEADER_SIZE + _MSG_PREFIX : topic_end], _U16.pack(stop - start), records)
    )


def _bad_slice(start: int, stop: int, count: int) -> LocalProtocolError:
    return LocalProtocolError(
        f"slice_batch: records {start}:{stop} of a batch of {count} is empty or out of range",
        code=ErrorCode.FIELD_OUT_OF_RANGE,
    )
