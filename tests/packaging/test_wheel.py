"""The built wheel carries the three subpackages under the ``pushwire`` namespace, and
nothing under generic top-level names such as ``server`` or ``client``."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("pushwire-*.whl")
    return path


def test_wheel_contains_the_three_subpackages_and_their_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for sub in ("protocol", "server", "client"):
        assert f"pushwire/{sub}/__init__.py" in names
        assert f"pushwire/{sub}/py.typed" in names
    assert "pushwire/protocol/vectors.json" in names
    assert "pushwire/protocol/vectors.schema.json" in names
    assert "pushwire/client/conformance/cases/__init__.py" in names
    assert "pushwire/__init__.py" not in names  # a namespace package
    top = {n.split("/", 1)[0] for n in names}
    assert not top & {"protocol", "server", "client", "tests"}


def test_installed_wheel_imports_from_its_own_files(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import pushwire.protocol.layouts, pushwire.server, pushwire.client.commands.cli;"
        "import pushwire.client.conformance.cmd, pushwire.server.testserver;"
        "print(pushwire.protocol.layouts.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.stdout.strip().startswith(str(target))


def test_wheel_metadata_carries_the_license_as_an_spdx_expression(wheel: Path) -> None:
    """PEP 639: ``license = "MIT"`` (setuptools >= 77), not the deprecated table form that
    makes every build print a deprecation warning."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(name).decode()
    headers = metadata.split("\n\n", 1)[0].splitlines()
    assert "License-Expression: MIT" in headers
    assert not [h for h in headers if h.startswith("License:")]
