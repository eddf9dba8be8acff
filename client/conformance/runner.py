"""Run conformance cases against a target reached over TCP.

Theory of operation: every case gets a :class:`CaseContext` that opens *fresh* connections
(nothing is shared between cases except memoised observations that are expensive or
destructive, such as the one server shutdown), topic names unique to the run and the case
(so cases never see each other's messages and the run can be repeated against a server that
keeps history), and helpers that turn "publish these, subscribe like that" into frames.

Time is bounded three ways: every wait for an answer has ``target.timeout``; every case has
a hard limit of a few timeouts plus what it declares it needs (heartbeat waits, the server's
handshake timeout); and the kit publishes at most ``target.max_publish`` messages to
discover a server's history window. A case that hits its hard limit fails with the step it
was waiting for.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from pushwire.client.conformance import wire
from pushwire.client.conformance.registry import CATEGORIES, REGISTRY, Case
from pushwire.client.conformance.wire import (
    EOF,
    RESET,
    CaseFailed,
    Closed,
    NotApplicable,
    WireConnection,
    describe,
)
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.layouts import SinceKind
from pushwire.protocol.testing.model import Result, Status


def _batch_size(batch: F.PublishBatch) -> int:
    return codec.payload_size(codec.encode_frame(batch))


#: Room a PUBLISH_BATCH body needs besides its records, with the longest topic there is.
_BATCH_OVERHEAD = _batch_size(F.PublishBatch(0, "t" * 255, ()))
#: What each record adds to a PUBLISH_BATCH body besides its payload.
_RECORD_OVERHEAD = _batch_size(F.PublishBatch(0, "", (F.Record(b""),))) - _batch_size(
    F.PublishBatch(0, "", ())
)


@dataclass
class Target:
    """The implementation under test and how to talk to it."""

    host: str
    port: int
    token: bytes = b""
    #: Seconds to wait for any one expected answer.
    timeout: float = 3.0
    #: Seconds of silence that count as "nothing more comes" (credit, unsubscribe...).
    quiet: float = 0.3
    #: The server's handshake timeout, if the operator knows it (PW-HS handshake case).
    handshake_timeout: float = 10.0
    #: Most messages the kit publishes in one case to push history out of a window.
    max_publish: int = 50_000
    #: Seconds a draining server may keep a connection open after GOAWAY.
    drain_timeout: float = 10.0
    #: Triggers a graceful shutdown of the target (GOAWAY) and returns once it is over,
    #: with the server's exit status (0 or None: clean); None makes shutdown cases n/a.
    shutdown: Callable[[], Awaitable[int | None]] | None = None
    #: Resets a topic's history so it gets a new epoch (``await reset(topic)``); None: n/a.
    reset: Callable[[str], Awaitable[None]] | None = None
    #: The server's configured connection limit, if the operator tells it.
    max_connections: int | None = None
    #: A topic the token may neither subscribe to nor publish on, if the operator has one.
    forbidden_topic: str | None = None
    #: Topic names used by the run start with this (unique per run by default).
    topic_prefix: str = ""
    #: Heartbeat interval the kit asks for in HELLO for the heartbeat cases (0: default).
    heartbeat_ms: int = 1000

    def __post_init__(self) -> None:
        if not self.topic_prefix:
            self.topic_prefix = f"conformance/{os.urandom(4).hex()}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class RunState:
    """Per-run memo: observations that several cases judge but only one may cause."""

    memo: dict[str, Any] = field(default_factory=dict)
    lock: trio.Lock = field(default_factory=trio.Lock)


@dataclass(frozen=True, slots=True)
class Delivered:
    """One message as a subscriber saw it (records of a batch are expanded)."""

    epoch: int
    seq: int
    payload: bytes
    headers: F.Headers | None
    batched: bool = False


class CaseContext:
    """The toolbox a case function gets. See the module docstring."""

    def __init__(self, target: Target, case: Case, run: RunState) -> None:
        self.target = target
        self.case = case
        self.run = run
        self.notes: list[str] = []
        self._connections: list[WireConnection] = []
        self._publisher: WireConnection | None = None
        self._next_request_id = 1
        self._topic_counter = 0
        self._scope: trio.CancelScope | None = None
        self._probe_sub = 1000
        self._probe: WireConnection | None = None

    @property
    def timeout(self) -> float:
        return self.target.timeout

    @property
    def quiet(self) -> float:
        return self.target.quiet

    def allow(self, seconds: float) -> None:
        """Extend this case's hard limit to at least ``seconds`` from now (for waits that
        depend on what the server announced, like its heartbeat interval)."""
        if self._scope is not None:
            self._scope.deadline = max(self._scope.deadline, trio.current_time() + seconds)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def topic(self, name: str = "t") -> str:
        """A topic no other case (and no earlier run) uses."""
        self._topic_counter += 1
        case_part = self.case.id.lower()
        return f"{self.target.topic_prefix}/{case_part}/{name}{self._topic_counter}"

    # -- connections -----------------------------------------------------------------------
    async def open(self) -> WireConnection:
        """A TCP connection with nothing sent yet."""
        try:
            conn = await WireConnection.open(
                self.target.host, self.target.port, timeout=self.timeout
            )
        except (OSError, trio.TooSlowError) as exc:
            raise CaseFailed(
                f"a TCP connection to {self.target.address}", f"connect failed: {exc}"
            ) from exc
        self._connections.append(conn)
        return conn

    async def connect(self, **hello: Any) -> WireConnection:
        """A connection past the handshake (preface, HELLO, WELCOME)."""
        conn = await self.open()
        hello.setdefault("auth_token", self.target.token)
        await conn.handshake(**hello)
        return conn

    async def close_all(self) -> None:
        for conn in self._connections:
            await conn.aclose()
        self._connections.clear()
        self._publisher = None

    # -- publishing ------------------------------------------------------------------------
    def request_id(self) -> int:
        rid = self._next_request_id
        self._next_request_id += 1
        return rid

    async def publisher(self) -> WireConnection:
        if self._publisher is None or self._publisher.closed is not None:
            self._publisher = await self.connect()
        return self._publisher

    async def publish(
        self,
        topic: str,
        payloads: Sequence[bytes],
        *,
        headers: F.Headers | None = None,
        conn: WireConnection | None = None,
    ) -> tuple[int, list[int]]:
        """Publish one PUBLISH per payload and wait for every PUBACK: (epoch, seqs)."""
        pub = conn or await self.publisher()
        ids = [self.request_id() for _ in payloads]
        await pub.send(
            *(F.Publish(rid, topic, p, headers) for rid, p in zip(ids, payloads, strict=True))
        )
        return await self._collect_pubacks(pub, ids, [1] * len(ids))

    async def publish_batch(
        self, topic: str, payloads: Sequence[bytes], *, conn: WireConnection | None = None
    ) -> tuple[int, list[int]]:
        """One PUBLISH_BATCH; (epoch, seqs) from its PUBACK."""
        pub = conn or await self.publisher()
        rid = self.request_id()
        await pub.send(F.PublishBatch(rid, topic, tuple(F.Record(p) for p in payloads)))
        return await self._collect_pubacks(pub, [rid], [len(payloads)])

    async def _collect_pubacks(
        self, pub: WireConnection, ids: list[int], counts: list[int]
    ) -> tuple[int, list[int]]:
        pending = dict(zip(ids, counts, strict=True))
        epoch = 0
        seqs: dict[int, list[int]] = {}
        while pending:
            obs = await pub.next_frame()
            if isinstance(obs, F.Puback) and obs.request_id in pending:
                want = pending.pop(obs.request_id)
                if obs.count != want:
                    raise CaseFailed(
                        f"PUBACK(request_id={obs.request_id}, count={want})", describe(obs)
                    )
                epoch = obs.epoch
                seqs[obs.request_id] = list(range(obs.first_seq, obs.first_seq + obs.count))
                continue
            if isinstance(obs, F.Message | F.MessageBatch | F.Gap):
                continue  # the publisher may also be a subscriber in some cases
            raise CaseFailed(f"PUBACK for request ids {sorted(pending)}", describe(obs))
        return epoch, [s for rid in ids for s in seqs[rid]]

    async def fill_topic(self, topic: str, count: int, size: int = 64) -> tuple[int, list[int]]:
        """Publish ``count`` messages quickly (batches sized to the server's frame limit)."""
        pub = await self.publisher()
        assert pub.welcome is not None
        limit = pub.welcome.max_frame_size - _BATCH_OVERHEAD
        per_batch = max(1, min(1000, limit // (size + _RECORD_OVERHEAD), 65535))
        epoch, seqs = 0, []
        left = count
        while left > 0:
            n = min(per_batch, left)
            payloads = [f"fill-{i}".encode().ljust(size, b".") for i in range(n)]
            epoch, got = await self.publish_batch(topic, payloads)
            seqs.extend(got)
            left -= n
        return epoch, seqs

    async def expire_history(self, topic: str) -> tuple[int, int, int]:
        """Publish to ``topic`` until its oldest retained message is past seq 2, so that
        positions near the start have left the history: (epoch, oldest, head).

        The window is discovered, not configured: publish, then ask with SUBSCRIBE(OLDEST,
        credit 0) where the history starts; double until it moved. The window found is
        remembered for the run, so later cases publish the right amount at once. Bounded by
        ``target.max_publish``; beyond that the case is not applicable.
        """
        known = self.run.memo.get("history-window")
        total = 0
        step = (known + known // 2 + 8) if isinstance(known, int) else 64
        while True:
            step = min(step, self.target.max_publish - total)
            if step <= 0:
                raise NotApplicable(
                    f"history still starts at seq 1 after {total} messages; raise "
                    "--max-publish to push messages out of the server's history"
                )
            await self.fill_topic(topic, step, size=256)
            total += step
            reply = await self.expire_history_probe(topic)
            if reply.start_seq > 2:
                self.run.memo["history-window"] = reply.head_seq - reply.start_seq + 1
                self.note(
                    f"history window: {reply.head_seq - reply.start_seq + 1} messages "
                    f"(found after publishing {total})"
                )
                return reply.epoch, reply.start_seq, reply.head_seq
            step = total

    async def expire_history_probe(self, topic: str) -> F.Subscribed:
        """Where ``topic``'s history starts now: SUBSCRIBE(OLDEST, credit 0) on a probe
        connection, then UNSUBSCRIBE. Returns the SUBSCRIBED reply."""
        if self._probe is None or self._probe.closed is not None:
            self._probe = await self.connect()
        probe = self._probe
        self._probe_sub += 1
        sub_id = self._probe_sub
        reply = await self.subscribe(probe, topic, sub_id=sub_id, credit=0, since=SinceKind.OLDEST)
        await probe.send(F.Unsubscribe(sub_id))
        await probe.expect(
            f"UNSUBSCRIBED(sub_id={sub_id})",
            lambda o: isinstance(o, F.Unsubscribed) and o.sub_id == sub_id,
            skip=lambda o: isinstance(o, F.Message | F.MessageBatch | F.Gap),
        )
        return reply

    # -- subscribing -----------------------------------------------------------------------
    async def subscribe(
        self,
        conn: WireConnection,
        topic: str,
        *,
        sub_id: int = 1,
        credit: int = 0xFFFF_FFFF,
        since: SinceKind = SinceKind.NEW,
        epoch: int = 0,
        seq: int = 0,
        count: int = 0,
        at_least_once: bool = False,
    ) -> F.Subscribed:
        await conn.send(
            F.Subscribe(
                sub_id=sub_id,
                topic=topic,
                since_kind=since,
                since_epoch=epoch,
                since_seq=seq,
                since_count=count,
                initial_credit=credit,
                at_least_once=at_least_once,
            )
        )
        reply = await conn.next_frame()
        if not isinstance(reply, F.Subscribed) or reply.sub_id != sub_id:
            raise CaseFailed(f"SUBSCRIBED(sub_id={sub_id}) for {topic!r}", describe(reply))
        return reply

    async def receive(
        self,
        conn: WireConnection,
        topic: str,
        count: int,
        *,
        gaps: list[F.Gap] | None = None,
        timeout: float | None = None,
    ) -> list[Delivered]:
        """The next ``count`` messages of ``topic`` (batches expanded). GAP frames go to
        ``gaps`` when given, else they fail the case; anything else fails it too."""
        out: list[Delivered] = []
        while len(out) < count:
            obs = await conn.next_frame(timeout)
            if isinstance(obs, F.Message) and obs.topic == topic:
                out.append(Delivered(obs.epoch, obs.seq, obs.payload, obs.headers))
            elif isinstance(obs, F.MessageBatch) and obs.topic == topic:
                for i, rec in enumerate(obs.records):
                    out.append(
                        Delivered(obs.epoch, obs.base_seq + i, rec.payload, rec.headers, True)
                    )
            elif isinstance(obs, F.Gap) and gaps is not None:
                gaps.append(obs)
            else:
                have = f"after {len(out)} of {count} messages: " if out else ""
                raise CaseFailed(f"{count} messages on {topic!r}", have + describe(obs))
        return out

    async def receive_seqs(
        self,
        conn: WireConnection,
        topic: str,
        seqs: Iterable[int],
        what: str,
        *,
        gaps: list[F.Gap] | None = None,
    ) -> list[Delivered]:
        """The next messages of ``topic``, which must carry exactly the sequences ``seqs``
        (as many messages as there are sequences; see :meth:`receive`)."""
        want = list(seqs)
        msgs = await self.receive(conn, topic, len(want), gaps=gaps)
        check_seqs(what, [m.seq for m in msgs], want)
        return msgs

    # -- memo ------------------------------------------------------------------------------
    async def once(self, key: str, make: Callable[[], Awaitable[Any]]) -> Any:
        """``make()`` run once per run; later callers get the same value or failure."""
        async with self.run.lock:
            if key not in self.run.memo:
                try:
                    self.run.memo[key] = ("ok", await make())
                except (CaseFailed, NotApplicable) as exc:
                    self.run.memo[key] = ("raise", exc)
            kind, value = self.run.memo[key]
        if kind == "raise":
            raise value
        return value


def check_seqs(what: str, got: Iterable[int], want: Iterable[int]) -> None:
    got, want = list(got), list(want)
    if got != want:
        raise CaseFailed(f"{what}: sequences {_ranges(want)}", f"sequences {_ranges(got)}")


def _ranges(seqs: list[int]) -> str:
    """[1,2,3,5] -> '1..3, 5' (keeps long failures readable)."""
    if not seqs:
        return "none"
    parts: list[str] = []
    start = prev = seqs[0]
    for s in seqs[1:]:
        if s == prev + 1:
            prev = s
            continue
        parts.append(f"{start}..{prev}" if prev != start else f"{start}")
        start = prev = s
    parts.append(f"{start}..{prev}" if prev != start else f"{start}")
    text = ", ".join(parts)
    return text if len(text) < 300 else text[:297] + "..."


# -- running -------------------------------------------------------------------------------


def select_cases(ids: Sequence[str] = (), categories: Sequence[str] = ()) -> list[Case]:
    """Cases in report order, filtered by ID and/or category (unknown names are errors)."""
    from pushwire.client.conformance import cases  # noqa: F401  (registers the cases)

    unknown = [i for i in ids if i not in REGISTRY]
    if unknown:
        raise KeyError(f"unknown case id(s): {', '.join(unknown)}")
    bad = [c for c in categories if c not in CATEGORIES]
    if bad:
        raise KeyError(f"unknown categories: {', '.join(bad)}")
    chosen = [
        c
        for c in REGISTRY.values()
        if (not ids or c.id in ids) and (not categories or c.category in categories)
    ]
    order = {name: i for i, name in enumerate(CATEGORIES)}
    return sorted(chosen, key=lambda c: (order[c.category], c.id))


def case_limit(case: Case, ctx: CaseContext) -> float:
    extra = case.extra_time(ctx) if case.extra_time is not None else 0.0
    return 6 * ctx.target.timeout + extra


async def run_case(target: Target, case: Case, run: RunState, *, strict: bool) -> Result:
    if case.level == "SHOULD" and not strict:
        return Result.about(case, Status.SKIPPED, detail="SHOULD case: run with --strict")
    ctx = CaseContext(target, case, run)
    missing = [n for n in sorted(case.needs) if not _has(target, n)]
    if missing:
        return Result.about(case, Status.NOT_APPLICABLE, detail=_NEEDS_HELP[missing[0]])
    started = time.monotonic()
    limit = case_limit(case, ctx)
    result: Result
    try:
        with trio.fail_after(limit) as scope:
            ctx._scope = scope
            await case.func(ctx)
        result = Result.about(case, Status.PASS)
    except CaseFailed as exc:
        result = Result.about(case, Status.FAIL, expected=exc.expected, observed=exc.observed)
    except NotApplicable as exc:
        result = Result.about(case, Status.NOT_APPLICABLE, detail=str(exc))
    except trio.TooSlowError:
        result = Result.about(
            case,
            Status.FAIL,
            expected=f"the case to finish within {limit:.1f} s",
            observed="no answer in time (the server hung or is far too slow)",
        )
    except Exception as exc:  # a bug in the kit or an unforeseen answer: report, go on
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        result = Result.about(case, Status.ERROR, observed=tb, detail=traceback.format_exc(limit=6))
    finally:
        with trio.CancelScope(shield=True):
            await ctx.close_all()
    result.duration = time.monotonic() - started
    result.notes = ctx.notes
    return result


_NEEDS_HELP = {
    "shutdown": "needs --shutdown-command (an operator action that makes the server send "
    "GOAWAY); a server cannot be asked over the wire to shut down",
    "token": "needs --token (only meaningful against a server that requires authentication)",
    "reset": "needs --reset-command (an operator action that resets a topic's history and "
    "epoch); no frame can reset a topic",
    "max-connections": "needs --max-connections N (the connection limit the server is "
    "configured with)",
    "forbidden-topic": "needs --forbidden-topic T (a topic the token is not allowed to use)",
}


def _has(target: Target, need: str) -> bool:
    return {
        "shutdown": target.shutdown is not None,
        "token": bool(target.token),
        "reset": target.reset is not None,
        "max-connections": target.max_connections is not None,
        "forbidden-topic": bool(target.forbidden_topic),
    }.get(need, False)


async def run_cases(
    target: Target,
    cases: Sequence[Case],
    *,
    strict: bool = False,
    jobs: int = 1,
    progress: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run ``cases``; ``jobs`` of them at a time, except shutdown cases, which run last and
    alone. Results come back in the order of ``cases``."""
    run = RunState()
    results: dict[str, Result] = {}
    normal = [c for c in cases if c.category != "shutdown"]
    final = [c for c in cases if c.category == "shutdown"]
    limiter = trio.CapacityLimiter(max(1, jobs))

    async def one(case: Case) -> None:
        async with limiter:
            res = await run_case(target, case, run, strict=strict)
        results[case.id] = res
        if progress is not None:
            progress(res)

    async with trio.open_nursery() as nursery:
        for c in normal:
            nursery.start_soon(one, c)
    for c in final:
        await one(c)
    return [results[c.id] for c in cases]


__all__ = [
    "EOF",
    "RESET",
    "CaseContext",
    "Closed",
    "Delivered",
    "Target",
    "case_limit",
    "check_seqs",
    "run_case",
    "run_cases",
    "select_cases",
    "wire",
]
