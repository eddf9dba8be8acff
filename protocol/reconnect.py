"""When a client reconnects, and after how long (SPEC.md §8.8, §8.9).

Theory of operation
-------------------
A connection ends in one of a few ways (:class:`Ending`). :func:`retry_class` turns the way
and the code into the retry class of the table in §8.9: terminal codes are never retried
automatically, whichever side sent them (PW-CLIENT-1); unknown connection-level codes are
temporary (PW-CLIENT-2); a GOAWAY's code decides whether its delay applies (PW-CLIENT-3);
EOF, also inside a frame, is a lost connection (PW-CLIENT-5).

:class:`ReconnectPlanner` keeps the one piece of state a client needs across connections,
the backoff attempt counter, and answers "reconnect? when?" with a :class:`Plan`. Its
clock and its randomness come from the caller, so the rules are property-tested without
sockets or sleeping (``tests/protocol/test_reconnect.py``):

* attempt n waits uniformly ``d/2 .. d`` with ``d = min(cap, base * 2**n)`` (PW-CLIENT-6);
* the counter goes back to 0 only when a connection stayed open for the stable time or
  delivered a message, never because WELCOME arrived (PW-CLIENT-7), so a server that admits
  and then cuts sees the delays grow;
* after a GOAWAY the delay is ``reconnect_after_ms`` plus jitter, counted from the moment the
  GOAWAY was received (PW-GOAWAY-7), and the counter is left alone;
* every other delay counts from the moment the connection ended for the client, not from
  the end of the linger of PW-ERR-9.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from pushwire.protocol.errors import REGISTRY, ErrorCode, Scope

__all__ = ["Ending", "GoawayHint", "Plan", "ReconnectPlanner", "RetryClass", "retry_class"]

#: Largest attempt exponent kept: 2**64 times any base is beyond every sensible cap.
_MAX_ATTEMPT = 64


class RetryClass(enum.Enum):
    """The retry classes of SPEC.md §8.9."""

    TEMPORARY = "temporary"  # reconnect: backoff, or the GOAWAY's delay
    TERMINAL = "terminal"  # no automatic reconnect
    LOST = "lost"  # EOF or reset without ERROR: reconnect with backoff
    CLOSED = "closed"  # the client closed on purpose: nothing to do


class Ending(enum.Enum):
    """How a connection ended, as the client saw it."""

    PEER_ERROR = "peer-error"  # ERROR(request_type 0) received
    OWN_ERROR = "own-error"  # the client sent ERROR(code): a violation or its heartbeat timeout
    GOAWAY = "goaway"  # GOAWAY received (the connection is closed after draining)
    EOF = "eof"  # EOF or reset without ERROR, inside a frame or not
    PREFACE = "preface"  # a preface failure (§2.4): nothing was exchanged
    CLOSED = "closed"  # the application closed the connection


def retry_class(ending: Ending, code: ErrorCode | int | None = None) -> RetryClass:
    """The retry class of a connection that ended this way with this code (§8.9 table)."""
    if ending is Ending.CLOSED:
        return RetryClass.CLOSED
    if ending is Ending.EOF:
        return RetryClass.LOST
    if ending is Ending.PREFACE:
        return RetryClass.TERMINAL
    info = REGISTRY.get(ErrorCode(code)) if code is not None and code in _KNOWN else None
    if info is None or info.scope is not Scope.CONNECTION:
        # Unknown (or out-of-scope) connection codes are temporary (PW-CLIENT-2).
        return RetryClass.TEMPORARY
    return RetryClass.TEMPORARY if info.temporary else RetryClass.TERMINAL


_KNOWN = frozenset(int(c) for c in ErrorCode)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do after a connection ended: reconnect at ``at`` (the caller's clock), or not."""

    retry: RetryClass
    reconnect: bool
    at: float | None = None
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class GoawayHint:
    """A received GOAWAY's delay: ``after_ms`` + uniform(0, ``jitter_ms``) from ``received_at``."""

    received_at: float
    after_ms: int
    jitter_ms: int


class ReconnectPlanner:
    """The backoff counter and the reconnect decision; see the module docstring.

    ``base`` and ``cap`` are seconds (RECOMMENDED 0.1 and 10); ``stable`` is how long a
    connection must stay open before the counter resets, never less than ``cap``.
    """

    def __init__(
        self,
        base: float = 0.1,
        cap: float = 10.0,
        *,
        stable: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.stable = max(stable, cap)
        self.attempt = 0
        self._rng = rng if rng is not None else random.Random()
        self._opened_at: float | None = None
        self._delivered = False

    # -- what happened to the current connection ----------------------------------------------

    def opened(self, now: float) -> None:
        """The connection reached WELCOME. This alone never resets the backoff."""
        self._opened_at = now
        self._delivered = False

    def delivered(self) -> None:
        """The connection delivered a message to the application (PW-CLIENT-7)."""
        self._delivered = True

    def ceiling(self) -> float:
        """``d`` of the next attempt."""
        return min(self.cap, self.base * 2.0**self.attempt)

    def next_delay(self) -> float:
        """The next backoff delay, uniform in ``d/2 .. d`` (PW-CLIENT-6); counts an attempt."""
        d = self.ceiling()
        self.attempt = min(self.attempt + 1, _MAX_ATTEMPT)
        return self._rng.uniform(d / 2, d)

    def reset(self) -> None:
        self.attempt = 0

    def ended(
        self,
        ending: Ending,
        code: ErrorCode | int | None,
        now: float,
        *,
        goaway: GoawayHint | None = None,
    ) -> Plan:
        """The plan after a connection ended at ``now`` (when the client received or sent
        the ERROR, or saw EOF). Also call it for an attempt that failed before WELCOME
        (``Ending.EOF``: a lost connection)."""
        opened_at, self._opened_at = self._opened_at, None
        if self._delivered or (opened_at is not None and now - opened_at >= self.stable):
            self.attempt = 0
        self._delivered = False
        if ending in (Ending.PEER_ERROR, Ending.OWN_ERROR) or goaway is None:
            cls = retry_class(ending, code)
        else:  # the connection closed after the GOAWAY: its code decides (PW-CLIENT-3)
            cls = retry_class(Ending.GOAWAY, code)
        if cls in (RetryClass.TERMINAL, RetryClass.CLOSED):
            return Plan(cls, False)
        if goaway is not None:
            # The GOAWAY's delay replaces the backoff (PW-GOAWAY-7); the counter stays.
            delay = (goaway.after_ms + self._rng.uniform(0, goaway.jitter_ms)) / 1000
            at = goaway.received_at + delay
            return Plan(cls, True, at, max(0.0, at - now))
        delay = self.next_delay()
        return Plan(cls, True, now + delay, delay)
