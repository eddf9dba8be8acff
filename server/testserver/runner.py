"""The listener: routes each connection to its scenario by the topic it subscribes to."""

from __future__ import annotations

import socket
from contextlib import asynccontextmanager
from typing import Any

import trio

from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder, encode_preface, read_preface
from pushwire.protocol.errors import ErrorCode, RemoteProtocolError
from pushwire.protocol.layouts import (
    INITIAL_MAX_FRAME_SIZE,
    MAX_MAX_FRAME_SIZE,
    MIN_MAX_FRAME_SIZE,
    PREFACE_SIZE,
    FrameType,
    Outcome,
    SlowConsumerPolicy,
)
from pushwire.protocol.testing.model import Check
from pushwire.protocol.topics import pattern_problem, topic_problem
from pushwire.server.testserver.peer import Peer
from pushwire.server.testserver.results import ScenarioRun
from pushwire.server.testserver.scenarios import SCENARIOS
from pushwire.server.testserver.script import PATTERN_SUFFIX, TOPIC_PREFIX, WELCOME_MAX_FRAME, Ctx


class TestServer:
    """Accepts client connections and routes each to its scenario by SUBSCRIBE topic."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        scenarios: list[str],
        *,
        heartbeat_ms: int = 1000,
        timeout: float = 5.0,
        goaway_after_ms: int = 1500,
        goaway_jitter_ms: int = 0,
        reconnect_wait: float = 3.0,
    ) -> None:
        self.runs = {name: ScenarioRun(SCENARIOS[name]) for name in scenarios}
        self.heartbeat_ms = heartbeat_ms
        self.timeout = timeout
        self.goaway_after_ms = goaway_after_ms
        self.goaway_jitter_ms = goaway_jitter_ms
        #: how long (beyond the timeout) a client may take to reconnect after a drop
        self.reconnect_wait = reconnect_wait
        self.armed: ScenarioRun | None = None
        #: The scenario whose client is running now, when scenarios run one after another
        #: (``--client-command``): its WELCOME is the one a new connection gets.
        self.current: ScenarioRun | None = None
        self.port = 0
        self._nursery: trio.Nursery | None = None
        self._conn_ids = 0

    def expect_reconnect(
        self,
        run: ScenarioRun,
        within: float,
        *,
        level: str = "MUST",
        reqs: tuple[str, ...] = ("PW-RESUME-1",),
    ) -> None:
        """The scenario goes on on the client's next connection; record its absence."""
        seen = run.connections

        async def wait() -> None:
            with trio.move_on_after(within):
                while run.connections == seen:
                    await run.reconnected.wait()
                return
            run.check(
                "the client reconnects",
                reqs,
                False,
                f"no new connection within {within:.1f} s",
                level=level,
            )
            run.finish()

        assert self._nursery is not None
        self._nursery.start_soon(wait)

    async def serve(
        self, host: str, port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        await self.serve_listeners(listeners, task_status=task_status)

    async def serve_listeners(
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self.port)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, stream: trio.SocketStream) -> None:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        problems: list[Check] = []

        def early_check(
            text: str, reqs: tuple[str, ...], ok: bool, detail: str = "", level: str = "MUST"
        ) -> bool:
            problems.append(Check(text, reqs, level, bool(ok), detail))
            return bool(ok)

        peer = Peer(stream, early_check)
        peer.heartbeat = self.heartbeat_ms / 1000
        async with stream, trio.open_nursery() as nursery:
            try:
                await self._session(peer, nursery, problems)
            finally:
                nursery.cancel_scope.cancel()

    async def _session(self, peer: Peer, nursery: trio.Nursery, problems: list[Check]) -> None:
        raw = b""
        with trio.move_on_after(self.timeout * 2):
            while len(raw) < PREFACE_SIZE:
                chunk = await _receive(peer.stream)
                if not chunk:
                    return
                raw += chunk
        if len(raw) < PREFACE_SIZE:
            return
        preface, rest = raw[:PREFACE_SIZE], raw[PREFACE_SIZE:]
        armed, self.armed = self.armed, None
        if armed is not None:
            return await self._bad_version(peer, armed, rest)
        fields = read_preface(preface)
        ok_preface = fields.valid and fields.first <= 1 <= fields.second
        peer.decoder.feed(rest)
        nursery.start_soon(peer.reader)
        await peer.send_raw(encode_preface(1, 1))
        hello = await self._first_frame(peer)
        if not isinstance(hello, F.Hello):
            return
        peer.hello = hello
        peer.decoder.max_frame_size = WELCOME_MAX_FRAME
        self._conn_ids += 1
        peer.welcome = F.Welcome(
            self._conn_ids,
            self.heartbeat_ms,
            WELCOME_MAX_FRAME,
            64,
            1000,
            self._welcome_policy(),
            "pushwire-testserver",
        )
        await peer.send(peer.welcome)
        nursery.start_soon(peer.heartbeats)
        sub = await peer.next(self.timeout * 6)
        if not isinstance(sub, F.Subscribe):
            return
        name = sub.topic[len(TOPIC_PREFIX) :] if sub.topic.startswith(TOPIC_PREFIX) else ""
        name = name.removesuffix(PATTERN_SUFFIX)  # a pattern scenario's subscription
        run = self.runs.get(name)
        if run is None:
            await peer.send(
                F.Error(
                    ErrorCode.FORBIDDEN,
                    FrameType.SUBSCRIBE,
                    sub.sub_id,
                    f"no scenario {name!r}; topics: conformance/<scenario>",
                )
            )
            await peer.wait_closed(60)
            return
        peer._check = run.check
        run.connections += 1
        run.reconnected.set()
        run.reconnected = trio.Event()
        if run.started is None:
            run.started = trio.current_time()
        for c in problems:
            run.checks.append(c)
        run.check(
            "the client preface is MAGIC, 1 <= min <= max (offering 1), reserved 0",
            ("PW-PREFACE-3", "PW-PREFACE-5"),
            ok_preface,
            preface.hex(),
        )
        run.check(
            "HELLO.max_frame_size is in 16384..16777216",
            ("PW-HS-4",),
            MIN_MAX_FRAME_SIZE <= hello.max_frame_size <= MAX_MAX_FRAME_SIZE,
            str(hello.max_frame_size),
        )
        if run.scenario.pattern:
            run.check(
                "the SUBSCRIBE topic is a valid pattern",
                ("PW-TOPIC-8",),
                pattern_problem(sub.topic) is None,
            )
        else:
            run.check(
                "the SUBSCRIBE topic is a valid name",
                ("PW-TOPIC-1",),
                topic_problem(sub.topic) is None,
            )
        peer.take_subscribe(sub)
        if run.done.is_set():
            await self._hold(peer, sub)
            return
        ctx = Ctx(run, peer, sub, run.connections, self)
        try:
            await run.scenario.script(ctx)
        except Exception as exc:  # a bug in a script: report it on the scenario, go on
            run.check("the scenario script ran", (), False, f"{type(exc).__name__}: {exc}")
            run.finish()
        if peer.closed_at is None and run.done.is_set():
            await self._hold(peer, sub, subscribed=True)

    def _welcome_policy(self) -> SlowConsumerPolicy:
        """WELCOME comes before the SUBSCRIBE that names the scenario (PW-HS-16), so the
        policy is that of the scenario known to be next: the one whose client runs now, or
        the only one not finished; DROP when that cannot be known. A scenario that needs
        another policy checks what its connection was told (:attr:`Peer.welcome`)."""
        if self.current is not None:
            return self.current.scenario.slow_consumer
        open_runs = [r for r in self.runs.values() if not r.done.is_set()]
        if len(open_runs) == 1:
            return open_runs[0].scenario.slow_consumer
        return SlowConsumerPolicy.DROP

    async def _first_frame(self, peer: Peer) -> F.Frame | None:
        frame = await peer.next(self.timeout * 2)
        if frame is None:
            return None
        if not isinstance(frame, F.Hello):
            peer._check(
                "the client's first frame is HELLO", ("PW-HS-1",), False, type(frame).__name__
            )
            await peer.send(F.Error(ErrorCode.UNEXPECTED_FRAME, 0, 0, "expected HELLO"))
            return None
        return frame

    async def _hold(self, peer: Peer, sub: F.Subscribe, subscribed: bool = False) -> None:
        """After a scenario is over: keep the client quietly connected until it leaves."""
        if not subscribed:
            opened = (0, 0, 0) if sub.is_pattern else (1, 1, 0)  # a pattern: zeros (§6.7)
            await peer.send(F.Subscribed(sub.sub_id, Outcome.NEW, *opened))
        await peer.wait_closed(3600)

    async def _bad_version(self, peer: Peer, run: ScenarioRun, rest: bytes) -> None:
        run.connections += 1
        run.reconnected.set()
        run.reconnected = trio.Event()
        await peer.send_raw(encode_preface(0, 1))
        data = rest
        closed = False
        with trio.move_on_after(self.timeout):
            while True:
                chunk = await _receive(peer.stream)
                if not chunk:
                    closed = True
                    break
                data += chunk
        decoder = FrameDecoder(INITIAL_MAX_FRAME_SIZE)
        decoder.feed(data)
        frames: list[str] = []
        try:
            while (frame := decoder.next_frame()) is not None:
                frames.append(type(frame).__name__.upper())
        except RemoteProtocolError as exc:
            frames.append(f"bad bytes ({exc.code.name})")
        extra = frames[1:] if frames[:1] == ["HELLO"] else frames
        run.check(
            "the client closes after a server preface with version 0",
            ("PW-PREFACE-7",),
            closed,
            "" if closed else "still open",
        )
        run.check(
            "the client sends nothing after its HELLO (UNSUPPORTED_VERSION)",
            ("PW-PREFACE-7",),
            not extra,
            ", ".join(extra),
        )
        run.finish()


async def _receive(stream: trio.SocketStream) -> bytes:
    try:
        return await stream.receive_some(65536)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return b""


@asynccontextmanager
async def open_testserver(
    scenarios: list[str] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    listeners: list[trio.SocketListener] | None = None,
    **options: Any,
) -> Any:
    """A started testserver (``.port``, ``.runs``); stops on exit. It listens on ``host``
    and ``port``, or on ``listeners`` already open. The listeners are opened before any task
    starts, so a port in use is a plain ``OSError`` here, not an exception group."""
    server = TestServer(scenarios or list(SCENARIOS), **options)
    if listeners is None:
        listeners = await trio.open_tcp_listeners(port, host=host)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, listeners)
        yield server
        nursery.cancel_scope.cancel()


# -- reports and command line ----------------------------------------------------------------
