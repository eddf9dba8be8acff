"""The ``pushwire`` command: a thin dispatcher to one module per subcommand.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``, and is
imported only when its subcommand runs, so ``pushwire sub`` never imports the server and
``pushwire --help`` stays fast. This is the one place that knows both shells.

What every command gets from here: the exit-code table of
:mod:`pushwire.client.commands.exits` at the end of its ``--help``, its own usage when an
argument is left over (options and positionals may be mixed), exit code 130 on Ctrl-C, and
a quiet end when the reader of its output goes away (``| head``). Bare ``pushwire`` prints
the usage and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version
from types import ModuleType

from pushwire.client.commands.exits import (
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
)

#: name -> (module, one-line help). Order is the order of ``pushwire --help``.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("pushwire.server.cmd_serve", "run a server (embedded in-memory broker)"),
    "sub": ("pushwire.client.commands.sub", "subscribe to topics and print messages"),
    "pub": ("pushwire.client.commands.pub", "publish a message, or each line of stdin"),
    "stats": ("pushwire.client.commands.stats", "show a server's figures ($sys/stats)"),
    "decode": (
        "pushwire.client.commands.decode",
        "decode a frame given in hex, or explain its error",
    ),
    "vectors": ("pushwire.client.commands.vectors", "print or check the protocol test vectors"),
    "bench": ("pushwire.client.commands.bench", "measure codec and server throughput"),
    "conformance": ("pushwire.client.conformance.cmd", "check a server against SPEC.md"),
    "testserver": ("pushwire.server.testserver.cmd", "scripted server that tests a client"),
    "token": ("pushwire.server.cmd_token", "mint a signed auth token for development"),
    "fuzz": ("pushwire.client.conformance.fuzz", "send hostile byte streams to a server"),
}


def _load(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name][0])


def _build(only: str | None) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="pushwire",
        description="pushwire: raw-TCP server push with ordering, resume and flow control.",
        epilog="Run 'pushwire COMMAND --help' for a command's options and an example.\n\n"
        + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pushwire {version('pushwire')}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parsers: dict[str, argparse.ArgumentParser] = {}
    for name, (_module, help_) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_, add_help=False)
            continue
        module = _load(name)
        epilog = getattr(module, "EPILOG", None)
        p = sub.add_parser(
            name,
            help=help_,
            description=getattr(module, "DESCRIPTION", help_),
            epilog=_with_exit_codes(epilog),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        parsers[name] = p
    return parser, parsers


def _with_exit_codes(epilog: str | None) -> str:
    """A command's epilog ending in the exit-code table (once, if it has it already)."""
    if not epilog:
        return EXIT_CODES_HELP
    return epilog if EXIT_CODES_HELP in epilog else f"{epilog}\n\n{EXIT_CODES_HELP}"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``pushwire``; with ``only``, just that command's options are loaded."""
    return _build(only)[0]


def _dispatch(argv: list[str]) -> int:
    if not argv:
        build_parser(only="").print_help(sys.stderr)
        return EXIT_USAGE
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        build_parser(only="").parse_args(argv)  # --help and --version exit here, typos too
        return EXIT_USAGE
    parser, parsers = _build(only=command)
    at = argv.index(command)
    if at:  # options before the command: only --help and --version exist there
        parser.parse_args(argv[: at + 1])
    command_parser = parsers[command]
    if command_parser._subparsers is None:
        # Options and positionals in any order: `pub TOPIC --header K=V MESSAGE` works.
        args, extra = command_parser.parse_known_intermixed_args(argv[at + 1 :])
    else:
        args, extra = command_parser.parse_known_args(argv[at + 1 :])
    if extra:
        hint = getattr(_load(command), "EXTRA_ARGUMENTS_HINT", "")
        command_parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    args.command = command
    code = int(_load(command).run(args) or 0)
    sys.stdout.flush()  # here, where a closed pipe is still caught, not at exit
    return code


def _output_closed() -> int:
    """The reader of our output went away (``| head``, ``| true``): not an error of ours.
    Standard output is pointed at /dev/null so that the final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):  # no real file descriptor
        pass
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _output_closed()
    except BaseExceptionGroup as group:  # from inside a nursery
        if group.split(KeyboardInterrupt)[1] is None:
            return EXIT_INTERRUPTED
        if group.split(BrokenPipeError)[1] is None:
            return _output_closed()
        raise


if __name__ == "__main__":
    raise SystemExit(main())
