"""``pushwire decode``: decode frames given in hex, or say exactly why they are malformed.

Each frame is handed to the same :class:`~pushwire.protocol.decoder.FrameDecoder` (and so the
same hot-path codec) a connection uses, one frame at a time with end of input after it, so
the answer — frame or error code — is the one a pushwire peer would act on. The requirement
ID of an error points into SPEC.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from pushwire.protocol import codec
from pushwire.protocol.decoder import FrameDecoder, parse_preface
from pushwire.protocol.errors import ErrorCode, RemoteProtocolError
from pushwire.protocol.layouts import (
    INITIAL_MAX_FRAME_SIZE,
    PREFACE_SIZE,
    FrameType,
    Outcome,
    SinceKind,
    SlowConsumerPolicy,
)
from pushwire.protocol.spec.vectors import frame_json

DESCRIPTION = """\
Decode pushwire frames given as hex (several frames may follow each other) and print each
frame's type and fields, or the exact error a receiver reports for a malformed frame: code
name, hex code, requirement ID and message. Exit status 1: the bytes hold a malformed frame
(its error is printed); 2: the input is not hex.
"""
EPILOG = """\
examples, each with its output (a long line cut short at '...'):
  pushwire decode 0000000c 15 00 00000002 0000000000000029
      @0  ACK (0x15) flags=0x00 length=12
          sub_id: 2
          seq: 41
  pushwire decode 00000007140000000001000000
      error at byte 0: MALFORMED_FRAME (0x0002) [PW-FRAME-4]: CREDIT: payload ends inside a field
        PW-FRAME-4: The payload matches the layout exactly: ...
      [exit status 1]
  pushwire decode --preface 8950570a01010000 0000000803000000000000000001
      preface  8950570a01010000: version bytes 1 1 (client: min 1 max 1; server: chose 1, ...
      @8  PING (0x03) flags=0x00 length=8
          opaque: 1
  xxd -p capture.bin | pushwire decode --json -
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "hex",
        nargs="+",
        metavar="HEX",
        help="frame bytes in hex; whitespace and a leading 0x are ignored; '-' reads stdin",
    )
    parser.add_argument(
        "--preface", action="store_true", help="the input starts with an 8-byte preface"
    )
    parser.add_argument(
        "--max-frame-size",
        type=int,
        default=INITIAL_MAX_FRAME_SIZE,
        metavar="N",
        help=f"the receiver's frame limit in payload bytes (default {INITIAL_MAX_FRAME_SIZE})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def parse_hex(parts: list[str], stdin: Any = None) -> bytes:
    """The bytes of the command-line arguments ('-' = standard input). ValueError with a
    readable message when the text is not hex."""
    text = " ".join((stdin or sys.stdin).read() if p == "-" else p for p in parts)
    # A 0x prefix is dropped only where a token starts, so "0x0a" works and "a0x" does not.
    cleaned = "".join(re.sub(r"^0[xX]", "", token) for token in text.split())
    if len(cleaned) % 2:
        raise ValueError(f"odd number of hex digits ({len(cleaned)})")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        bad = next((c for c in cleaned if c not in "0123456789abcdefABCDEF"), "?")
        raise ValueError(f"not hexadecimal: {bad!r}") from None


# -- decoding -----------------------------------------------------------------------------------


def _requirement_text(requirement: str | None) -> str | None:
    if requirement is None:
        return None
    try:
        from pushwire.protocol.spec.requirements import BY_ID
    except ImportError:  # pragma: no cover - the table is part of the package
        return None
    entry = BY_ID.get(requirement)
    return entry.text if entry else None


def decode(data: bytes, *, preface: bool, max_frame_size: int) -> dict[str, Any]:
    """Everything ``data`` holds, as JSON-ready data: the preface, the frames in order, and
    the first error (``None`` if there is none). Decoding stops at the first error."""
    result: dict[str, Any] = {"preface": None, "frames": [], "error": None}
    offset = 0
    try:
        if preface:
            first, second = parse_preface(data[:PREFACE_SIZE])
            result["preface"] = {"hex": data[:PREFACE_SIZE].hex(), "first": first, "second": second}
            offset = PREFACE_SIZE
        while offset < len(data):
            rest = data[offset:]
            entry: dict[str, Any] = {"offset": offset}
            decoder = FrameDecoder(max_frame_size)
            end = len(rest)
            if (span := codec.frame_span(rest)) is not None:
                header = span.header
                end = min(span.end, len(rest))
                entry |= {"length": header.length, "type_code": header.type, "flags": header.flags}
            decoder.feed(rest[:end])
            decoder.feed(b"")  # end of input: a cut-short frame is an error, not a wait
            frame = decoder.next_frame()
            if frame is None:
                entry |= {"type": None, "ignored": True}
            else:
                entry |= frame_json(frame)
            result["frames"].append(entry)
            offset += end
    except RemoteProtocolError as exc:
        result["error"] = {
            "offset": offset,
            "name": exc.code.name,
            "code": int(exc.code),
            "requirement": exc.requirement,
            "requirement_text": _requirement_text(exc.requirement),
            "message": exc.args[0] if exc.args else "",
        }
    return result


# -- printing -----------------------------------------------------------------------------------


def _code_name(value: int) -> str:
    try:
        return ErrorCode(value).name
    except ValueError:
        return "unknown code"


def _enum(key: str, value: Any) -> str | None:
    """A name for a field value whose meaning comes from a registry."""
    names: dict[str, Any] = {
        "since_kind": SinceKind,
        "outcome": Outcome,
        "slow_consumer_policy": SlowConsumerPolicy,
    }
    if not isinstance(value, int):
        return None
    if key in names:
        try:
            return str(names[key](value).name)
        except ValueError:
            return "undefined"
    if key in ("code", "reason", "gap_reason"):
        return _code_name(value)
    if key == "request_type":
        return "connection" if value == 0 else _type_name(value)
    return None


def _type_name(value: int) -> str:
    try:
        return FrameType(value).name
    except ValueError:
        return f"0x{value:02x}"


def _show_bytes(hex_text: str) -> str:
    raw = bytes.fromhex(hex_text)
    if not raw:
        return "(empty)"
    preview = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in raw[:48])
    more = "..." if len(raw) > 48 else ""
    return f"{len(raw)} bytes {hex_text[:96]}{more} |{preview}{more}|"


def _lines(value: Any, key: str, indent: str) -> list[str]:
    if isinstance(value, dict):
        out = [f"{indent}{key}:"] if key else []
        for k, v in value.items():
            out += _lines(v, k, indent + ("  " if key else ""))
        return out
    if isinstance(value, list):
        out = [f"{indent}{key}: {len(value)} item{'s' if len(value) != 1 else ''}"]
        for i, item in enumerate(value):
            out += _lines(item, f"[{i}]", indent + "  ")
        return out
    if key in ("payload", "value", "auth_token") and isinstance(value, str):
        return [f"{indent}{key}: {_show_bytes(value)}"]
    shown = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)
    name = _enum(key, value)
    return [f"{indent}{key}: {shown}" + (f" ({name})" if name else "")]


def _print_text(result: dict[str, Any]) -> None:
    if result["preface"] is not None:
        p = result["preface"]
        print(
            f"preface  {p['hex']}: version bytes {p['first']} {p['second']} "
            f"(client: min {p['first']} max {p['second']}; "
            f"server: chose {p['first']}, speaks up to {p['second']})"
        )
    for entry in result["frames"]:
        code = entry["type_code"]
        where = f"@{entry['offset']}"
        if entry.get("ignored"):
            print(
                f"{where}  unknown type 0x{code:02x} (ignorable) flags=0x{entry['flags']:02x} "
                f"length={entry['length']}: skipped"
            )
            continue
        print(
            f"{where}  {entry['type']} (0x{code:02x}) flags=0x{entry['flags']:02x} "
            f"length={entry['length']}"
        )
        for line in _lines(entry["fields"], "", "    "):
            print(line)
    error = result["error"]
    if error is not None:
        requirement = error["requirement"] or "-"
        print(
            f"error at byte {error['offset']}: {error['name']} (0x{error['code']:04x}) "
            f"[{requirement}]: {error['message']}"
        )
        if error["requirement_text"]:
            print(f"  {requirement}: {error['requirement_text']}")


def run(args: argparse.Namespace) -> int:
    try:
        data = parse_hex(args.hex)
    except ValueError as exc:
        print(f"pushwire decode: {exc}", file=sys.stderr)
        return 2
    if args.max_frame_size < 0:
        print("pushwire decode: --max-frame-size must not be negative", file=sys.stderr)
        return 2
    result = decode(data, preface=args.preface, max_frame_size=args.max_frame_size)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        if not data:
            print("no bytes given")
        _print_text(result)
    return 1 if result["error"] else 0
