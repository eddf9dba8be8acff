"""FL-03 accepts every answer order SPEC.md allows, and only those.

FL-03 sends PUBLISH, SUBSCRIBE(OLDEST) and PING one byte per segment. SPEC.md orders
SUBSCRIBED before the subscription's pushes (PW-ORDER-5) and lets PONG overtake queued
pushes (PW-HB-2); PUBACK and SUBSCRIBED answer different requests. The reference server
sends PONG before or after the MESSAGE depending on how the bytes were coalesced into reads,
so a scripted server plays each order here, deterministically.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from pushwire.client.conformance.runner import Target, run_cases, select_cases
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import FrameDecoder, encode_preface
from pushwire.protocol.layouts import PREFACE_SIZE, Outcome, SlowConsumerPolicy
from pushwire.protocol.testing.model import Status

Script = Callable[[F.Publish, F.Subscribe, F.Ping], list[F.Frame]]


async def _scripted(script: Script, stream: trio.SocketStream) -> None:
    """Handshake, read until the PING, answer with ``script``, then wait for the close."""
    async with stream:
        raw = bytearray()
        while len(raw) < PREFACE_SIZE:
            raw += await stream.receive_some()
        decoder = FrameDecoder(1 << 20)
        decoder.feed(raw[PREFACE_SIZE:])
        welcome = F.Welcome(1, 1000, 1 << 20, 16, 100, SlowConsumerPolicy.DROP, "scripted")
        await stream.send_all(encode_preface(1, 1) + codec.encode_frame(welcome))
        frames: list[F.Frame] = []
        while not frames or not isinstance(frames[-1], F.Ping):
            frame = decoder.next_frame()
            if frame is None:
                decoder.feed(await stream.receive_some())
            else:
                frames.append(frame)
        _, publish, subscribe, ping = frames
        assert isinstance(publish, F.Publish) and isinstance(subscribe, F.Subscribe)
        assert isinstance(ping, F.Ping)
        answers = script(publish, subscribe, ping)
        await stream.send_all(b"".join(codec.encode_frame(f) for f in answers))
        while await stream.receive_some():
            pass


@asynccontextmanager
async def scripted_server(script: Script) -> AsyncIterator[Target]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, partial(_scripted, script), 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        yield Target(host="127.0.0.1", port=port, timeout=0.5)
        nursery.cancel_scope.cancel()


def _puback(p: F.Publish, s: F.Subscribe, g: F.Ping) -> F.Frame:
    return F.Puback(p.request_id, 1, 1, 1)


def _subscribed(p: F.Publish, s: F.Subscribe, g: F.Ping) -> F.Frame:
    return F.Subscribed(s.sub_id, Outcome.RECOVERED, 1, 1, 1)


def _message(p: F.Publish, s: F.Subscribe, g: F.Ping, seq: int = 1) -> F.Frame:
    return F.Message(1, seq, p.topic, p.payload)


def _batch(p: F.Publish, s: F.Subscribe, g: F.Ping) -> F.Frame:
    return F.MessageBatch(1, 1, p.topic, (F.Record(p.payload),))


def _pong(p: F.Publish, s: F.Subscribe, g: F.Ping) -> F.Frame:
    return F.Pong(g.opaque)


def _script(*parts: Callable[[F.Publish, F.Subscribe, F.Ping], F.Frame]) -> Script:
    return lambda p, s, g: [part(p, s, g) for part in parts]


ALLOWED = {
    "pong-before-message": _script(_puback, _subscribed, _pong, _message),
    "pong-after-message": _script(_puback, _subscribed, _message, _pong),
    "pong-first": _script(_pong, _puback, _subscribed, _message),
    "puback-last": _script(_subscribed, _message, _pong, _puback),
    "batch-of-one": _script(_puback, _subscribed, _pong, _batch),
}

FORBIDDEN = {
    "message-before-subscribed": _script(_puback, _message, _subscribed, _pong),
    "message-lost": _script(_puback, _subscribed, _pong),
    "pong-lost": _script(_puback, _subscribed, _message),
    "wrong-seq": _script(_puback, _subscribed, _pong, partial(_message, seq=2)),
    "message-twice": _script(_puback, _subscribed, _message, _message, _pong),
}


async def _fl03(script: Script) -> Status:
    async with scripted_server(script) as target:
        [result] = await run_cases(target, select_cases(["FL-03"]))
    return result.status


@pytest.mark.spec("PW-FRAME-1", "PW-HB-2", "PW-ORDER-5")
@pytest.mark.parametrize("order", sorted(ALLOWED))
async def test_bytewise_case_passes_every_allowed_answer_order(order: str) -> None:
    assert await _fl03(ALLOWED[order]) is Status.PASS


@pytest.mark.parametrize("order", sorted(FORBIDDEN))
async def test_bytewise_case_fails_missing_or_misordered_answers(order: str) -> None:
    assert await _fl03(FORBIDDEN[order]) is Status.FAIL
