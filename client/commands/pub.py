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
    EXIT_CODES_HELP,
    EXIT_OK,
    UsageError,
    add_connection_arguments,
    connect_options,
    run_command,
)
from pushwire.client.connection import connect

DESCRIPTION = (
    "Publish MESSAGE to TOPIC, or (without MESSAGE) each line of standard input as its own\n"
    "message; print the sequence number assigned to each."
)
EPILOG = f"""\
examples:
  pushwire pub orders/eu 'order 17 shipped' --header source=web --header id=17
  seq 1 100 | pushwire pub counters/demo

{EXIT_CODES_HELP}"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", metavar="TOPIC")
    parser.add_argument(
        "message", nargs="?", metavar="MESSAGE", help="payload (default: each line of stdin)"
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
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--header {item!r}: expected KEY=VALUE")
        headers.append((key, value.encode()))
    return headers or None


def run(args: argparse.Namespace) -> int:
    return run_command(args, lambda: _publish(args))


async def _publish(args: argparse.Namespace) -> int:
    headers = parse_headers(args.header)
    async with connect(**connect_options(args)) as conn:  # type: ignore[arg-type]
        if args.message is not None:
            print(await conn.publish(args.topic, args.message.encode(), headers), flush=True)
            return EXIT_OK
        stdin = trio.wrap_file(sys.stdin.buffer)
        async for raw in stdin:
            line = raw[:-1] if raw.endswith(b"\n") else raw
            line = line[:-1] if line.endswith(b"\r") else line
            print(await conn.publish(args.topic, line, headers), flush=True)
    return EXIT_OK
