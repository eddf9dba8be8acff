"""Incremental, bounded frame decoder (SPEC.md §3).

Theory of operation: bytes go into one ``bytearray``; :meth:`FrameDecoder.next_frame` looks at
the 6-byte header, refuses a declared length above the limit *before* waiting for (or
buffering) the payload, and only when the whole frame is present parses its body. Unknown
ignorable frames are skipped without a trace. The only exception that ever leaves this module
is :class:`RemoteProtocolError` with a registry code.

The buffer never holds more than ``HEADER_SIZE + max_frame_size`` bytes beyond what the caller
fed in one go: the caller feeds what it read from the socket, then drains frames until
``None``. A caller that wants a hard bound reads at most ``max_frame_size`` per receive.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import NamedTuple

from pushwire.protocol import codec, reference
from pushwire.protocol.errors import ErrorCode, RemoteProtocolError
from pushwire.protocol.frames import Frame
from pushwire.protocol.layouts import (
    HEADER_SIZE,
    INITIAL_MAX_FRAME_SIZE,
    MAGIC,
    PREFACE_SIZE,
    SUPPORTED_VERSIONS,
    Header,
)

# The header layout read without construct on the hot path; tests prove it equal to
# ``Header`` (tests/protocol/test_codec_equivalence.py).
_HEADER = struct.Struct(">IBB")
assert _HEADER.size == HEADER_SIZE == Header.sizeof()


class FrameDecoder:
    """Bytes in, whole frames out.

    ``raw_types`` serves a receiver that needs more than frames (the server's sans-I/O
    core): frame types whose bytes :meth:`next_frame_with_raw` hands back with the frame,
    whole and as received (header included). The server forwards PUBLISH and PUBLISH_BATCH
    bodies without re-encoding them (SPEC.md §7.8, ``codec.publish_body``). A decoder
    without it pays one flag test per frame for its existence.
    """

    __slots__ = (
        "_buffer",
        "_eof",
        "_optioned",
        "_raw",
        "_raw_types",
        "last_size",
        "max_frame_size",
    )

    def __init__(
        self,
        max_frame_size: int = INITIAL_MAX_FRAME_SIZE,
        *,
        raw_types: Iterable[int] = (),
    ) -> None:
        self._buffer = bytearray()
        self.max_frame_size = max_frame_size
        self._eof = False
        # a frozenset is shared as it is (one per decoder cost each connection 216 bytes)
        self._raw_types = (
            raw_types if isinstance(raw_types, frozenset) else frozenset(int(t) for t in raw_types)
        )
        # One flag read per frame decides between the plain path and the optioned one.
        self._optioned = bool(self._raw_types)
        self._raw: bytes | None = None
        #: Wire size (header included) of the frame :meth:`next_frame` returned last, so a
        #: caller that counts received bytes knows where that frame started.
        self.last_size = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer ``data``; ``b""`` means the peer closed its side (EOF)."""
        if data:
            self._buffer += data
        else:
            self._eof = True

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def eof(self) -> bool:
        """Whether EOF was fed."""
        return self._eof

    def holds_a_frame(self) -> bool:
        """Whether a whole frame is buffered, as opposed to one still arriving (a receiver
        times out a frame that trickles in, PW-SEC-7)."""
        buf = self._buffer
        return len(buf) >= HEADER_SIZE and len(buf) >= HEADER_SIZE + _HEADER.unpack_from(buf)[0]

    @property
    def buffer(self) -> bytearray:
        """The bytes buffered, in place: for a caller that walks many whole frames in one
        pass (the server's publish path) and then :meth:`discard` s them. Do not modify."""
        return self._buffer

    def discard(self, count: int) -> None:
        """Drop ``count`` buffered bytes that the caller consumed from :attr:`buffer`."""
        del self._buffer[:count]

    def peek(self, count: int) -> bytes:
        """Up to ``count`` buffered bytes, left in place: for what precedes the first frame
        on a stream (a preface, SPEC.md §2.2), which is not a frame."""
        return bytes(self._buffer[:count])

    def take(self, count: int) -> bytes:
        """Up to ``count`` buffered bytes, removed (see :meth:`peek`)."""
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def next_frame(self) -> Frame | None:
        """The next whole frame, or ``None`` when more bytes are needed.

        Raises RemoteProtocolError for an oversized header (FRAME_TOO_LARGE), or for any
        payload error. When EOF cuts a frame short: the header's own code if its type or
        flags are refused (UNKNOWN_FRAME_TYPE, RESERVED_BITS_SET), else MALFORMED_FRAME; the
        bytes of a cut-short payload are never examined (SPEC.md §3.5).
        """
        while True:
            buf = self._buffer
            if len(buf) < HEADER_SIZE:
                if self._eof and buf:
                    raise RemoteProtocolError(
                        f"connection closed inside a frame header ({len(buf)} bytes)",
                        code=ErrorCode.MALFORMED_FRAME,
                        requirement="PW-FRAME-4",
                    )
                return None
            length, type_, flags = _HEADER.unpack_from(buf)
            if length > self.max_frame_size:
                raise RemoteProtocolError(
                    f"frame declares {length} payload bytes, limit is {self.max_frame_size}",
                    code=ErrorCode.FRAME_TOO_LARGE,
                    requirement="PW-FRAME-2",
                )
            end = HEADER_SIZE + length
            if len(buf) < end:
                if self._eof:
                    # The header checks come before the payload's completeness (SPEC.md
                    # §3.5, PW-FRAME-14): an unknown fatal type or a reserved flag bit keeps
                    # its own code when the stream ends inside that frame's payload.
                    reference.check_header(type_, flags)
                    raise RemoteProtocolError(
                        f"connection closed inside a frame ({len(buf)} of {end} bytes)",
                        code=ErrorCode.MALFORMED_FRAME,
                        requirement="PW-FRAME-4",
                    )
                return None
            if self._optioned:
                with memoryview(buf) as view:
                    frame = codec.decode_body(type_, flags, view[HEADER_SIZE:end])
                    self._raw = bytes(view[:end]) if type_ in self._raw_types else None
            else:
                with memoryview(buf) as view:
                    frame = codec.decode_body(type_, flags, view[HEADER_SIZE:end])
            del buf[:end]
            if frame is not None:
                self.last_size = end
                return frame
            # unknown ignorable frame: skipped (PW-FRAME-8); look at the next one

    def next_frame_with_raw(self) -> tuple[Frame, bytes | None] | None:
        """Like :meth:`next_frame`, but with the frame's whole bytes as received when its type
        is one of ``raw_types`` (``None`` for other types)."""
        frame = self.next_frame()  # sets _raw when it decodes with options
        if frame is None:
            return None
        return frame, self._raw


# The preface layout read without construct; tests prove it equal to ``ClientPreface`` and
# ``ServerPreface`` (tests/protocol/test_raw_wire.py).
_PREFACE = struct.Struct(f">{len(MAGIC)}sBBH")
assert _PREFACE.size == PREFACE_SIZE


class Preface(NamedTuple):
    """The fields of a preface as sent, checked or not (SPEC.md §2.2): (min_version,
    max_version) from a client, (version or 0, max_version) from a server."""

    magic: bytes
    first: int
    second: int
    reserved: int

    @property
    def valid(self) -> bool:
        """MAGIC and zero reserved bits: what :func:`parse_preface` accepts."""
        return self.magic == MAGIC and self.reserved == 0


def encode_preface(first: int, second: int, *, reserved: int = 0, magic: bytes = MAGIC) -> bytes:
    """A client preface (min_version, max_version) or a server preface (version,
    max_version): the two share one 8-byte layout (SPEC.md §2.2). Any version bytes go;
    ``reserved`` and ``magic`` other than the defaults build the hostile prefaces of tests."""
    return _PREFACE.pack(magic, first, second, reserved)


def read_preface(data: bytes | bytearray | memoryview) -> Preface:
    """The fields of the preface at the start of ``data``, without judging them (a checker
    reports what a peer sent; :func:`parse_preface` refuses it). ValueError when ``data`` is
    shorter than a preface."""
    if len(data) < PREFACE_SIZE:
        raise ValueError(f"a preface is {PREFACE_SIZE} bytes, got {len(data)}")
    return Preface(*_PREFACE.unpack_from(data))


def parse_preface(data: bytes | bytearray) -> tuple[int, int]:
    """The two version bytes of an 8-byte preface (SPEC.md §2.2): (min, max) from a client,
    (chosen or 0, max) from a server.

    BAD_PREFACE when the magic differs; RESERVED_BITS_SET when the reserved u16 is not zero.
    """
    if len(data) < PREFACE_SIZE:
        raise RemoteProtocolError(
            f"preface is {len(data)} bytes, needs {PREFACE_SIZE}",
            code=ErrorCode.BAD_PREFACE,
            requirement="PW-PREFACE-1",
        )
    preface = read_preface(data)
    if preface.magic != MAGIC:
        raise RemoteProtocolError(
            f"preface magic {preface.magic.hex()} is not {MAGIC.hex()}",
            code=ErrorCode.BAD_PREFACE,
            requirement="PW-PREFACE-1",
        )
    if preface.reserved:
        raise RemoteProtocolError(
            "preface reserved bytes are not zero",
            code=ErrorCode.RESERVED_BITS_SET,
            requirement="PW-PREFACE-2",
        )
    return preface.first, preface.second


def choose_version(min_version: int, max_version: int) -> int | None:
    """The highest version both sides support, or ``None`` (SPEC.md §2.3)."""
    common = [v for v in SUPPORTED_VERSIONS if min_version <= v <= max_version]
    return max(common) if common else None
