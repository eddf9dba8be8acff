"""What ``pushwire sub`` and ``pushwire pub`` share: connection options, exit codes, and
turning the client's exceptions into one clear line on stderr (never a traceback for a
user's mistake or a refused connection)."""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys
from collections.abc import Awaitable, Callable

import trio

from pushwire.client.connection import parse_address, tls_context
from pushwire.client.errors import (
    ConnectError,
    ConnectionLost,
    HandshakeRejected,
    RequestError,
)

DEFAULT_SERVER = "127.0.0.1:7447"
#: The form ``pushwire serve`` prints for a TLS listener; accepted by --server.
TLS_SCHEME = "tls://"

#: Exit codes, distinct so scripts can tell failures apart.
EXIT_OK = 0
EXIT_FAILURE = 1  # anything else
EXIT_USAGE = 2  # bad arguments (argparse uses 2 as well)
EXIT_CONNECT = 3  # the server could not be reached
EXIT_REJECTED = 4  # the server refused the handshake (code name + reason printed)
EXIT_REQUEST = 5  # the server refused a subscription or publish
EXIT_LOST = 6  # the connection ended for good while working

EXIT_CODES_HELP = """\
exit codes:
  0  success        2  bad arguments          3  server unreachable
  4  handshake rejected (e.g. UNAUTHENTICATED)   5  request refused (e.g. FORBIDDEN)
  6  connection lost for good                    1  anything else"""


class UsageError(Exception):
    """A bad argument value found after argparse: exit 2 with the message."""


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=os.environ.get("PUSHWIRE_SERVER", DEFAULT_SERVER),
        help="server address: HOST:PORT, [IPv6]:PORT, or HOST alone for port 7447 (the host "
        "is never implied); tls://HOST:PORT implies --tls "
        "(default: $PUSHWIRE_SERVER or %(default)s)",
    )
    group.add_argument(
        "--token",
        default=os.environ.get("PUSHWIRE_TOKEN", ""),
        help="auth token (default: $PUSHWIRE_TOKEN; empty = anonymous)",
    )
    group.add_argument("--name", default=None, help="client name sent in HELLO")
    group.add_argument(
        "--tls",
        action="store_true",
        help="connect with TLS, verifying the server certificate against the system's CAs",
    )
    group.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="trust only the CA certificate(s) in this PEM file (implies --tls)",
    )
    group.add_argument(
        "--allow-plaintext-token",
        action="store_true",
        help="send --token without TLS to a non-loopback server",
    )
    group.add_argument(
        "--no-reconnect",
        action="store_true",
        help="exit instead of reconnecting when the connection drops",
    )
    group.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="bound on connecting + handshake (default: %(default)s)",
    )
    group.add_argument(
        "-v", "--verbose", action="count", default=0, help="log connection events to stderr"
    )


def connect_options(args: argparse.Namespace) -> dict[str, object]:
    """The keyword arguments of ``connect()`` for the connection options, the address
    included. Raises UsageError when --server is not an address or the --tls-ca file is
    not usable."""
    address: str = args.server
    tls: bool | ssl.SSLContext = args.tls or address.startswith(TLS_SCHEME)
    address = address.removeprefix(TLS_SCHEME)
    try:
        parse_address(address)  # here, so that a typo is reported before anything else
    except ValueError as exc:
        raise UsageError(f"--server: {exc}") from None
    if args.tls_ca is not None:
        try:
            tls = tls_context(True, ca_file=args.tls_ca) or tls  # never None for True
        except ssl.SSLError:  # before OSError: it is one
            raise UsageError(f"--tls-ca {args.tls_ca}: no PEM certificate in it") from None
        except OSError as exc:
            raise UsageError(f"--tls-ca {args.tls_ca}: {exc.strerror or exc}") from None
    return {
        "address": address,
        "client_name": args.name,
        "auth_token": args.token.encode(),
        "reconnect": not args.no_reconnect,
        "tls": tls,
        "allow_plaintext_token": args.allow_plaintext_token,
        "connect_timeout": args.connect_timeout,
    }


def fail(message: str, code: int) -> int:
    print(f"pushwire: error: {message}", file=sys.stderr, flush=True)
    return code


def run_command(args: argparse.Namespace, main: Callable[[], Awaitable[int]]) -> int:
    """Run ``main`` under trio and map every expected failure to a line and an exit code."""
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="pushwire: %(message)s", stream=sys.stderr)
    try:
        return trio.run(main)
    except UsageError as exc:
        return fail(str(exc), EXIT_USAGE)
    except ValueError as exc:  # bad option values found by connect()
        return fail(str(exc), EXIT_USAGE)
    except ConnectError as exc:
        return fail(str(exc), EXIT_CONNECT)
    except HandshakeRejected as exc:
        return fail(f"handshake rejected: {exc}", EXIT_REJECTED)
    except RequestError as exc:
        return fail(f"request refused: {exc}", EXIT_REQUEST)
    except ConnectionLost as exc:
        return fail(f"connection lost: {exc}", EXIT_LOST)
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): not an error of ours.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the final flush
        except OSError:
            pass
        return EXIT_OK
