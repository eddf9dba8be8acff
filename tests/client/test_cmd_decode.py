"""``pushwire decode``: frames in, readable fields out; malformed frames get the exact code,
hex code and requirement ID, exit status 1, and never a traceback."""

from __future__ import annotations

import io
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushwire.client.commands import cli
from pushwire.client.commands import decode as cmd_decode
from pushwire.client.commands.decode import decode, parse_hex
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import encode_preface
from pushwire.protocol.spec.vectors import frame_json

ACK = codec.encode_frame(F.Ack(2, 41)).hex()
MESSAGE = codec.encode_frame(F.Message(7, 9, "news/eu", b"hello", (("k", b"\x00v"),))).hex()
TRUNCATED_CREDIT = codec.encode_frame(F.Credit(1, 5)).hex()[:-2].replace("00000008", "00000007", 1)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(["decode", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_a_frame_prints_its_type_and_fields(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, MESSAGE)
    assert status == 0
    assert "@0  MESSAGE (0x20) flags=0x01" in out
    assert "epoch: 7" in out and "seq: 9" in out and 'topic: "news/eu"' in out
    assert "payload: 5 bytes 68656c6c6f |hello|" in out
    assert 'key: "k"' in out and "value: 2 bytes 0076 |.v|" in out


def test_enumerated_fields_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    frames = [
        F.Subscribe(1, "t", 1, 5, 6),
        F.Subscribed(1, 2, 3, 4, 5, 1, 3, 0x200),
        F.Error(0x101, 0x10, 1, "bad"),
    ]
    _, out, _ = run(capsys, "".join(codec.encode_frame(f).hex() for f in frames))
    assert "since_kind: 1 (AFTER)" in out
    assert "outcome: 2 (GAP)" in out and "reason: 512 (HISTORY_EXPIRED)" in out
    assert "code: 257 (INVALID_TOPIC)" in out and "request_type: 16 (SUBSCRIBE)" in out


@pytest.mark.spec("PW-FRAME-4")
def test_a_malformed_frame_prints_the_code_the_requirement_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = run(capsys, ACK, TRUNCATED_CREDIT)
    assert status == 1
    assert "@0  ACK (0x15)" in out  # the frame before the error is still shown
    assert "error at byte 18: MALFORMED_FRAME (0x0002) [PW-FRAME-4]: CREDIT:" in out
    assert "PW-FRAME-4: The payload matches the layout exactly" in out
    assert "Traceback" not in out + err


@pytest.mark.spec("PW-FRAME-2")
def test_the_frame_limit_is_an_option(capsys: pytest.CaptureFixture[str]) -> None:
    publish = codec.encode_frame(F.Publish(1, "t", bytes(100))).hex()
    assert run(capsys, publish)[0] == 0
    status, out, _ = run(capsys, "--max-frame-size", "50", publish)
    assert status == 1 and "FRAME_TOO_LARGE (0x0003) [PW-FRAME-2]" in out


def test_whitespace_0x_and_stdin_are_accepted(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spaced = " ".join("0x" + ACK[i : i + 4] for i in range(0, len(ACK), 4))
    assert parse_hex([spaced]) == bytes.fromhex(ACK)
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{ACK[:10]}\n{ACK[10:]}\n"))
    status, out, _ = run(capsys, "-")
    assert status == 0 and "ACK (0x15)" in out


def test_text_that_is_not_hex_exits_2_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for bad in ("zz", "abc", "0x0g"):
        status, _, err = run(capsys, bad)
        assert status == 2 and "pushwire decode:" in err and "Traceback" not in err


def test_a_preface_is_parsed_first_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--preface", encode_preface(1, 3).hex() + ACK)
    assert status == 0 and "version bytes 1 3" in out and "@8  ACK" in out
    status, out, _ = run(capsys, "--preface", "474554202f204854")
    assert status == 1 and "BAD_PREFACE (0x0009) [PW-PREFACE-1]" in out


def test_ignorable_frames_are_shown_as_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    unknown = codec.encode_frame(F.Unknown(0x99, 0x01, b"xyz")).hex()
    status, out, _ = run(capsys, unknown + ACK)
    assert status == 0
    assert "@0  unknown type 0x99 (ignorable) flags=0x01 length=3: skipped" in out
    assert "@9  ACK" in out


def test_json_output_uses_the_vectors_conventions(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--json", MESSAGE + TRUNCATED_CREDIT)
    result = json.loads(out)
    assert status == 1
    (frame,) = result["frames"]
    assert {k: frame[k] for k in ("type", "flags", "fields")} == frame_json(
        F.Message(7, 9, "news/eu", b"hello", (("k", b"\x00v"),))
    )
    assert result["error"] | {"message": ""} == {
        "offset": len(MESSAGE) // 2,
        "name": "MALFORMED_FRAME",
        "code": 2,
        "requirement": "PW-FRAME-4",
        "requirement_text": result["error"]["requirement_text"],
        "message": "",
    }


@given(st.binary(max_size=120), st.booleans(), st.integers(0, 100))
def test_any_bytes_give_frames_or_one_error_never_an_exception(
    data: bytes, preface: bool, limit: int
) -> None:
    result = decode(data, preface=preface, max_frame_size=limit)
    assert result["error"] is None or result["error"]["name"]
    json.dumps(result)  # JSON-ready whatever the input


def test_the_installed_command_prints_no_traceback_for_junk() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pushwire.client", "decode", "ffffffffff00"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "FRAME_TOO_LARGE" in done.stdout and "Traceback" not in done.stderr


@dataclass
class Example:
    args: list[str]  # empty: not a plain run of pushwire decode (a pipe), not checked
    output: list[str] = field(default_factory=list)
    status: int = 0


def help_examples() -> list[Example]:
    """The examples of ``pushwire decode --help``. An example's output is the lines
    indented below it; ``[exit status N]`` gives a status other than 0."""
    examples: list[Example] = []
    for line in cmd_decode.EPILOG.splitlines():
        if line.startswith("      ") and examples:
            text = line[6:]
            if text.startswith("[exit status "):
                examples[-1].status = int(text.removeprefix("[exit status ").rstrip("]"))
            else:
                examples[-1].output.append(text)
        elif line.startswith("  "):
            plain = line.startswith("  pushwire decode ")
            examples.append(Example(shlex.split(line)[2:] if plain else []))
    return [e for e in examples if e.args]


def test_the_help_examples_show_the_real_output(capsys: pytest.CaptureFixture[str]) -> None:
    examples = help_examples()
    assert len(examples) == 3 and all(e.output for e in examples)
    for example in examples:
        status, out, _ = run(capsys, *example.args)
        assert status == example.status, example
        real = out.splitlines()
        assert len(real) == len(example.output), (example, real)
        for got, shown in zip(real, example.output, strict=True):
            if shown.endswith("..."):  # cut short in the help
                assert got.startswith(shown[:-3]), (got, shown)
            else:
                assert got == shown


@pytest.mark.spec("PW-FRAME-14")
@pytest.mark.parametrize(
    ("hex_input", "expected"),
    [
        ("000000087d00", "UNKNOWN_FRAME_TYPE (0x0004)"),
        ("00000008200200", "RESERVED_BITS_SET (0x0005)"),
        ("0000000803000000", "MALFORMED_FRAME (0x0002)"),
    ],
)
def test_input_that_ends_inside_a_payload_gets_the_code_its_header_decides(
    capsys: pytest.CaptureFixture[str], hex_input: str, expected: str
) -> None:
    status, out, _ = run(capsys, hex_input)
    assert status == 1
    assert f"error at byte 0: {expected} [PW-FRAME-" in out
