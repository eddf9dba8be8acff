"""Shared test configuration: hypothesis profiles, and the two async test runners.

``dev`` (default) keeps the whole suite fast; ``ci`` is what .ci/run uses; ``fuzz`` is for
long local runs: ``HYPOTHESIS_PROFILE=fuzz pytest tests/protocol``. ``ci`` is derandomized:
a submission is judged by one run, which must not turn red because that run happened to
draw a new example. Finding new examples is the job of ``dev`` (random on every run) and
``fuzz``.

Async tests run under trio (pytest-trio's ``trio_mode``), except those marked
``@pytest.mark.anyio``: anyio's own plugin runs those once per backend of
:func:`anyio_backend`. Those tests must use anyio's API, not trio's, and no async fixtures.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The event loops a test marked ``anyio`` runs on, each in turn."""
    backend: str = request.param
    return backend


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """trio_mode marks every async test as a trio test, and pytest-trio would then run it
    under trio whatever its backend; a test marked ``anyio`` is left to anyio's plugin."""
    for item in items:
        if item.get_closest_marker("anyio") is not None:
            item.own_markers[:] = [m for m in item.own_markers if m.name != "trio"]
