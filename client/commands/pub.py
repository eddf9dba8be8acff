"""``pushwire pub``: publish MESSAGE, or each line of stdin, and print the sequence the
server assigned to each (one number per line, in order).

Lines from stdin are pipelined: up to ``--window`` publishes await their PUBACK at once
(the server answers in order), and each sequence is printed once its PUBACK came, so the
printed sequences are confirmed and in input order; a refused publish stops with exit code
5.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator

import trio

from pushwire.client.commands.cmdline import (
    EXIT_CODES_HELP,
    EXIT_OK,
    UsageError,
    add_connection_arguments,
    connect_options,
    run_command,
)
from pushwire.client.connection import DEFAULT_PUBLISH_WINDOW, connect

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
    parser.add_argument(
        "--window",
        type=_window,
        default=DEFAULT_PUBLISH_WINDOW,
        metavar="N",
        help=f"stdin lines published before their PUBACK came (default {DEFAULT_PUBLISH_WINDOW})",
    )
    add_connection_arguments(parser)


def _window(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


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
        out: list[str] = []

        def acked(seq: int) -> None:
            out.append(f"{seq}\n")
            if len(out) >= 256:
                flush()

        def flush() -> None:
            sys.stdout.write("".join(out))
            sys.stdout.flush()
            out.clear()

        try:
            await conn.publish_many(
                args.topic, _lines(), acked, headers=headers, window=args.window
            )
        finally:
            flush()
    return EXIT_OK


async def _lines() -> AsyncIterator[bytes]:
    """stdin's lines without their line ends, read in large chunks (a thread hop per
    chunk, not per line)."""
    read = getattr(sys.stdin.buffer, "read1", sys.stdin.buffer.read)
    rest = b""
    while True:
        chunk = await trio.to_thread.run_sync(read, 1 << 16)
        if not chunk:
            break
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line[:-1] if line.endswith(b"\r") else line
    if rest:
        yield rest[:-1] if rest.endswith(b"\r") else rest
