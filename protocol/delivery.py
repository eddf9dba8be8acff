"""Delivery policy: what one subscription gets from its topic's log in one round.

Theory of operation
-------------------
The server's writer, when it wakes, asks :func:`plan_round` what to send for a
subscription: given where the subscription stands (``next_seq``), its credit, the bytes its
outbound budget leaves this round and the subscriber's max_frame_size, the planner answers
with a few :class:`Push` and :class:`Gap` steps and the new ``next_seq``. The session then
charges each push's credit once (``count`` messages, however many frames), tells the
connection about each gap, and sends the memoryviews. The planner does no I/O and keeps no
state of its own, so the rules below are property-tested against a model without sockets
(like h2's ``windows.py``).

The common case is one step: the frames from ``next_seq`` up to what credit and budget
allow, which are whole frames sitting back to back in the log, so the push is one slice of
shared memory (two at a segment boundary). It is chosen with two index look-ups, whatever
the number of messages. Only the edges take the slow path, one frame at a time:

* the round starts inside a batch (a resume position or an earlier cut);
* credit ends inside a batch: the batch is cut at the credit (PW-FLOW-3, §7.8);
* the topic holds a frame larger than the subscriber's max_frame_size: frames are taken one
  at a time; a too-large MESSAGE, or run of too-large records, becomes
  GAP(FRAME_TOO_LARGE) that uses no credit, and a batch is cut so every piece fits (§7.3).

Slow consumers (§8.2) are the caller's policy decision, made with :func:`behind` and
:func:`lag`: the planner only ever plans from retained sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pushwire.protocol import codec
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import HEADER_SIZE, FrameType, SlowConsumerPolicy
from pushwire.protocol.log import TopicLog

__all__ = ["Behind", "Gap", "Push", "behind", "lag", "plan_round"]

_MESSAGE_BATCH = int(FrameType.MESSAGE_BATCH)


@dataclass(slots=True)
class Push:
    """Send ``data`` (whole frames): sequences ``first..last``, costing ``last - first + 1``
    credit."""

    first: int
    last: int
    data: Sequence[memoryview | bytes]

    @property
    def count(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True, slots=True)
class Gap:
    """Send GAP(``first..last``, ``reason``); uses no credit."""

    first: int
    last: int
    reason: ErrorCode


def plan_round(
    log: TopicLog,
    next_seq: int,
    credit: int,
    budget: int,
    peer_max: int,
    *,
    per_frame: bool = False,
) -> tuple[list[Push | Gap], int]:
    """Steps for one round from ``next_seq`` (which must be ``>= log.oldest``), and the
    ``next_seq`` after them. Uses at most ``credit``; stops once ``budget`` bytes are
    planned (but plans at least one frame when credit allows, so a frame larger than the
    budget still goes out). ``per_frame`` makes every frame its own push."""
    steps: list[Push | Gap] = []
    seq = next_seq
    head = log.head
    room = budget
    fast = log.max_payload <= peer_max and not per_frame
    while seq <= head and room > 0:
        if credit <= 0:
            if fast:
                break
            # frames too large for the peer still become gaps without credit
            view = log.frame(seq)[2]
            if view[4] == _MESSAGE_BATCH or len(view) - HEADER_SIZE <= peer_max:
                break
        if fast and log.is_frame_start(seq):
            hi = min(head, seq + credit - 1)
            hi = log.last_within(seq, hi, room)
            if not log.is_frame_end(hi):
                end = log.frame_last(hi)
                hi = end if end - seq < credit else log.frame_first(hi) - 1
            if hi >= seq:
                size = log.size(seq, hi)
                steps.append(Push(seq, hi, log.slices(seq, hi)))
                credit -= hi - seq + 1
                room -= size
                seq = hi + 1
                continue
        # the slow path: the one frame holding seq
        used, seq, size = _plan_frame(log, seq, credit, peer_max, steps)
        credit -= used
        room -= size
    return steps, seq


def _plan_frame(
    log: TopicLog, seq: int, credit: int, peer_max: int, steps: list[Push | Gap]
) -> tuple[int, int, int]:
    """Plan (part of) the frame holding ``seq``: (credit used, next seq, bytes planned)."""
    first, count, view = log.frame(seq)
    if view[4] != _MESSAGE_BATCH:
        if len(view) - HEADER_SIZE > peer_max:
            steps.append(Gap(seq, seq, ErrorCode.FRAME_TOO_LARGE))
            return 0, seq + 1, 0
        if credit <= 0:
            return 0, seq, 0
        steps.append(Push(seq, seq, [view]))
        return 1, seq + 1, len(view)
    offsets = codec.batch_record_offsets(view)
    i = seq - first
    used = size = 0
    while i < count:
        if codec.slice_batch_size(offsets, i, i + 1) > peer_max:
            j = i + 1
            while j < count and codec.slice_batch_size(offsets, j, j + 1) > peer_max:
                j += 1
            steps.append(Gap(first + i, first + j - 1, ErrorCode.FRAME_TOO_LARGE))
            i = j
            continue
        if used >= credit:
            break
        j = i + 1
        while (
            j < count
            and used + (j - i) < credit
            and codec.slice_batch_size(offsets, i, j + 1) <= peer_max
        ):
            j += 1
        data = view if i == 0 and j == count else codec.slice_batch(view, i, j, offsets)
        steps.append(Push(first + i, first + j - 1, [data]))
        used += j - i
        size += len(data)
        i = j
    return used, first + i, size


@dataclass(frozen=True, slots=True)
class Behind:
    """What to do about a subscription whose ``next_seq`` left the history (§8.2).

    ``close``: ERROR(SLOW_CONSUMER) and close (DISCONNECT, PW-SLOW-2). Otherwise ``gap``
    is the GAP(SLOW_CONSUMER) range to send before continuing at its end + 1 (DROP,
    PW-SLOW-3), or ``None`` while there is no credit to continue with (the GAP waits for
    it, so it is never separated from the push that follows it)."""

    close: bool
    lost: tuple[int, int]
    gap: tuple[int, int] | None


def behind(policy: SlowConsumerPolicy, next_seq: int, oldest: int, credit: int) -> Behind | None:
    """``None`` when ``next_seq`` is still retained, else the slow-consumer decision."""
    if next_seq >= oldest:
        return None
    lost = (next_seq, oldest - 1)
    if policy == SlowConsumerPolicy.DISCONNECT:
        return Behind(True, lost, None)
    return Behind(False, lost, lost if credit > 0 else None)


def lag(policy: SlowConsumerPolicy, head: int, next_seq: int, max_lag: int) -> int | None:
    """The lag of a subscription that has everything before ``next_seq`` queued, if the
    policy closes it for that lag (DISCONNECT and lag > max_lag, PW-SLOW-2); else None.
    Under DROP lag is informational (PW-SLOW-4)."""
    if policy != SlowConsumerPolicy.DISCONNECT:
        return None
    n = head - (next_seq - 1)
    return n if n > max_lag else None
