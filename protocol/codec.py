"""Frame codec used by the rest of the code: ``encode_frame`` and ``decode_body``.

Placeholder that delegates to the construct reference codec; the hot-path implementation
replaces the bodies of these two functions and keeps their signatures.
"""

from __future__ import annotations

from pushwire.protocol import reference
from pushwire.protocol.frames import Frame


def encode_frame(frame: Frame) -> bytes:
    return reference.encode_frame(frame)


def decode_body(type_: int, flags: int, payload: bytes | memoryview) -> Frame | None:
    return reference.decode_body(type_, flags, payload)
