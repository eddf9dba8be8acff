"""Fuzz a pushwire frame decoder written by someone else, in any language, with pushwire's
public hypothesis strategies (``pushwire.protocol.testing.strategies``).

The decoder under test runs as a child process and speaks a one-line-per-request protocol on
stdin/stdout (line protocol 2):

* request: ``MAX_FRAME_SIZE [HEX ...]``: the receiver's frame limit in payload bytes, then
  zero or more chunks of hex separated by single spaces. Each chunk is one read: feed the
  chunks to the decoder in order, taking every frame it can give after each chunk, then
  signal the end of input (the stream ends there, possibly inside a frame);
* answer: one line of JSON, ``{"frames": [...], "error": null}`` or ``{"frames": [...],
  "error": "CODE_NAME"}``: every frame decoded, in order, *including those decoded before an
  error*, each as ``{"type": "MESSAGE", "flags": 1, "fields": {...}}`` exactly like the
  ``frame`` of the valid vectors of ``protocol/vectors.json`` (see its ``conventions``; u64
  values may be numbers or, as in the vectors, decimal strings;
  unknown ignorable frames are skipped, so they do not appear), and the registry name of the
  first error (``MALFORMED_FRAME``, ``FRAME_TOO_LARGE``, ``UNKNOWN_FRAME_TYPE``,
  ``RESERVED_BITS_SET``, ``INVALID_UTF8`` or ``FIELD_OUT_OF_RANGE``), or ``null``. Decoding
  stops at the first error. Nothing else may be written to stdout (use stderr for logs).

Line protocol 1 (``--line-protocol 1``) is the earlier form: one chunk per request and an
answer of either ``{"frames": [...]}`` or ``{"error": "CODE_NAME"}``; with it the harness
cannot see frames thrown away before an error.

Six properties are checked, each with hypothesis shrinking a failure to a minimal input;
every input is split into reads at random points and the limit varies (16384 to 2^24):

1. ``valid_frames``: several valid frames, with unknown ignorable frames between them,
   decode to exactly their fields (text fields now and then start with U+FEFF);
2. ``hostile_frame_after_valid_frames``: valid frames, then one hostile frame: the valid
   frames and exactly the code SPEC.md §3.5 requires (``strategies.malformed_frames``);
3. ``stream_ends_inside_a_frame``: valid frames, then the start of a frame and the end of
   the stream: the frames and the code of SPEC.md §3.5 (``strategies.incomplete_frames``);
4. ``size_limit_boundary``: frames whose payload is one byte under, exactly at, and one byte
   over the limit: the first two decode, the last is FRAME_TOO_LARGE;
5. ``leading_bom_kept``: a text field that starts with U+FEFF keeps it (SPEC.md §3.2);
6. ``conversations``: a whole correct conversation of either side decodes frame by frame
   (``strategies.conversations``).

Usage (hypothesis is a test dependency: ``pip install 'pushwire[test]'``)::

    python -m pushwire.protocol.testing.fuzz_decoder -- ./my-decoder --line-protocol
    python -m pushwire.protocol.testing.fuzz_decoder --examples 2000 --seed 7 -- java -jar d.jar
    python -m pushwire.protocol.testing.fuzz_decoder --replay 16384 0000000803 00 -- ./my-decoder
    python -m pushwire.protocol.testing.fuzz_decoder          # pushwire's own decoder
    python -m pushwire.protocol.testing.fuzz_decoder --serve  # a line-protocol decoder

Every property runs, and a summary lists each with its examples; a failure is printed with
its input as a ``--replay`` command and the expected and actual answers. A decoder that
exits, gives no answer within ``--timeout`` seconds or writes a line that is not a valid
answer is reported with the input that did it (and restarted for the next input). The run
is seeded (``--seed``, printed) and keeps no example database unless ``--database DIR``.

``--serve`` makes this module a decoder speaking the line protocol itself (backed by
pushwire), so ``python -m pushwire.protocol.testing.fuzz_decoder -- python -m
pushwire.protocol.testing.fuzz_decoder --serve`` runs the whole harness end to end. From
Python, :func:`check_decoder` runs the properties against any object with the
:class:`Decoder` method, and :func:`serve` puts such an object behind the line protocol.
An adapter builds its answers with :func:`answer` / :func:`frame_json`.

Importing the module does no I/O: the child process starts in :class:`LineDecoder`.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import json
import queue
import random
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

try:
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st
    from hypothesis.database import DirectoryBasedExampleDatabase
except ImportError as exc:  # pragma: no cover - depends on the environment
    _MISSING = (
        "pushwire.protocol.testing.fuzz_decoder needs hypothesis, a test dependency: "
        "pip install 'pushwire[test]'"
    )
    if __name__ == "__main__":
        raise SystemExit(f"error: {_MISSING}") from None
    raise ImportError(_MISSING) from exc

from pushwire.protocol import frames as F
from pushwire.protocol import reference
from pushwire.protocol.decoder import FrameDecoder
from pushwire.protocol.errors import DECODE_ERRORS, ErrorCode, RemoteProtocolError
from pushwire.protocol.layouts import (
    HEADER_SIZE,
    IGNORABLE_BIT,
    INITIAL_MAX_FRAME_SIZE,
    MAX_MAX_FRAME_SIZE,
    MIN_MAX_FRAME_SIZE,
    PREFACE_SIZE,
    FrameType,
)
from pushwire.protocol.spec.vectors import frame_json, u64_as_numbers
from pushwire.protocol.testing import strategies as ps

__all__ = [
    "DECODE_ERROR_NAMES",
    "HEADER_SIZE",
    "INITIAL_MAX_FRAME_SIZE",
    "LINE_PROTOCOL",
    "MAX_MAX_FRAME_SIZE",
    "MIN_MAX_FRAME_SIZE",
    "PROPERTIES",
    "Answer",
    "Case",
    "Decoder",
    "DecoderFailure",
    "Finding",
    "FrameType",
    "FuzzFailure",
    "LineDecoder",
    "PropertyResult",
    "PushwireDecoder",
    "Report",
    "answer",
    "check_answer",
    "check_decoder",
    "format_answer",
    "format_request",
    "frame_json",
    "judge",
    "main",
    "parse_request",
    "replay",
    "serve",
]

#: The line protocol this module speaks by default (see the module docstring).
LINE_PROTOCOL = 2
#: The codes a frame decoder reports (SPEC.md §3.5 steps 1-5), by registry name.
DECODE_ERROR_NAMES = frozenset(code.name for code in DECODE_ERRORS)

#: One answer: ``{"frames": [frame_json, ...], "error": "CODE_NAME" | None}``. Under line
#: protocol 1, ``frames`` is ``None`` when the decoder answered with an error alone.
Answer = dict[str, Any]


def answer(frames: Iterable[F.Frame], error: ErrorCode | str | None = None) -> Answer:
    """The answer for ``frames`` decoded in order, then ``error`` (or none): what an adapter
    written in Python returns from :meth:`Decoder.decode`."""
    name = error.name if isinstance(error, ErrorCode) else error
    return {"frames": [frame_json(f) for f in frames], "error": name}


class Decoder(Protocol):
    def decode(self, chunks: Sequence[bytes], max_frame_size: int) -> Answer:
        """Feed ``chunks`` in order (each one read), then the end of input; the answer."""
        ...


class PushwireDecoder:
    """pushwire's own decoder behind the same interface (the known-good baseline)."""

    def decode(self, chunks: Sequence[bytes], max_frame_size: int) -> Answer:
        decoder = FrameDecoder(max_frame_size)
        frames: list[F.Frame] = []
        try:
            for chunk in [*(c for c in chunks if c), b""]:  # b"" is the end of input
                decoder.feed(chunk)
                while (frame := decoder.next_frame()) is not None:
                    frames.append(frame)
        except RemoteProtocolError as exc:
            return answer(frames, exc.code)
        return answer(frames)


# -- the line protocol ----------------------------------------------------------------------


def format_request(max_frame_size: int, chunks: Sequence[bytes]) -> str:
    """One request line, without its newline (empty chunks are left out)."""
    return " ".join([str(max_frame_size), *(c.hex() for c in chunks if c)])


def parse_request(line: str) -> tuple[int, list[bytes]]:
    """``(max_frame_size, chunks)`` of one request line. ValueError when it is not one."""
    limit, *chunks = line.split()
    return int(limit), [bytes.fromhex(c) for c in chunks]


def format_answer(result: Answer, line_protocol: int = LINE_PROTOCOL) -> str:
    """One answer line, without its newline."""
    if line_protocol == 1:
        if result["error"] is not None:
            return json.dumps({"error": result["error"]})
        return json.dumps({"frames": result["frames"]})
    return json.dumps({"frames": result["frames"], "error": result["error"]})


def check_answer(value: Any, line_protocol: int = LINE_PROTOCOL) -> Answer:
    """``value`` (parsed JSON) as an :data:`Answer`; ValueError saying what is wrong with it.

    Checks the shape, not the content: keys, types, and that an error is a decode error's
    name. Line protocol 1 answers come back with ``frames`` ``None`` after an error."""
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object but {type(value).__name__}")
    keys = set(value)
    if line_protocol == 1:
        if keys == {"error"}:
            value = {"frames": None, "error": value["error"]}
        elif keys == {"frames"}:
            value = {"frames": value["frames"], "error": None}
        else:
            raise ValueError(f'keys {sorted(keys)}: need "frames" or "error" (protocol 1)')
    elif keys != {"frames", "error"}:
        hint = " (a line protocol 1 decoder? see --line-protocol 1)" if len(keys) == 1 else ""
        raise ValueError(f'keys {sorted(keys)}: need exactly "frames" and "error"{hint}')
    error = value["error"]
    if error is not None and error not in DECODE_ERROR_NAMES:
        raise ValueError(f"error {error!r} is not one of {sorted(DECODE_ERROR_NAMES)} or null")
    frames = value["frames"]
    if frames is None and line_protocol == 1:
        return value  # type: ignore[no-any-return]
    if not isinstance(frames, list):
        raise ValueError(f'"frames" is {type(frames).__name__}, not a list')
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or set(frame) != {"type", "flags", "fields"}:
            raise ValueError(f"frames[{i}] is not an object with type, flags and fields")
        if frame["type"] not in FrameType.__members__:
            raise ValueError(f"frames[{i}].type {frame['type']!r} is not a frame type name")
        if not isinstance(frame["flags"], int) or not 0 <= frame["flags"] <= 0xFF:
            raise ValueError(f"frames[{i}].flags {frame['flags']!r} is not a u8")
        if not isinstance(frame["fields"], dict):
            raise ValueError(f"frames[{i}].fields is not an object")
    return value  # type: ignore[no-any-return]


class DecoderFailure(Exception):
    """The decoder under test did not answer: it exited, timed out, or wrote something that
    is not an answer. ``fatal`` when the exchange cannot go on (the process was restarted)."""

    def __init__(self, message: str, *, fatal: bool) -> None:
        super().__init__(message)
        self.fatal = fatal


class LineDecoder:
    """A decoder in a child process that speaks the line protocol of the module docstring.

    Each answer must come within ``timeout`` seconds. A decoder that exits or times out is
    reported through :class:`DecoderFailure` with the tail of its stderr, and started again
    for the next request, so one crash does not hide the findings after it.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        timeout: float = 10.0,
        line_protocol: int = LINE_PROTOCOL,
    ) -> None:
        self.command = list(command)
        self.timeout = timeout
        self.line_protocol = line_protocol
        self.restarts = 0
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.process = self._start()

    def _start(self) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        self._lines = lines

        def pump_stdout() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line)
            lines.put(None)  # end of output: the process closed stdout or exited

        def pump_stderr() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                self._stderr.append(line.rstrip("\n"))

        for pump in (pump_stdout, pump_stderr):
            threading.Thread(target=pump, daemon=True).start()
        return process

    def _stderr_tail(self) -> str:
        tail = list(self._stderr)
        return ("; its stderr ended with:\n    " + "\n    ".join(tail)) if tail else ""

    def _restart(self) -> None:
        self._stop(self.process)
        self._stderr.clear()
        self.restarts += 1
        self.process = self._start()

    @staticmethod
    def _stop(process: subprocess.Popen[str]) -> None:
        if process.poll() is None:
            process.kill()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process that ignores SIGKILL
            pass
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:  # pragma: no cover - broken pipe on close
                    pass

    def decode(self, chunks: Sequence[bytes], max_frame_size: int) -> Answer:
        if self.line_protocol == 1:
            chunks = [b"".join(chunks)]
        request = format_request(max_frame_size, chunks) + "\n"
        process = self.process
        assert process.stdin is not None
        try:
            process.stdin.write(request)
            process.stdin.flush()
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            self._restart()
            raise DecoderFailure(
                f"no answer within {self.timeout:g} s (decoder restarted){self._stderr_tail()}",
                fatal=True,
            ) from None
        except (BrokenPipeError, OSError):
            line = None
        if line is None:
            try:
                status = process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                status = None
            tail = self._stderr_tail()
            self._restart()
            raise DecoderFailure(
                f"decoder exited (status {status}) instead of answering (restarted){tail}",
                fatal=False,
            )
        try:
            value = json.loads(line)
        except ValueError:
            raise DecoderFailure(
                f"answer line is not JSON: {line.rstrip()[:300]!r}", fatal=False
            ) from None
        try:
            # u64 values may come as numbers or, as in vectors.json, decimal strings
            return check_answer(u64_as_numbers(value), self.line_protocol)
        except ValueError as exc:
            raise DecoderFailure(
                f"answer line is not a valid answer ({exc}): {line.rstrip()[:300]!r}",
                fatal=False,
            ) from None

    def close(self) -> None:
        process = self.process
        for pipe in (process.stdin,):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:  # pragma: no cover
                    pass
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._stop(process)


# -- cases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One request and the answer SPEC.md requires for it, known by construction."""

    max_frame_size: int
    chunks: tuple[bytes, ...]
    expected: Answer

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis's printer
        printer.text(repr(self))

    def __repr__(self) -> str:  # hypothesis prints failing examples; a frame can be 16 MiB
        head = self.data[:32].hex() + ("..." if len(self.data) > 32 else "")
        return (
            f"Case(max_frame_size={self.max_frame_size}, {len(self.data)} bytes in "
            f"{len(self.chunks)} reads: {head}, expected error {self.expected['error']})"
        )


def _split(draw: st.DrawFn, data: bytes) -> tuple[bytes, ...]:
    """``data`` cut into reads at random points (now and then one byte at a time)."""
    if len(data) > 1 and len(data) <= 64 and draw(st.integers(0, 15)) == 0:
        return tuple(data[i : i + 1] for i in range(len(data)))
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=6))
    bounds = [0, *sorted(set(cuts)), len(data)]
    return tuple(data[a:b] for a, b in itertools.pairwise(bounds) if b > a)


#: Receiver limits: the initial one, any legal one, and the edges of the legal range.
_LIMITS = st.one_of(
    st.just(INITIAL_MAX_FRAME_SIZE),
    st.integers(MIN_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE),
    st.sampled_from((MIN_MAX_FRAME_SIZE + 1, 65535, 65536, MAX_MAX_FRAME_SIZE)),
)
#: Valid frames small enough for any legal limit: short counted arrays and text.
_SMALL_FRAMES = ps.frames(max_items=3, max_payload=64, max_text=512)


@st.composite
def _valid_run(draw: st.DrawFn, max_size: int = 4) -> tuple[list[F.Frame], bytes]:
    """Valid frames with unknown ignorable frames between them: (frames, bytes)."""
    frames = draw(st.lists(_SMALL_FRAMES, max_size=max_size))
    parts: list[bytes] = []
    for frame in frames:
        if draw(st.integers(0, 3)) == 0:
            parts.append(reference.encode_frame(draw(ps.unknown_frames())))
        parts.append(reference.encode_frame(frame))
    if draw(st.integers(0, 3)) == 0:
        parts.append(reference.encode_frame(draw(ps.unknown_frames())))
    return frames, b"".join(parts)


def _case(
    draw: st.DrawFn, limit: int, data: bytes, frames: Sequence[F.Frame], error: ErrorCode | None
) -> Case:
    return Case(limit, _split(draw, data), answer(frames, error))


@st.composite
def _valid_frames(draw: st.DrawFn) -> Case:
    frames, data = draw(_valid_run(max_size=6))
    return _case(draw, draw(_LIMITS), data, frames, None)


@st.composite
def _hostile_after_valid(draw: st.DrawFn) -> Case:
    limit = draw(_LIMITS)
    frames, before = draw(_valid_run())
    bad = draw(ps.malformed_frames(max_frame_size=limit))
    # What follows the bad frame is never read: another valid frame, or nothing.
    after = draw(st.one_of(st.just(b""), _SMALL_FRAMES.map(reference.encode_frame)))
    return _case(draw, limit, before + bad.data + after, frames, bad.code)


@st.composite
def _ends_inside_a_frame(draw: st.DrawFn) -> Case:
    limit = draw(_LIMITS)
    frames, before = draw(_valid_run())
    cut = draw(ps.incomplete_frames(max_frame_size=limit))
    return _case(draw, limit, before + cut.data, frames, cut.code)


#: Limits for frames built at the limit: every input holds a frame of about this size.
_BOUNDARY_LIMITS = st.one_of(
    st.sampled_from((INITIAL_MAX_FRAME_SIZE, INITIAL_MAX_FRAME_SIZE + 1, 65535, 65536)),
    st.integers(MIN_MAX_FRAME_SIZE, 70_000),
)


_KNOWN_TYPES = frozenset(int(t) for t in FrameType)
_IGNORABLE_TYPES = tuple(t for t in range(IGNORABLE_BIT, 256) if t not in _KNOWN_TYPES)


@st.composite
def _sized_frame(draw: st.DrawFn, length: int) -> tuple[F.Frame | None, bytes]:
    """A frame whose payload is exactly ``length`` bytes: a MESSAGE or PUBLISH padded by its
    payload, or an unknown ignorable frame (``None``: skipped when it fits)."""
    fill = bytes([draw(st.integers(0, 255))])
    kind = draw(st.sampled_from(("message", "publish", "ignorable")))
    if kind == "ignorable":
        type_ = draw(st.sampled_from(_IGNORABLE_TYPES))
        return None, reference.build_frame(type_, draw(st.integers(0, 255)), fill * length)
    topic = draw(st.sampled_from(("t", "news/eu", "\ufefftopic")))
    sized: F.Message | F.Publish = (
        F.Message(draw(st.integers(0, 2**64 - 1)), 1, topic, b"")
        if kind == "message"
        else F.Publish(draw(st.integers(0, 2**32 - 1)), topic, b"")
    )
    room = length - (len(reference.encode_frame(sized)) - HEADER_SIZE)
    sized = dataclasses.replace(sized, payload=fill * room)
    data = reference.encode_frame(sized)
    assert len(data) == HEADER_SIZE + length
    return sized, data


@st.composite
def _size_limit_boundary(draw: st.DrawFn) -> Case:
    limit = draw(_BOUNDARY_LIMITS)
    frames, before = draw(_valid_run(max_size=2))
    delta = draw(st.sampled_from((0, 1, -1, 0, 1)))
    frame, data = draw(_sized_frame(limit + delta))
    if delta > 0:
        # Above the limit: FRAME_TOO_LARGE from the header, whatever of the payload is there.
        keep = draw(st.sampled_from((HEADER_SIZE, len(data))))
        return _case(draw, limit, before + data[:keep], frames, ErrorCode.FRAME_TOO_LARGE)
    frames, after = [*frames, *([frame] if frame is not None else [])], b""
    if draw(st.booleans()):
        last = draw(_SMALL_FRAMES)
        frames.append(last)
        after = reference.encode_frame(last)
    return _case(draw, limit, before + data + after, frames, None)


@st.composite
def _leading_bom(draw: st.DrawFn) -> Case:
    frame = draw(_SMALL_FRAMES.filter(lambda f: bool(ps.text_fields(f))))
    setters = ps.text_fields(frame)
    chosen = draw(st.lists(st.sampled_from(range(len(setters))), min_size=1, unique=True))
    for index in chosen:
        set_text = ps.text_fields(frame)[index]
        frame = set_text(draw(_BOM_TEXT))
    frames, before = draw(_valid_run(max_size=2))
    data = before + reference.encode_frame(frame)
    return _case(draw, draw(_LIMITS), data, [*frames, frame], None)


#: Text fields that start with a byte order mark, which is part of the text (SPEC.md §3.2).
_BOM_TEXT = st.sampled_from(("\ufeff", "\ufeffa", "\ufeff\ufeff/x", "\ufeff\u00e9")) | (
    st.text(max_size=8).map(lambda t: "\ufeff" + t)
)


@st.composite
def _conversations(draw: st.DrawFn) -> Case:
    roles: tuple[ps.Role, ...] = ("client", "server")
    conversation = draw(st.sampled_from(roles).flatmap(ps.conversations))
    data = conversation.data()[PREFACE_SIZE:]
    return _case(draw, INITIAL_MAX_FRAME_SIZE, data, conversation.frames, None)


@dataclass(frozen=True)
class Property:
    name: str
    description: str
    cases: Callable[[], st.SearchStrategy[Case]]


#: The properties, in the order they run.
PROPERTIES: tuple[Property, ...] = (
    Property("valid_frames", "valid frames decode to their fields", _valid_frames),
    Property(
        "hostile_frame_after_valid_frames",
        "valid frames, then a hostile frame: the frames and its code",
        _hostile_after_valid,
    ),
    Property(
        "stream_ends_inside_a_frame",
        "the stream ends inside a frame: the frames and the code of §3.5",
        _ends_inside_a_frame,
    ),
    Property(
        "size_limit_boundary",
        "payload one under, at and one over the limit",
        _size_limit_boundary,
    ),
    Property("leading_bom_kept", "text that starts with U+FEFF keeps it", _leading_bom),
    Property("conversations", "a whole conversation decodes frame by frame", _conversations),
)


# -- running --------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class Finding:
    """One failing input, with what was expected and what came back."""

    property: str
    case: Case
    problem: str
    actual: Answer | None = None
    fatal: bool = False

    def replay_args(self) -> str:
        chunks = " ".join(c.hex() for c in self.case.chunks)
        return f"--replay {self.case.max_frame_size} {chunks}".rstrip()

    def render(self, command: Sequence[str] = ()) -> str:
        module = "python -m pushwire.protocol.testing.fuzz_decoder"
        target = f" -- {shlex.join(command)}" if command else ""
        case = self.case
        lines = [
            f"FAILED {self.property}: {self.problem}",
            f"  input:    {len(case.data)} bytes in {len(case.chunks)} read(s), "
            f"max_frame_size {case.max_frame_size}",
            f"  replay:   {module} {self.replay_args()}{target}",
            f"  expected: {_dumps(case.expected)}",
            f"  actual:   {_dumps(self.actual) if self.actual is not None else '-'}",
        ]
        return "\n".join(lines)


class _Mismatch(AssertionError):
    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.render())
        self.finding = finding


def _agrees(expected: Answer, actual: Answer) -> bool:
    if actual["frames"] is None:  # line protocol 1: an error without the frames before it
        return bool(actual["error"] == expected["error"] is not None)
    return actual == expected


def judge(decoder: Decoder, case: Case, name: str = "replay") -> Finding | None:
    """Run one case; the finding, or None when the decoder answers as SPEC.md requires."""
    try:
        actual = decoder.decode(case.chunks, case.max_frame_size)
    except DecoderFailure as exc:
        return Finding(name, case, str(exc), fatal=exc.fatal)
    if not isinstance(decoder, LineDecoder):  # a LineDecoder checked the line already
        try:
            actual = check_answer(actual)
        except ValueError as exc:
            return Finding(name, case, f"not a valid answer ({exc})", actual)
    if not _agrees(case.expected, actual):
        return Finding(name, case, "answer differs", actual)
    return None


@dataclass
class PropertyResult:
    name: str
    description: str
    examples: int = 0
    seconds: float = 0.0
    #: examples run when the first failure came up (before shrinking)
    failed_after: int | None = None
    finding: Finding | None = None

    @property
    def ok(self) -> bool:
        return self.finding is None


@dataclass
class Report:
    seed: int
    max_examples: int
    results: list[PropertyResult] = field(default_factory=list)
    command: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def failed(self) -> list[PropertyResult]:
        return [r for r in self.results if not r.ok]

    def render(self) -> str:
        width = max((len(r.name) for r in self.results), default=0)
        lines = []
        for r in self.results:
            if r.ok:
                status, detail = "ok", f"{r.examples} examples"
            else:
                status, detail = "FAILED", f"first failure after {r.failed_after} examples"
            lines.append(f"  {status:<6}  {r.name:<{width}}  {detail}, {r.seconds:.1f} s")
        for r in self.failed():
            assert r.finding is not None
            lines += ["", r.finding.render(self.command)]
        failed = len(self.failed())
        lines += [
            "",
            "all properties hold"
            if not failed
            else f"{failed} of {len(self.results)} properties failed (seed {self.seed})",
        ]
        return "\n".join(lines)


class FuzzFailure(AssertionError):
    """Raised by :func:`check_decoder` when a property fails; ``report`` has them all."""

    def __init__(self, report: Report) -> None:
        super().__init__(report.render())
        self.report = report


class _Progress:
    """A line on ``stream`` every ``interval`` seconds while a property runs."""

    def __init__(self, stream: TextIO | None, interval: float = 5.0) -> None:
        self.stream, self.interval = stream, interval
        self.next = 0.0

    def start(self) -> None:
        self.next = time.monotonic() + self.interval

    def tick(self, name: str, examples: int, limit: int, shrinking: bool) -> None:
        if self.stream is None or time.monotonic() < self.next:
            return
        self.next = time.monotonic() + self.interval
        what = "shrinking a failure" if shrinking else f"{examples}/{limit} examples"
        print(f"fuzz_decoder: {name}: {what}", file=self.stream, flush=True)


def _run_property(
    prop: Property,
    decoder: Decoder,
    config: settings,
    seed: int,
    progress: _Progress,
) -> PropertyResult:
    result = PropertyResult(prop.name, prop.description)
    sticky: list[Finding] = []  # a decoder that timed out is not asked again (shrinking)
    started = time.monotonic()
    progress.start()

    @hypothesis_seed(seed)
    @config
    @given(prop.cases())
    def run(case: Case) -> None:
        result.examples += 1
        progress.tick(prop.name, result.examples, config.max_examples, bool(result.failed_after))
        # One raise statement for every failure: hypothesis tells failures apart by where
        # they are raised, and a timeout repeated while shrinking is the same failure.
        finding = sticky[0] if sticky else judge(decoder, case, prop.name)
        if finding is None:
            return
        if result.failed_after is None:
            result.failed_after = result.examples
        if finding.fatal and not sticky:
            sticky.append(finding)
        raise _Mismatch(finding)

    try:
        run()
    except _Mismatch as exc:
        result.finding = exc.finding
    except Exception as exc:  # hypothesis's own verdicts: flaky, unsatisfiable, ...
        last = sticky[0] if sticky else None
        case = last.case if last else Case(0, (), answer([]))
        result.finding = Finding(prop.name, case, f"{type(exc).__name__}: {exc}")
    result.seconds = time.monotonic() - started
    return result


def check_decoder(
    decoder: Decoder,
    max_examples: int = 200,
    *,
    seed: int | None = None,
    database: Path | str | None = None,
    shrink: bool = True,
    properties: Iterable[str] | None = None,
    progress: TextIO | None = None,
    command: Sequence[str] = (),
    **options: Any,
) -> Report:
    """Run every property (or those named in ``properties``) against ``decoder``.

    Returns the :class:`Report` when all hold; raises :class:`FuzzFailure` (an
    AssertionError whose message is the report, failures as replayable hex) when any
    fails, after running all of them. ``seed`` fixes the examples (random and recorded in
    the report by default); ``database`` is a directory where hypothesis keeps its example
    database (``DIR/examples``) and caches, from one run to the next (by default none:
    nothing is written to the working directory); ``shrink=False``
    reports the first failing example as found. ``options`` go to ``hypothesis.settings``.
    """
    chosen = set(PROPERTIES_BY_NAME if properties is None else properties)
    unknown = chosen - set(PROPERTIES_BY_NAME)
    if unknown:
        raise ValueError(f"no such property: {', '.join(sorted(unknown))}")
    seed = random.randrange(2**32) if seed is None else seed
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    config = settings(
        max_examples=max_examples,
        deadline=None,
        database=(
            None
            if database is None
            else DirectoryBasedExampleDatabase(str(Path(database) / "examples"))
        ),
        phases=phases,
        derandomize=False,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        **options,
    )
    report = Report(seed, max_examples, command=tuple(command))
    ticker = _Progress(progress)
    with ps.hypothesis_storage(database):
        for prop in PROPERTIES:
            if prop.name in chosen:
                report.results.append(_run_property(prop, decoder, config, seed, ticker))
    if not report.ok:
        raise FuzzFailure(report)
    return report


PROPERTIES_BY_NAME = {p.name: p for p in PROPERTIES}


def serve(
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    *,
    decoder: Decoder | None = None,
    line_protocol: int = LINE_PROTOCOL,
) -> None:
    """Answer line-protocol requests with ``decoder`` (pushwire's by default) until end of
    input (``sys.stdin`` / ``sys.stdout`` as they are when called, by default). An adapter
    for a decoder reachable from Python passes its own :class:`Decoder`."""
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    decoder = PushwireDecoder() if decoder is None else decoder
    for line in stdin:
        if not line.strip():
            continue
        limit, chunks = parse_request(line)
        stdout.write(format_answer(decoder.decode(chunks, limit), line_protocol) + "\n")
        stdout.flush()


def replay(decoder: Decoder, max_frame_size: int, chunks: Sequence[bytes]) -> Finding | None:
    """One input against ``decoder``, judged by pushwire's reference decoder."""
    expected = PushwireDecoder().decode(chunks, max_frame_size)
    return judge(decoder, Case(max_frame_size, tuple(chunks), expected))


EPILOG = """\
request, one line:  MAX_FRAME_SIZE [HEX ...]
  each HEX is one read; feed them in order, then signal the end of input
answer, one line:   {"frames": [FRAME, ...], "error": null | "CODE_NAME"}
  FRAME is {"type": "PING", "flags": 0, "fields": {"opaque": 7}}, as the "frame" of a valid
  vector in protocol/vectors.json; every frame decoded before the error is listed; the error
  is MALFORMED_FRAME, FRAME_TOO_LARGE, UNKNOWN_FRAME_TYPE, RESERVED_BITS_SET, INVALID_UTF8
  or FIELD_OUT_OF_RANGE (SPEC.md §3.5), or null
  --line-protocol 1: one chunk per request; answer {"frames": [...]} or {"error": "CODE"}

examples:
  %(prog)s -- ./my-decoder --line-protocol
  %(prog)s --examples 1000 --seed 7 -- node decoder.js
  %(prog)s --replay 16384 000000087d00 -- ./my-decoder
  echo '16384 0000000803 000000000000000007' | %(prog)s --serve
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pushwire.protocol.testing.fuzz_decoder",
        description=(
            "Check a pushwire frame decoder in any language, run as a child process that "
            "answers one line of JSON per request line, with hypothesis."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--examples", type=int, default=200, metavar="N", help="examples per property (200)"
    )
    parser.add_argument(
        "--seed", type=int, metavar="N", help="hypothesis seed (default: random, printed)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to wait for each answer (10)",
    )
    parser.add_argument(
        "--property",
        action="append",
        choices=list(PROPERTIES_BY_NAME),
        metavar="NAME",
        help="run only this property (repeatable): " + ", ".join(PROPERTIES_BY_NAME),
    )
    parser.add_argument(
        "--no-shrink", action="store_true", help="report failures as found, unshrunk"
    )
    parser.add_argument(
        "--database",
        metavar="DIR",
        help="keep hypothesis's example database (and caches) in DIR; default: none",
    )
    parser.add_argument(
        "--line-protocol",
        type=int,
        choices=(1, 2),
        default=LINE_PROTOCOL,
        help="answer format the decoder speaks (default 2; see below)",
    )
    parser.add_argument(
        "--replay",
        nargs="+",
        metavar=("LIMIT", "HEX"),
        help="run one input (its reads as HEX ...) and compare with pushwire's answer",
    )
    parser.add_argument("--serve", action="store_true", help="be a line-protocol decoder")
    parser.add_argument("command", nargs="*", help="the decoder to fuzz (after --)")
    args = parser.parse_args(argv)
    if args.serve:
        serve(line_protocol=args.line_protocol)
        return 0
    decoder: Decoder
    line_decoder: LineDecoder | None = None
    if args.command:
        line_decoder = LineDecoder(
            args.command, timeout=args.timeout, line_protocol=args.line_protocol
        )
        decoder = line_decoder
    else:
        decoder = PushwireDecoder()
    try:
        if args.replay:
            try:
                limit, chunks = parse_request(" ".join(args.replay))
            except ValueError as exc:
                parser.error(f"--replay LIMIT HEX ...: {exc}")
            expected = PushwireDecoder().decode(chunks, limit)
            finding = replay(decoder, limit, chunks)
            print(f"expected: {_dumps(expected)}")
            if finding is None:
                print(f"actual:   {_dumps(expected)}\nsame answer")
                return 0
            actual = _dumps(finding.actual) if finding.actual is not None else "-"
            print(f"actual:   {actual}\n{finding.problem}")
            return 1
        seed = random.randrange(2**32) if args.seed is None else args.seed
        print(
            f"fuzz_decoder: {args.examples} examples per property, seed {seed}, "
            f"line protocol {args.line_protocol}",
            flush=True,
        )
        try:
            report = check_decoder(
                decoder,
                args.examples,
                seed=seed,
                database=args.database,
                shrink=not args.no_shrink,
                properties=args.property,
                progress=sys.stderr,
                command=args.command,
            )
        except FuzzFailure as failure:
            print(failure.report.render())
            return 1
        print(report.render())
        return 0
    finally:
        if line_decoder is not None:
            line_decoder.close()


if __name__ == "__main__":
    raise SystemExit(main())
