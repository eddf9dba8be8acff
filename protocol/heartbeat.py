"""Heartbeat bookkeeping (SPEC.md §8.5), shared by both connection state machines.

Time is always passed in (seconds, any monotonic origin), so tests move the clock by hand.
Two deadlines matter: when we must send *something* (a PING if idle) so the peer does not
time us out, and when the peer is declared dead because nothing arrived. The receive timeout
is ``TIMEOUT_FACTOR`` intervals: one missed PING is tolerated with room for a slow link.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The receive timeout is this many heartbeat intervals (SPEC.md §8.5, PW-HB-3).
TIMEOUT_FACTOR = 3


@dataclass(slots=True)
class Heartbeat:
    interval: float  # seconds; 0 disables both deadlines (before the handshake sets it)
    last_received: float = 0.0
    last_sent: float = 0.0
    _next_opaque: int = field(default=1)

    def start(self, interval: float, now: float) -> None:
        self.interval = interval
        self.last_received = now
        self.last_sent = now

    def received(self, now: float) -> None:
        self.last_received = now

    def sent(self, now: float) -> None:
        self.last_sent = now

    def ping_due(self, now: float) -> bool:
        return self.interval > 0 and now - self.last_sent >= self.interval

    def timed_out(self, now: float) -> bool:
        return self.interval > 0 and now - self.last_received >= TIMEOUT_FACTOR * self.interval

    def next_opaque(self) -> int:
        value = self._next_opaque
        self._next_opaque = (value + 1) & 0xFFFF_FFFF_FFFF_FFFF
        return value

    def next_deadline(self) -> float | None:
        """The earliest time at which ``ping_due`` or ``timed_out`` can become true."""
        if self.interval <= 0:
            return None
        return min(
            self.last_sent + self.interval, self.last_received + TIMEOUT_FACTOR * self.interval
        )
