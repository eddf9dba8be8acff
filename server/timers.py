"""Every connection's deadlines (handshake, heartbeat, frame, drain) in one heap, one task.

Theory of operation
-------------------
A connection's sans-I/O core says when it next needs the time (``next_deadline()``); a
timer per connection would cost a task, a cancel scope and a wake-up each, which is most of
what an idle connection costs. Instead the server keeps one heap of ``(deadline, session)``
and one system task that sleeps until the earliest entry and calls
``session.on_timer(now)`` for each entry that came due.

Entries are never removed or moved: a session remembers the deadline it is scheduled for
(``timer_at``) and an entry whose deadline differs is stale and skipped. A deadline that
moves *later* (bytes came in, so the heartbeat timeout moves) needs nothing: the old entry
fires early, ``on_timer`` finds nothing due and schedules the real deadline. Only a
deadline that moves *earlier* (the handshake completed, a GOAWAY started a drain, a frame
began to arrive) pushes a new entry. So a busy connection costs at most one heap operation
per heartbeat interval, and an idle one a wake-up per interval, as its PING requires.

Entries hold their session by a weak reference: a connection that closes is freed by
reference counting at once, not when its last entry comes due (a heartbeat timeout away).
Holding it strongly kept every closed session whole, with its connection state, decoder
and socket objects, about 5 KiB each: churn of a thousand connections a second held
thousands of them. What is left of a closed session is its dead entries, which the heap
drops when it has doubled since it was last rebuilt (:meth:`Timers._compact`), so stale
entries never outnumber the live ones by much and cost O(1) amortized per push.

The task is a trio system task started by the first schedule and ending when the heap is
empty, so a server that is not serving (tests that drive sessions directly) needs no
nursery of its own for it.

With a ``grain``, one wake-up serves every entry due within ``grain`` of it, each called
with its own deadline as the time (never an earlier one, see :data:`ROUNDING`): ten
thousand connections with a 5 s heartbeat are 2,000 deadlines a second, and a trio
wake-up (a cancel scope, an event, a reschedule) for each cost more than the PINGs. What a
deadline demands then happens at most ``grain`` early: a PING early is allowed at any time
(PW-HB-7), and the session records when its bytes really went out, so the next PING is
never late.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import weakref
from typing import Protocol

import trio

log = logging.getLogger("pushwire.server")

__all__ = ["Timed", "Timers"]

#: The heap is rebuilt without stale entries when it reaches this size at the least.
COMPACT_MIN = 1024

#: Added to a deadline served early: a deadline computed as a sum (last sent + interval)
#: must come out as due when the same sum is checked, whatever the float rounding.
ROUNDING = 1e-6


class Timed(Protocol):
    """What the heap times. It must accept weak references (``__weakref__`` in slots)."""

    timer_at: float

    def on_timer(self, now: float) -> None: ...


class Timers:
    """One heap of deadlines and the one task that serves it. See the module docstring."""

    def __init__(self, grain: float = 0.0) -> None:
        self._grain = grain
        self._heap: list[tuple[float, int, weakref.ref[Timed]]] = []
        self._compact_at = COMPACT_MIN
        self._order = itertools.count()
        self._wake: trio.Event | None = None  # set: the earliest deadline moved earlier
        self._next = math.inf
        self._running: object = None  # the trio run whose system task serves the heap

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, timed: Timed, deadline: float) -> None:
        """Call ``timed.on_timer`` at ``deadline`` (instead of at ``timed.timer_at``)."""
        timed.timer_at = deadline
        if deadline == math.inf:
            return
        heap = self._heap
        heapq.heappush(heap, (deadline, next(self._order), weakref.ref(timed)))
        if len(heap) >= self._compact_at:
            self._compact()
        token = trio.lowlevel.current_trio_token()
        if self._running is not token:
            self._running = token
            self._wake = None
            trio.lowlevel.spawn_system_task(self._run, name="pushwire timers")
        elif deadline < self._next and self._wake is not None:
            self._wake.set()

    def _compact(self) -> None:
        """Drop the entries that can no longer fire (their session is gone, or it was
        scheduled again since) and wait for the heap to double again: O(1) amortized."""
        live = []
        for entry in self._heap:
            timed = entry[2]()
            if timed is not None and timed.timer_at == entry[0]:
                live.append(entry)
        heapq.heapify(live)
        self._heap[:] = live  # in place: the running task holds this list
        self._compact_at = max(COMPACT_MIN, 2 * len(live))

    async def _run(self) -> None:
        heap = self._heap
        grain = self._grain
        try:
            while heap:
                now = trio.current_time()
                horizon = now + grain
                due = []
                while heap and heap[0][0] <= horizon:
                    when, _, ref = heapq.heappop(heap)
                    timed = ref()
                    if timed is None or timed.timer_at != when:
                        continue  # gone, or superseded by an earlier or a later schedule
                    timed.timer_at = math.inf
                    due.append((when, timed))
                # (called after the batch is taken: one that schedules itself again within
                # the grain waits for the next wake-up instead of spinning here)
                for when, timed in due:
                    try:
                        timed.on_timer(now if when <= now else when + ROUNDING)
                    except Exception:  # one connection's bug must not stop every timer
                        log.exception("timer callback failed")
                if not heap:
                    break
                self._next = heap[0][0]
                self._wake = trio.Event()
                with trio.move_on_at(self._next):
                    await self._wake.wait()
        finally:
            self._running = None
            self._wake = None
            self._next = math.inf
