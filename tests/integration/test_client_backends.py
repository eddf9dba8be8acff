"""The client under both event loops anyio supports: asyncio and trio."""

from __future__ import annotations

import asyncio

import anyio
import pytest
import trio
from server_thread import ServerLoop

import pushwire.client as pw
from pushwire.protocol.errors import ErrorCode
from pushwire.server import ServerConfig

pytestmark = pytest.mark.anyio


async def test_a_test_marked_anyio_runs_on_the_loop_it_names(anyio_backend: str) -> None:
    """pytest-trio's trio_mode must not take these tests over."""
    if anyio_backend == "asyncio":
        assert asyncio.current_task() is not None
    else:
        assert trio.lowlevel.current_task() is not None
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()


async def test_connect_publish_subscribe_and_close(server_loop: ServerLoop) -> None:
    with anyio.fail_after(10):
        async with server_loop.server(ServerConfig(port=0)) as server:
            address = f"127.0.0.1:{server.port}"
            async with pw.connect(address) as conn:
                assert conn.connected
                first = await conn.publish("t", b"one", headers={"k": "v"})
                assert await conn.publish_batch("t", [b"two", b"three"]) == first + 1
                async with conn.subscribe("t", since="oldest") as sub:
                    got = [await sub.__anext__() for _ in range(3)]
            assert [(m.seq, m.payload) for m in got] == [(1, b"one"), (2, b"two"), (3, b"three")]
            assert got[0].headers == (("k", b"v"),)
            with pytest.raises(pw.ConnectionLost):
                conn.subscribe("u")  # closed


async def test_an_unreachable_server_is_a_connect_error(server_loop: ServerLoop) -> None:
    async with server_loop.server(ServerConfig(port=0)) as server:
        port = server.port
    with anyio.fail_after(10), pytest.raises(pw.ConnectError, match="cannot connect"):
        async with pw.connect(f"127.0.0.1:{port}"):
            pass


async def test_the_applications_cancel_scope_ends_a_waiting_iteration(
    server_loop: ServerLoop,
) -> None:
    async with (
        server_loop.server(ServerConfig(port=0)) as server,
        pw.connect(f"127.0.0.1:{server.port}") as conn,
    ):
        sub = conn.subscribe("t")
        with anyio.move_on_after(0.2) as scope:
            await sub.__anext__()
        assert scope.cancelled_caught
        await server.publish("t", b"after")
        with anyio.fail_after(10):
            assert (await sub.__anext__()).payload == b"after"


async def test_one_loop_reads_messages_gaps_and_epoch_changes(server_loop: ServerLoop) -> None:
    seen: list[str] = []
    with anyio.fail_after(10):
        async with server_loop.server(ServerConfig(port=0, history_count=3)) as server:
            for i in range(1, 7):
                epoch, _ = await server.publish("t", b"%d" % i)  # the history keeps 4..6
            async with (
                pw.connect(f"127.0.0.1:{server.port}") as conn,
                conn.subscribe("t", since=("after", epoch, 1)) as sub,
            ):
                async for item in sub.items():
                    match item:
                        case pw.Message(epoch=e, seq=seq) if e == epoch:
                            seen.append(f"{seq}")
                            if seq == 6:
                                new_epoch = await server.reset_topic("t")
                                await server.publish("t", b"new")
                        case pw.Message(seq=seq, payload=payload):
                            seen.append(f"{seq} {payload.decode()} in the new epoch")
                            break
                        case pw.Gap(first=first, last=last, reason=reason):
                            assert reason == ErrorCode.HISTORY_EXPIRED
                            seen.append(f"gap {first}..{last}")
                        case pw.EpochChange(old_epoch=old, new_epoch=new, start_seq=start):
                            assert (old, new) == (epoch, new_epoch)
                            seen.append(f"epoch change, from {start}")
    assert seen == [
        "gap 2..3",
        "4",
        "5",
        "6",
        "epoch change, from 1",
        "1 new in the new epoch",
    ]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncios_own_timeouts_and_task_cancellation_work(server_loop: ServerLoop) -> None:
    async with server_loop.server(ServerConfig(port=0)) as server:
        address = f"127.0.0.1:{server.port}"
        async with pw.connect(address) as conn:
            sub = conn.subscribe("t")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await sub.__anext__()
            await conn.publish("t", b"after")
            async with asyncio.timeout(10):
                assert (await sub.__anext__()).payload == b"after"

        async def follow() -> None:
            async with pw.connect(address) as conn:
                async for _ in conn.subscribe("u").items():
                    pass

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(10):
            while (await server.stats()).connections:  # the cancelled client closed
                await asyncio.sleep(0.01)
