"""The reference server the conformance tests run the kit against, healthy or with one
fault of tests/faults.py, and helpers to read a run's results."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from faults import server_options

from pushwire.client.conformance.runner import Target
from pushwire.protocol.testing.model import Status
from pushwire.server import ServerConfig, open_server

#: Small limits so that every case runs quickly (history expiry needs > 40 publishes).
FAST: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 0,
    "heartbeat_min_ms": 100,
    "history_count": 40,
    "max_lag": 60,
    "max_subscriptions": 16,
    "handshake_timeout": 0.8,
    "drain_timeout": 0.8,
}


@asynccontextmanager
async def reference(
    fault: str | None = None, *, kit: dict[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[Target]:
    """A reference server with FAST limits (and ``fault``, one of tests/faults.py), and the
    Target that tests it (with the operator hooks wired to the server's own shutdown and
    topic reset); ``kit`` overrides fields of the Target (the heartbeat the kit asks for)."""
    config = ServerConfig(**(FAST | overrides))
    options = server_options(fault, config) if fault else {}
    async with open_server(config, **options) as server:

        async def reset(topic: str) -> None:
            await server.reset_topic(topic)

        async def shutdown() -> int:
            """The in-process server's "exit status": 1 when a session raised during the
            shutdown (the server logs it with its traceback and carries on), as a process
            that crashed on its way out would exit."""
            crashes = _Crashes()
            logger = logging.getLogger("pushwire.server")
            logger.addHandler(crashes)
            try:
                await server.shutdown()
            finally:
                logger.removeHandler(crashes)
            return 1 if crashes.count else 0

        target = Target(
            host="127.0.0.1",
            port=server.port,
            timeout=2.0,
            heartbeat_ms=200,
            handshake_timeout=config.handshake_timeout,
            drain_timeout=config.drain_timeout,
            shutdown=shutdown,
            reset=reset,
        )
        for name, value in (kit or {}).items():
            setattr(target, name, value)
        yield target


class _Crashes(logging.Handler):
    """Counts the server's log records that carry a traceback: an exception that escaped
    a session."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.count += 1


def statuses(results: list[Any]) -> dict[str, Status]:
    return {r.id: r.status for r in results}


def failures(results: list[Any]) -> str:
    return "\n".join(
        f"{r.id}: {r.status.value}: expected {r.expected}; observed {r.observed} {r.detail}"
        for r in results
        if r.status.is_failure
    )
