"""When ``pushwire serve`` lets CPython's cyclic garbage collector look at the whole heap.

Theory of operation
-------------------
A full collection traverses every object the collector tracks. A server holding 10,000
connections (about 54 tracked objects each) takes 200-290 ms for one, and every connection
waits for it. CPython starts one when the objects promoted out of the young generations
since the last full collection reach a quarter of those that survived it. A server
promotes all the time without growing:

- every heartbeat replaces a connection's waiting coroutines with new ones;
- a fan-out to many connections holds per-connection objects across young collections.

A young collection is started by allocations *minus* deallocations, and replacement keeps
that count near zero. So the young generation quietly collects every replacement made
since its last collection, and that collection then takes tens of milliseconds. On the
idle bench (10,000 connections, a message to all of them each second) one message in five
met a young, a middle and a full collection in a row: 67 + 92 + 279 ms, and every delivery
of that message came 300 ms late.

:class:`Collector` changes when the work happens, not what is collected. Every
:data:`PERIOD` it:

1. freezes every tracked object (``gc.freeze()``, a constant-time list splice). A frozen
   object is still freed by reference counting the moment it is dropped; only a *cycle*
   among frozen objects waits for step 2. Between two freezes CPython's young collections
   run as usual, over objects at most a period old, and find the short-lived cycles;
2. every :data:`MEASURE_EVERY` periods, when the heap has grown since the last full
   collection (:func:`full_due`: by a quarter and at least :data:`MIN_GROWTH` blocks, or
   at all after :data:`MAX_INTERVAL`), it unfreezes everything, collects it all, and
   freezes the survivors again.

Collecting the young generations before each freeze would find more cycles sooner, but
costs 10-18 ms a second at 10,000 connections, where each heartbeat's replacement
coroutines are alive at every tick. The serving code makes no cycles in steady state (every
collection during the idle bench's 15 idle seconds found nothing), so freezing alone loses
nothing there, and what a closed connection leaves is bounded by step 2.

This is CPython's quarter rule applied to the heap's real growth instead of to promotions.
A server that holds steady (idle connections, heartbeats, fan-outs) never pays a full
collection. One whose heap grows (new connections, cycles left by closed ones) pays the same
pause at about the same rate as before. :func:`sys.getallocatedblocks` measures the heap;
it counts every small object, tracked or not. It visits every memory pool, though: 0.4 ms
for 2.4 million blocks in a loop that does nothing else, but 1-10 ms with 10,000
connections, where the pools are cold: a cost per second that a rule about growth by a
quarter does not need, hence every ten seconds.
:func:`gc.get_freeze_count` would be exact, but walks the frozen list: 42 ms for a million
objects.

The embedding application owns its process's collector. Only ``pushwire serve`` runs
this, after it froze its start-up objects.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

__all__ = ["MAX_INTERVAL", "MIN_GROWTH", "PERIOD", "Collector", "full_due"]

log = logging.getLogger("pushwire.server")

#: Seconds between two freezes.
PERIOD = 1.0
#: The heap is measured every this many freezes: walking every memory pool for
#: sys.getallocatedblocks() took 1-10 ms a time with 10,000 connections (cold caches).
MEASURE_EVERY = 10
#: The heap must grow by this share of its size after the last full collection ...
GROWTH = 0.25
#: ... and by at least this many allocated blocks (about 3 MiB of small objects).
MIN_GROWTH = 50_000
#: After this many seconds, any growth of at least MIN_GROWTH blocks is enough.
MAX_INTERVAL = 600.0


def full_due(blocks: int, baseline: int, since_full: float) -> bool:
    """Whether the heap (``blocks`` allocated now, ``baseline`` its low-water mark since the
    last full collection) has grown enough to look at all of it, ``since_full`` seconds
    after the last full collection."""
    growth = blocks - baseline
    if growth < MIN_GROWTH:
        return False
    return growth >= baseline * GROWTH or since_full >= MAX_INTERVAL


@dataclass
class CollectorStats:
    """What the collector did, for logs and tests."""

    ticks: int = 0
    full: int = 0
    last_full_ms: float = 0.0


class Collector:
    """A freeze every :data:`PERIOD`, a full collection when due. See
    the module docstring. ``blocks`` and ``clock`` are replaceable for tests."""

    def __init__(
        self,
        *,
        blocks: Callable[[], int] = sys.getallocatedblocks,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._blocks = blocks
        self._clock = clock
        self.stats = CollectorStats()
        self._baseline = blocks()
        self._last_full = clock()

    def tick(self) -> bool:
        """One period's work; True when it was a full collection."""
        self.stats.ticks += 1
        gc.freeze()
        if self.stats.ticks % MEASURE_EVERY:
            return False
        blocks = self._blocks()
        self._baseline = min(self._baseline, blocks)
        now = self._clock()
        if not full_due(blocks, self._baseline, now - self._last_full):
            return False
        self.full(f"heap grew from {self._baseline} to {blocks} blocks")
        return True

    def full(self, why: str = "asked") -> None:
        """Collect the whole heap now, frozen objects included, and freeze the survivors."""
        start = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self.stats.full += 1
        self.stats.last_full_ms = (time.perf_counter() - start) * 1000
        self._baseline = self._blocks()
        self._last_full = self._clock()
        log.debug(
            "full garbage collection (%s): %d unreachable objects, %.1f ms",
            why,
            found,
            self.stats.last_full_ms,
        )

    async def run(self) -> None:
        """Tick every :data:`PERIOD` until cancelled."""
        while True:
            await trio.sleep(PERIOD)
            self.tick()
