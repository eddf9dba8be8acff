"""``fuzz_decoder`` proves itself by mutation: decoders that each break one rule of SPEC.md
§3 (``mutant_decoders.py``), served over the line protocol by a child process, are each
caught by the property written for that rule within 1,000 examples, while the same decoder
without the mistake passes every property.

Each mutant runs against the property that catches it (the harness runs all six for a
user; ``python -m pushwire.protocol.testing.fuzz_decoder -- python
tests/protocol/mutant_decoders.py NAME`` shows every property that catches one).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings
from mutant_decoders import DECODERS, MUTANTS

from pushwire.protocol.testing import fuzz_decoder
from pushwire.protocol.testing.fuzz_decoder import FuzzFailure, LineDecoder, check_decoder

SCRIPT = Path(__file__).with_name("mutant_decoders.py")
#: The most examples a property may need to catch its mutant.
BUDGET = 1000

#: Which property catches which mutant (each has its own rule).
CAUGHT_BY = {
    "too-large-off-by-one": "size_limit_boundary",
    "limit-fixed-at-16384": "size_limit_boundary",
    "ignorable-frames-not-size-checked": "size_limit_boundary",
    "bom-dropped": "leading_bom_kept",
    "frames-before-error-dropped": "hostile_frame_after_valid_frames",
    "reserved-bits-wrong-code": "hostile_frame_after_valid_frames",
    "unknown-fatal-type-skipped": "hostile_frame_after_valid_frames",
    "invalid-utf8-dropped": "hostile_frame_after_valid_frames",
    "ranges-unchecked": "hostile_frame_after_valid_frames",
    "end-of-input-inside-frame-ignored": "stream_ends_inside_a_frame",
    "header-code-lost-at-end-of-input": "stream_ends_inside_a_frame",
    "partial-frame-dropped-between-reads": "valid_frames",
}


def serve(name: str) -> LineDecoder:
    return LineDecoder([sys.executable, str(SCRIPT), name], timeout=30)


def test_every_mutant_has_a_property() -> None:
    assert set(CAUGHT_BY) == set(MUTANTS)


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_each_mutant_is_caught_by_its_property_within_the_budget(name: str) -> None:
    decoder = serve(name)
    try:
        with pytest.raises(FuzzFailure) as info:
            check_decoder(decoder, BUDGET, shrink=False, properties=[CAUGHT_BY[name]])
    finally:
        decoder.close()
    (result,) = info.value.report.results
    assert result.failed_after is not None and result.failed_after <= BUDGET
    assert result.finding is not None and result.finding.problem == "answer differs"


def test_the_decoder_the_mutants_come_from_passes_every_property() -> None:
    # In-process: the same class the mutants subclass, at the profile's example count.
    check_decoder(DECODERS["correct"](), settings.default.max_examples)


@pytest.mark.spec("PW-FRAME-1")
def test_frames_before_a_bad_frame_thrown_away_are_reported_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bug the earlier answer format could not show: a MESSAGE decoded in the same read
    as a malformed PING never reached the application."""
    command = [
        sys.executable,
        "-m",
        "pushwire.protocol.testing.fuzz_decoder",
        "--examples",
        str(BUDGET),
        "--no-shrink",
        "--property",
        "hostile_frame_after_valid_frames",
        "--",
        sys.executable,
        str(SCRIPT),
        "frames-before-error-dropped",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False
    )
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "FAILED hostile_frame_after_valid_frames: answer differs" in out
    expected = next(line for line in out.splitlines() if line.startswith("  expected: "))
    actual = next(line for line in out.splitlines() if line.startswith("  actual: "))
    assert '"frames": []' in actual and '"frames": []' not in expected
    replay = next(line for line in out.splitlines() if line.startswith("  replay: "))
    args = replay.split("fuzz_decoder ", 1)[1].split(" -- ")[0].split()
    assert fuzz_decoder.main([*args, "--", *command[-3:]]) == 1  # the replay fails too
    assert "answer differs" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
