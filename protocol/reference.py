"""The reference codec: frames to bytes and back through the construct declarations.

This is the normative, slow path. ``codec.py`` holds the hot-path codec, which property
tests prove byte-identical to this one (same bytes out, same frame or same error code in).
Both share :func:`check_header` and :func:`check_ranges`, so the two can differ only in how
they walk the bytes, never in which rules they apply.

Order of checks for a received frame (SPEC.md §3.5), which every implementation reports the
same way so that test vectors have one answer:

1. header: unknown type (fatal or skipped), reserved flag bits;
2. payload, field by field in wire order: a short field is MALFORMED_FRAME, bad UTF-8 is
   INVALID_UTF8, leftover bytes are MALFORMED_FRAME;
3. ranges and enumerations of the parsed fields: FIELD_OUT_OF_RANGE.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from construct import ConstructError, StringError

from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from pushwire.protocol.layouts import (
    AT_LEAST_ONCE,
    BODIES,
    DEFINED_FLAGS,
    HAS_HEADERS,
    IGNORABLE_BIT,
    PATTERN,
    TOPIC_STATUS,
    FrameType,
    Header,
    Outcome,
    SinceKind,
    SlowConsumerPolicy,
)

_KNOWN_TYPES = frozenset(int(t) for t in FrameType)


def check_header(type_: int, flags: int) -> bool:
    """Apply the header rules (§3.3, §3.2). Returns False for an unknown ignorable type, which
    the caller skips; raises for an unknown fatal type or reserved flag bits."""
    if type_ not in _KNOWN_TYPES:
        if type_ & IGNORABLE_BIT:
            return False
        raise RemoteProtocolError(
            f"unknown frame type 0x{type_:02x} without the ignorable bit",
            code=ErrorCode.UNKNOWN_FRAME_TYPE,
            requirement="PW-FRAME-5",
        )
    undefined = flags & ~DEFINED_FLAGS[FrameType(type_)] & 0xFF
    if undefined:
        raise RemoteProtocolError(
            f"{FrameType(type_).name}: reserved flag bits 0x{undefined:02x} set",
            code=ErrorCode.RESERVED_BITS_SET,
            requirement="PW-FRAME-3",
        )
    return True


def _out_of_range(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(what, code=ErrorCode.FIELD_OUT_OF_RANGE, requirement="PW-FRAME-7")


def check_ranges(frame: F.Frame) -> None:
    """Decode-time range and enumeration rules (§3.5 step 3), shared by both codecs."""
    match frame:
        case F.Subscribe(since_kind=kind) if kind not in SinceKind._value2member_map_:
            raise _out_of_range(f"SUBSCRIBE: since_kind {kind} is not defined")
        case F.Subscribe(at_least_once=True, positions=tuple()):
            raise _out_of_range("SUBSCRIBE: AT_LEAST_ONCE and PATTERN are not combined in v1")
        case F.Subscribed(outcome=outcome) if outcome not in Outcome._value2member_map_:
            raise _out_of_range(f"SUBSCRIBED: outcome {outcome} is not defined")
        case F.Welcome(slow_consumer_policy=p) if p not in SlowConsumerPolicy._value2member_map_:
            raise _out_of_range(f"WELCOME: slow_consumer_policy {p} is not defined")
        case F.MessageBatch(records=()) | F.PublishBatch(records=()):
            raise _out_of_range(f"{frame.TYPE.name}: count must be 1-65535")
        case F.Credit(increment=0):
            raise _out_of_range("CREDIT: increment must be at least 1")
        case F.Gap(first=first, last=last) if not 1 <= first <= last:
            raise _out_of_range(f"GAP: range {first}..{last} is empty or starts at 0")
        case F.Subscribed(outcome=Outcome.GAP, gap_first=first, gap_last=last) if not (
            1 <= first <= last
        ):
            raise _out_of_range(f"SUBSCRIBED: gap range {first}..{last} is empty or starts at 0")
        case _:
            pass


def refuse_unsendable(frame: F.Frame, encoded: bytes, flags: int | None = None) -> None:
    """The rules an encoder enforces beyond what the layout can hold (SPEC.md §3.5,
    PW-FRAME-16), given the frame and its ``encoded`` bytes: the decode-time ranges of
    :func:`check_ranges`, and, for a caller that states the flags itself, that they are
    the ones the fields imply, with no reserved bit. LocalProtocolError with the code a
    receiver would report."""
    type_, derived = encoded[4], encoded[5]
    if flags is not None and flags != derived:
        try:
            check_header(type_, flags)
        except RemoteProtocolError as exc:
            raise _refusal(exc) from exc
        raise LocalProtocolError(
            f"{FrameType(type_).name}: flags 0x{flags:02x} disagree with the fields "
            f"(0x{derived:02x})",
            code=ErrorCode.FIELD_OUT_OF_RANGE,
        )
    try:
        check_ranges(frame)
    except RemoteProtocolError as exc:
        raise _refusal(exc) from exc


def _refusal(exc: RemoteProtocolError) -> LocalProtocolError:
    """A receive rule turned around: what a receiver would reject, we do not send."""
    return LocalProtocolError(exc.args[0], code=exc.code, requirement="PW-FRAME-16")


# -- frame <-> construct containers ---------------------------------------------------------


def _headers_out(headers: F.Headers | None) -> list[dict[str, Any]] | None:
    if headers is None:
        return None
    return [{"key": k, "value": v} for k, v in headers]


def _headers_in(block: Any) -> F.Headers | None:
    if block is None:
        return None
    return tuple((h.key, bytes(h.value)) for h in block)


def _records_out(records: tuple[F.Record, ...]) -> tuple[int, list[dict[str, Any]]]:
    with_headers = {r.headers is not None for r in records}
    if len(with_headers) > 1:
        raise LocalProtocolError(
            "a batch mixes records with and without headers",
            code=ErrorCode.FIELD_OUT_OF_RANGE,
        )
    flags = HAS_HEADERS if with_headers == {True} else 0
    return flags, [{"headers": _headers_out(r.headers), "payload": r.payload} for r in records]


def _records_in(records: Any) -> tuple[F.Record, ...]:
    return tuple(F.Record(bytes(r.payload), _headers_in(r.headers)) for r in records)


def to_container(frame: F.Frame) -> tuple[int, dict[str, Any]]:
    """(flags, fields) for building ``frame`` with its construct declaration."""
    match frame:
        case F.Subscribe():
            since: dict[str, int] | None = None
            if frame.since_kind == SinceKind.AFTER:
                since = {"epoch": frame.since_epoch, "seq": frame.since_seq}
            elif frame.since_kind == SinceKind.LAST:
                since = {"count": frame.since_count}
            fields: dict[str, Any] = {
                "sub_id": frame.sub_id,
                "initial_credit": frame.initial_credit,
                "since_kind": frame.since_kind,
                "since": since,
                "topic": frame.topic,
                "positions": None,
            }
            flags = AT_LEAST_ONCE if frame.at_least_once else 0
            if frame.positions is not None:
                flags |= PATTERN
                fields["positions"] = [
                    {"topic": p.topic, "epoch": p.epoch, "seq": p.seq} for p in frame.positions
                ]
            return flags, fields
        case F.Subscribed():
            gap = None
            if frame.outcome == Outcome.GAP:
                gap = {"first": frame.gap_first, "last": frame.gap_last, "reason": frame.gap_reason}
            return (TOPIC_STATUS if frame.topic is not None else 0), {
                "sub_id": frame.sub_id,
                "outcome": frame.outcome,
                "epoch": frame.epoch,
                "start_seq": frame.start_seq,
                "head_seq": frame.head_seq,
                "gap": gap,
                "topic": frame.topic,
            }
        case F.Goaway():
            return 0, {
                "code": frame.code,
                "reconnect_after_ms": frame.reconnect_after_ms,
                "reconnect_jitter_ms": frame.reconnect_jitter_ms,
                "positions": [
                    {"sub_id": p.sub_id, "epoch": p.epoch, "seq": p.seq} for p in frame.positions
                ],
                "reason": frame.reason,
            }
        case F.Message():
            return (HAS_HEADERS if frame.headers is not None else 0), {
                "epoch": frame.epoch,
                "seq": frame.seq,
                "topic": frame.topic,
                "headers": _headers_out(frame.headers),
                "payload": frame.payload,
            }
        case F.Publish():
            return (HAS_HEADERS if frame.headers is not None else 0), {
                "request_id": frame.request_id,
                "topic": frame.topic,
                "headers": _headers_out(frame.headers),
                "payload": frame.payload,
            }
        case F.MessageBatch():
            flags, records = _records_out(frame.records)
            return flags, {
                "epoch": frame.epoch,
                "base_seq": frame.base_seq,
                "topic": frame.topic,
                "count": len(records),
                "records": records,
            }
        case F.PublishBatch():
            flags, records = _records_out(frame.records)
            return flags, {
                "request_id": frame.request_id,
                "topic": frame.topic,
                "count": len(records),
                "records": records,
            }
        case _:
            return 0, {f.name: getattr(frame, f.name) for f in dataclasses.fields(frame)}


def from_container(type_: FrameType, flags: int, c: Any) -> F.Frame:
    """The frame dataclass for a parsed construct container."""
    match type_:
        case FrameType.SUBSCRIBE:
            since = c.since
            kind = c.since_kind
            return F.Subscribe(
                sub_id=c.sub_id,
                topic=c.topic,
                since_kind=kind,
                since_epoch=since.epoch if kind == SinceKind.AFTER else 0,
                since_seq=since.seq if kind == SinceKind.AFTER else 0,
                since_count=since.count if kind == SinceKind.LAST else 0,
                initial_credit=c.initial_credit,
                at_least_once=bool(flags & AT_LEAST_ONCE),
                positions=(
                    tuple(F.TopicPosition(p.topic, p.epoch, p.seq) for p in c.positions)
                    if flags & PATTERN
                    else None
                ),
            )
        case FrameType.SUBSCRIBED:
            gap = c.gap
            return F.Subscribed(
                sub_id=c.sub_id,
                outcome=c.outcome,
                epoch=c.epoch,
                start_seq=c.start_seq,
                head_seq=c.head_seq,
                gap_first=gap.first if gap is not None else 0,
                gap_last=gap.last if gap is not None else 0,
                gap_reason=gap.reason if gap is not None else 0,
                topic=c.topic if flags & TOPIC_STATUS else None,
            )
        case FrameType.GOAWAY:
            return F.Goaway(
                code=c.code,
                reconnect_after_ms=c.reconnect_after_ms,
                reconnect_jitter_ms=c.reconnect_jitter_ms,
                positions=tuple(F.Position(p.sub_id, p.epoch, p.seq) for p in c.positions),
                reason=c.reason,
            )
        case FrameType.MESSAGE:
            return F.Message(c.epoch, c.seq, c.topic, bytes(c.payload), _headers_in(c.headers))
        case FrameType.PUBLISH:
            return F.Publish(c.request_id, c.topic, bytes(c.payload), _headers_in(c.headers))
        case FrameType.MESSAGE_BATCH:
            return F.MessageBatch(c.epoch, c.base_seq, c.topic, _records_in(c.records))
        case FrameType.PUBLISH_BATCH:
            return F.PublishBatch(c.request_id, c.topic, _records_in(c.records))
        case _:
            cls = F.FRAME_CLASSES[type_]
            values = {f.name: c[f.name] for f in dataclasses.fields(cls)}
            return cls(**values)  # type: ignore[no-any-return]


# -- public API -------------------------------------------------------------------------------


def encode_body(frame: F.Frame) -> tuple[int, int, bytes]:
    """(type, flags, payload) of ``frame``, built by the construct declaration."""
    if isinstance(frame, F.Unknown):
        return frame.type, frame.flags, frame.payload
    flags, fields = to_container(frame)
    try:
        payload = BODIES[frame.TYPE].build(fields, flags=flags)
    except (ConstructError, ValueError, TypeError, OverflowError) as exc:
        raise LocalProtocolError(
            f"{frame.TYPE.name} cannot be encoded: {exc}", code=ErrorCode.FIELD_OUT_OF_RANGE
        ) from exc
    return int(frame.TYPE), flags, payload


def build_header(length: int, type_: int, flags: int) -> bytes:
    """The 6-byte frame header (SPEC.md §3.1), built by the declaration. ``length`` need
    not be that of any payload that follows: test vectors and strategies build headers
    that lie (oversized, truncated frames). LocalProtocolError if a value does not fit."""
    try:
        return bytes(Header.build({"length": length, "type": type_, "flags": flags}))
    except ConstructError as exc:
        raise LocalProtocolError(
            f"frame cannot be encoded: {exc}", code=ErrorCode.FIELD_OUT_OF_RANGE
        ) from exc


def build_frame(type_: int, flags: int, payload: bytes) -> bytes:
    """One frame of any type, flags and payload bytes (valid or not): header + payload."""
    return build_header(len(payload), type_, flags) + payload


def encode_frame(frame: F.Frame) -> bytes:
    """Header and payload of ``frame``, built entirely by the construct declarations."""
    return build_frame(*encode_body(frame))


def validate(frame: F.Frame, flags: int | None = None) -> bytes:
    """``frame`` built by the declarations, once it passes every rule an encoder must
    enforce (:func:`refuse_unsendable`); :func:`encode_frame` checks only the layout."""
    data = encode_frame(frame)
    refuse_unsendable(frame, data, flags)
    return data


def decode_body(type_: int, flags: int, payload: bytes | memoryview) -> F.Frame | None:
    """Parse one frame's payload with the construct declarations.

    Returns ``None`` for an unknown ignorable type. Raises only RemoteProtocolError.
    """
    if not check_header(type_, flags):
        return None
    ft = FrameType(type_)
    try:
        container = BODIES[ft].parse(bytes(payload), flags=flags)
    except StringError as exc:
        raise RemoteProtocolError(
            f"{ft.name}: text field is not UTF-8",
            code=ErrorCode.INVALID_UTF8,
            requirement="PW-FRAME-6",
        ) from exc
    except ConstructError as exc:
        raise RemoteProtocolError(
            f"{ft.name}: payload does not match its layout ({type(exc).__name__})",
            code=ErrorCode.MALFORMED_FRAME,
            requirement="PW-FRAME-4",
        ) from exc
    frame = from_container(ft, flags, container)
    check_ranges(frame)
    return frame
