"""``pushwire bench TARGET``: throughput measurements, one module per target.

Targets live in :data:`TARGETS` so that another part of the project can add one (a
``bench server`` next to ``bench codec``) with one line here and a module of its own. A
target module exposes ``HELP``, ``DESCRIPTION``, ``EPILOG``, ``add_arguments(parser)`` and
``run(args) -> int``, and must be cheap to import: every target's arguments are declared when
``pushwire bench`` parses its command line, so heavy imports (a server, trio) belong inside
``run``. Benchmarks report what they measured; they assert no speed.
"""

from __future__ import annotations

import argparse
import importlib
import re
from types import ModuleType

DESCRIPTION = "Measure pushwire throughput. Each TARGET has its own options and output.\n"
EPILOG = """\
examples:
  pushwire bench codec                      hot-path codec vs construct vs a struct ceiling
  pushwire bench codec --repeat 100 --json codec.json
"""

#: target name -> module implementing it.
TARGETS: dict[str, str] = {
    "codec": "pushwire.client.bench.codec",
    "server": "pushwire.client.bench.server",
}
#: Modules that add scenarios to a target when imported (see bench.server.EXTRA_SCENARIOS).
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "server": ("pushwire.client.bench.scenarios", "pushwire.client.bench.churn")
}


def _target(name: str) -> ModuleType:
    module = importlib.import_module(TARGETS[name])
    for extension in EXTENSIONS.get(name, ()):
        importlib.import_module(extension)
    return module


_UNDERLINE = re.compile(r"^([^\n]+)\n[-=~^]{3,}$", re.M)
_ROLE = re.compile(r":[a-z]+:`~?\.?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
_STRONG = re.compile(r"\*\*([^*]+)\*\*")
_EMPHASIS = re.compile(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])")


def plain_text(rst: str) -> str:
    """A target's DESCRIPTION (often its module docstring, in reStructuredText) as --help
    shows it: section titles end in a colon instead of being underlined, and literals,
    roles and emphasis lose their markup."""
    text = _UNDERLINE.sub(r"\1:", rst)
    text = _ROLE.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    text = _STRONG.sub(r"\1", text)
    return _EMPHASIS.sub(r"\1", text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name in TARGETS:
        module = _target(name)
        sub = targets.add_parser(
            name,
            help=module.HELP,
            description=plain_text(getattr(module, "DESCRIPTION", module.HELP)),
            epilog=getattr(module, "EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)


def run(args: argparse.Namespace) -> int:
    return int(_target(args.target).run(args))
