"""IMPLEMENTING.md stays true: the vectors, commands and IDs it names exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pushwire.client.commands.cli import COMMANDS
from pushwire.protocol.spec import requirements as R

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "IMPLEMENTING.md"
VECTORS = ROOT / "protocol" / "vectors.json"


@pytest.fixture(scope="module")
def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def test_vector_names_in_the_guide_exist(guide: str) -> None:
    data = json.loads(VECTORS.read_text(encoding="utf-8"))
    names = {v["name"] for v in data["frames"]} | {v["name"] for v in data["prefaces"]}
    for step in re.findall(r"### Step 2.*?(?=### Step 3)", guide, re.S):
        for cited in re.findall(r"`([a-z0-9-]+(?:\*)?)`", step):
            if cited.endswith("*"):
                assert any(n.startswith(cited[:-1]) for n in names), cited
            elif "-" in cited or cited in names:
                assert cited in names, f"IMPLEMENTING.md names vector {cited!r}"


def test_commands_in_the_guide_are_real_subcommands(guide: str) -> None:
    used = set(re.findall(r"`pushwire ([a-z]+)", guide)) | set(
        re.findall(r"^pushwire ([a-z]+)", guide, re.M)
    )
    assert used <= set(COMMANDS), used - set(COMMANDS)
    for name in ("conformance", "testserver", "fuzz", "decode", "serve"):
        assert name in used


def test_ids_in_top_level_documents_exist() -> None:
    for path in sorted(ROOT.glob("*.md")):
        for found in R.ID_LIKE_RE.findall(path.read_text(encoding="utf-8")):
            assert found in R.BY_ID, f"{path.name} cites unknown {found}"
