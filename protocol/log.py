"""A topic's log: push frames encoded once, stored in fixed segments, sliced by sequence.

Theory of operation
-------------------
Every subscriber of a topic receives the same bytes: the MESSAGE or MESSAGE_BATCH frame a
publish became. The log stores those frames back to back in *segments*, ``bytearray``
chunks of one fixed size that are allocated once and never resized (so a ``memoryview``
handed to a socket stays valid however the log grows), and keeps one array of integers:

* ``starts[seq - seq0]``: where the frame holding ``seq`` begins (all records of a batch
  share their frame's start).

Positions are *virtual*: segment ``k`` covers positions ``[k * size, (k + 1) * size)``, so
the segment of a position is a division away. A frame never straddles two segments: when
it does not fit the current one, the rest of that segment stays unused (its end is
recorded in ``ends``) and the frame opens the next one. A frame larger than a quarter of a
segment gets a segment of its own, exactly its size; a shared segment sealed less than three
quarters full (because such a frame came) is swapped for an exact copy. So every segment
but the one being filled is at least three quarters used: the log holds at most 4/3 of its
frames' bytes plus two segments (the one being filled, and the oldest, partly trimmed).

A subscriber therefore pulls "everything from ``lo`` to ``hi``" with two look-ups and one
``memoryview`` slice (a few at segment boundaries), however many messages that is:
:meth:`TopicLog.slices`. No per-message Python object exists anywhere: a message costs the
bytes of its frame plus 8 bytes of ``starts`` (one per record for a batch), and per frame 8
bytes of ``frames`` (its first sequence, for trimming and for cutting batches) and 8 of
``cum`` (the bytes appended before it, so trimming is two binary searches).

Trimming keeps the history limits' meaning (at most ``max_count`` messages and
``max_bytes`` bytes of frames, but always the newest frame) and frees a segment as soon as
no retained frame lies in it. The arrays are compacted lazily (when more than half of them
is dead), so trimming costs O(log n) per trim and O(1) amortised per append.
:attr:`TopicLog.memory` counts everything the log holds: segments, the arrays and a fixed
per-topic overhead.

A topic that is subscribed to but never published on is common (a client subscribes ahead
of its publishers, or to a topic that stays quiet) and must stay cheap: a new log is a
*placeholder* whose arrays and segment tables are shared, empty sentinels; the first frame
appended gives it storage of its own. Nothing but :meth:`TopicLog.append` writes to them
while the log is empty, so that is the one place that checks, once per segment or large
frame, never per message.

Nothing here knows about sockets, tasks or subscribers: the planner
(:mod:`pushwire.protocol.delivery`) decides what a subscriber gets, the server's session
sends it.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left, bisect_right

from pushwire.protocol import codec
from pushwire.protocol.layouts import HEADER_SIZE, FrameType

__all__ = ["MAX_SEGMENT", "MIN_SEGMENT", "TOPIC_OVERHEAD", "TopicLog", "segment_size_for"]

#: Largest segment: 256 KiB is four outbound budgets' worth of a default round (64 KiB), so
#: a subscriber's pull crosses a segment boundary at most once every few rounds.
MAX_SEGMENT = 256 * 1024
#: Smallest segment: one page; a topic with a tiny byte limit still packs small frames.
MIN_SEGMENT = 4096
#: Fixed bytes of one topic's bookkeeping besides its storage: the log and topic objects,
#: their small tables, the topic's entries in the broker's tables and topic index (about 700
#: bytes measured with ``tracemalloc`` on CPython 3.11, rounded up). A placeholder (an empty
#: topic) costs this alone; part of :attr:`TopicLog.memory`.
TOPIC_OVERHEAD = 1024
#: Bytes one segment costs besides its contents: its header (57 for a ``bytearray``, 33 for
#: ``bytes``), its slot and its end as int objects (28 each), and its entries in the segment
#: and end tables, up to about 50 each just after a table grew (``sys.getsizeof``, CPython
#: 3.11; ``test_the_accounted_memory_covers_hundreds_of_segments`` checks the sum).
_SEGMENT_OVERHEAD = 224
#: Bytes of an empty ``array("Q")`` (``sys.getsizeof``, CPython 3.11).
_ARRAY_HEADER = 80
#: The storage of a log nothing was appended to yet, shared by every such log and never
#: written: :meth:`TopicLog.append` replaces it before the first write.
_NO_ITEMS = array("Q")
_NO_SEGMENTS: dict[int, bytearray | bytes] = {}
_NO_ENDS: dict[int, int] = {}
#: Dead array entries tolerated before compaction (below this, never compact).
_COMPACT_MIN = 1024
_MESSAGE = int(FrameType.MESSAGE)
_MESSAGE_BATCH = int(FrameType.MESSAGE_BATCH)


def segment_size_for(max_bytes: int) -> int:
    """The segment size for a topic holding at most ``max_bytes`` of frames: an eighth of
    it, between one page and :data:`MAX_SEGMENT`, so that the last, partly filled segment
    adds at most an eighth to the history's memory."""
    return max(MIN_SEGMENT, min(MAX_SEGMENT, max_bytes // 8))


class TopicLog:
    """One epoch of one topic: sequences ``oldest..head`` and their frames.

    ``append`` takes frames the codec built (``body_to_message`` and friends); nothing is
    re-validated. Sequence arguments must lie in ``oldest..head``; the methods do not check
    (they sit on the hot path), :mod:`pushwire.protocol.delivery` keeps to the range.
    """

    __slots__ = (
        "_cum",
        "_cur",
        "_cur_slot",
        "_ends",
        "_f0",
        "_first_slot",
        "_frames",
        "_seg",
        "_segs",
        "_seq0",
        "_starts",
        "_tail",
        "_total",
        "epoch",
        "frame_bytes",
        "frames_appended",
        "head",
        "max_bytes",
        "max_count",
        "max_payload",
        "oldest",
        "segment_bytes",
    )

    def __init__(
        self,
        epoch: int,
        *,
        max_count: int,
        max_bytes: int,
        segment_size: int | None = None,
        first_seq: int = 1,
    ) -> None:
        """``first_seq``: the sequence the first append gets (a log that mirrors a history
        kept elsewhere may begin in the middle of an epoch)."""
        if max_count < 1 or max_bytes < 1 or first_seq < 1:
            raise ValueError("max_count, max_bytes and first_seq must be at least 1")
        self.epoch = epoch
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.head = first_seq - 1  # last sequence appended (first_seq - 1: none yet)
        self.oldest = first_seq  # oldest retained sequence (head + 1 when empty)
        self.frame_bytes = 0  # bytes of retained frames: what max_bytes limits
        self.segment_bytes = 0  # bytes of live segments: what the log really holds
        self.frames_appended = 0
        self.max_payload = 0  # largest frame length field in this epoch (never decreases)
        self._seg = segment_size or segment_size_for(max_bytes)
        # the arrays and tables are the shared placeholders until the first append
        self._starts = _NO_ITEMS
        self._seq0 = first_seq  # sequence of _starts[0]
        self._frames = _NO_ITEMS  # first sequence of each frame
        self._cum = _NO_ITEMS  # bytes of every frame appended before each frame
        self._total = 0  # bytes of every frame appended in this epoch
        self._f0 = 0  # index in _frames of the oldest retained frame
        self._segs = _NO_SEGMENTS
        self._ends = _NO_ENDS  # slot -> end position, for sealed and own segments
        self._first_slot = 0  # every slot below this one is freed
        self._tail = 0  # position of the next byte
        self._cur: bytearray | None = None  # the shared segment being filled
        self._cur_slot = -1

    # -- writing -----------------------------------------------------------------------------

    def append_push(self, flags: int, body: bytes | memoryview, count: int = 0) -> int:
        """Append the push of a publish body (``body`` after the request_id, see
        :func:`codec.body_to_message`): a MESSAGE, or with ``count`` a MESSAGE_BATCH of
        that many records. The frame is written straight into the segment when it fits
        one, so no intermediate bytes object exists. Returns the first sequence."""
        size = codec.PUSH_OVERHEAD + len(body)
        first = self.head + 1
        cur = self._cur
        pos = self._tail
        type_ = _MESSAGE_BATCH if count else _MESSAGE
        if cur is None or size > self._seg >> 2 or pos + size > (self._cur_slot + 1) * self._seg:
            if count:
                frame = codec.body_to_message_batch(flags, body, self.epoch, first)
            else:
                frame = codec.body_to_message(flags, body, self.epoch, first)
            return self.append(frame, count or 1)
        codec.push_into(
            cur, pos - self._cur_slot * self._seg, type_, flags, self.epoch, first, body
        )
        self._tail = pos + size
        if count:
            self._starts.fromlist([pos] * count)
            self.head = first + count - 1
        else:
            self._starts.append(pos)
            self.head = first
        self._frames.append(first)
        self._cum.append(self._total)
        self._total += size
        self.frame_bytes += size
        self.frames_appended += 1
        if size - HEADER_SIZE > self.max_payload:
            self.max_payload = size - HEADER_SIZE
        if self.head - self.oldest + 1 > self.max_count or self.frame_bytes > self.max_bytes:
            self._trim()
        return first

    def append_pushes(self, flags: int, data: memoryview, spans: list[tuple[int, int, int]]) -> int:
        """:meth:`append_push` of ``data[start:end]`` with ``count`` for each (start, end,
        count), in order: what one read of a publisher's socket holds for this topic.
        Returns the first sequence. The log ends exactly as :meth:`append_push` publish by
        publish would leave it (trimming included, whose hysteresis makes the moment
        matter); only the per-call overhead is gone."""
        if self._segs is _NO_SEGMENTS:
            self._own_storage()  # before the arrays are taken in hand below
        first = self.head + 1
        seg = self._seg
        quarter = seg >> 2
        starts, frames, cum = self._starts, self._frames, self._cum
        push_into, overhead = codec.push_into, codec.PUSH_OVERHEAD
        epoch, max_count, max_bytes = self.epoch, self.max_count, self.max_bytes
        for start, end, count in spans:
            size = overhead + end - start
            pos = self._tail
            cur = self._cur
            if cur is None or size > quarter or pos + size > (self._cur_slot + 1) * seg:
                self.append_push(flags, data[start:end], count)
                continue
            seq = self.head + 1
            if count:
                push_into(
                    cur, pos - self._cur_slot * seg, _MESSAGE_BATCH, flags, epoch, seq,
                    data[start:end],
                )  # fmt: skip
                starts.fromlist([pos] * count)
                self.head = seq + count - 1
            else:
                push_into(
                    cur, pos - self._cur_slot * seg, _MESSAGE, flags, epoch, seq, data[start:end]
                )
                starts.append(pos)
                self.head = seq
            self._tail = pos + size
            frames.append(seq)
            cum.append(self._total)
            self._total += size
            self.frame_bytes += size
            self.frames_appended += 1
            if size - HEADER_SIZE > self.max_payload:
                self.max_payload = size - HEADER_SIZE
            if self.head - self.oldest >= max_count or self.frame_bytes > max_bytes:
                self._trim()  # where append_push trims: the hysteresis makes it matter
        return first

    def append(self, frame: bytes, count: int = 1) -> int:
        """Store ``frame`` (a MESSAGE, or a MESSAGE_BATCH of ``count`` records) as the next
        ``count`` sequences; returns the first. Trims what the limits no longer allow."""
        if self._segs is _NO_SEGMENTS:
            self._own_storage()
        size = len(frame)
        seg = self._seg
        pos = self._tail
        cur = self._cur
        if size > seg >> 2:  # a segment of its own, exactly its size
            if cur is not None:
                self._seal(pos)
                pos = (self._cur_slot + 1) * seg
                self._cur = None
            slot = pos // seg
            self._segs[slot] = frame
            self._ends[slot] = pos + size
            self._tail = pos + -(-size // seg) * seg  # the next frame opens a fresh slot
            self.segment_bytes += size
        else:
            if cur is None or pos + size > (self._cur_slot + 1) * seg:
                if cur is not None:
                    self._seal(pos)
                    pos = (self._cur_slot + 1) * seg
                cur = self._cur = bytearray(seg)
                self._cur_slot = slot = pos // seg
                self._segs[slot] = cur
                self.segment_bytes += seg
            offset = pos - self._cur_slot * seg
            cur[offset : offset + size] = frame  # same length: the bytearray is not resized
            self._tail = pos + size
        first = self.head + 1
        if count == 1:
            self._starts.append(pos)
        else:
            self._starts.fromlist([pos] * count)
        self._frames.append(first)
        self._cum.append(self._total)
        self._total += size
        self.head = first + count - 1
        self.frame_bytes += size
        self.frames_appended += 1
        if size - HEADER_SIZE > self.max_payload:
            self.max_payload = size - HEADER_SIZE
        if self.head - self.oldest + 1 > self.max_count or self.frame_bytes > self.max_bytes:
            self._trim()
        return first

    def _own_storage(self) -> None:
        """Replace the shared placeholders before the first frame is written."""
        self._starts = array("Q")
        self._frames = array("Q")
        self._cum = array("Q")
        self._segs = {}
        self._ends = {}

    def _seal(self, end: int) -> None:
        """The current segment takes no more frames; its bytes end at ``end``. A segment
        less than three quarters full (a large frame came early) is replaced by an exact
        copy, so every sealed segment is at least three quarters used: memoryviews already
        handed out keep the old one alive until their send is over, nothing else does."""
        slot = self._cur_slot
        self._ends[slot] = end
        used = end - slot * self._seg
        if used < self._seg - (self._seg >> 2):
            cur = self._segs[slot]
            self._segs[slot] = bytes(cur[:used])
            self.segment_bytes -= len(cur) - used

    def append_cost(self, size: int) -> int:
        """At most how many bytes :attr:`memory` grows by when a frame of ``size`` bytes is
        appended (before any trimming): the frame, a fresh segment it may open, and the
        arrays' growth (which over-allocate by about an eighth)."""
        arrays = 8 * (len(self._starts) + len(self._frames)) // 4 + 64
        return size + self._seg + arrays + _SEGMENT_OVERHEAD

    def shed(self, nbytes: int) -> int:
        """Drop the oldest frames holding at least ``nbytes`` bytes of frames (never the
        newest frame), for a memory budget wider than this topic. Returns the bytes of
        :attr:`memory` freed: nothing while the dropped frames share a segment with a
        retained one."""
        if self.frames <= 1 or nbytes <= 0:
            return 0
        before = self.memory
        self._trim_to(self.max_count, max(0, self.frame_bytes - nbytes))
        return before - self.memory

    def _trim(self) -> None:
        """Drop the oldest frames until both limits hold, and then on to 1/64 below them
        (hysteresis: a full log trims once per 1/64 of its size, not at every append)."""
        self._trim_to(
            self.max_count - (self.max_count >> 6), self.max_bytes - (self.max_bytes >> 6)
        )

    def _trim_to(self, max_count: int, max_bytes: int) -> None:
        frames = self._frames
        starts = self._starts
        cum = self._cum
        last = len(frames) - 1
        # the first frame from which on both limits hold: two binary searches, however
        # many frames go (both arrays grow monotonically), never the newest frame
        f0 = max(
            bisect_left(frames, self.head - max_count + 1, self._f0, last),
            bisect_left(cum, self._total - max_bytes, self._f0, last),
        )
        self._f0 = f0
        self.oldest = frames[f0]
        self.frame_bytes = self._total - cum[f0]
        # free every segment that lies wholly before the oldest retained frame
        live = starts[self.oldest - self._seq0] // self._seg
        while self._first_slot < live:
            buf = self._segs.pop(self._first_slot, None)
            if buf is not None:
                self.segment_bytes -= len(buf)
            self._ends.pop(self._first_slot, None)
            self._first_slot += 1
        if f0 > _COMPACT_MIN and f0 * 2 > len(frames):
            del frames[:f0]
            del cum[:f0]
            self._f0 = 0
        dead = self.oldest - self._seq0
        if dead > _COMPACT_MIN and dead * 2 > len(starts):
            del starts[:dead]
            self._seq0 = self.oldest

    # -- reading -----------------------------------------------------------------------------

    def _end_of(self, i: int) -> int:
        """End position of the frame whose *last* sequence has index ``i`` in ``starts``."""
        starts = self._starts
        start = starts[i]
        if i + 1 < len(starts):
            nxt = starts[i + 1]
            if nxt // self._seg == start // self._seg:
                return nxt
            return self._ends[start // self._seg]
        end = self._ends.get(start // self._seg)
        return self._tail if end is None else end

    def is_frame_start(self, seq: int) -> bool:
        i = seq - self._seq0
        return seq == self.oldest or self._starts[i - 1] != self._starts[i]

    def is_frame_end(self, seq: int) -> bool:
        i = seq - self._seq0
        return seq == self.head or self._starts[i + 1] != self._starts[i]

    def frame_first(self, seq: int) -> int:
        """First sequence of the frame holding ``seq``."""
        k = bisect_right(self._frames, seq, self._f0) - 1
        return self._frames[k]

    def frame_last(self, seq: int) -> int:
        """Last sequence of the frame holding ``seq``."""
        k = bisect_right(self._frames, seq, self._f0)
        return self._frames[k] - 1 if k < len(self._frames) else self.head

    def frame(self, seq: int) -> tuple[int, int, memoryview]:
        """(first sequence, record count, the whole frame) of the frame holding ``seq``."""
        first = self.frame_first(seq)
        last = self.frame_last(seq)
        (view,) = self.slices(first, last)
        return first, last - first + 1, view

    def size(self, lo: int, hi: int) -> int:
        """Bytes of ``slices(lo, hi)`` plus unused segment tails in between (an upper bound
        used for budgeting, exact within one segment)."""
        return self._end_of(hi - self._seq0) - self._starts[lo - self._seq0]

    def last_within(self, lo: int, hi: int, room: int) -> int:
        """The last sequence in ``lo..hi`` whose frame starts less than ``room`` bytes after
        ``lo``'s: how far one round may go on a byte budget (at least ``lo``)."""
        starts = self._starts
        i = lo - self._seq0
        j = bisect_left(starts, starts[i] + room, i, hi - self._seq0 + 1)
        return max(lo, self._seq0 + j - 1)

    def slices(self, lo: int, hi: int) -> list[memoryview]:
        """The bytes of sequences ``lo..hi``, which must begin and end on frame boundaries:
        one memoryview per segment touched, sharing the log's memory (no copy)."""
        seg = self._seg
        a = self._starts[lo - self._seq0]
        z = self._end_of(hi - self._seq0)
        slot = a // seg
        base = slot * seg
        if z - base <= seg:
            return [memoryview(self._segs[slot])[a - base : z - base]]
        out = []
        while a < z:
            slot = a // seg
            base = slot * seg
            end = self._ends.get(slot)
            end = z if end is None or end > z else end
            out.append(memoryview(self._segs[slot])[a - base : end - base])
            a = -(-end // seg) * seg
        return out

    # -- accounting --------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Messages retained."""
        return self.head - self.oldest + 1

    @property
    def frames(self) -> int:
        """Frames retained."""
        return len(self._frames) - self._f0

    @property
    def placeholder(self) -> bool:
        """Nothing was ever appended: the log owns no storage yet."""
        return self._segs is _NO_SEGMENTS

    @property
    def held(self) -> int:
        """An upper bound of :attr:`memory` for running totals, a few ``len`` calls instead
        of ``sys.getsizeof``: the arrays at twice their length, which their allocation never
        exceeds (CPython grows an array by about a sixteenth and reallocates it when it
        shrinks below half, as compaction makes it)."""
        if self._segs is _NO_SEGMENTS:
            return TOPIC_OVERHEAD
        return (
            self.segment_bytes
            + ((len(self._starts) + len(self._frames) + len(self._cum)) << 4)
            + 3 * (_ARRAY_HEADER + 64)  # and up to 8 spare items each while small
            + len(self._segs) * _SEGMENT_OVERHEAD
            + TOPIC_OVERHEAD
        )

    @property
    def memory(self) -> int:
        """Bytes this log holds: segments, arrays (allocated size) and fixed overhead; a
        placeholder holds the overhead alone (its storage is shared)."""
        if self._segs is _NO_SEGMENTS:
            return TOPIC_OVERHEAD
        return (
            self.segment_bytes
            + sys.getsizeof(self._starts)  # includes the allocated, not just used, items
            + sys.getsizeof(self._frames)
            + sys.getsizeof(self._cum)
            + len(self._segs) * _SEGMENT_OVERHEAD
            + TOPIC_OVERHEAD
        )
