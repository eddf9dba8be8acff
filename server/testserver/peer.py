"""The test server's side of one client connection: frames out, what the client sent in."""

from __future__ import annotations

import random
from collections.abc import Callable

import trio

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder
from pushwire.protocol.errors import RemoteProtocolError
from pushwire.protocol.layouts import (
    CLIENT_SENDS,
    INITIAL_MAX_FRAME_SIZE,
    FrameType,
)


class Peer:
    """The client side of one connection, as the testserver sees it.

    A reader task decodes everything the client sends: PING is answered (unless the script
    made us ``silent``), CREDIT and ACK update the books, everything else goes to the script
    through :meth:`next`. A heartbeat task PINGs when we have been idle for an interval.
    """

    def __init__(self, stream: trio.SocketStream, run_checks: Callable[..., bool]) -> None:
        self.stream = stream
        self.opened_at = trio.current_time()
        self.decoder = FrameDecoder(INITIAL_MAX_FRAME_SIZE)
        self._send_lock = trio.Lock()
        self._inbox_send, self._inbox = trio.open_memory_channel[F.Frame | None](1000)
        self.silent = False
        self.heartbeat = 1.0
        self.last_sent = trio.current_time()
        self.received_times: list[float] = []
        self.closed_at: float | None = None
        self.client_error: F.Error | None = None
        self.client_goaway: F.Goaway | None = None
        self.pongs: dict[int, float] = {}
        self.granted_at_pong: dict[int, dict[int, int]] = {}
        self.credit: dict[int, int] = {}
        self.granted: dict[int, int] = {}
        self.acks: dict[int, list[int]] = {}
        self.at_least_once: dict[int, bool] = {}
        self.delivered: dict[int, int] = {}
        self.hello: F.Hello | None = None
        self.welcome: F.Welcome | None = None
        self.bad: str = ""
        self._changed = trio.Event()
        self._check = run_checks
        self.after_goaway: list[str] = []
        self.goaway_sent_at: float | None = None

    # sending
    async def send_raw(self, data: bytes) -> bool:
        async with self._send_lock:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return False
            self.last_sent = trio.current_time()
            return True

    async def send(self, *frames: F.Frame) -> bool:
        return await self.send_raw(b"".join(codec.encode_frame(f) for f in frames))

    async def send_bytewise(self, data: bytes) -> bool:
        for i in range(len(data)):
            if not await self.send_raw(data[i : i + 1]):
                return False
        return True

    async def close(self) -> None:
        with trio.move_on_after(1):
            await self.stream.aclose()

    # receiving
    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def reader(self) -> None:
        try:
            while True:
                try:
                    while (frame := self.decoder.next_frame()) is not None:
                        await self._on_frame(frame)
                except RemoteProtocolError as exc:
                    self.bad = str(exc)
                    self._check(
                        "the client sends only well-formed frames",
                        ("PW-FRAME-16",),
                        False,
                        str(exc),
                    )
                    self.closed_at = trio.current_time()
                    await self.close()
                    break
                try:
                    data = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    data = b""
                if not data:
                    self.closed_at = trio.current_time()
                    break
                self.received_times.append(trio.current_time())
                self.decoder.feed(data)
        finally:
            self._inbox_send.close()
            self._wake()

    async def _on_frame(self, frame: F.Frame) -> None:
        if isinstance(frame, F.Unknown):
            return
        if FrameType(frame.TYPE) not in CLIENT_SENDS:
            self._check(
                "the client sends only frame types a client sends",
                ("PW-FRAME-12",),
                False,
                f"{frame.TYPE.name}",
            )
        if self.goaway_sent_at is not None and isinstance(
            frame, F.Subscribe | F.Publish | F.PublishBatch
        ):
            self.after_goaway.append(frame.TYPE.name)
        match frame:
            case F.Ping():
                if not self.silent:
                    await self.send(F.Pong(frame.opaque))
            case F.Pong():
                self.pongs[frame.opaque] = trio.current_time()
                # The CREDIT the client had sent by then: what it can have granted before
                # any frame sent ahead of that PING arrived (the over-credit scenario).
                self.granted_at_pong[frame.opaque] = dict(self.granted)
            case F.Credit():
                self.credit[frame.sub_id] = self.credit.get(frame.sub_id, 0) + frame.increment
                self.granted[frame.sub_id] = self.granted.get(frame.sub_id, 0) + frame.increment
            case F.Ack():
                acks = self.acks.setdefault(frame.sub_id, [])
                if not self.at_least_once.get(frame.sub_id, False):
                    self._check(
                        "no ACK on an at-most-once subscription", ("PW-ACK-1",), False, str(frame)
                    )
                elif acks and frame.seq < acks[-1]:
                    self._check(
                        "ACKs never go backwards",
                        ("PW-ACK-1",),
                        False,
                        f"{acks[-1]} then {frame.seq}",
                    )
                acks.append(frame.seq)
            case F.Error():
                self.client_error = frame
                self._check(
                    "a client ERROR has request_type 0 and request_id 0",
                    ("PW-ERR-7",),
                    frame.request_type == 0 and frame.request_id == 0,
                    str(frame),
                )
            case F.Goaway():
                self.client_goaway = frame
                self._check(
                    "a client GOAWAY has code NO_ERROR, zero delays and no positions",
                    ("PW-GOAWAY-9",),
                    (
                        frame.code,
                        frame.reconnect_after_ms,
                        frame.reconnect_jitter_ms,
                        frame.positions,
                    )
                    == (0, 0, 0, ()),
                    str(frame),
                )
            case _:
                await self._inbox_send.send(frame)
        self._wake()

    async def heartbeats(self) -> None:
        n = 0
        while self.closed_at is None:
            await trio.sleep(self.heartbeat / 4)
            if not self.silent and trio.current_time() - self.last_sent >= self.heartbeat * 0.9:
                n += 1
                await self.send(F.Ping(0x7E57_0000_0000_0000 + n))

    async def next(self, timeout: float) -> F.Frame | None:
        """The next request frame from the client, or None (closed or timeout)."""
        with trio.move_on_after(timeout):
            try:
                return await self._inbox.receive()
            except trio.EndOfChannel:
                return None
        return None

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while not predicate():
                await self._changed.wait()
            return True
        return predicate()

    async def wait_closed(self, timeout: float) -> bool:
        return await self.wait_until(lambda: self.closed_at is not None, timeout)

    async def ping(self, opaque: int, timeout: float) -> float | None:
        """Round trip of a PING, or None when no PONG came in time."""
        sent = trio.current_time()
        await self.send(F.Ping(opaque))
        if await self.wait_until(lambda: opaque in self.pongs, timeout):
            return self.pongs[opaque] - sent
        return None

    async def settle(self, sub_id: int, timeout: float) -> None:
        """Let the client catch up: a PING round trip (it parsed everything sent), then
        wait until its ACKs stop moving (at-least-once)."""
        await self.ping(0x5E77_1E00 + random.getrandbits(16), timeout)
        if self.at_least_once.get(sub_id):
            target = self.delivered.get(sub_id, 0)
            await self.wait_until(
                lambda: bool(self.acks.get(sub_id)) and self.acks[sub_id][-1] >= target, timeout
            )
        await trio.sleep(0.1)

    def last_ack(self, sub_id: int) -> int:
        acks = self.acks.get(sub_id)
        return acks[-1] if acks else 0

    async def deliver(
        self,
        sub_id: int,
        epoch: int,
        topic: str,
        seqs: range,
        *,
        timeout: float,
        bytewise: bool = False,
        payload: Callable[[int], bytes] = lambda s: b"msg-%d" % s,
    ) -> bool:
        """MESSAGE frames for ``seqs``, never beyond the client's credit; False when the
        client stopped granting credit (or closed) before all were sent."""
        for seq in seqs:
            if (
                not await self.wait_until(
                    lambda: self.credit.get(sub_id, 0) > 0 or self.closed_at is not None, timeout
                )
                or self.closed_at is not None
            ):
                return False
            self.credit[sub_id] -= 1
            data = codec.encode_frame(F.Message(epoch, seq, topic, payload(seq)))
            if not await (self.send_bytewise(data) if bytewise else self.send_raw(data)):
                return False
            self.delivered[sub_id] = seq
        return True

    def restart_acks(self, sub_id: int) -> None:
        """The subscription continues in a new epoch: ACKs count from 0 again (PW-ACK-4), so
        the next ACK below the old level is not "backwards". Call it after :meth:`settle`,
        so no ACK of the old epoch is still on its way."""
        self.acks[sub_id] = []

    def take_subscribe(self, sub: F.Subscribe) -> None:
        self.credit[sub.sub_id] = sub.initial_credit
        self.granted[sub.sub_id] = 0
        self.at_least_once[sub.sub_id] = sub.at_least_once


# -- scenarios -------------------------------------------------------------------------------
