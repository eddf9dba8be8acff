"""Fixtures of the client tests; the scripted server lives in ``scripted_server.py``."""

from __future__ import annotations

import pytest
from scripted_server import Listener


@pytest.fixture
def listener() -> Listener:
    return Listener()
