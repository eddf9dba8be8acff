"""``pushwire sub``: subscribe to topics and print each message as one line.

Formats (stdout, one line per message, flushed per line so pipes see it at once):

* ``text``: ``TOPIC SEQ PAYLOAD``. The payload is decoded as UTF-8 and escaped so that a
  publisher cannot send escape sequences to the terminal and one message stays one line:
  ``\\\\`` is a backslash, ``\\n`` ``\\r`` ``\\t`` as in C, ``\\xNN`` below 0x80 another ASCII
  control byte, ``\\xNN`` from 0x80 a byte that is not UTF-8, ``\\uXXXX`` (or
  ``\\UXXXXXXXX``) a character that is not printable (C1 controls, bidirectional
  overrides, ...). Everything else is printed as it is.
* ``json``: one object per line with an ``"event"``: ``message`` (``topic``, ``epoch``,
  ``seq``, ``position``, ``headers``, ``payload``), and ``subscribed``, ``gap`` and
  ``epoch_changed``. Epochs and sequence numbers are u64, more than a JSON number keeps
  exactly (jq rounds above 2^53), so they are strings of decimal digits. ``position`` is
  ``EPOCH:SEQ``, the subscription's place after the event: ``--since`` takes it as it is
  and continues right after it. ``payload`` is the UTF-8 text, or base64 with
  ``"payload_base64": true``; headers are ``[{"key", "value"}]`` in order (a value that is
  not UTF-8 is base64 with ``"base64": true``).
* ``hex``: ``TOPIC SEQ HEXPAYLOAD``.

``-v`` adds the receive time (UTC) in front of each line and, in ``text`` and ``hex``, the
headers as ``{KEY=VALUE, ...}`` after the sequence number (in ``json``: a ``received``
field). Once the server has accepted a subscription, a line on stderr says where it
starts (``subscribed to TOPIC after EPOCH:SEQ``); with ``--format json`` this is a
``subscribed`` event on stdout instead.

A gap or an epoch change is never silent: a line on stderr, and with ``--format json`` also
an object on stdout (``"event": "gap"`` or ``"event": "epoch_changed"``).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import trio

from pushwire.client.commands.cmdline import (
    UsageError,
    add_connection_arguments,
    check_subscription,
    connect_options,
    run_command,
)
from pushwire.client.commands.exits import EXIT_FAILURE, EXIT_OK
from pushwire.client.connection import Message, SinceSpec, Subscription, TopicPosition, connect
from pushwire.client.errors import DeliveryInterrupted, EpochChanged, GapDetected
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.topics import is_pattern

U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1
#: How often a new subscription is looked at until the server has accepted it. The client
#: library records the start position without signalling it; 10 ms is far below what a
#: person notices and costs nothing measurable.
ACTIVE_POLL = 0.01

DESCRIPTION = (
    "Subscribe to one or more topics and print every message as one line.\n"
    "Reconnects and resumes by itself; gaps and epoch changes are reported, never skipped.\n"
    "Exit status 1: --timeout ran out before --count messages arrived."
)
EPILOG = """\
examples:
  pushwire sub orders/eu --since oldest --count 10
  pushwire sub 'orders/+' 'audit/#'           # patterns: each line names its topic
  pushwire sub prices/a prices/b --format json --since last:5
  pushwire sub jobs --at-least-once --credit 16 --server 10.0.0.5:7447
  pushwire sub alerts --tls-ca ca.pem --server tls://push.example.org:7447
  pushwire sub orders/eu --count 1 --timeout 5 || echo 'nothing within 5 s'
  pushwire sub orders/eu --format json | jq -r .position     # for a later --since

--since: new (default), oldest, last:N, or EPOCH:SEQ (continue after that position; both
         decimal, as in the "position" field of --format json). For a pattern ('+' one
         segment, a last '#' the rest) it applies to each topic; EPOCH:SEQ does not.
--count: exit 0 after N messages; --count 0 exits as soon as every subscription is
         active (a check that the server accepts them)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "topics",
        nargs="+",
        metavar="TOPIC",
        help="topic(s) or patterns ('orders/+', 'orders/#') to subscribe to",
    )
    parser.add_argument(
        "--since", default="new", help="where to start: new, oldest, last:N, EPOCH:SEQ"
    )
    parser.add_argument(
        "--count",
        type=int,
        default=None,
        metavar="N",
        help="exit 0 after N messages (0: once subscribed; default: never)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after SECONDS: exit 0, or 1 if --count messages have not all arrived",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json", "hex"),
        default="text",
        help="text: TOPIC SEQ PAYLOAD, escaped; json: one object per line, u64 values as "
        "strings; hex: TOPIC SEQ HEXPAYLOAD (default: text)",
    )
    parser.add_argument(
        "--at-least-once",
        action="store_true",
        help="acknowledge messages; unacknowledged ones are redelivered after a reconnect",
    )
    parser.add_argument(
        "--credit",
        type=int,
        default=64,
        metavar="N",
        help="flow-control window per topic (default: %(default)s)",
    )
    add_connection_arguments(
        parser,
        verbose_help="show receive times and headers, and log connection events to stderr "
        "(-vv: debug)",
    )


def _u64(text: str) -> int:
    if not text.isdigit() or int(text) > U64_MAX:
        raise ValueError(text)
    return int(text)


def parse_since_option(value: str) -> SinceSpec:
    """new | oldest | last:N | EPOCH:SEQ (decimal), as typed on the command line."""
    if value in ("new", "oldest"):
        return value  # type: ignore[return-value]
    kind, sep, rest = value.partition(":")
    try:
        if sep and kind == "last":
            count = _u64(rest)
            if count > U32_MAX:
                raise ValueError(rest)
            return ("last", count)
        if sep:
            return ("after", _u64(kind), _u64(rest))
    except ValueError:
        pass
    raise UsageError(
        f"--since {value!r}: expected new, oldest, last:N or EPOCH:SEQ (decimal numbers)"
    )


# -- output --------------------------------------------------------------------------------

_SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_text(data: bytes | str) -> str:
    """``data`` for a terminal: UTF-8 text with every byte and character that could
    control the terminal or break the line escaped (see the module docstring)."""
    text = data if isinstance(data, str) else data.decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def _maybe_base64(data: bytes) -> tuple[str, bool]:
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), True


def position_text(epoch: int, seq: int) -> str:
    """``EPOCH:SEQ``, the form ``--since`` takes."""
    return f"{epoch}:{seq}"


def _timestamp(received: datetime) -> str:
    return received.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_message(msg: Message, fmt: str, received: datetime | None = None) -> str:
    """One output line; ``received`` (given with -v) adds the receive time and headers."""
    if fmt in ("text", "hex"):
        body = msg.payload.hex() if fmt == "hex" else escape_text(msg.payload)
        if received is None:
            return f"{escape_text(msg.topic)} {msg.seq} {body}"
        pairs = ", ".join(f"{escape_text(k)}={escape_text(v)}" for k, v in msg.headers)
        shown = f" {{{pairs}}}" if msg.headers else ""
        return f"{_timestamp(received)} {escape_text(msg.topic)} {msg.seq}{shown} {body}"
    headers: list[dict[str, Any]] = []
    for key, value in msg.headers:
        text, b64 = _maybe_base64(value)
        headers.append({"key": key, "value": text} | ({"base64": True} if b64 else {}))
    payload, b64 = _maybe_base64(msg.payload)
    obj: dict[str, Any] = {
        "event": "message",
        "topic": msg.topic,
        "epoch": str(msg.epoch),
        "seq": str(msg.seq),
        "position": position_text(msg.epoch, msg.seq),
    }
    if received is not None:
        obj["received"] = _timestamp(received)
    obj |= {"headers": headers, "payload": payload}
    if b64:
        obj["payload_base64"] = True
    return json.dumps(obj, ensure_ascii=False)


def _reason(code: ErrorCode | int) -> str:
    return code.name if isinstance(code, ErrorCode) else f"0x{code:04x}"


def describe_interruption(exc: DeliveryInterrupted) -> tuple[str, dict[str, Any]]:
    """(stderr line, json object) for a gap or an epoch change."""
    if isinstance(exc, GapDetected):
        line = f"gap: {exc.topic} messages {exc.first}..{exc.last} lost ({_reason(exc.reason)})"
        return line, {
            "event": "gap",
            "topic": exc.topic,
            "epoch": str(exc.epoch),
            "first": str(exc.first),
            "last": str(exc.last),
            "reason": _reason(exc.reason),
            "position": position_text(exc.epoch, exc.last),
        }
    assert isinstance(exc, EpochChanged)
    line = (
        f"epoch changed: {exc.topic} {exc.old_epoch} -> {exc.new_epoch}, "
        f"continuing at {exc.start_seq}"
    )
    return line, {
        "event": "epoch_changed",
        "topic": exc.topic,
        "old_epoch": str(exc.old_epoch),
        "epoch": str(exc.new_epoch),
        "start_seq": str(exc.start_seq),
        "position": position_text(exc.new_epoch, exc.start_seq - 1),
    }


@dataclass(frozen=True, slots=True)
class Active:
    """The server accepted the subscription to ``topic``; delivery continues after
    ``start`` (None for a pattern: each topic has its own place)."""

    topic: str
    start: TopicPosition | None


def describe_active(item: Active) -> tuple[str, dict[str, Any]]:
    """(stderr line, json object) for a subscription the server has accepted."""
    if item.start is None:
        return f"subscribed to pattern {item.topic}", {
            "event": "subscribed",
            "topic": item.topic,
            "pattern": True,
        }
    where = position_text(item.start.epoch, item.start.seq)
    return f"subscribed to {item.topic} after {where}", {
        "event": "subscribed",
        "topic": item.topic,
        "epoch": str(item.start.epoch),
        "position": where,
    }


# -- running -------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    return run_command(args, lambda: _subscribe(args))


def _check(args: argparse.Namespace) -> SinceSpec:
    """Every argument checked before connecting: UsageError for the first bad one."""
    for topic in args.topics:
        check_subscription(topic)
    if args.count is not None and args.count < 0:
        raise UsageError("--count must be >= 0")
    if not 1 <= args.credit <= U32_MAX:
        raise UsageError(f"--credit must be 1..{U32_MAX}")
    if args.timeout is not None and not 0 < args.timeout < math.inf:
        raise UsageError(f"--timeout must be a number of seconds above 0, not {args.timeout}")
    since = parse_since_option(args.since)
    if any(is_pattern(t) for t in args.topics):
        if args.at_least_once:
            raise UsageError("--at-least-once: a pattern subscription is at-most-once")
        if isinstance(since, tuple) and since[0] == "after":
            raise UsageError(
                "--since EPOCH:SEQ names one topic's position; a pattern spans many topics"
            )
    return since


async def _active(sub: Subscription) -> TopicPosition | None:
    """The position the subscription starts after, once the server has accepted it (None
    for a pattern). Raises what the subscription raises when it is refused or the
    connection is lost."""
    while True:
        start = sub.position()
        if start is not None or (sub.pattern and sub.accepted):
            return start
        try:
            sub.receive_nowait()  # raises the refusal; nothing else is buffered yet
        except anyio.WouldBlock:
            await trio.sleep(ACTIVE_POLL)
        else:  # pragma: no cover - a message always comes after the start position
            raise AssertionError("message before the subscription was active")


async def _subscribe(args: argparse.Namespace) -> int:
    since = _check(args)
    options = connect_options(args, "sub")
    remaining = args.count
    out = sys.stdout
    json_out = args.format == "json"

    def emit(line: str, stream: Any = out) -> None:
        stream.write(line + "\n")
        stream.flush()

    def announce(line: str, obj: dict[str, Any], *, stderr_too: bool) -> None:
        if json_out:
            emit(json.dumps(obj))
        if stderr_too or not json_out:
            emit(line, sys.stderr)

    active = 0
    with trio.move_on_after(args.timeout if args.timeout is not None else math.inf) as timer:
        async with connect(**options) as conn:  # type: ignore[arg-type]
            topics = list(dict.fromkeys(args.topics))
            subs = [
                conn.subscribe(t, since=since, at_least_once=args.at_least_once, credit=args.credit)
                for t in topics
            ]
            send, receive = trio.open_memory_channel[Message | DeliveryInterrupted | Active](0)

            async def pump(sub: Subscription) -> None:
                await send.send(Active(sub.topic, await _active(sub)))
                # Unbuffered channel: a topic's next message is taken only when printed,
                # so credit goes back at the pace of the terminal.
                while True:
                    try:
                        msg = await sub.__anext__()
                    except StopAsyncIteration:
                        return
                    except DeliveryInterrupted as exc:
                        await send.send(exc)
                        continue
                    await send.send(msg)

            async with trio.open_nursery() as nursery:
                for sub in subs:
                    nursery.start_soon(pump, sub)
                async for item in receive:
                    if isinstance(item, Active):
                        announce(*describe_active(item), stderr_too=False)
                        active += 1
                        if remaining == 0 and active == len(subs):
                            nursery.cancel_scope.cancel()
                            break
                        continue
                    if isinstance(item, DeliveryInterrupted):
                        announce(*describe_interruption(item), stderr_too=True)
                        continue
                    received = datetime.now(UTC) if args.verbose else None
                    emit(format_message(item, args.format, received))
                    if remaining is not None:
                        remaining -= 1
                        if remaining == 0:
                            nursery.cancel_scope.cancel()
                            break
    if timer.cancelled_caught and remaining:
        got = args.count - remaining
        print(
            f"pushwire: timeout: {got} of {args.count} message(s) within {args.timeout:g} s",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_FAILURE
    return EXIT_OK
