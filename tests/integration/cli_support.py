"""Running the installed ``pushwire`` command from tests, as a user does."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

_SCRIPT = Path(sys.executable).with_name("pushwire")
#: The console script beside this interpreter, or the module when it is not installed.
PUSHWIRE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "pushwire.client"]


@asynccontextmanager
async def serve(*extra: str, expect_prefix: str = "pushwire listening on ") -> AsyncIterator[str]:
    """``pushwire serve --port 0 EXTRA...``; yields the address from its one stdout line and
    stops the server (SIGTERM, then SIGKILL after 10 s) on exit."""
    proc = await trio.lowlevel.open_process(
        [*PUSHWIRE, "serve", "--port", "0", "--log-level", "warning", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = b""
        with trio.fail_after(15):
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(1)
                assert chunk, "pushwire serve exited before listening"
                line += chunk
        text = line.decode().strip()
        assert text.startswith(expect_prefix), text
        yield text.rsplit(" ", 1)[1]
    finally:
        proc.terminate()
        with trio.move_on_after(10):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
