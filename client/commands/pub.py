"""``pushwire pub``: publish one message (MESSAGE, or the bytes of ``--file``) or each line
of stdin, and print the sequence the server assigned to each (one number per line, in order).

Lines from stdin are pipelined: up to ``--window`` publishes await their PUBACK at once
(the server answers in order), and each sequence is printed once its PUBACK came, so the
printed sequences are confirmed and in input order; a refused publish stops with exit code
5.

Standard input is read with ``os.read`` in a worker thread that trio may abandon, so Ctrl-C
ends the command at once even while it waits for a line typed at a terminal (a blocking
read of ``sys.stdin`` cannot be interrupted until the line is complete).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

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
from pushwire.client.connection import DEFAULT_PUBLISH_WINDOW, connect

DESCRIPTION = (
    "Publish MESSAGE to TOPIC, or the bytes of --file as one message, or (with neither) each\n"
    "line of standard input as its own message; print the sequence number assigned to each."
)
EPILOG = """\
examples:
  pushwire pub orders/eu 'order 17 shipped' --header source=web --header id=17
  seq 1 100 | pushwire pub counters/demo
  pushwire pub images/latest --file photo.jpg
  curl -s https://example.org/status.json | pushwire pub status --file -

Lines of standard input lose their line ending (\\n or \\r\\n); --file sends every byte as
it is, in one message."""
#: Added to argparse's complaint about extra arguments: nearly always an unquoted MESSAGE.
EXTRA_ARGUMENTS_HINT = " (quote a MESSAGE that has spaces: pushwire pub TOPIC 'hello world')"

#: Bytes asked of one read of standard input.
READ_SIZE = 65536


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", metavar="TOPIC")
    parser.add_argument(
        "message",
        nargs="?",
        metavar="MESSAGE",
        help="the payload, as UTF-8 (default: each line of stdin)",
    )
    parser.add_argument(
        "--file",
        metavar="PATH",
        help="publish the bytes of PATH as they are, as one message ('-': all of stdin)",
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
        key, sep, value = argument_text(item, f"--header {item!r}").partition("=")
        if not sep or not key:
            raise UsageError(f"--header {item!r}: expected KEY=VALUE")
        headers.append((key, value.encode()))
    return headers or None


async def _read(fd: int) -> bytes:
    return await trio.to_thread.run_sync(os.read, fd, READ_SIZE, abandon_on_cancel=True)


async def read_all(fd: int) -> bytes:
    """Everything readable from ``fd`` until end of file; Ctrl-C interrupts it at once."""
    chunks = []
    while chunk := await _read(fd):
        chunks.append(chunk)
    return b"".join(chunks)


async def read_lines(fd: int) -> AsyncIterator[bytes]:
    """The lines of ``fd`` without their ``\\n`` or ``\\r\\n``, each as soon as it is
    complete; Ctrl-C interrupts the wait at once."""
    pending = b""
    while chunk := await _read(fd):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            yield line.removesuffix(b"\r")
    if pending:
        yield pending.removesuffix(b"\r")


def run(args: argparse.Namespace) -> int:
    return run_command(args, lambda: _publish(args))


async def _payload(args: argparse.Namespace) -> bytes | None:
    """The one message to publish, or None for one per line of stdin. UsageError for a
    bad argument, all found before connecting."""
    check_topic(argument_text(args.topic, "TOPIC"))
    if args.message is not None and args.file is not None:
        raise UsageError("give MESSAGE or --file, not both")
    if args.message is not None:
        return argument_text(args.message, "MESSAGE").encode()
    if args.file == "-":
        return await read_all(sys.stdin.fileno())
    if args.file is not None:
        try:
            return Path(args.file).read_bytes()
        except OSError as exc:
            raise UsageError(f"--file {args.file}: {exc.strerror or exc}") from None
    return None


async def _publish(args: argparse.Namespace) -> int:
    headers = parse_headers(args.header)
    options = connect_options(args, "pub")
    payload = await _payload(args)
    async with connect(**options) as conn:  # type: ignore[arg-type]
        if payload is not None:
            print(await conn.publish(args.topic, payload, headers), flush=True)
            return EXIT_OK
        out: list[str] = []
        # at a terminal each sequence shows at once; into a pipe they go out in chunks
        chunk = 1 if sys.stdin.isatty() or sys.stdout.isatty() else 256

        def acked(seq: int) -> None:
            out.append(f"{seq}\n")
            if len(out) >= chunk:
                flush()

        def flush() -> None:
            sys.stdout.write("".join(out))
            sys.stdout.flush()
            out.clear()

        try:
            await conn.publish_many(
                args.topic,
                read_lines(sys.stdin.fileno()),
                acked,
                headers=headers,
                window=args.window,
            )
        finally:
            flush()
    return EXIT_OK
