"""``reuse_port`` (``pushwire serve --reuse-port``): several servers share one port."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

import pushwire.client as pw
from pushwire.server import cmd_serve, open_server

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT"), reason="SO_REUSEPORT is not available here"
)


async def test_two_servers_listen_on_one_port_with_reuse_port() -> None:
    with trio.fail_after(20):
        async with (
            open_server(port=0, reuse_port=True) as first,
            open_server(port=first.port, reuse_port=True) as second,
        ):
            assert second.port == first.port
            async with pw.connect(f"127.0.0.1:{first.port}") as conn:
                assert await conn.publish("t", b"x") == 1


async def test_without_reuse_port_the_port_stays_taken() -> None:
    with trio.fail_after(20):
        async with open_server(port=0, reuse_port=True) as first:
            with pytest.raises(OSError, match="cannot listen"):
                async with open_server(port=first.port):
                    pass


def test_reuse_port_is_a_boolean_key_of_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "pushwire.toml"
    config.write_text("reuse-port = true\n")
    assert cmd_serve.load_config_file(config) == {"reuse_port": True}
    config.write_text('reuse-port = "yes"\n')
    with pytest.raises(cmd_serve.UsageError, match="expected true or false"):
        cmd_serve.load_config_file(config)
