"""A tap on one direction of a connection, and the code rules every frame on a wire keeps.

The tap decodes the bytes one side sends, next to the conversation and without taking part
in it (the shared :class:`FrameDecoder`, with the largest limit, so it judges nothing the
receiver would not), and remembers where each frame ends in the stream: a test that holds
bytes back can then tell which frames have reached the receiver.
"""

from __future__ import annotations

from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder
from pushwire.protocol.errors import GAP_REASONS, REGISTRY, ErrorCode, Scope
from pushwire.protocol.layouts import MAX_MAX_FRAME_SIZE, PREFACE_SIZE, Outcome


class Tap:
    def __init__(self) -> None:
        self._decoder = FrameDecoder(MAX_MAX_FRAME_SIZE)
        self._preface_left = PREFACE_SIZE  # every stream starts with a preface, not a frame
        self.sent = 0
        #: (offset in the stream just past the frame, frame), in sending order
        self.frames: list[tuple[int, F.Frame]] = []

    def feed(self, data: bytes) -> None:
        self.sent += len(data)
        skip = min(self._preface_left, len(data))
        self._preface_left -= skip
        self._decoder.feed(data[skip:])
        while (frame := self._decoder.next_frame()) is not None:
            self.frames.append((self.sent - self._decoder.buffered, frame))

    def all(self) -> list[F.Frame]:
        return [frame for _, frame in self.frames]

    def up_to(self, offset: int) -> list[F.Frame]:
        """The frames wholly inside the first ``offset`` bytes of the stream."""
        return [frame for end, frame in self.frames if end <= offset]


def _scope(code: int) -> Scope | None:
    try:
        return REGISTRY[ErrorCode(code)].scope
    except ValueError:
        return None


def scope_problem(frame: F.Frame) -> str | None:
    """What is wrong with the codes ``frame`` carries (SPEC.md §8.7 and §11, PW-ERR-5):
    request codes only in request-level ERRORs, connection codes only in connection-level
    ERRORs and GOAWAY, and only the gap reasons of §7.4 as a GAP's or SUBSCRIBED's reason.
    A sender uses registered codes only (receivers tolerate others, PW-ERR-6)."""
    match frame:
        case F.Error(code=code, request_type=0):
            wanted, where = Scope.CONNECTION, "a connection-level ERROR"
        case F.Error(code=code):
            wanted, where = Scope.REQUEST, "a request-level ERROR"
        case F.Goaway(code=code):
            wanted, where = Scope.CONNECTION, "GOAWAY"
        case F.Gap(reason=reason) | F.Subscribed(outcome=Outcome.GAP, gap_reason=reason):
            if reason in GAP_REASONS:
                return None
            return f"{reason:#06x} is not a gap reason: {frame}"
        case _:
            return None
    scope = _scope(code)
    if scope is wanted:
        return None
    return f"{code:#06x} ({scope.value if scope else 'unregistered'}) in {where}: {frame}"


def after_connection_error(frames: list[F.Frame]) -> list[F.Frame]:
    """What a side sent after its connection-level ERROR: nothing, ever (PW-ERR-2)."""
    for i, frame in enumerate(frames):
        if isinstance(frame, F.Error) and frame.request_type == 0:
            return frames[i + 1 :]
    return []
