"""``pushwire token``: mint a signed token (JWT, HS256) for development and tests.

A deployment mints tokens with its own issuer; this command makes the same claims (see
``pushwire.server.tokens``) so that a server started with ``--token-secret-file`` can be
tried at once.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

DESCRIPTION = """\
Print a signed token (JWT, HS256) that 'pushwire serve --token-secret-file FILE' accepts:
an identity name, topic patterns it may subscribe to and publish on, and an expiry. The
secret comes from --secret-file, or the PUSHWIRE_TOKEN_SECRET environment variable; it
must be at least 32 bytes. A connection whose token expires is closed with TOKEN_EXPIRED.

Exit status: 0 = printed, 2 = usage error."""

EPILOG = """\
examples:
  head -c 32 /dev/urandom | base64 > secret
  pushwire serve --token-secret-file secret
  pushwire token --secret-file secret --name dashboard --subscribe 'orders/#' --ttl 1h
  pushwire sub orders/eu --token "$(pushwire token --secret-file secret --name d \\
      --subscribe 'orders/#')\""""

_TTL_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d``."""
    match = _TTL_RE.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 90, 15m, 1h, 7d)")
    return float(match.group(1)) * _UNIT[match.group(2)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="the identity (the 'sub' claim)")
    parser.add_argument(
        "--subscribe",
        metavar="PATTERN",
        action="append",
        default=[],
        help="a topic pattern it may subscribe to (a/b, a/#, #); repeatable",
    )
    parser.add_argument(
        "--publish",
        metavar="PATTERN",
        action="append",
        default=[],
        help="a topic pattern it may publish on; repeatable",
    )
    parser.add_argument(
        "--ttl",
        type=parse_ttl,
        default=3600.0,
        help="validity: seconds, or with a unit: 15m, 1h, 7d (1h)",
    )
    parser.add_argument(
        "--secret-file",
        metavar="FILE",
        type=Path,
        help="the secret (trailing newline ignored); default: $PUSHWIRE_TOKEN_SECRET",
    )


def run(args: argparse.Namespace) -> int:
    from pushwire.server.cmd_serve import UsageError, load_token_secret
    from pushwire.server.tokens import mint

    try:
        secret = load_token_secret(args.secret_file)
        if secret is None:
            raise UsageError("no secret: give --secret-file or set PUSHWIRE_TOKEN_SECRET")
        token = mint(
            secret,
            args.name,
            subscribe=tuple(args.subscribe),
            publish=tuple(args.publish),
            ttl=args.ttl,
        )
    except (UsageError, ValueError) as exc:
        print(f"pushwire token: error: {exc}", file=sys.stderr)
        return 2
    try:
        print(token)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
