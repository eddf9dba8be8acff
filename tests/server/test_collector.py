"""The serve process's collector policy: freezes every period, full collections only when the
heap grew, and nothing a full collection would find is lost for good."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from pushwire.server import collector as C


@pytest.fixture
def thawed() -> Iterator[None]:
    """Leave the test process's collector as it was: nothing frozen, automatic collection on."""
    enabled = gc.isenabled()
    try:
        yield
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def _garbage_cycle() -> weakref.ref[_Cycle]:
    return weakref.ref(_Cycle())


def _measured(coll: C.Collector) -> bool:
    """Tick until the heap is measured: True when that tick was a full collection. The
    ticks between measurements only freeze."""
    for _ in range(C.MEASURE_EVERY - 1 - coll.stats.ticks % C.MEASURE_EVERY):
        assert not coll.tick()
    return coll.tick()


@given(
    baseline=st.integers(0, 10**8),
    growth=st.integers(-(10**6), 10**8),
    since=st.floats(0, 10 * C.MAX_INTERVAL),
)
def test_full_due_follows_the_quarter_rule(baseline: int, growth: int, since: float) -> None:
    due = C.full_due(baseline + growth, baseline, since)
    if growth < C.MIN_GROWTH:
        assert not due  # small or no growth never costs a full collection
    elif growth >= baseline * C.GROWTH:
        assert due
    else:
        assert due == (since >= C.MAX_INTERVAL)


def test_a_steady_heap_is_frozen_never_fully_collected(thawed: None) -> None:
    clock = [0.0]
    blocks = [1_000_000]
    coll = C.Collector(blocks=lambda: blocks[0], clock=lambda: clock[0])
    for _ in range(10 * C.MEASURE_EVERY):
        clock[0] += C.PERIOD
        blocks[0] += 10  # a little up and down, as heartbeats replace objects
        assert not coll.tick()
        assert gc.get_freeze_count() > 0
        blocks[0] -= 10
    assert coll.stats.full == 0
    assert coll.stats.ticks == 10 * C.MEASURE_EVERY


def test_a_frozen_cycle_waits_for_the_full_collection_that_growth_starts(thawed: None) -> None:
    clock = [0.0]
    blocks = [1_000_000]
    coll = C.Collector(blocks=lambda: blocks[0], clock=lambda: clock[0])
    held = _Cycle()
    ref = weakref.ref(held)
    coll.tick()  # the cycle is frozen while it is still reachable
    del held
    gc.collect()
    assert ref() is not None  # frozen: the automatic collector no longer looks at it

    blocks[0] += C.MIN_GROWTH  # grown, but by less than a quarter: not yet
    clock[0] += C.PERIOD
    assert not _measured(coll)
    assert ref() is not None

    blocks[0] = 1_250_000 + C.MIN_GROWTH
    assert not coll.tick()  # grown enough, but only a measuring tick looks
    assert ref() is not None
    clock[0] += C.PERIOD
    assert _measured(coll)
    assert ref() is None
    assert coll.stats.full == 1
    assert gc.get_freeze_count() > 0  # the survivors are frozen again


def test_a_late_full_collection_needs_only_some_growth(thawed: None) -> None:
    clock = [0.0]
    blocks = [10_000_000]
    coll = C.Collector(blocks=lambda: blocks[0], clock=lambda: clock[0])
    held = _Cycle()
    ref = weakref.ref(held)
    coll.tick()
    del held
    blocks[0] += C.MIN_GROWTH
    clock[0] = C.MAX_INTERVAL - 1
    assert not _measured(coll)
    clock[0] = C.MAX_INTERVAL
    assert _measured(coll)
    assert ref() is None


def test_growth_is_measured_from_the_low_water_mark(thawed: None) -> None:
    """Connections that close free their objects (the heap shrinks); the next full
    collection is due when it grew by a quarter of what is left, not of the old peak."""
    blocks = [4_000_000]
    coll = C.Collector(blocks=lambda: blocks[0], clock=lambda: 0.0)
    blocks[0] = 1_000_000
    assert not _measured(coll)
    blocks[0] = 1_200_000
    assert not _measured(coll)
    blocks[0] = 1_250_000
    assert _measured(coll)


def test_cycles_that_die_young_are_still_collected_between_freezes(thawed: None) -> None:
    coll = C.Collector(blocks=lambda: 0, clock=lambda: 0.0)
    coll.tick()
    ref = _garbage_cycle()  # born after the freeze, unreachable at once
    gc.collect()
    assert ref() is None


async def test_run_ticks_every_period(thawed: None, autojump_clock: trio.abc.Clock) -> None:
    coll = C.Collector(blocks=lambda: 0, clock=lambda: 0.0)
    with trio.move_on_after(C.PERIOD * 3.5):
        await coll.run()
    assert coll.stats.ticks == 3
