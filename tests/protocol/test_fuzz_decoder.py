"""``pushwire.protocol.testing.fuzz_decoder``, the harness that fuzzes someone else's
decoder, passes a correct decoder, catches a broken one, survives a decoder that crashes,
hangs or talks nonsense, and runs end to end as ``python -m``. (The mutants it must catch
are in ``test_fuzz_decoder_mutants.py``.)

It ships inside ``pushwire.protocol``, so it also obeys that package's rules: importing it
(or any module of the package) starts no I/O and never imports trio.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.testing.fuzz_decoder import (
    Case,
    FuzzFailure,
    LineDecoder,
    PushwireDecoder,
    answer,
    check_answer,
    check_decoder,
    judge,
    serve,
)

MODULE = "pushwire.protocol.testing.fuzz_decoder"


def run_module(*args: str, cwd: Path, **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,  # hypothesis keeps its example database in the working directory
        check=False,
        **options,
    )


PING = codec.encode_frame(F.Ping(7))
PING_JSON = {"type": "PING", "flags": 0, "fields": {"opaque": 7}}


def test_passes_pushwires_own_decoder() -> None:
    report = check_decoder(PushwireDecoder(), max_examples=25)
    assert report.ok and len(report.results) == 6
    assert all(r.examples >= 25 for r in report.results)


def test_drives_a_decoder_in_another_process() -> None:
    line_decoder = LineDecoder([sys.executable, "-m", MODULE, "--serve"])
    try:
        check_decoder(line_decoder, max_examples=10)
    finally:
        line_decoder.close()


def test_catches_a_decoder_that_ignores_the_size_limit_and_runs_every_property() -> None:
    class NoLimit(PushwireDecoder):
        def decode(self, chunks: Any, max_frame_size: int) -> Any:
            return super().decode(chunks, 1 << 32)

    with pytest.raises(FuzzFailure) as info:
        check_decoder(NoLimit(), max_examples=50, seed=1)
    report = info.value.report
    assert len(report.results) == 6  # a failure does not stop the other properties
    assert "size_limit_boundary" in [r.name for r in report.failed()]
    text = str(info.value)
    assert "FAILED size_limit_boundary: answer differs" in text
    assert "--replay " in text and '"error": "FRAME_TOO_LARGE"' in text
    assert "(seed 1)" in text


@pytest.mark.spec("PW-FRAME-14")
def test_serve_answers_one_json_line_per_request_with_the_frames_and_the_error(
    tmp_path: Path,
) -> None:
    requests = tmp_path / "requests"
    lines = [
        f"16384 {PING.hex()}",
        f"16 {PING.hex()} {PING[:5].hex()}",  # two reads; the input ends inside a header
        "16 ",
        f"16384 {PING[:3].hex()} {PING[3:].hex()}000000087d00",  # a frame split over reads
        "16384 00000008200200",
    ]
    requests.write_text("".join(line + "\n" for line in lines))
    answers = tmp_path / "answers"
    with requests.open() as stdin, answers.open("w") as stdout:
        serve(stdin, stdout)
    assert [json.loads(line) for line in answers.read_text().splitlines()] == [
        {"frames": [PING_JSON], "error": None},
        {"frames": [PING_JSON], "error": "MALFORMED_FRAME"},
        {"frames": [], "error": None},
        {"frames": [PING_JSON], "error": "UNKNOWN_FRAME_TYPE"},
        {"frames": [], "error": "RESERVED_BITS_SET"},
    ]


def test_serve_speaks_line_protocol_1_on_request(tmp_path: Path) -> None:
    requests = tmp_path / "requests"
    requests.write_text(f"16384 {PING.hex()}\n16 {PING.hex()}{PING[:5].hex()}\n")
    answers = tmp_path / "answers"
    with requests.open() as stdin, answers.open("w") as stdout:
        serve(stdin, stdout, line_protocol=1)
    assert [json.loads(line) for line in answers.read_text().splitlines()] == [
        {"frames": [PING_JSON]},
        {"error": "MALFORMED_FRAME"},
    ]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ([], "not a JSON object"),
        ({"frames": []}, "need exactly"),
        ({"frames": [], "error": None, "extra": 1}, "need exactly"),
        ({"frames": [], "error": "NO_ERROR"}, "is not one of"),
        ({"frames": {}, "error": None}, "not a list"),
        ({"frames": [{"type": "PING"}], "error": None}, "frames[0]"),
        ({"frames": [{"type": "NOPE", "flags": 0, "fields": {}}], "error": None}, "type"),
        ({"frames": [{"type": "PING", "flags": 256, "fields": {}}], "error": None}, "u8"),
    ],
)
def test_every_answer_is_validated(value: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        check_answer(value)


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "decoder.py"
    path.write_text("import sys\n" + textwrap.dedent(body))
    return [sys.executable, str(path)]


def _case(data: bytes = PING) -> Case:
    return Case(16384, (data,), answer([F.Ping(7)]))


def test_a_decoder_that_crashes_is_reported_with_the_input_and_restarted(tmp_path: Path) -> None:
    crash_on_ping = """
    for line in sys.stdin:
        if "03" in line.split()[-1][8:10]:
            print("about to fail", file=sys.stderr, flush=True)
            sys.exit(3)
        print('{"frames": [], "error": null}', flush=True)
    """
    decoder = LineDecoder(_script(tmp_path, crash_on_ping), timeout=10)
    try:
        finding = judge(decoder, _case())
        assert finding is not None
        assert "decoder exited (status 3)" in finding.problem
        assert "about to fail" in finding.problem
        assert finding.case.data == PING and "--replay 16384 " + PING.hex() in finding.render()
        empty = Case(16384, (), answer([]))
        assert judge(decoder, empty) is None  # restarted: the next input gets an answer
        assert decoder.restarts == 1
    finally:
        decoder.close()


def test_a_silent_decoder_times_out_and_the_property_stops_asking(tmp_path: Path) -> None:
    silent = """
    for line in sys.stdin:
        pass
    """
    decoder = LineDecoder(_script(tmp_path, silent), timeout=0.5)
    try:
        with pytest.raises(FuzzFailure) as info:
            check_decoder(decoder, max_examples=50, properties=["valid_frames"])
    finally:
        decoder.close()
    (result,) = info.value.report.results
    assert result.finding is not None and result.finding.fatal
    assert "no answer within 0.5 s" in result.finding.problem
    assert decoder.restarts == 1  # one timeout, not one per shrinking step


def test_an_answer_that_is_not_json_or_not_an_answer_is_a_finding(tmp_path: Path) -> None:
    chatty = """
    answers = ["decoding...", '{"frames": []}', '{"frames": [], "error": null}']
    for line, answer in zip(sys.stdin, answers):
        print(answer, flush=True)
    """
    decoder = LineDecoder(_script(tmp_path, chatty), timeout=10)
    try:
        empty = Case(16384, (), answer([]))
        first, second, third = (judge(decoder, empty) for _ in range(3))
        assert first is not None and "not JSON: 'decoding...'" in first.problem
        assert second is not None and "not a valid answer" in second.problem
        assert third is None
    finally:
        decoder.close()


def test_line_protocol_1_decoders_are_still_checked_for_codes() -> None:
    old = [sys.executable, "-m", MODULE, "--serve", "--line-protocol", "1"]
    decoder = LineDecoder(old, line_protocol=1)
    try:
        cut = Case(16384, (PING, PING[:3]), answer([F.Ping(7)], "MALFORMED_FRAME"))
        assert judge(decoder, cut) is None  # the frames before an error cannot be checked
        assert judge(decoder, Case(16384, (PING[:3],), answer([], "FRAME_TOO_LARGE"))) is not None
        assert judge(decoder, _case()) is None
    finally:
        decoder.close()
    decoder = LineDecoder(old)  # a harness speaking protocol 2 to a protocol 1 decoder
    try:
        finding = judge(decoder, _case())
        assert finding is not None and "--line-protocol 1" in finding.problem
    finally:
        decoder.close()


def test_runs_end_to_end_as_a_module_against_itself(tmp_path: Path) -> None:
    serve_itself = [sys.executable, "-m", MODULE, "--serve"]
    result = run_module(
        "-m", MODULE, "--examples", "5", "--seed", "3", "--", *serve_itself, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "fuzz_decoder: 5 examples per property, seed 3, line protocol 2"
    assert lines[-1] == "all properties hold"
    assert sum(line.startswith("  ok ") for line in lines) == 6
    assert list(tmp_path.iterdir()) == []  # no .hypothesis/ left behind


def test_keeps_an_example_database_only_when_asked(tmp_path: Path) -> None:
    result = run_module(
        "-m",
        MODULE,
        "--examples",
        "3",
        "--property",
        "valid_frames",
        "--database",
        "db",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["db"]


def test_replays_one_input_against_the_reference(tmp_path: Path) -> None:
    serve_itself = [sys.executable, "-m", MODULE, "--serve"]
    result = run_module(
        "-m",
        MODULE,
        "--replay",
        "16384",
        PING.hex(),
        "000000087d00",
        "--",
        *serve_itself,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    expected = json.dumps({"error": "UNKNOWN_FRAME_TYPE", "frames": [PING_JSON]}, sort_keys=True)
    assert result.stdout.splitlines() == [
        f"expected: {expected}",
        f"actual:   {expected}",
        "same answer",
    ]


def test_help_documents_the_answer_format(tmp_path: Path) -> None:
    result = run_module("-m", MODULE, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert '{"frames": [FRAME, ...], "error": null | "CODE_NAME"}' in result.stdout
    assert "MAX_FRAME_SIZE [HEX ...]" in result.stdout and "--replay" in result.stdout


WITHOUT_HYPOTHESIS = "import sys; sys.modules['hypothesis'] = None\n"  # its import fails
HINT = f"{MODULE} needs hypothesis, a test dependency: pip install 'pushwire[test]'"


def test_says_in_one_line_what_to_install_when_hypothesis_is_missing(tmp_path: Path) -> None:
    as_main = f"import runpy; runpy.run_module({MODULE!r}, run_name='__main__')"
    result = run_module("-c", WITHOUT_HYPOTHESIS + as_main, cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", f"error: {HINT}\n")


def test_importing_without_hypothesis_raises_import_error_with_the_hint(tmp_path: Path) -> None:
    imported = f"try:\n    import {MODULE}\nexcept ImportError as exc:\n    print(exc)"
    result = run_module("-c", WITHOUT_HYPOTHESIS + imported, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, f"{HINT}\n"), result.stderr


IMPORT_AUDIT = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    import pushwire.protocol

    names = sorted(
        m.name for m in pkgutil.walk_packages(pushwire.protocol.__path__, "pushwire.protocol.")
    )
    assert "pushwire.protocol.testing.fuzz_decoder" in names, names
    seen = []

    def audit(event, args):
        if event == "open" and str(args[0]).endswith((".py", ".pyc", ".so")):
            return  # the import system reading modules
        if event == "open" or event.split(".")[0] in ("subprocess", "socket", "shutil") or (
            event in ("os.mkdir", "os.remove", "os.rename", "os.system", "os.posix_spawn")
        ):
            seen.append(f"{event} {args!r}")

    sys.addaudithook(audit)
    for name in names:
        importlib.import_module(name)
    print("\\n".join(seen + [m for m in sys.modules if m.split(".")[0] == "trio"]))
    """
)


def test_importing_the_protocol_package_does_no_io_and_never_imports_trio(
    tmp_path: Path,
) -> None:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    # trio registers a hypothesis plugin, which hypothesis imports at its own import time;
    # that is hypothesis's doing, not pushwire.protocol's, so plugins are off here.
    env["HYPOTHESIS_NO_PLUGINS"] = "1"
    result = run_module("-c", IMPORT_AUDIT, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
    assert list(tmp_path.iterdir()) == []
