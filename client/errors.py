"""Exceptions of the client. All derive from :class:`PushwireError`.

Codes are registry members (:class:`~pushwire.protocol.errors.ErrorCode`) when known, plain
ints otherwise (a newer server may send codes this client does not know, SPEC.md §11).
"""

from __future__ import annotations

from pushwire.protocol.errors import ErrorCode


def _name(code: ErrorCode | int | None) -> str:
    if code is None:
        return ""
    return code.name if isinstance(code, ErrorCode) else f"0x{code:04x}"


class PushwireError(Exception):
    """Base class of every error the client raises."""


class ConnectError(PushwireError):
    """The first connection could not be made (refused, unreachable, timed out, or the
    server closed before the handshake completed), and retrying was not asked for."""


class HandshakeRejected(PushwireError):
    """The server refused the handshake with ``code`` (e.g. UNAUTHENTICATED,
    UNSUPPORTED_VERSION). Terminal: the client does not retry on its own."""

    def __init__(self, code: ErrorCode | int, message: str) -> None:
        super().__init__(f"{_name(code)}: {message}" if message else _name(code))
        self.code = code
        self.message = message


class RequestError(PushwireError):
    """The server (or the client's own checks) refused one request: a SUBSCRIBE, a publish.
    The connection stays up."""

    def __init__(self, code: ErrorCode | int, message: str) -> None:
        super().__init__(f"{_name(code)}: {message}" if message else _name(code))
        self.code = code
        self.message = message


class ConnectionLost(PushwireError):
    """The connection ended. Raised by iterators and ``publish`` when it will not be
    re-established (a terminal error, ``reconnect=False``, or the Connection was closed),
    and by ``publish`` when the connection dropped before the PUBACK arrived: the message
    may or may not have been published."""

    def __init__(self, message: str, code: ErrorCode | int | None = None) -> None:
        super().__init__(f"{_name(code)}: {message}" if code is not None else message)
        self.code = code
        self.message = message


class DeliveryInterrupted(PushwireError):
    """The ordered stream of a subscription has a discontinuity. Raised from
    ``__anext__``; iterating again continues right after it. Never skipped silently.
    ``Subscription.items()`` gives the same discontinuity as a value instead (a ``Gap`` or
    an ``EpochChange``)."""

    topic: str


class GapDetected(DeliveryInterrupted):
    """Sequences ``first..last`` of the current epoch will never be delivered; ``reason``
    says why (HISTORY_EXPIRED, SLOW_CONSUMER, FRAME_TOO_LARGE, or a code not known here)."""

    def __init__(
        self, topic: str, first: int, last: int, reason: ErrorCode | int, epoch: int
    ) -> None:
        super().__init__(f"{topic}: messages {first}..{last} lost ({_name(reason)})")
        self.topic = topic
        self.first = first
        self.last = last
        self.reason = reason
        self.epoch = epoch


class EpochChanged(DeliveryInterrupted):
    """The topic's history was reset (e.g. the server restarted without persistence): its
    sequence numbers restarted in ``new_epoch`` and delivery continues at ``start_seq``.
    Messages of ``old_epoch`` not yet received are lost, and so are sequences
    1..start_seq-1 of the new epoch."""

    def __init__(self, topic: str, old_epoch: int, new_epoch: int, start_seq: int) -> None:
        super().__init__(
            f"{topic}: epoch changed {old_epoch:#x} -> {new_epoch:#x}, continuing at {start_seq}"
        )
        self.topic = topic
        self.old_epoch = old_epoch
        self.new_epoch = new_epoch
        self.start_seq = start_seq
