"""The ``pushwire`` command: a thin dispatcher to one module per subcommand.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``, and is
imported only when its subcommand runs, so ``pushwire sub`` never imports the server and
``pushwire --help`` stays fast. This is the one place that knows both shells.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import version
from types import ModuleType

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


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pushwire",
        description="pushwire: raw-TCP server push with ordering, resume and flow control.",
        epilog="Run 'pushwire COMMAND --help' for a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"pushwire {version('pushwire')}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_, add_help=False)
            continue
        module = _load(name)
        p = sub.add_parser(
            name,
            help=help_,
            description=getattr(module, "DESCRIPTION", help_),
            epilog=getattr(module, "EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        build_parser(only="").print_help() if not argv else build_parser(only="").parse_args(argv)
        return 0 if not argv else 2
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    try:
        return int(_load(command).run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
