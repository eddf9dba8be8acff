"""``pushwire pub``: publish MESSAGE, or each line of stdin, and print the sequence the
server assigned to each (one number per line, in order).

Each publish waits for its PUBACK before the next is sent, so the printed sequences are
confirmed and in input order; a refused publish stops with exit code 5.
"""

from __future__ import annotations

import argparse
import sys

import trio

from pushwire.client.commands.cmdline import (
    UsageError,
    add_connection_arguments,
    argument_text,
    check_topic,
    connect_options,
    run_command,
)
from pushwire.client.commands.exits import EXIT_OK
from pushwire.client.connection import connect

DESCRIPTION = (
    "Publish MESSAGE to TOPIC, or (without MESSAGE) each line of standard input as its own\n"
    "message; print the sequence number assigned to each."
)
EPILOG = """\
examples:
  pushwire pub orders/eu 'order 17 shipped' --header source=web --header id=17
  seq 1 100 | pushwire pub counters/demo"""
#: Added to argparse's complaint about extra arguments: nearly always an unquoted MESSAGE.
EXTRA_ARGUMENTS_HINT = " (quote a MESSAGE that has spaces: pushwire pub TOPIC 'hello world')"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", metavar="TOPIC")
    parser.add_argument(
        "message",
        nargs="?",
        metavar="MESSAGE",
        help="the payload, as UTF-8 (default: each line of stdin)",
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="K=V",
        help="add a header (repeatable; order and repeats are kept)",
    )
    add_connection_arguments(parser)


def parse_headers(items: list[str]) -> list[tuple[str, bytes]] | None:
    headers = []
    for item in items:
        key, sep, value = argument_text(item, f"--header {item!r}").partition("=")
        if not sep or not key:
            raise UsageError(f"--header {item!r}: expected KEY=VALUE")
        headers.append((key, value.encode()))
    return headers or None


def run(args: argparse.Namespace) -> int:
    return run_command(args, lambda: _publish(args))


async def _payload(args: argparse.Namespace) -> bytes | None:
    """The one message to publish, or None for one per line of stdin. UsageError for a
    bad argument, all found before connecting."""
    check_topic(argument_text(args.topic, "TOPIC"))
    if args.message is not None:
        return argument_text(args.message, "MESSAGE").encode()
    return None


async def _publish(args: argparse.Namespace) -> int:
    headers = parse_headers(args.header)
    options = connect_options(args, "pub")
    payload = await _payload(args)
    async with connect(**options) as conn:  # type: ignore[arg-type]
        if payload is not None:
            print(await conn.publish(args.topic, payload, headers), flush=True)
            return EXIT_OK
        async for raw in trio.wrap_file(sys.stdin.buffer):
            line = raw[:-1] if raw.endswith(b"\n") else raw
            line = line[:-1] if line.endswith(b"\r") else line
            print(await conn.publish(args.topic, line, headers), flush=True)
    return EXIT_OK
