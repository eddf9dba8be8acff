"""Connection.publish_many: a window of pipelined PUBLISH, acknowledged in order."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from client_support import Link, next_item, seqs

import pushwire.client as pw
from pushwire.protocol.errors import ErrorCode
from pushwire.server import ServerConfig, open_server
from pushwire.server.serve import Permissions


@pytest.mark.spec("PW-ORDER-10")
async def test_a_window_of_publishes_is_acknowledged_in_order_and_delivered() -> None:
    n = 3000
    acked: list[int] = []
    with trio.fail_after(20):
        async with (
            open_server(ServerConfig(port=0)) as server,
            Link(server.port).connect() as conn,
        ):
            sub = conn.subscribe("w", since="oldest")
            await conn.publish("w", b"first")  # the subscription is in place before the rest
            payloads = [b"%d" % i for i in range(n)]
            count = await conn.publish_many("w", payloads, acked.append, window=64)
            got = [await next_item(sub) for _ in range(n + 1)]
            assert server.stats().topics["w"].head_seq == n + 1
    assert count == n
    assert acked == list(range(2, n + 2))
    assert seqs(got) == list(range(1, n + 2))
    assert [m.payload for m in got[1:]] == payloads  # type: ignore[union-attr]


async def test_a_refused_publish_raises_after_the_acks_before_it() -> None:
    acked: list[int] = []

    async def payloads() -> AsyncIterator[bytes]:
        for i in range(5):
            yield b"%d" % i

    auth = {b"": Permissions(subscribe=("#",), publish=("ok",))}
    with trio.fail_after(10):
        async with (
            open_server(ServerConfig(port=0, auth=auth)) as server,
            Link(server.port).connect() as conn,
        ):
            assert await conn.publish_many("ok", payloads(), acked.append, window=2) == 5
            with pytest.raises(pw.RequestError) as refused:
                await conn.publish_many("not/ok", [b"x", b"y"], acked.append)
            assert refused.value.code == ErrorCode.FORBIDDEN
            assert server.stats().topics["ok"].head_seq == 5
    assert acked == [1, 2, 3, 4, 5]


async def test_a_refused_publish_from_an_async_source_raises_the_request_error_itself() -> None:
    acked: list[int] = []

    async def payloads() -> AsyncIterator[bytes]:
        for i in range(5):
            yield b"%d" % i

    auth = {b"": Permissions(subscribe=("#",), publish=("ok",))}
    with trio.fail_after(10):
        async with (
            open_server(ServerConfig(port=0, auth=auth)) as server,
            Link(server.port).connect() as conn,
        ):
            with pytest.raises(pw.RequestError) as refused:
                await conn.publish_many("not/ok", payloads(), acked.append)
            assert refused.value.code == ErrorCode.FORBIDDEN
            assert "not/ok" not in server.stats().topics
    assert acked == []


async def test_a_failing_async_source_raises_its_error_after_publishing_what_it_gave() -> None:
    acked: list[int] = []

    async def payloads() -> AsyncIterator[bytes]:
        yield b"1"
        yield b"2"
        raise OSError("the source broke")

    with trio.fail_after(10):
        async with (
            open_server(ServerConfig(port=0)) as server,
            Link(server.port).connect() as conn,
        ):
            with pytest.raises(OSError, match="the source broke"):
                await conn.publish_many("s", payloads(), acked.append)
            with trio.fail_after(5):
                while server.stats().topics.get("s") is None or (
                    server.stats().topics["s"].head_seq < 2
                ):
                    await trio.sleep(0.01)
