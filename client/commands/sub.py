"""``pushwire sub``: subscribe to topics and print each message as one line.

Formats (stdout, one line per message, flushed per line so pipes see it at once):

* ``text``: ``TOPIC SEQ PAYLOAD``; the payload is decoded as UTF-8, bytes that are not
  UTF-8 become ``\\xNN``, and newline / carriage return become ``\\n`` / ``\\r`` so one
  message stays one line.
* ``json``: ``{"event": "message", "topic", "epoch", "seq", "headers", "payload"}``;
  ``payload`` is the UTF-8 text, or base64 with ``"payload_base64": true``; headers are
  ``[{"key", "value"}]`` in order (a value that is not UTF-8 is base64 with ``"base64":
  true``).
* ``hex``: ``TOPIC SEQ HEXPAYLOAD``.

A gap or an epoch change is never silent: a line on stderr, and with ``--format json`` also
an object on stdout (``"event": "gap"`` or ``"event": "epoch_changed"``).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any

import trio

from pushwire.client.commands.cmdline import (
    EXIT_CODES_HELP,
    EXIT_OK,
    UsageError,
    add_connection_arguments,
    connect_options,
    run_command,
)
from pushwire.client.connection import Message, SinceSpec, connect
from pushwire.client.errors import DeliveryInterrupted, EpochChanged, GapDetected
from pushwire.protocol.errors import ErrorCode

DESCRIPTION = (
    "Subscribe to one or more topics and print every message as one line.\n"
    "Reconnects and resumes by itself; gaps and epoch changes are reported, never skipped."
)
EPILOG = f"""\
examples:
  pushwire sub orders/eu --since oldest --count 10
  pushwire sub prices/a prices/b --format json --since last:5
  pushwire sub jobs --at-least-once --credit 16 --server 10.0.0.5:7447
  pushwire sub alerts --tls-ca ca.pem --server tls://push.example.org:7447

--since: new (default), oldest, last:N, or EPOCH:SEQ (resume after that position;
         EPOCH may be decimal or 0x-hex, as printed by --format json).

{EXIT_CODES_HELP}"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topics", nargs="+", metavar="TOPIC", help="topic(s) to subscribe to")
    parser.add_argument(
        "--since", default="new", help="where to start: new, oldest, last:N, EPOCH:SEQ"
    )
    parser.add_argument(
        "--count", type=int, default=None, metavar="N", help="exit 0 after N messages"
    )
    parser.add_argument("--format", choices=("text", "json", "hex"), default="text")
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
    add_connection_arguments(parser)


def parse_since_option(value: str) -> SinceSpec:
    """new | oldest | last:N | EPOCH:SEQ, as typed on the command line."""
    if value in ("new", "oldest"):
        return value  # type: ignore[return-value]
    kind, sep, rest = value.partition(":")
    try:
        if sep and kind == "last":
            count = int(rest)
            if count < 0:
                raise ValueError
            return ("last", count)
        if sep:
            return ("after", int(kind, 0), int(rest))
    except ValueError:
        pass
    raise UsageError(f"--since {value!r}: expected new, oldest, last:N or EPOCH:SEQ")


def _text(payload: bytes) -> str:
    text = payload.decode("utf-8", "backslashreplace")
    return text.replace("\n", "\\n").replace("\r", "\\r")


def _maybe_base64(data: bytes) -> tuple[str, bool]:
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), True


def format_message(msg: Message, fmt: str) -> str:
    if fmt == "hex":
        return f"{msg.topic} {msg.seq} {msg.payload.hex()}"
    if fmt == "text":
        return f"{msg.topic} {msg.seq} {_text(msg.payload)}"
    headers: list[dict[str, Any]] = []
    for key, value in msg.headers:
        text, b64 = _maybe_base64(value)
        headers.append({"key": key, "value": text} | ({"base64": True} if b64 else {}))
    payload, b64 = _maybe_base64(msg.payload)
    obj: dict[str, Any] = {
        "event": "message",
        "topic": msg.topic,
        "epoch": msg.epoch,
        "seq": msg.seq,
        "headers": headers,
        "payload": payload,
    }
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
            "epoch": exc.epoch,
            "first": exc.first,
            "last": exc.last,
            "reason": _reason(exc.reason),
        }
    assert isinstance(exc, EpochChanged)
    line = (
        f"epoch changed: {exc.topic} {exc.old_epoch} -> {exc.new_epoch}, "
        f"continuing at {exc.start_seq}"
    )
    return line, {
        "event": "epoch_changed",
        "topic": exc.topic,
        "old_epoch": exc.old_epoch,
        "epoch": exc.new_epoch,
        "start_seq": exc.start_seq,
    }


def run(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 0:
        return run_command(args, _usage("--count must be >= 0"))
    if not 1 <= args.credit <= 0xFFFF_FFFF:
        return run_command(args, _usage("--credit must be 1..4294967295"))
    return run_command(args, lambda: _subscribe(args))


def _usage(message: str):  # type: ignore[no-untyped-def]
    async def fail() -> int:
        raise UsageError(message)

    return fail


async def _subscribe(args: argparse.Namespace) -> int:
    since = parse_since_option(args.since)
    remaining = args.count
    if remaining == 0:
        return EXIT_OK
    out = sys.stdout

    def emit(line: str, stream: Any = out) -> None:
        stream.write(line + "\n")
        stream.flush()

    async with connect(**connect_options(args)) as conn:  # type: ignore[arg-type]
        subs = [
            conn.subscribe(topic, since=since, at_least_once=args.at_least_once, credit=args.credit)
            for topic in dict.fromkeys(args.topics)
        ]
        send, receive = trio.open_memory_channel[Message | DeliveryInterrupted](0)

        async def pump(sub: Any) -> None:
            # Unbuffered channel: a topic's next message is taken only when printed, so
            # credit goes back at the pace of the terminal.
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
                if isinstance(item, DeliveryInterrupted):
                    line, obj = describe_interruption(item)
                    emit(line, sys.stderr)
                    if args.format == "json":
                        emit(json.dumps(obj))
                    continue
                emit(format_message(item, args.format))
                if remaining is not None:
                    remaining -= 1
                    if remaining == 0:
                        nursery.cancel_scope.cancel()
                        break
    return EXIT_OK
