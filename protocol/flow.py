"""The credit a client granted, as the server could have seen it (SPEC.md §8.1, PW-FLOW-5).

Theory of operation
-------------------
A client that tops up credit at half its window (PW-FLOW-7) often writes a CREDIT while the
push that uses the old credit up is already in its input buffer. Counting that CREDIT for
the push would accept a message the server sent without having seen the CREDIT, and would
make the verdict depend on how TCP split the stream. So SPEC.md defines the credit granted
for a push as ``initial_credit`` plus the increments of the CREDIT frames sent *before the
first byte of that push arrived*, less the credit of earlier pushes.

:class:`CreditLedger` keeps that account for one subscription. Positions on the input stream
are byte offsets counted by the caller from the first byte it received: a CREDIT is stamped
with the number of bytes received when it was sent (``received``), a push with the offset of
its first byte (``offset``). A CREDIT stamped ``received`` counts for a push at ``offset``
when ``received <= offset``: the push's first byte had not arrived when the CREDIT left.
Offsets of pushes only grow, so each CREDIT moves from pending to usable once, in order.
"""

from __future__ import annotations

from collections import deque

__all__ = ["CreditLedger"]


class CreditLedger:
    """One subscription's credit; see the module docstring."""

    __slots__ = ("_pending", "_pending_total", "_usable")

    def __init__(self, initial: int) -> None:
        self._usable = initial
        #: (bytes received when the CREDIT was sent, increment), oldest first.
        self._pending: deque[tuple[int, int]] = deque()
        self._pending_total = 0

    @property
    def remaining(self) -> int:
        """Everything granted and not yet used, counting CREDIT the server may not have seen
        yet: what the server may still send once it has read every CREDIT."""
        return self._usable + self._pending_total

    def grant(self, increment: int, received: int) -> None:
        """A CREDIT of ``increment`` was sent after ``received`` bytes had arrived."""
        if self._pending and self._pending[-1][0] == received:
            last = self._pending.pop()
            self._pending.append((received, last[1] + increment))
        else:
            self._pending.append((received, increment))
        self._pending_total += increment

    def usable_at(self, offset: int) -> int:
        """The credit granted for a push whose first byte is at ``offset`` (PW-FLOW-5)."""
        usable = self._usable
        for received, increment in self._pending:
            if received > offset:
                break
            usable += increment
        return usable

    def charge(self, count: int, offset: int) -> bool:
        """Use ``count`` credits for a push whose first byte is at ``offset``; False (and
        nothing used) when the push exceeds the credit granted for it."""
        pending = self._pending
        while pending and pending[0][0] <= offset:
            _, increment = pending.popleft()
            self._usable += increment
            self._pending_total -= increment
        if count > self._usable:
            return False
        self._usable -= count
        return True
