"""The terminal summary of a run that includes tests/spec: which MUSTs of SPEC.md no test
claims to prove.

A report, not a test: it cannot fail, so it is printed after the run (grouped by prefix)
instead of posing as a passing test. The list is a to-do, not a regression.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from spec_marks import proven_ids

from pushwire.protocol.spec import requirements as R

_HERE = Path(__file__).resolve().parent
_RAN_SPEC = pytest.StashKey[bool]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[_RAN_SPEC] = any(_HERE in Path(str(item.path)).parents for item in items)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not terminalreporter.config.stash.get(_RAN_SPEC, False):
        return
    proven = proven_ids()
    musts = [r for r in R.REQUIREMENTS if r.is_must]
    unproven = [r for r in musts if r.id not in proven]
    terminalreporter.section("SPEC.md MUSTs without a @pytest.mark.spec test")
    terminalreporter.write_line(f"{len(unproven)} of {len(musts)} MUST / MUST NOT requirements:")
    by_prefix: dict[str, list[str]] = {}
    for r in unproven:
        by_prefix.setdefault(r.prefix, []).append(r.id)
    for prefix, ids in by_prefix.items():
        terminalreporter.write_line(f"  {prefix:<9} " + " ".join(ids))
