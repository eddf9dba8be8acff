"""The Makefile's two commands: ``make serve`` sets up what running a server needs and no
more, quietly; ``make test`` adds the test and development tools. Checked on make's plan
(``make -n``), which names every command it would run, without building anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(sys.platform == "win32", reason="make")
def test_make_serve_installs_the_runtime_only_and_quietly(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    plan = subprocess.run(
        ["make", "-n", "serve", f"VENV={venv}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    (install,) = [line for line in plan.splitlines() if "pip install" in line and " -e" in line]
    assert install.rstrip().endswith("-e .") and "[dev]" not in install
    assert "--quiet" in install and "PYTHONWARNINGS=ignore::UserWarning" in install
    test_plan = subprocess.run(
        ["make", "-n", "test", f"VENV={venv}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    assert "-e '.[dev]'" in test_plan
