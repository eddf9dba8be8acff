"""Reports for tests/spec: which MUSTs of SPEC.md no test claims to prove.

``test_lists_the_musts_no_test_proves`` hands its list to the ``unproven_report`` fixture;
the terminal-summary hook prints it after the run, grouped by prefix, so a growing suite can
see what is left without the list ever failing the build.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from pushwire.protocol.spec.requirements import Requirement

_UNPROVEN = pytest.StashKey[tuple[list[Requirement], int]]()


@pytest.fixture
def unproven_report(
    request: pytest.FixtureRequest,
) -> Callable[[Sequence[Requirement], int], None]:
    """Store (unproven MUSTs, number of MUSTs) for the terminal summary."""

    def store(unproven: Sequence[Requirement], total: int) -> None:
        request.config.stash[_UNPROVEN] = (list(unproven), total)

    return store


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    stash = terminalreporter.config.stash
    if _UNPROVEN not in stash:
        return
    unproven, total = stash[_UNPROVEN]
    terminalreporter.section("SPEC.md MUSTs without a @pytest.mark.spec test")
    terminalreporter.write_line(f"{len(unproven)} of {total} MUST / MUST NOT requirements:")
    by_prefix: dict[str, list[str]] = {}
    for r in unproven:
        by_prefix.setdefault(r.prefix, []).append(r.id)
    for prefix, ids in by_prefix.items():
        terminalreporter.write_line(f"  {prefix:<9} " + " ".join(ids))
