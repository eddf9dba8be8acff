"""Fuzz a pushwire frame decoder written by someone else, in any language, with pushwire's
public hypothesis strategies (``pushwire.protocol.testing.strategies``).

The decoder under test runs as a child process and speaks a one-line-per-request protocol on
stdin/stdout:

* request: ``MAX_FRAME_SIZE HEX`` — the receiver's frame limit in payload bytes, then a byte
  string holding zero or more frames, which ends there (end of input);
* answer: one line of JSON, either ``{"frames": [...]}`` with every frame decoded, in order,
  each as ``{"type": "MESSAGE", "flags": 1, "fields": {...}}`` exactly like the valid frame
  vectors of ``protocol/vectors.json`` (see its ``conventions``; unknown ignorable frames are
  skipped, so they do not appear), or ``{"error": "CODE_NAME"}`` naming the first error
  (e.g. ``"MALFORMED_FRAME"``).

Three properties are checked, each with hypothesis shrinking any failure to a minimal input:

1. every valid frame decodes to exactly its fields (``strategies.frame_bytes``), also when
   unknown ignorable frames surround it (``strategies.unknown_frames``);
2. every hostile frame gets exactly the error code SPEC.md requires
   (``strategies.malformed_frames``);
3. a whole correct conversation of either side decodes frame by frame
   (``strategies.conversations``).

Usage (hypothesis is a test dependency: ``pip install 'pushwire[test]'``)::

    python -m pushwire.protocol.testing.fuzz_decoder -- ./my-decoder --line-protocol
    python -m pushwire.protocol.testing.fuzz_decoder --examples 2000 -- java -jar dec.jar
    python -m pushwire.protocol.testing.fuzz_decoder          # pushwire's own decoder
    python -m pushwire.protocol.testing.fuzz_decoder --serve  # a line-protocol decoder

``--serve`` makes this module a decoder speaking the line protocol itself (backed by
pushwire), so ``python -m pushwire.protocol.testing.fuzz_decoder -- python -m
pushwire.protocol.testing.fuzz_decoder --serve`` runs the whole harness end to end;
``tests/protocol/test_fuzz_decoder.py`` does exactly that. From Python, call
:func:`check_decoder` with any object that has the :class:`Decoder` method.

Importing the module does no I/O: the child process starts in :class:`LineDecoder`, and
hypothesis's example database is touched only when :func:`check_decoder` runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, Protocol, TextIO

try:
    from hypothesis import assume, given, settings
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - depends on the environment
    _MISSING = (
        "pushwire.protocol.testing.fuzz_decoder needs hypothesis, a test dependency: "
        "pip install 'pushwire[test]'"
    )
    if __name__ == "__main__":
        raise SystemExit(f"error: {_MISSING}") from None
    raise ImportError(_MISSING) from exc

from pushwire.protocol import reference
from pushwire.protocol.decoder import FrameDecoder
from pushwire.protocol.errors import RemoteProtocolError
from pushwire.protocol.layouts import HEADER_SIZE, INITIAL_MAX_FRAME_SIZE, PREFACE_SIZE
from pushwire.protocol.spec.vectors import frame_json
from pushwire.protocol.testing import strategies as ps

Answer = dict[str, Any]


class Decoder(Protocol):
    def decode(self, data: bytes, max_frame_size: int) -> Answer: ...


class PushwireDecoder:
    """pushwire's own decoder behind the same interface (the known-good baseline)."""

    def decode(self, data: bytes, max_frame_size: int) -> Answer:
        decoder = FrameDecoder(max_frame_size)
        decoder.feed(data)
        decoder.feed(b"")  # end of input
        frames = []
        try:
            while (frame := decoder.next_frame()) is not None:
                frames.append(frame_json(frame))
        except RemoteProtocolError as exc:
            return {"error": exc.code.name}
        return {"frames": frames}


class LineDecoder:
    """A decoder in a child process that speaks the line protocol of the module docstring."""

    def __init__(self, command: Sequence[str]) -> None:
        self.process = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def decode(self, data: bytes, max_frame_size: int) -> Answer:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{max_frame_size} {data.hex()}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"decoder exited (status {self.process.poll()})")
        answer: Answer = json.loads(line)
        return answer

    def close(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        self.process.wait(timeout=10)


def check_decoder(decoder: Decoder, max_examples: int = 200, **options: Any) -> None:
    """Run the three properties against ``decoder``; raises (with hypothesis's minimal
    failing example) on the first disagreement. ``options`` go to ``hypothesis.settings``."""
    config = settings(max_examples=max_examples, deadline=None, **options)
    limit = INITIAL_MAX_FRAME_SIZE

    @config
    @given(ps.frames(max_items=3, max_payload=64), st.lists(ps.unknown_frames(), max_size=2))
    def valid_frames_decode_to_their_fields(frame: Any, ignorable: list[Any]) -> None:
        data = reference.encode_frame(frame)
        assume(len(data) - HEADER_SIZE <= limit)
        around = b"".join(reference.encode_frame(u) for u in ignorable)
        answer = decoder.decode(around + data + around, limit)
        assert answer == {"frames": [frame_json(frame)]}, answer

    @config
    @given(ps.malformed_frames(max_frame_size=limit))
    def hostile_frames_get_their_code(malformed: ps.Malformed) -> None:
        answer = decoder.decode(malformed.data, limit)
        assert answer == {"error": malformed.code.name}, answer

    roles: tuple[ps.Role, ...] = ("client", "server")

    @config
    @given(st.sampled_from(roles).flatmap(ps.conversations))
    def conversations_decode_frame_by_frame(conversation: ps.Conversation) -> None:
        data = conversation.data()[PREFACE_SIZE:]
        answer = decoder.decode(data, limit)
        assert answer == {"frames": [frame_json(f) for f in conversation.frames]}, answer

    valid_frames_decode_to_their_fields()
    hostile_frames_get_their_code()
    conversations_decode_frame_by_frame()


def serve(stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
    """Answer line-protocol requests with pushwire's decoder until end of input
    (``sys.stdin`` / ``sys.stdout`` as they are when called, by default)."""
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    decoder = PushwireDecoder()
    for line in stdin:
        limit, _, hex_data = line.strip().partition(" ")
        answer = decoder.decode(bytes.fromhex(hex_data), int(limit))
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pushwire.protocol.testing.fuzz_decoder",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--examples", type=int, default=200, help="examples per property")
    parser.add_argument("--serve", action="store_true", help="be a line-protocol decoder")
    parser.add_argument("command", nargs="*", help="the decoder to fuzz (after --)")
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    if not args.command:
        check_decoder(PushwireDecoder(), args.examples)
    else:
        line_decoder = LineDecoder(args.command)
        try:
            check_decoder(line_decoder, args.examples)
        finally:
            line_decoder.close()
    print("all properties hold")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
