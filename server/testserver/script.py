"""A scenario as data plus one script, and the context a script drives a client with."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.layouts import (
    Outcome,
    SinceKind,
    SlowConsumerPolicy,
)
from pushwire.server.testserver.peer import Peer
from pushwire.server.testserver.results import ScenarioRun

if TYPE_CHECKING:
    from pushwire.server.testserver.runner import TestServer

TOPIC_PREFIX = "conformance/"
#: What a pattern scenario's subscription adds to ``conformance/<scenario>``.
PATTERN_SUFFIX = "/+"
#: The receive limit the testserver announces: small, so max-frame scenarios stay fast.
WELCOME_MAX_FRAME = 65536


Script = Callable[["Ctx"], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    requirements: tuple[str, ...]
    client_must: str
    expect_app: str
    script: Script
    mode: str = "any"  # "at-least-once": the client must subscribe at-least-once
    #: The client subscribes to the pattern ``conformance/<name>/+`` (SPEC.md §6.7); what
    #: its application must see is stated per topic, in ``app_topics``.
    pattern: bool = False
    app_topics: Callable[[ScenarioRun], dict[str, list[tuple[Any, ...]]]] | None = None
    #: ``expect_app`` as data: the list of ("msg", seq) / ("gap", first, last) / ("epoch",) /
    #: ("error",) items the application must see, computed from the run's state.
    app: Callable[[ScenarioRun], list[tuple[Any, ...]]] | None = None
    #: The slow-consumer policy its WELCOME announces: a scenario that ends connections
    #: with ERROR(SLOW_CONSUMER) must have announced DISCONNECT (PW-SLOW-2), one that sends
    #: GAP(SLOW_CONSUMER) announces DROP.
    slow_consumer: SlowConsumerPolicy = SlowConsumerPolicy.DROP

    @property
    def topic(self) -> str:
        """What the client subscribes to: a topic name, or a pattern for a pattern
        scenario."""
        return TOPIC_PREFIX + self.name + (PATTERN_SUFFIX if self.pattern else "")


@dataclass
class Ctx:
    """What a script gets for one connection."""

    run: ScenarioRun
    peer: Peer
    sub: F.Subscribe
    attempt: int
    server: TestServer

    @property
    def timeout(self) -> float:
        return self.server.timeout

    @property
    def h(self) -> float:
        return self.server.heartbeat_ms / 1000

    def epoch(self, key: str = "epoch") -> int:
        return self.run.epochs.setdefault(key, random.getrandbits(62) | 1)

    def resume_at(self) -> int:
        """The position connection 1 recorded before it asked the client to reconnect."""
        if self.run.resume_at is None:
            raise RuntimeError("the client reconnected before the scenario recorded its position")
        return self.run.resume_at

    async def subscribed(
        self,
        outcome: int = Outcome.NEW,
        start: int = 1,
        head: int = 0,
        epoch: int | None = None,
        gap: tuple[int, int, int] | None = None,
        bytewise: bool = False,
    ) -> None:
        e = self.epoch() if epoch is None else epoch
        first, last, reason = gap or (0, 0, 0)
        frame = F.Subscribed(self.sub.sub_id, outcome, e, start, head, first, last, reason)
        data = codec.encode_frame(frame)
        await (self.peer.send_bytewise(data) if bytewise else self.peer.send_raw(data))

    async def deliver(
        self,
        seqs: range,
        *,
        epoch: int | None = None,
        bytewise: bool = False,
        reqs: tuple[str, ...] = ("PW-FRAME-1",),
    ) -> bool:
        """MESSAGEs ``seqs`` within credit. When the client closes first, that fails
        ``reqs`` (the rules that make these frames valid)."""
        ok = await self.peer.deliver(
            self.sub.sub_id,
            self.epoch() if epoch is None else epoch,
            self.sub.topic,
            seqs,
            timeout=self.timeout,
            bytewise=bytewise,
        )
        if ok:
            return True
        sid = self.sub.sub_id
        if self.peer.closed_at is not None:
            self.run.check(
                "the client stays connected through valid frames",
                reqs,
                False,
                f"closed after seq {self.peer.delivered.get(sid)}; its ERROR: "
                f"{self.peer.client_error}",
            )
        else:
            self.run.check(
                f"the client grants more credit as it consumes (messages {seqs.start}.."
                f"{seqs.stop - 1}; the server never exceeds credit)",
                ("PW-FLOW-7",),
                False,
                f"stalled after seq {self.peer.delivered.get(sid)} with credit 0",
                level="SHOULD",
            )
        self.run.finish()
        return False

    async def finish_ok(self, last_seq: int) -> None:
        """The common end of a scenario the client must survive: it is still connected,
        answers PING, sent no ERROR, and (at-least-once) acknowledged up to last_seq."""
        rtt = await self.peer.ping(0xC0FFEE, self.timeout)
        self.run.check(
            "the client is still connected and answers PING with the same opaque",
            ("PW-HB-2", "PW-FRAME-1"),
            rtt is not None and self.peer.client_error is None,
            ""
            if rtt is not None
            else f"no PONG; client ERROR: {self.peer.client_error}; "
            f"closed: {self.peer.closed_at is not None}",
        )
        if self.sub.at_least_once:
            sid = self.sub.sub_id
            ok = await self.peer.wait_until(
                lambda: self.peer.last_ack(sid) >= last_seq, self.timeout
            )
            self.run.check(
                f"at-least-once: the client acknowledges up to {last_seq}",
                ("PW-ACK-7",),
                ok,
                f"last ACK {self.peer.last_ack(sid)}",
                level="SHOULD",
            )
        self.run.finish()

    async def expect_error_close(self, code: ErrorCode, reqs: tuple[str, ...]) -> None:
        """After a fatal frame: ERROR(code) (best effort, but a different code is wrong)
        and the close."""
        closed = await self.peer.wait_closed(self.timeout)
        err = self.peer.client_error
        self.run.check(
            f"the client closes the connection ({code.name})",
            reqs,
            closed,
            "" if closed else "still open",
        )
        self.run.check(
            f"the client sends ERROR({code.name}, 0, 0) before closing",
            ("PW-ERR-1", *reqs),
            err is not None and err.code == code,
            f"got {err}" if err is not None else "no ERROR",
            level="MUST" if err is not None else "SHOULD",
        )
        self.run.finish()

    def check_resume(self, epoch: int, reqs: tuple[str, ...] = ("PW-RESUME-1",)) -> int:
        """Check that the client's SUBSCRIBE resumes from a position it may have recorded
        (SPEC.md §8.4), and return the sequence the scenario continues after: the client's
        own when it is right (it becomes the run's ``resume_at``), else the lowest right one.

        At-most-once the position is exact: the last message delivered. At-least-once it is
        any message the application processed, no lower than the last ACK; processing is
        not visible on the wire, so anything from the last ACK to the last message delivered
        is accepted (a client that acknowledges lazily resumes after more than it
        acknowledged, never after more than it received)."""
        s = self.sub
        low = high = self.resume_at()
        if s.at_least_once and self.run.delivered is not None:
            high = max(low, self.run.delivered)
        ok = self.run.check(
            f"the client resumes with SUBSCRIBE AFTER(epoch {epoch}, seq "
            + (f"{low})" if low == high else f"{low}..{high})"),
            reqs,
            s.since_kind == SinceKind.AFTER
            and s.since_epoch == epoch
            and low <= s.since_seq <= high,
            f"since_kind {SinceKind(s.since_kind).name} epoch {s.since_epoch} seq {s.since_seq}",
        )
        if ok:
            self.run.resume_at = s.since_seq
        return self.run.resume_at if self.run.resume_at is not None else low

    def record_resume(self) -> int:
        """Before this connection ends: record where the client may resume from on its next
        one, and what was delivered (the at-least-once upper bound of :meth:`check_resume`).
        Returns the lowest position it may resume from."""
        sid = self.sub.sub_id
        self.run.resume_at = at = self.resume_point(sid)
        self.run.delivered = self.peer.delivered.get(sid, 0)
        return at

    def resume_point(self, sub_id: int) -> int:
        """The lowest position a correct client resumes from: its last ACK (at-least-once;
        also the acknowledged level a GOAWAY reports), else the last delivered."""
        if self.peer.at_least_once.get(sub_id):
            return self.peer.last_ack(sub_id)
        return self.peer.delivered.get(sub_id, 0)
