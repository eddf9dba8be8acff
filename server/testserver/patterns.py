"""Scenarios for clients that subscribe to patterns (SPEC.md §6.7).

A pattern scenario's client subscribes to ``conformance/<scenario>/+`` with flag PATTERN;
the script then pushes two or three topics the pattern matches (``.../eu``, ``.../us``,
``.../uk``), each with its own epoch and sequence numbers, interleaved, and a topic's loss
or restart as a SUBSCRIBED with flag TOPIC_STATUS naming that topic. What the application
must see is stated per topic (``Scenario.app_topics``): between topics no order is
promised (PW-ORDER-15), so the client output contract is compared topic by topic.

A client that does not subscribe to patterns cannot take part: with ``--client-command``
these scenarios are n/a unless the command has a ``{pattern}`` placeholder, and
``--no-patterns`` makes them n/a in every case.
"""

from __future__ import annotations

from typing import Any

from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import Outcome
from pushwire.server.testserver.results import ScenarioRun
from pushwire.server.testserver.script import PATTERN_SUFFIX, Ctx, Scenario

AppTopics = dict[str, list[tuple[Any, ...]]]


def _topic(c: Ctx | ScenarioRun, leaf: str) -> str:
    run = c.run if isinstance(c, Ctx) else c
    return run.scenario.topic.removesuffix(PATTERN_SUFFIX) + "/" + leaf


def _msgs(seqs: range) -> list[tuple[Any, ...]]:
    return [("msg", s) for s in seqs]


async def _opened(c: Ctx) -> bool:
    """The first reply to a pattern SUBSCRIBE: outcome NEW with zeros (PW-RESUME-5). A
    SUBSCRIBE without flag PATTERN is answered the same way, but fails the scenario."""
    c.run.check(
        f"the client subscribes to {c.sub.topic!r} with flag PATTERN",
        ("PW-TOPIC-8", "PW-SUB-22"),
        c.sub.is_pattern,
        "" if c.sub.is_pattern else "SUBSCRIBE without PATTERN",
    )
    return await c.peer.send(F.Subscribed(c.sub.sub_id, Outcome.NEW, 0, 0, 0))


async def _status(
    c: Ctx,
    leaf: str,
    outcome: Outcome,
    epoch: int,
    start: int,
    head: int,
    gap: tuple[int, int, int] | None = None,
) -> None:
    """SUBSCRIBED(TOPIC_STATUS) for one topic of the pattern; it costs no credit."""
    first, last, reason = gap or (0, 0, 0)
    topic = _topic(c, leaf)
    frame = F.Subscribed(c.sub.sub_id, outcome, epoch, start, head, first, last, reason, topic)
    await c.peer.send(frame)


async def _deliver(
    c: Ctx, leaf: str, seqs: range, *, epoch: int | None = None, reqs: tuple[str, ...] = ()
) -> bool:
    """MESSAGEs of one topic within the subscription's one credit pool (PW-FLOW-9). When
    the client closes first, that fails ``reqs`` (the rules that make these pushes valid)."""
    sid = c.sub.sub_id
    ok = await c.peer.deliver(
        sid, c.epoch(leaf) if epoch is None else epoch, _topic(c, leaf), seqs, timeout=c.timeout
    )
    if ok:
        return True
    if c.peer.closed_at is not None:
        c.run.check(
            "the client stays connected through valid pushes of a pattern subscription",
            ("PW-SUB-29", "PW-ORDER-15", *reqs),
            False,
            f"closed before {leaf} {seqs.start}..{seqs.stop - 1}; its ERROR: {c.peer.client_error}",
        )
    else:
        c.run.check(
            "the client grants more credit as it consumes (one pool for every topic)",
            ("PW-FLOW-7", "PW-FLOW-9"),
            False,
            f"stalled before {leaf} {seqs.start} with credit 0",
            level="SHOULD",
        )
    c.run.finish()
    return False


async def _interleaved(c: Ctx, runs: list[tuple[str, range]]) -> bool:
    for leaf, seqs in runs:
        if not await _deliver(c, leaf, seqs):
            return False
    return True


async def _match(c: Ctx) -> None:
    """eu and us, each numbered from 1 in its own epoch, one message at a time by turns:
    a client that numbers the subscription instead of each topic closes at us 1."""
    await _opened(c)
    if await _interleaved(c, [(leaf, range(s, s + 1)) for s in (1, 2, 3) for leaf in ("eu", "us")]):
        await c.finish_ok(0)


async def _hole(c: Ctx) -> None:
    """eu 1..3 and us 1..2 by turns, then us 4: no TOPIC_STATUS says us 3 is gone."""
    await _opened(c)
    runs = [(leaf, range(s, s + 1)) for s in (1, 2) for leaf in ("eu", "us")]
    if await _interleaved(c, [*runs, ("eu", range(3, 4)), ("us", range(4, 5))]):
        await c.expect_error_close(ErrorCode.PROTOCOL_ERROR, ("PW-ORDER-15", "PW-ORDER-7"))


#: pattern-resume, connection 1: the topics and how many messages each gets.
RESUME_FIRST = {"eu": 3, "us": 2, "uk": 2}


async def _resume(c: Ctx) -> None:
    """Connection 1: eu 1..3, us 1..2, uk 1..2, then the connection drops. Connection 2
    must list each of the three in ``positions``; the answers are one outcome per topic,
    in the order of the list: eu RECOVERED, us GAP 3..4, uk EPOCH_CHANGED."""
    if c.attempt == 1:
        await _opened(c)
        runs = [(leaf, range(1, n + 1)) for leaf, n in RESUME_FIRST.items()]
        if not await _interleaved(c, runs):
            return
        await c.peer.settle(c.sub.sub_id, c.timeout)
        await c.peer.close()
        c.server.expect_reconnect(c.run, c.timeout + c.server.reconnect_wait, reqs=("PW-RESUME-6",))
        return
    await _opened(c)
    listed = [(p.topic, p.epoch, p.seq) for p in c.sub.positions or ()]
    want = sorted((_topic(c, leaf), c.epoch(leaf), n) for leaf, n in RESUME_FIRST.items())
    ok = c.run.check(
        "the resuming SUBSCRIBE lists each topic seen, once, at its last position",
        ("PW-RESUME-6",),
        sorted(listed) == want,
        f"positions {listed}",
    )
    if not ok:
        c.run.finish()
        return
    outcomes = {
        "eu": (Outcome.RECOVERED, c.epoch("eu"), 4, 5, None),
        "us": (Outcome.GAP, c.epoch("us"), 5, 6, (3, 4, ErrorCode.HISTORY_EXPIRED)),
        "uk": (Outcome.EPOCH_CHANGED, c.epoch("uk-new"), 1, 2, None),
    }
    for topic, _, _ in listed:
        leaf = topic.rpartition("/")[2]
        outcome, epoch, start, head, gap = outcomes[leaf]
        await _status(c, leaf, outcome, epoch, start, head, gap)
    reqs = ("PW-RESUME-2", "PW-RESUME-3")
    for leaf, seqs, key in (
        ("eu", range(4, 6), "eu"),
        ("us", range(5, 7), "us"),
        ("uk", range(1, 3), "uk-new"),
    ):
        if not await _deliver(c, leaf, seqs, epoch=c.epoch(key), reqs=reqs):
            return
    await c.finish_ok(0)


async def _live_status(c: Ctx) -> None:
    """A skip in eu (TOPIC_STATUS GAP 4..6, SLOW_CONSUMER) and a reset of us (TOPIC_STATUS
    EPOCH_CHANGED), each told for its topic alone while the other goes on."""
    await _opened(c)
    runs = [(leaf, range(s, s + 1)) for s in (1, 2) for leaf in ("eu", "us")]
    if not await _interleaved(c, [*runs, ("eu", range(3, 4))]):
        return
    await _status(c, "eu", Outcome.GAP, c.epoch("eu"), 7, 8, (4, 6, ErrorCode.SLOW_CONSUMER))
    reqs = ("PW-RESUME-6", "PW-RESUME-2", "PW-RESUME-3")
    if not await _deliver(c, "eu", range(7, 9), reqs=reqs):
        return
    if not await _deliver(c, "us", range(3, 4)):
        return
    await _status(c, "us", Outcome.EPOCH_CHANGED, c.epoch("us-new"), 1, 2)
    if await _deliver(c, "us", range(1, 3), epoch=c.epoch("us-new"), reqs=reqs) and await _deliver(
        c, "eu", range(9, 10), reqs=reqs
    ):
        await c.finish_ok(0)


def _app_resume(r: ScenarioRun) -> AppTopics:
    return {
        _topic(r, "eu"): _msgs(range(1, 6)),
        _topic(r, "us"): [*_msgs(range(1, 3)), ("gap", 3, 4), *_msgs(range(5, 7))],
        _topic(r, "uk"): [*_msgs(range(1, 3)), ("epoch",), *_msgs(range(1, 3))],
    }


PATTERN_SCENARIOS = (
    Scenario(
        "pattern-match",
        "A pattern subscription: messages of two topics by turns, each numbered from 1",
        ("PW-SUB-29", "PW-ORDER-15", "PW-FLOW-9"),
        "subscribe with flag PATTERN; check contiguity per topic, not per subscription; "
        "deliver eu 1..3 and us 1..3 with their topics",
        "eu messages 1..3 and us messages 1..3, each topic in order",
        _match,
        pattern=True,
        app_topics=lambda r: {
            _topic(r, "eu"): _msgs(range(1, 4)),
            _topic(r, "us"): _msgs(range(1, 4)),
        },
    ),
    Scenario(
        "pattern-hole",
        "A pattern subscription: eu 1..3 and us 1..2, then us 4 without a TOPIC_STATUS",
        ("PW-ORDER-15", "PW-ORDER-7"),
        "ERROR(PROTOCOL_ERROR), then close: a hole in one topic is a hole, whatever the "
        "other topics do",
        "eu messages 1..3, us messages 1..2, then a connection error (never us 4)",
        _hole,
        pattern=True,
        app_topics=lambda r: {
            _topic(r, "eu"): _msgs(range(1, 4)),
            _topic(r, "us"): [*_msgs(range(1, 3)), ("error",)],
        },
    ),
    Scenario(
        "pattern-resume",
        "A pattern subscription dropped after three topics; the resume gets one outcome per "
        "topic: RECOVERED, GAP, EPOCH_CHANGED",
        ("PW-RESUME-6", "PW-RESUME-2", "PW-RESUME-3"),
        "reconnect and resubscribe to the pattern listing every topic seen at its last "
        "position; report the gap of us and the epoch change of uk, each for its topic",
        "eu 1..5; us 1..2, gap 3..4, 5..6; uk 1..2, epoch change, 1..2",
        _resume,
        pattern=True,
        app_topics=_app_resume,
    ),
    Scenario(
        "pattern-status",
        "A pattern subscription: TOPIC_STATUS GAP for eu, later TOPIC_STATUS EPOCH_CHANGED "
        "for us, while the other topic goes on",
        ("PW-RESUME-6", "PW-RESUME-2", "PW-RESUME-3"),
        "report the gap of eu and the epoch change of us to the application, each for its "
        "topic, and go on with both",
        "eu 1..3, gap 4..6, 7..9; us 1..3, epoch change, 1..2",
        _live_status,
        pattern=True,
        app_topics=lambda r: {
            _topic(r, "eu"): [*_msgs(range(1, 4)), ("gap", 4, 6), *_msgs(range(7, 10))],
            _topic(r, "us"): [*_msgs(range(1, 4)), ("epoch",), *_msgs(range(1, 3))],
        },
    ),
)
