"""``pushwire bench codec``: the hot-path codec against the declaration and a struct ceiling.

Measures, in one run and on the same frame, encode and decode of a MESSAGE without headers
(64-byte payload by default) by four implementations:

* **construct declaration**: ``layouts.Message`` parse / build on a dict, what the codec would
  cost if it walked the declarations (the normative definition, nothing else);
* **reference codec**: ``reference.encode_frame`` / ``reference.decode_body``, the declaration
  plus dataclass conversion and the shared checks;
* **hot-path codec**: ``codec.encode_frame`` / ``codec.decode_body``, what connections use;
* **struct ceiling**: a minimal hand-written function for exactly this frame shape (one
  ``Struct``, no dispatch, no validation beyond what slicing does), producing the same
  ``frames.Message`` and the same bytes. A general codec cannot expect to beat it, so
  ``hot-path / ceiling`` says what the dispatch, the generality and the checks cost.

Decode starts from the payload bytes (what ``decode_body`` receives) and ends with a
``frames.Message``; encode starts from that frame and ends with the whole frame's bytes. Each
figure is the best of ``--repeat`` rounds of ``n`` calls (construct paths get ``n / 100``,
at least 100: they are about a hundred times slower), timed with ``time.perf_counter_ns``.
Each round runs every implementation once, and rounds are short (a few milliseconds by
default) so that the best of them is one the scheduler did not interrupt: on a loaded
machine, long rounds measure the load, not the code.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pushwire.protocol import codec, reference
from pushwire.protocol import frames as F
from pushwire.protocol.layouts import BODIES, HEADER_SIZE, FrameType, Header

HELP = "encode/decode throughput of MESSAGE frames: declaration, hot path, struct ceiling"
DESCRIPTION = __doc__.split("\n\n", 1)[1] if __doc__ else HELP
EPILOG = """\
examples:
  pushwire bench codec
  pushwire bench codec --n 2000 --repeat 150 --json codec.json
"""

#: Below this many calls per run, timer resolution and warm-up dominate.
MIN_CALLS = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n", type=int, default=5_000, help="calls per round for the fast paths (default 5000)"
    )
    parser.add_argument(
        "--repeat", type=int, default=60, help="rounds; the best one counts (default 60)"
    )
    parser.add_argument(
        "--payload-size", type=int, default=64, metavar="BYTES", help="payload bytes (default 64)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")


# -- the struct ceiling ---------------------------------------------------------------------

_CEIL_ENCODE = struct.Struct(">IBBQQB")  # header, epoch, seq, topic length
_CEIL_DECODE = struct.Struct(">QQB")
_MESSAGE = int(FrameType.MESSAGE)


def ceiling_encode(frame: F.Message) -> bytes:
    topic = frame.topic.encode("utf-8")
    size = len(topic)
    head = _CEIL_ENCODE.pack(
        17 + size + len(frame.payload), _MESSAGE, 0, frame.epoch, frame.seq, size
    )
    return head + topic + frame.payload


def ceiling_decode(body: bytes) -> F.Message:
    epoch, seq, size = _CEIL_DECODE.unpack_from(body)
    return F.Message(epoch, seq, str(body[17 : 17 + size], "utf-8"), body[17 + size :])


# -- measuring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    name: str
    calls: int
    decode_ns: float
    encode_ns: float

    @property
    def decode_per_s(self) -> float:
        return 1e9 / self.decode_ns

    @property
    def encode_per_s(self) -> float:
        return 1e9 / self.encode_ns


def _ns_per_call(fn: Callable[[Any], Any], arg: Any, calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in itertools.repeat(None, calls):
        fn(arg)
    return (time.perf_counter_ns() - start) / calls


def measure(calls: int, repeat: int, payload_size: int) -> list[Result]:
    """Time every implementation on the same MESSAGE; raises AssertionError first if any of
    them disagrees with the others on the bytes or the frame."""
    frame = F.Message(
        0x0123_4567_89AB_CDEF,
        1,
        "bench/topic",
        bytes(i % 256 for i in range(payload_size)),
    )
    data = reference.encode_frame(frame)
    body = data[HEADER_SIZE:]
    layout = BODIES[FrameType.MESSAGE]
    fields = {
        "epoch": frame.epoch,
        "seq": frame.seq,
        "topic": frame.topic,
        "headers": None,
        "payload": frame.payload,
    }

    def construct_encode(fields: dict[str, Any]) -> bytes:
        payload: bytes = layout.build(fields, flags=0)
        return bytes(Header.build({"length": len(payload), "type": _MESSAGE, "flags": 0})) + payload

    def construct_decode(body: bytes) -> Any:
        return layout.parse(body, flags=0)

    def reference_decode(body: bytes) -> Any:
        return reference.decode_body(_MESSAGE, 0, body)

    def hot_decode(body: bytes) -> Any:
        return codec.decode_body(_MESSAGE, 0, body)

    implementations: list[
        tuple[str, Callable[[Any], Any], Any, Callable[[Any], bytes], Any, int]
    ] = [
        ("construct declaration", construct_decode, body, construct_encode, fields, 100),
        ("reference codec", reference_decode, body, reference.encode_frame, frame, 100),
        ("hot-path codec", hot_decode, body, codec.encode_frame, frame, 1),
        ("struct ceiling", ceiling_decode, body, ceiling_encode, frame, 1),
    ]
    for name, decode, dec_arg, encode, enc_arg, _ in implementations:
        assert encode(enc_arg) == data, f"{name} encodes different bytes"
        decoded = decode(dec_arg)
        if name != "construct declaration":
            assert decoded == frame, f"{name} decodes a different frame"
    # Runs are interleaved (every implementation once per round, best round kept) so that a
    # burst of load on a shared machine slows all of them alike instead of one of them.
    best = {name: [float("inf"), float("inf")] for name, *_ in implementations}
    for _ in range(repeat):
        for name, decode, dec_arg, encode, enc_arg, slower in implementations:
            n = max(MIN_CALLS, calls // slower)
            figures = best[name]
            figures[0] = min(figures[0], _ns_per_call(decode, dec_arg, n))
            figures[1] = min(figures[1], _ns_per_call(encode, enc_arg, n))
    results = [
        Result(name, max(MIN_CALLS, calls // slower), *best[name])
        for name, _, _, _, _, slower in implementations
    ]
    return results


def _ratio(results: list[Result]) -> dict[str, float]:
    by_name = {r.name: r for r in results}
    hot, ceiling = by_name["hot-path codec"], by_name["struct ceiling"]
    return {
        "decode": hot.decode_ns / ceiling.decode_ns,
        "encode": hot.encode_ns / ceiling.encode_ns,
    }


def run(args: argparse.Namespace) -> int:
    if args.n < MIN_CALLS or args.repeat < 1 or args.payload_size < 0:
        print(
            f"pushwire bench codec: need --n >= {MIN_CALLS}, --repeat >= 1, --payload-size >= 0",
            file=sys.stderr,
        )
        return 2
    results = measure(args.n, args.repeat, args.payload_size)
    ratio = _ratio(results)
    print(
        f"MESSAGE, no headers, {args.payload_size}-byte payload; best of {args.repeat} rounds "
        f"(Python {platform.python_version()}, {platform.machine()})"
    )
    columns = ("calls", "decode ns", "decode/s", "encode ns", "encode/s")
    print(f"{'implementation':<23}{columns[0]:>9}" + "".join(f"{c:>12}" for c in columns[1:]))
    for r in results:
        print(
            f"{r.name:<23}{r.calls:>9}{r.decode_ns:>12.0f}{r.decode_per_s:>12,.0f}"
            f"{r.encode_ns:>12.0f}{r.encode_per_s:>12,.0f}"
        )
    print(f"hot-path / ceiling: decode {ratio['decode']:.2f}x, encode {ratio['encode']:.2f}x")
    if args.json:
        report = {
            "target": "codec",
            "frame": "MESSAGE",
            "payload_size": args.payload_size,
            "repeat": args.repeat,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "results": [
                asdict(r) | {"decode_per_s": r.decode_per_s, "encode_per_s": r.encode_per_s}
                for r in results
            ],
            "hot_over_ceiling": ratio,
        }
        try:
            args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:  # the figures are printed above; only the file is lost
            print(
                f"pushwire bench codec: error: cannot write {args.json}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 2
    return 0
