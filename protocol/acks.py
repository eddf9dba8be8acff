"""When an at-least-once subscription acknowledges, and what (SPEC.md §8.3, §8.9).

Theory of operation
-------------------
ACK(sub_id, seq) says "everything of this epoch up to seq is processed". What ``seq`` may be
is fixed by the rules: the last sequence the application processed, a gap it was told
about counting as processed (PW-CLIENT-10), never beyond what the server pushed, never
backwards, never a sequence of another epoch (PW-ACK-1, PW-ACK-6, PW-RESUME-4). *When* to
send it is a list of moments, each with the rule that asks for it:

* ``GRANT``: credit is granted back, at least one ACK per grant (PW-ACK-7), so the server's
  window and its view of what is processed move together;
* ``IDLE``: the application asks for more and nothing is buffered: the stream paused, so
  everything processed is acknowledged now rather than at a grant that may never come
  (PW-CLIENT-11);
* ``TICK``: the heartbeat timer, which wakes at least once per heartbeat interval H (it
  runs until the next PING is due, and a PING is due H after the last frame sent): an
  application that holds one message for longer than H while others wait in the buffer
  still has what it processed before acknowledged within H (PW-CLIENT-11);
* ``GOAWAY``, ``UNSUBSCRIBE`` and ``CLOSE``: what was processed is acknowledged before the
  connection or the subscription goes (PW-GOAWAY-12, PW-ACK-7).

Every moment has the same answer, :func:`plan_ack`: the processed position when it is ahead
of the last ACK and within what was pushed, else nothing. Coalescing comes from how rarely
the moments occur (a grant per half window, a tick per interval), not from the answer.
The shell reports moments and sends what comes back; it holds no rule of its own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["AckMoment", "AckView", "plan_ack"]


class AckMoment(enum.Enum):
    """The moments at which a client acknowledges (see the module docstring)."""

    GRANT = "credit granted back"  # PW-ACK-7
    IDLE = "nothing buffered, the application waits"  # PW-CLIENT-11
    TICK = "heartbeat timer"  # PW-CLIENT-11
    GOAWAY = "the server is going away"  # PW-GOAWAY-12
    UNSUBSCRIBE = "the subscription ends"  # PW-ACK-7
    CLOSE = "the client closes the connection"  # PW-ACK-7, before its GOAWAY (PW-GOAWAY-8)


@dataclass(frozen=True, slots=True)
class AckView:
    """The connection machine's view of one at-least-once subscription: its epoch, the
    last sequence acknowledged and the last pushed (a MESSAGE, a record or a GAP)."""

    epoch: int
    last_acked: int
    last_delivered: int


def plan_ack(
    moment: AckMoment, processed: tuple[int, int] | None, view: AckView | None
) -> int | None:
    """The sequence to acknowledge at ``moment``, or None.

    ``processed`` is (epoch, seq) of the last message or reported gap the application is
    done with; ``view`` is None when the subscription is not active on this connection
    (not yet confirmed, being unsubscribed, or gone). Sequences of two epochs are never
    compared: after an epoch change nothing is acknowledged until the application has
    processed something of the new epoch.
    """
    del moment  # every moment asks for everything processed (module docstring)
    if processed is None or view is None:
        return None
    epoch, seq = processed
    if epoch != view.epoch or not view.last_acked < seq <= view.last_delivered:
        return None
    return seq
