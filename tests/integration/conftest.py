"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import server_thread


@pytest.fixture
def server_loop() -> Iterator[server_thread.ServerLoop]:
    """A trio loop in a thread of its own, to run real servers for a client test under
    either backend (``async with server_loop.server(config) as server``)."""
    with server_thread.server_loop() as loop:
        yield loop
