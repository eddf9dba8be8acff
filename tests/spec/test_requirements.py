"""requirements.py and SPEC.md state the same requirements, and code cites only real ones.

- IDs are unique and well formed; levels, roles and sections are valid.
- Every ``[PW-…]`` in SPEC.md is in the table and every table entry is in SPEC.md, in the
  section the table says.
- Every sentence of a normative section that uses MUST / MUST NOT / SHOULD / SHOULD NOT
  carries an ID, and the keyword matches the level of (one of) the IDs it carries.
- Every ``PW-…`` mentioned in protocol/, server/, client/ or tests/ exists.
- The MUSTs that no test marks with ``@pytest.mark.spec(...)`` are *listed* in the terminal
  summary (tests/spec/conftest.py), not tested: the list is a to-do, not a regression.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from spec_marks import spec_marks

from pushwire.protocol.spec import requirements as R
from pushwire.protocol.spec import tables as spectables

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "SPEC.md"
CODE_DIRS = ("protocol", "server", "client", "tests")
BRACKETED = re.compile(r"\[(PW-[A-Z]+-[0-9]+)\]")
KEYWORD = re.compile(r"\b(MUST NOT|MUST|SHOULD NOT|SHOULD|MAY)\b")
#: Sections whose keywords are normative: everything but §1 (conventions), §4 and Appendix B
#: (informative) and the generated index.
INFORMATIVE = ("1", "4", "A", "B", "Contents")


@pytest.fixture(scope="module")
def doc() -> str:
    return SPEC.read_text(encoding="utf-8")


def _without_generated_and_code(text: str) -> str:
    text = spectables.REGION_RE.sub("", text)
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _sections(text: str) -> Iterator[tuple[str, str]]:
    """(section number, text) for each heading of ``text``, down to the deepest level."""
    parts = re.split(r"^(#{2,6} .*)$", text, flags=re.M)
    current = "0"
    for part in parts:
        m = re.match(r"^#{2,6} (?:Appendix )?([0-9A-Z]+(?:\.[0-9]+)*)[ .]", part)
        if m:
            current = m.group(1)
        elif part.startswith("## Contents"):
            current = "Contents"
        else:
            yield current, part


def _units(text: str) -> Iterator[str]:
    """Sentences of prose, list items and table rows, each as one string."""
    for block in re.split(r"\n\s*\n", text):
        lines = block.strip().splitlines()
        items: list[str] = []
        for line in lines:
            if line.startswith("|") or re.match(r"^\s*(?:[-*]|\d+\.) ", line) or not items:
                items.append(line)
            else:
                items[-1] += " " + line.strip()
        for item in items:
            if item.startswith("|"):
                yield item
                continue
            yield from re.split(r"(?<=[.!?])\s+(?=[A-Z(])", item)


# -- the table itself ----------------------------------------------------------------------


def test_requirement_table_is_well_formed() -> None:
    assert R.problems() == []


def test_ids_are_unique_and_numbered_without_holes_or_retired_reuse() -> None:
    ids = [r.id for r in R.REQUIREMENTS]
    assert len(ids) == len(set(ids))
    for prefix in R.PREFIXES:
        numbers = sorted(r.number for r in R.REQUIREMENTS if r.prefix == prefix)
        retired = sorted(int(i.rsplit("-", 1)[1]) for i in R.RETIRED if i.split("-")[1] == prefix)
        assert sorted(numbers + retired) == list(range(1, len(numbers) + len(retired) + 1)), prefix


def test_the_decode_error_ids_keep_their_meaning() -> None:
    """The decoder and the vectors cite these IDs for fixed error codes; renumbering them
    would silently change what a conformance report means."""
    expect = {
        "PW-PREFACE-1": "BAD_PREFACE",
        "PW-PREFACE-2": "RESERVED_BITS_SET",
        "PW-FRAME-2": "FRAME_TOO_LARGE",
        "PW-FRAME-3": "RESERVED_BITS_SET",
        "PW-FRAME-4": "MALFORMED_FRAME",
        "PW-FRAME-5": "UNKNOWN_FRAME_TYPE",
        "PW-FRAME-6": "INVALID_UTF8",
        "PW-FRAME-7": "FIELD_OUT_OF_RANGE",
        "PW-FRAME-8": "skipped",
        "PW-TOPIC-1": "topic name",
        "PW-HB-3": "3 intervals",
    }
    for rid, phrase in expect.items():
        assert phrase in R.BY_ID[rid].text, rid


# -- SPEC.md and the table agree ------------------------------------------------------------


def test_every_id_in_spec_is_in_the_table_and_vice_versa(doc: str) -> None:
    in_spec = set(BRACKETED.findall(_without_generated_and_code(doc)))
    in_table = set(R.BY_ID)
    assert in_spec - in_table == set(), "IDs in SPEC.md but not in requirements.py"
    assert in_table - in_spec == set(), "IDs in requirements.py but not stated in SPEC.md"


def test_every_malformed_looking_id_in_spec_is_flagged(doc: str) -> None:
    for found in R.ID_LIKE_RE.findall(doc):
        assert found in R.BY_ID, f"SPEC.md mentions unknown or malformed ID {found}"


def test_each_requirement_is_stated_in_its_own_section(doc: str) -> None:
    where: dict[str, set[str]] = {}
    for section, text in _sections(_without_generated_and_code(doc)):
        for rid in BRACKETED.findall(text):
            where.setdefault(rid, set()).add(section)
    wrong = {
        r.id: (r.section, sorted(where.get(r.id, ())))
        for r in R.REQUIREMENTS
        if r.section not in where.get(r.id, set())
    }
    assert not wrong, f"requirement section differs from where SPEC.md states it: {wrong}"


def test_every_normative_keyword_sentence_carries_an_id(doc: str) -> None:
    missing = []
    for section, text in _sections(_without_generated_and_code(doc)):
        if section.split(".")[0] in INFORMATIVE:
            continue
        for unit in _units(text):
            keywords = set(KEYWORD.findall(unit)) - {"MAY"}
            if keywords and not BRACKETED.search(unit):
                missing.append(f"§{section}: {unit.strip()[:120]}")
    assert not missing, "normative sentences without a requirement ID:\n" + "\n".join(missing)


def test_informative_sections_use_no_requirement_keywords(doc: str) -> None:
    for section, text in _sections(_without_generated_and_code(doc)):
        if section in ("4",) or section.startswith("B"):
            assert not KEYWORD.search(text), f"§{section} is informative"


def test_keyword_in_each_sentence_matches_the_level_of_its_id(doc: str) -> None:
    """A sentence tagged with a MUST requirement says MUST (or MUST NOT), and so on: the
    level in the table is the level SPEC.md states."""
    mismatched = []
    for section, text in _sections(_without_generated_and_code(doc)):
        if section.split(".")[0] in INFORMATIVE:
            continue
        for unit in _units(text):
            ids = BRACKETED.findall(unit)
            if not ids:
                continue
            stated = set(KEYWORD.findall(unit))
            if not stated:
                continue  # a cross-reference, not a statement
            for rid in ids:
                level = R.BY_ID[rid].level if rid in R.BY_ID else None
                if level is not None and level not in stated:
                    mismatched.append(f"{rid} ({level}) in: {unit.strip()[:100]}")
    assert not mismatched, "\n".join(mismatched)


# -- code cites only real IDs ---------------------------------------------------------------


def _code_files() -> Iterator[Path]:
    for top in CODE_DIRS:
        base = ROOT / top
        if base.is_dir():
            for path in sorted(base.rglob("*")):
                wanted = path.suffix in (".py", ".md", ".json", ".txt", ".toml")
                if wanted and path.is_file() and "__pycache__" not in path.parts:
                    yield path


def test_every_id_cited_in_code_and_tests_exists() -> None:
    unknown = []
    for path in _code_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            for found in R.ID_LIKE_RE.findall(line):
                retired_here = found in R.RETIRED and path.name == "requirements.py"
                if found not in R.BY_ID and not retired_here:
                    unknown.append(f"{path.relative_to(ROOT)}:{n}: {found}")
    assert not unknown, "unknown requirement IDs cited:\n" + "\n".join(unknown)


def test_spec_marks_name_known_requirements() -> None:
    unknown = [
        f"{path.relative_to(ROOT)}:{line}: {rid}"
        for path in sorted((ROOT / "tests").rglob("test_*.py"))
        for rid, line in spec_marks(path)
        if rid not in R.BY_ID
    ]
    assert not unknown, "@pytest.mark.spec with unknown IDs:\n" + "\n".join(unknown)
