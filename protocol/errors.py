"""The single error/reason-code registry (SPEC.md §11) and the exceptions that carry it.

Every ERROR frame, every GOAWAY, every close and every gap reason uses a code from
:class:`ErrorCode`. The registry is data (:data:`REGISTRY`), so SPEC.md's table is generated
from it and checked by ``tests/spec``; nothing else in the code decides whether a code is
temporary or terminal.

Errors split the h11/wsproto way: :class:`RemoteProtocolError` means the peer broke the
protocol (we close with its code), :class:`LocalProtocolError` means our caller asked for
something illegal (a bug on our side; nothing goes on the wire).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Scope(enum.Enum):
    """Where a code may appear (SPEC.md §11)."""

    CONNECTION = "connection"  # ends the connection (ERROR with request_type 0, GOAWAY, close)
    REQUEST = "request"  # answers one request; the connection stays up
    REASON = "reason"  # explains a gap; never an error by itself


class ErrorCode(enum.IntEnum):
    """Registry codes, u16 on the wire (SPEC.md §11)."""

    NO_ERROR = 0x0000
    PROTOCOL_ERROR = 0x0001
    MALFORMED_FRAME = 0x0002
    FRAME_TOO_LARGE = 0x0003
    UNKNOWN_FRAME_TYPE = 0x0004
    RESERVED_BITS_SET = 0x0005
    INVALID_UTF8 = 0x0006
    FIELD_OUT_OF_RANGE = 0x0007
    UNEXPECTED_FRAME = 0x0008
    BAD_PREFACE = 0x0009
    UNSUPPORTED_VERSION = 0x000A
    HANDSHAKE_TIMEOUT = 0x000B
    HEARTBEAT_TIMEOUT = 0x000C
    FLOW_CONTROL_ERROR = 0x000D
    SLOW_CONSUMER = 0x000E
    UNAUTHENTICATED = 0x000F
    TOO_MANY_CONNECTIONS = 0x0010
    SHUTTING_DOWN = 0x0011
    INTERNAL_ERROR = 0x0012
    IDLE_TIMEOUT = 0x0013
    TOKEN_EXPIRED = 0x0014
    AUTH_THROTTLED = 0x0015
    FORBIDDEN = 0x0100
    INVALID_TOPIC = 0x0101
    ALREADY_SUBSCRIBED = 0x0102
    UNKNOWN_SUBSCRIPTION = 0x0103
    TOO_MANY_SUBSCRIPTIONS = 0x0104
    INVALID_POSITION = 0x0105
    INVALID_ACK = 0x0106
    GOING_AWAY = 0x0107
    DUPLICATE_ID = 0x0108
    RATE_LIMITED = 0x0109
    RESOURCE_EXHAUSTED = 0x010A
    QUOTA_EXCEEDED = 0x010B
    BROKER_UNAVAILABLE = 0x010C
    TOO_MANY_PATTERNS = 0x010D
    TOO_MANY_TOPICS = 0x010E
    HISTORY_EXPIRED = 0x0200


@dataclass(frozen=True, slots=True)
class CodeInfo:
    code: ErrorCode
    scope: Scope
    temporary: bool  # True: the same request or connection may succeed later (retry)
    meaning: str

    @property
    def retry(self) -> str:
        """The Retry column of SPEC.md §11: a code used only as a gap reason has none."""
        if self.scope is Scope.REASON:
            return "-"
        return "temporary" if self.temporary else "terminal"


_C, _R, _X = Scope.CONNECTION, Scope.REQUEST, Scope.REASON

REGISTRY: dict[ErrorCode, CodeInfo] = {
    info.code: info
    for info in (
        CodeInfo(ErrorCode.NO_ERROR, _C, False, "Normal close; nothing went wrong."),
        CodeInfo(
            ErrorCode.PROTOCOL_ERROR,
            _C,
            False,
            "A rule of SPEC.md was broken; no more specific code applies.",
        ),
        CodeInfo(
            ErrorCode.MALFORMED_FRAME,
            _C,
            False,
            "A frame payload is truncated, has trailing bytes, or does not parse.",
        ),
        CodeInfo(
            ErrorCode.FRAME_TOO_LARGE,
            _C,
            False,
            "A frame header declares a length above the receiver's advertised maximum.",
        ),
        CodeInfo(
            ErrorCode.UNKNOWN_FRAME_TYPE,
            _C,
            False,
            "A frame type with the ignorable bit clear is not known to the receiver.",
        ),
        CodeInfo(
            ErrorCode.RESERVED_BITS_SET,
            _C,
            False,
            "A flag bit that the frame type does not define is set.",
        ),
        CodeInfo(ErrorCode.INVALID_UTF8, _C, False, "A text field is not valid UTF-8."),
        CodeInfo(
            ErrorCode.FIELD_OUT_OF_RANGE,
            _C,
            False,
            "A field holds a value outside its documented range or enumeration.",
        ),
        CodeInfo(
            ErrorCode.UNEXPECTED_FRAME,
            _C,
            False,
            "A frame arrived that the receiver's role or state does not allow.",
        ),
        CodeInfo(
            ErrorCode.BAD_PREFACE,
            _C,
            False,
            "The connection preface does not start with the magic bytes.",
        ),
        CodeInfo(ErrorCode.UNSUPPORTED_VERSION, _C, False, "The peers share no protocol version."),
        CodeInfo(ErrorCode.HANDSHAKE_TIMEOUT, _C, True, "The handshake did not complete in time."),
        CodeInfo(
            ErrorCode.HEARTBEAT_TIMEOUT,
            _C,
            True,
            "Nothing was received within the heartbeat timeout.",
        ),
        CodeInfo(
            ErrorCode.FLOW_CONTROL_ERROR,
            _C,
            False,
            "Credit overflowed, or a peer sent beyond the credit it was granted.",
        ),
        CodeInfo(
            ErrorCode.SLOW_CONSUMER,
            _C,
            True,
            "A subscriber fell too far behind: disconnected, or (as a gap reason) skipped.",
        ),
        CodeInfo(
            ErrorCode.UNAUTHENTICATED, _C, False, "The auth token is missing or not accepted."
        ),
        CodeInfo(
            ErrorCode.TOO_MANY_CONNECTIONS, _C, True, "The server is at its connection limit."
        ),
        CodeInfo(
            ErrorCode.SHUTTING_DOWN,
            _C,
            True,
            "The server is shutting down or restarting; reconnect later.",
        ),
        CodeInfo(
            ErrorCode.INTERNAL_ERROR, _C, True, "The sender hit an unexpected internal failure."
        ),
        CodeInfo(
            ErrorCode.IDLE_TIMEOUT,
            _C,
            True,
            "The connection held no subscription and made no request for the server's idle time.",
        ),
        CodeInfo(
            ErrorCode.TOKEN_EXPIRED,
            _C,
            True,
            "The auth token's validity ended; reconnect with a fresh token.",
        ),
        CodeInfo(
            ErrorCode.AUTH_THROTTLED,
            _C,
            True,
            "Too many failed authentications from this source; retry after a delay.",
        ),
        CodeInfo(
            ErrorCode.FORBIDDEN,
            _R,
            False,
            "The authenticated identity may not subscribe to or publish on that topic.",
        ),
        CodeInfo(
            ErrorCode.INVALID_TOPIC,
            _R,
            False,
            "The topic name breaks the topic syntax of SPEC.md §9.",
        ),
        CodeInfo(
            ErrorCode.ALREADY_SUBSCRIBED,
            _R,
            False,
            "The sub_id is in use, or the topic already has a subscription on this connection.",
        ),
        CodeInfo(
            ErrorCode.UNKNOWN_SUBSCRIPTION, _R, False, "No active subscription has that sub_id."
        ),
        CodeInfo(
            ErrorCode.TOO_MANY_SUBSCRIPTIONS,
            _R,
            True,
            "The connection is at the server's subscription limit.",
        ),
        CodeInfo(
            ErrorCode.INVALID_POSITION,
            _R,
            False,
            "The resume position lies beyond the topic's head in its epoch.",
        ),
        CodeInfo(
            ErrorCode.INVALID_ACK,
            _R,
            False,
            "An ACK on an at-most-once subscription, beyond what was delivered, or below an"
            " earlier ACK.",
        ),
        CodeInfo(
            ErrorCode.GOING_AWAY,
            _R,
            True,
            "The server sent GOAWAY and takes no new requests; retry on a new connection.",
        ),
        CodeInfo(
            ErrorCode.DUPLICATE_ID,
            _R,
            False,
            "Reserved: a request id reused while outstanding (a version-1 server, answering in"
            " order, never sees one and never sends this code).",
        ),
        CodeInfo(
            ErrorCode.RATE_LIMITED,
            _R,
            True,
            "The request exceeds the identity's request or subscription-churn rate.",
        ),
        CodeInfo(
            ErrorCode.RESOURCE_EXHAUSTED,
            _R,
            True,
            "The server's memory budget has no room for the publish, even after trimming.",
        ),
        CodeInfo(
            ErrorCode.QUOTA_EXCEEDED,
            _R,
            True,
            "The identity reached its quota of topics, subscriptions or publish bytes.",
        ),
        CodeInfo(
            ErrorCode.BROKER_UNAVAILABLE,
            _R,
            True,
            "The shared history store (§15) cannot be reached; nothing was stored. Retry.",
        ),
        CodeInfo(
            ErrorCode.TOO_MANY_PATTERNS,
            _R,
            True,
            "The connection is at the server's limit of pattern subscriptions (§6.7).",
        ),
        CodeInfo(
            ErrorCode.TOO_MANY_TOPICS,
            _R,
            True,
            "A pattern matches more topics than the server delivers to one subscription (§6.7).",
        ),
        CodeInfo(
            ErrorCode.HISTORY_EXPIRED,
            _X,
            True,
            "The topic's history no longer holds the messages of the gap.",
        ),
    )
}


class ProtocolError(Exception):
    """Base of every error the protocol package raises; carries a registry code."""

    def __init__(self, message: str, *, code: ErrorCode, requirement: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.requirement = requirement

    def __str__(self) -> str:
        base = super().__str__()
        suffix = f" [{self.requirement}]" if self.requirement else ""
        return f"{self.code.name} (0x{self.code:04x}): {base}{suffix}"


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol: close the connection with ``code``."""


class LocalProtocolError(ProtocolError):
    """Our own caller asked for something SPEC.md forbids; nothing was sent."""


#: Codes that may explain a gap (GAP.reason, SUBSCRIBED gap_reason); SPEC.md §7.4. A receiver
#: treats any reason, even an unknown one, as "these sequences are lost".
GAP_REASONS: frozenset[ErrorCode] = frozenset(
    {ErrorCode.HISTORY_EXPIRED, ErrorCode.SLOW_CONSUMER, ErrorCode.FRAME_TOO_LARGE}
)

#: The codes a frame decoder gives, from a frame's bytes and the receiver's limit alone (steps
#: 1-5 of SPEC.md §3.5); UNEXPECTED_FRAME and the rest need the connection's state.
DECODE_ERRORS: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.MALFORMED_FRAME,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.UNKNOWN_FRAME_TYPE,
        ErrorCode.RESERVED_BITS_SET,
        ErrorCode.INVALID_UTF8,
        ErrorCode.FIELD_OUT_OF_RANGE,
    }
)
