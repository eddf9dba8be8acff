"""What the two sans-I/O machines have in common: events, sentinels, the close events.

Both :class:`~pushwire.protocol.server_conn.ServerConnection` and
:class:`~pushwire.protocol.client_conn.ClientConnection` follow h11's convention:

* ``receive_data(data, now)`` buffers bytes (``b""`` is EOF) and never raises;
* ``next_event()`` returns the next :class:`Event`, or one of two sentinels:
  :data:`NEED_DATA` (nothing more can be parsed until more bytes or EOF arrive) or
  :data:`PAUSED` (the machine will not parse further until the caller acts: it answers a
  handshake step, or closes a CLOSED connection);
* a peer that breaks the protocol makes ``next_event()`` raise
  :class:`~pushwire.protocol.errors.RemoteProtocolError` carrying the registry code; the
  machine is then CLOSED and ``data_to_send()`` holds what to send before closing (the
  ERROR frame, when one can be sent);
* a mistake of the caller raises :class:`~pushwire.protocol.errors.LocalProtocolError` and
  sends nothing.

The events that both sides can see (the peer's GOAWAY, its connection-level ERROR, its
EOF) are declared here once; the rest live with their machine.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "ConnectionClosed",
    "Event",
    "GoawayReceived",
    "PeerError",
    "Sentinel",
    "code_of",
]


class Event:
    """Base of every event either machine's ``next_event()`` returns."""

    __slots__ = ()


class Sentinel(enum.Enum):
    """What ``next_event()`` returns when it has no event."""

    NEED_DATA = "need-data"  # feed more bytes (or EOF) with receive_data()
    PAUSED = "paused"  # the caller must act first; CLOSED machines stay paused

    def __repr__(self) -> str:
        return self.name


NEED_DATA: Final = Sentinel.NEED_DATA
PAUSED: Final = Sentinel.PAUSED


def code_of(value: int) -> ErrorCode | int:
    """A registry member when the code is known; unknown codes stay plain ints (§11: a
    receiver must accept codes it does not know)."""
    try:
        return ErrorCode(value)
    except ValueError:
        return value


@dataclass(frozen=True, slots=True)
class GoawayReceived(Event):
    """The peer is going away (§8.6). From a server: no new requests, reconnect after the
    hint and resume from ``positions``. From a client (which sends neither hint nor
    positions): the connection is CLOSED; flush and close."""

    code: ErrorCode | int
    reason: str
    reconnect_after_ms: int = 0
    jitter_ms: int = 0
    positions: tuple[F.Position, ...] = ()


@dataclass(frozen=True, slots=True)
class PeerError(Event):
    """The peer sent a connection-level ERROR (§8.7), or a server refused the handshake:
    the peer closes next; the machine is CLOSED and sends nothing more (PW-ERR-3)."""

    code: ErrorCode | int
    message: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The peer closed its side without an error (EOF between frames); the machine is
    CLOSED. ``after_goaway`` tells a planned close (GOAWAY first, §8.6) from an abrupt
    one; ``code`` is the GOAWAY's after one, NO_ERROR otherwise."""

    code: ErrorCode | int = ErrorCode.NO_ERROR
    message: str = ""
    after_goaway: bool = False
