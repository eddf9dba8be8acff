"""Frame decoders that each break one rule of SPEC.md §3, for proving that ``fuzz_decoder``
catches them. Run as a script, one serves the line protocol on stdin/stdout::

    python tests/protocol/mutant_decoders.py NAME

:class:`Decoder` is a plain decoder written the way an implementer in another language
would (a byte buffer, the header, the payload through pushwire's codec); it passes every
property. Each mutant overrides one method with a mistake seen in real decoders.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from typing import Any

from pushwire.protocol import codec, reference
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode, RemoteProtocolError
from pushwire.protocol.layouts import BODIES, HEADER_SIZE, IGNORABLE_BIT, FrameType
from pushwire.protocol.spec.vectors import frame_json

_HEADER = struct.Struct(">IBB")
_KNOWN = frozenset(int(t) for t in FrameType)
_TEXT_KEYS = frozenset({"client_name", "server_name", "reason", "message", "topic", "key"})


def _error(code: ErrorCode) -> RemoteProtocolError:
    return RemoteProtocolError(code.name, code=code)


class Decoder:
    """Correct: buffer, header, limit, payload, in the order of §3.5."""

    def decode(self, chunks: Sequence[bytes], max_frame_size: int) -> dict[str, Any]:
        buffer, frames = bytearray(), []
        try:
            for chunk in chunks:
                buffer += chunk
                self.drain(buffer, max_frame_size, frames, eof=False)
                self.after_read(buffer)
            self.drain(buffer, max_frame_size, frames, eof=True)
        except RemoteProtocolError as exc:
            return self.finish(frames, exc.code.name)
        return self.finish(frames, None)

    def drain(self, buffer: bytearray, limit: int, frames: list[Any], *, eof: bool) -> None:
        while True:
            if len(buffer) < HEADER_SIZE:
                if eof and buffer:
                    raise _error(ErrorCode.MALFORMED_FRAME)
                return
            length, type_, flags = _HEADER.unpack_from(buffer)
            if self.too_large(length, limit, type_):
                raise _error(ErrorCode.FRAME_TOO_LARGE)
            end = HEADER_SIZE + length
            if len(buffer) < end:
                if eof:
                    self.ends_inside_payload(type_, flags)
                return
            payload = bytes(buffer[HEADER_SIZE:end])
            del buffer[:end]
            frame = self.body(type_, flags, payload)
            if frame is not None:
                frames.append(frame_json(frame))

    def after_read(self, buffer: bytearray) -> None:
        """Called after each read has been drained."""

    def too_large(self, length: int, limit: int, type_: int) -> bool:
        return length > limit

    def ends_inside_payload(self, type_: int, flags: int) -> None:
        reference.check_header(type_, flags)
        raise _error(ErrorCode.MALFORMED_FRAME)

    def body(self, type_: int, flags: int, payload: bytes) -> F.Frame | None:
        return codec.decode_body(type_, flags, payload)

    def finish(self, frames: list[Any], error: str | None) -> dict[str, Any]:
        return {"frames": frames, "error": error}


class TooLargeOffByOne(Decoder):
    """Refuses a payload of exactly the limit (``>=`` for ``>``)."""

    def too_large(self, length: int, limit: int, type_: int) -> bool:
        return length >= limit


class LimitFixedAtInitial(Decoder):
    """Enforces 16384 whatever limit it advertised."""

    def too_large(self, length: int, limit: int, type_: int) -> bool:
        return length > 16384


class IgnorableFramesNotSizeChecked(Decoder):
    """Skips unknown ignorable frames whatever their length (PW-FRAME-2 covers them too)."""

    def too_large(self, length: int, limit: int, type_: int) -> bool:
        return length > limit and not (type_ not in _KNOWN and type_ & IGNORABLE_BIT)


def _strip_bom(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _strip_bom(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_bom(v, key) for v in value]
    if key in _TEXT_KEYS and isinstance(value, str):
        return value.removeprefix("\ufeff")  # what a UTF-8 decoder that eats BOMs does
    return value


class BomDropped(Decoder):
    """Decodes text like ``utf-8-sig``: a leading U+FEFF disappears."""

    def finish(self, frames: list[Any], error: str | None) -> dict[str, Any]:
        return super().finish(_strip_bom(frames), error)


class FramesBeforeErrorDropped(Decoder):
    """Throws away the frames decoded from the same input as a bad frame."""

    def finish(self, frames: list[Any], error: str | None) -> dict[str, Any]:
        return super().finish([] if error else frames, error)


class ReservedBitsWrongCode(Decoder):
    """Reports reserved flag bits as MALFORMED_FRAME."""

    def body(self, type_: int, flags: int, payload: bytes) -> F.Frame | None:
        try:
            return super().body(type_, flags, payload)
        except RemoteProtocolError as exc:
            if exc.code == ErrorCode.RESERVED_BITS_SET:
                raise _error(ErrorCode.MALFORMED_FRAME) from exc
            raise


class UnknownFatalTypeSkipped(Decoder):
    """Skips unknown types whether or not the ignorable bit is set."""

    def body(self, type_: int, flags: int, payload: bytes) -> F.Frame | None:
        if type_ not in _KNOWN:
            return None
        return super().body(type_, flags, payload)

    def ends_inside_payload(self, type_: int, flags: int) -> None:
        if type_ not in _KNOWN:
            raise _error(ErrorCode.MALFORMED_FRAME)
        super().ends_inside_payload(type_, flags)


class InvalidUtf8Dropped(Decoder):
    """A frame whose text is not UTF-8 is dropped without an error."""

    def body(self, type_: int, flags: int, payload: bytes) -> F.Frame | None:
        try:
            return super().body(type_, flags, payload)
        except RemoteProtocolError as exc:
            if exc.code == ErrorCode.INVALID_UTF8:
                return None
            raise


class RangesUnchecked(Decoder):
    """Delivers frames with out-of-range fields (since_kind 9, CREDIT 0, empty batches)."""

    def body(self, type_: int, flags: int, payload: bytes) -> F.Frame | None:
        try:
            return super().body(type_, flags, payload)
        except RemoteProtocolError as exc:
            if exc.code != ErrorCode.FIELD_OUT_OF_RANGE:
                raise
            ft = FrameType(type_)
            return reference.from_container(ft, flags, BODIES[ft].parse(payload, flags=flags))


class EndOfInputInsideFrameIgnored(Decoder):
    """Treats a frame cut short by the end of the stream as nothing at all."""

    def drain(self, buffer: bytearray, limit: int, frames: list[Any], *, eof: bool) -> None:
        super().drain(buffer, limit, frames, eof=False)


class HeaderCodeLostAtEndOfInput(Decoder):
    """MALFORMED_FRAME for any frame cut short, even when its header is refused (§3.5)."""

    def ends_inside_payload(self, type_: int, flags: int) -> None:
        raise _error(ErrorCode.MALFORMED_FRAME)


class PartialFrameDroppedBetweenReads(Decoder):
    """Assumes every read ends on a frame boundary: the rest of a read is thrown away."""

    def after_read(self, buffer: bytearray) -> None:
        buffer.clear()


#: The mutants by name: each breaks one rule.
MUTANTS: dict[str, type[Decoder]] = {
    "too-large-off-by-one": TooLargeOffByOne,
    "limit-fixed-at-16384": LimitFixedAtInitial,
    "ignorable-frames-not-size-checked": IgnorableFramesNotSizeChecked,
    "bom-dropped": BomDropped,
    "frames-before-error-dropped": FramesBeforeErrorDropped,
    "reserved-bits-wrong-code": ReservedBitsWrongCode,
    "unknown-fatal-type-skipped": UnknownFatalTypeSkipped,
    "invalid-utf8-dropped": InvalidUtf8Dropped,
    "ranges-unchecked": RangesUnchecked,
    "end-of-input-inside-frame-ignored": EndOfInputInsideFrameIgnored,
    "header-code-lost-at-end-of-input": HeaderCodeLostAtEndOfInput,
    "partial-frame-dropped-between-reads": PartialFrameDroppedBetweenReads,
}
DECODERS: dict[str, type[Decoder]] = {"correct": Decoder, **MUTANTS}


if __name__ == "__main__":
    from pushwire.protocol.testing.fuzz_decoder import serve

    serve(decoder=DECODERS[sys.argv[1]]())
