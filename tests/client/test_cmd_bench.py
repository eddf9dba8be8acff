"""``pushwire bench codec`` runs and reports: a smoke test of the output, not of the speed
(speed targets are measured by hand, never asserted in tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pushwire.client.commands import cli


def test_bench_codec_prints_every_implementation_and_the_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "codec.json"
    assert cli.main(["bench", "codec", "--n", "1000", "--repeat", "1", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    for name in ("construct declaration", "reference codec", "hot-path codec", "struct ceiling"):
        assert name in out
    assert "hot-path / ceiling: decode" in out
    figures = json.loads(report.read_text())
    assert figures["target"] == "codec" and figures["payload_size"] == 64
    assert [r["name"] for r in figures["results"]] == [
        "construct declaration",
        "reference codec",
        "hot-path codec",
        "struct ceiling",
    ]
    for result in figures["results"]:
        assert result["decode_ns"] > 0 and result["encode_ns"] > 0 and result["calls"] >= 100
    assert set(figures["hot_over_ceiling"]) == {"decode", "encode"}


def test_bench_refuses_nonsense_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "codec", "--n", "5"]) == 2
    assert "--n >= 100" in capsys.readouterr().err


def test_bench_needs_a_target() -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["bench"])
    assert info.value.code == 2


def test_bench_codec_report_write_failure_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "missing-dir" / "codec.json"
    args = ["bench", "codec", "--n", "1000", "--repeat", "1", "--json", str(report)]
    assert cli.main(args) == 2
    out, err = capsys.readouterr()
    assert "hot-path / ceiling" in out  # the figures were printed; only the file is missing
    assert err.strip().splitlines() == [
        f"pushwire bench codec: error: cannot write {report}: No such file or directory"
    ]


@pytest.mark.parametrize("target", ["server", "codec"])
def test_bench_help_shows_plain_text_not_restructuredtext(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["bench", target, "--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "**" not in out and ":data:`" not in out
    assert not any(line and set(line) <= {"-", "="} for line in out.splitlines())
    if target == "server":
        assert "Theory of operation:\n" in out and "MAX_SUBSCRIBERS connections" in out
