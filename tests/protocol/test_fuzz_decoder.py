"""``pushwire.protocol.testing.fuzz_decoder``, the harness that fuzzes someone else's
decoder, passes a correct decoder, catches a broken one, and runs end to end as ``python -m``.

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
    LineDecoder,
    PushwireDecoder,
    check_decoder,
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


def test_passes_pushwires_own_decoder() -> None:
    check_decoder(PushwireDecoder(), max_examples=25, database=None)


def test_drives_a_decoder_in_another_process() -> None:
    line_decoder = LineDecoder([sys.executable, "-m", MODULE, "--serve"])
    try:
        check_decoder(line_decoder, max_examples=10, database=None)
    finally:
        line_decoder.close()


def test_catches_a_decoder_that_ignores_the_size_limit() -> None:
    class NoLimit(PushwireDecoder):
        def decode(self, data: bytes, max_frame_size: int) -> Any:
            return super().decode(data, 1 << 32)

    with pytest.raises(AssertionError):
        check_decoder(NoLimit(), max_examples=200, database=None)


def test_serve_answers_one_json_line_per_request(tmp_path: Path) -> None:
    ping = codec.encode_frame(F.Ping(7))
    requests = tmp_path / "requests"
    requests.write_text(f"16384 {ping.hex()}\n16 {ping[:5].hex()}\n16 \n")
    answers = tmp_path / "answers"
    with requests.open() as stdin, answers.open("w") as stdout:
        serve(stdin, stdout)
    assert [json.loads(line) for line in answers.read_text().splitlines()] == [
        {"frames": [{"type": "PING", "flags": 0, "fields": {"opaque": 7}}]},
        {"error": "MALFORMED_FRAME"},  # the input ends inside the header
        {"frames": []},
    ]


def test_runs_end_to_end_as_a_module_against_itself(tmp_path: Path) -> None:
    serve_itself = [sys.executable, "-m", MODULE, "--serve"]
    result = run_module("-m", MODULE, "--examples", "5", "--", *serve_itself, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "all properties hold\n"


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
