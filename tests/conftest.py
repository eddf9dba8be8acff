"""Shared test configuration: hypothesis profiles, the two async test runners, and a check
that a passing run leaves no socket open.

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

import gc
import os
import socket

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


_LEFT_OPEN = pytest.StashKey[list[str]]()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Every test has ended and every fixture is torn down, so a socket still open now was
    left by a test or by the code under test, held by something that outlives the tests (a
    module-level list, a cache). Python would close it at exit with only a ResourceWarning
    printed after the summary; the run fails instead, and the summary names each one.

    Only a run that passed is checked: after a failure, the traceback pytest keeps of it
    (``sys.last_traceback``) may still hold that test's sockets."""
    if session.exitstatus != pytest.ExitCode.OK:
        return
    gc.collect()  # what only a reference cycle kept is closed now, with a warning of its own
    left = [
        repr(obj)
        for obj in gc.get_objects()
        if isinstance(obj, socket.socket) and obj.fileno() != -1
    ]
    if left:
        session.config.stash[_LEFT_OPEN] = left
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    left = terminalreporter.config.stash.get(_LEFT_OPEN, [])
    if left:
        terminalreporter.section("sockets still open after the last test", red=True)
        for line in left:
            terminalreporter.write_line(line)
