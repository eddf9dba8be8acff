"""server/timers.py: one heap and one task call every connection at its deadline."""

from __future__ import annotations

import gc
import math
import weakref

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from pushwire.server.timers import COMPACT_MIN, Timers


class Clocked:
    """A connection stand-in: records when it was called and asks to be called again."""

    def __init__(self, timers: Timers, every: float, calls: list[tuple[str, float]], name: str):
        self.timer_at = math.inf
        self.timers = timers
        self.every = every
        self.calls = calls
        self.name = name

    def on_timer(self, now: float) -> None:
        self.calls.append((self.name, now))
        if self.every:
            self.timers.schedule(self, now + self.every)


async def test_each_is_called_at_its_deadline_in_order(autojump_clock: object) -> None:
    timers = Timers()
    calls: list[tuple[str, float]] = []
    start = trio.current_time()
    a = Clocked(timers, 0, calls, "a")
    b = Clocked(timers, 0, calls, "b")
    timers.schedule(b, start + 2)
    timers.schedule(a, start + 1)
    await trio.sleep(3)
    assert calls == [("a", start + 1), ("b", start + 2)]
    assert len(timers) == 0  # the task ended with the heap


async def test_an_earlier_schedule_supersedes_and_a_later_one_fires_early_once(
    autojump_clock: object,
) -> None:
    timers = Timers()
    calls: list[tuple[str, float]] = []
    start = trio.current_time()
    a = Clocked(timers, 0, calls, "a")
    timers.schedule(a, start + 5)
    timers.schedule(a, start + 1)  # moved earlier: the entry at 5 is stale
    await trio.sleep(10)
    assert calls == [("a", start + 1)]


async def test_a_repeating_deadline_keeps_one_entry(autojump_clock: object) -> None:
    timers = Timers()
    calls: list[tuple[str, float]] = []
    a = Clocked(timers, 1.0, calls, "a")
    timers.schedule(a, trio.current_time() + 1)
    await trio.sleep(10.5)
    assert len(calls) == 10
    assert len(timers) == 1
    a.timer_at = -math.inf  # what a finished session does: its entry is stale now
    await trio.sleep(2)
    assert len(calls) == 10 and len(timers) == 0


async def test_a_failing_callback_does_not_stop_the_others(autojump_clock: object) -> None:
    timers = Timers()
    calls: list[tuple[str, float]] = []

    class Broken(Clocked):
        def on_timer(self, now: float) -> None:
            raise RuntimeError("bug")

    start = trio.current_time()
    broken, ok = Broken(timers, 0, calls, "x"), Clocked(timers, 0, calls, "ok")
    timers.schedule(broken, start + 1)
    timers.schedule(ok, start + 2)
    await trio.sleep(3)
    assert calls == [("ok", start + 2)]


async def test_a_grain_serves_close_deadlines_in_one_wake_up_each_with_its_own_time(
    autojump_clock: object,
) -> None:
    timers = Timers(grain=0.5)
    calls: list[tuple[str, float]] = []
    start = trio.current_time()
    a, b, c = (Clocked(timers, 0, calls, name) for name in "abc")
    timers.schedule(a, start + 1)
    timers.schedule(b, start + 1.4)  # within the grain of a: called with a, early
    timers.schedule(c, start + 1.6)  # beyond it: a wake-up of its own, on time
    await trio.sleep(1.2)
    assert calls == [("a", start + 1), ("b", pytest.approx(start + 1.4, abs=1e-5))]
    await trio.sleep(1)
    assert calls[2:] == [("c", start + 1.6)]


async def test_the_heap_does_not_keep_what_it_times_alive(autojump_clock: object) -> None:
    """A closed session is freed by reference counting at once, not when its entry comes
    due: the entry holds it weakly and is skipped."""
    timers = Timers()
    calls: list[tuple[str, float]] = []
    start = trio.current_time()
    gone, kept = Clocked(timers, 0, calls, "gone"), Clocked(timers, 0, calls, "kept")
    timers.schedule(gone, start + 1)
    timers.schedule(kept, start + 2)
    dead = weakref.ref(gone)
    gc.disable()  # reference counting alone
    try:
        del gone
        assert dead() is None
    finally:
        gc.enable()
    await trio.sleep(3)
    assert calls == [("kept", start + 2)]


@given(
    st.lists(
        st.tuples(st.sampled_from(["new", "earlier", "drop"]), st.integers(0, 63)),
        max_size=3 * COMPACT_MIN,
    )
)
def test_stale_entries_never_outgrow_the_live_ones(ops: list[tuple[str, int]]) -> None:
    """Whatever is scheduled, moved earlier and dropped, the heap stays within twice its
    live entries (or the minimum), and every live deadline still fires, once, on time."""

    async def main() -> None:
        timers = Timers()
        calls: list[tuple[str, float]] = []
        alive: dict[int, Clocked] = {}
        start = trio.current_time()
        serial = 0
        for op, key in ops:
            if op == "new" or key not in alive:
                serial += 1
                alive[key] = Clocked(timers, 0, calls, f"{key}.{serial}")
                timers.schedule(alive[key], start + 1000 + key)
            elif op == "earlier":
                timers.schedule(alive[key], alive[key].timer_at - 0.5)
            else:
                del alive[key]
            assert len(timers) <= max(COMPACT_MIN, 2 * (len(alive) + 1))
        expected = sorted((c.timer_at, c.name) for c in alive.values())
        await trio.sleep(2000)
        assert sorted((t, n) for n, t in calls) == expected
        assert len(timers) == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
