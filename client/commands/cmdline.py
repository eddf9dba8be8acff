"""What the terminal commands share: the server address (``--server`` or
``$PUSHWIRE_SERVER``), one table of exit codes, and turning the client's exceptions into one
clear line on stderr (never a traceback for a user's mistake or a refused connection).

Every command that connects resolves its address with :func:`server_address`, so a typo is a
usage error (exit 2) before anything is sent, and every command reports a server that cannot
be reached with exit code 3 and :func:`unreachable_message`.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version

import trio

# The exit codes live in exits.py (cheap to import); they are importable from here too.
from pushwire.client.commands.exits import EXIT_CODES_HELP as EXIT_CODES_HELP
from pushwire.client.commands.exits import EXIT_CONNECT as EXIT_CONNECT
from pushwire.client.commands.exits import EXIT_FAILURE as EXIT_FAILURE
from pushwire.client.commands.exits import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from pushwire.client.commands.exits import EXIT_LOST as EXIT_LOST
from pushwire.client.commands.exits import EXIT_OK as EXIT_OK
from pushwire.client.commands.exits import EXIT_REJECTED as EXIT_REJECTED
from pushwire.client.commands.exits import EXIT_REQUEST as EXIT_REQUEST
from pushwire.client.commands.exits import EXIT_USAGE as EXIT_USAGE
from pushwire.client.connection import parse_address, tls_context
from pushwire.client.errors import (
    ConnectError,
    ConnectionLost,
    HandshakeRejected,
    RequestError,
)
from pushwire.protocol.errors import ErrorCode
from pushwire.protocol.topics import is_pattern, pattern_problem, topic_problem

DEFAULT_SERVER = "127.0.0.1:7447"
SERVER_ENV = "PUSHWIRE_SERVER"
#: The form ``pushwire serve`` prints for a TLS listener; accepted by --server.
TLS_SCHEME = "tls://"


class UsageError(Exception):
    """A bad argument value found after argparse: exit 2 with the message."""


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """A ``--server`` value checked and split: what to connect to, and whether with TLS."""

    host: str
    port: int
    tls: bool = False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_server(text: str, source: str = "--server") -> ServerAddress:
    """``HOST:PORT``, ``[IPv6]:PORT``, ``HOST`` (port 7447) or ``tls://`` and one of those.
    UsageError (naming ``source``) for anything else, a bare port included: ``7447`` is
    never a host named 7447."""
    tls = text.startswith(TLS_SCHEME)
    address = text.removeprefix(TLS_SCHEME)
    if address.isdigit():
        raise UsageError(
            f"{source} {text}: a port alone is not an address; give HOST:PORT "
            f"(e.g. 127.0.0.1:{address})"
        )
    try:
        host, port = parse_address(address)
    except ValueError as exc:
        raise UsageError(f"{source}: {exc}") from None
    return ServerAddress(host, port, tls)


def add_server_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=None,
        help="server address: HOST:PORT, [IPv6]:PORT, or HOST alone for port 7447 (a port "
        f"alone is refused); tls://HOST:PORT implies --tls (default: ${SERVER_ENV} or "
        f"{DEFAULT_SERVER})",
    )


def server_address(args: argparse.Namespace, positional: str | None = None) -> ServerAddress:
    """The address of ``--server``, else of the positional HOST:PORT some commands also
    accept, else of ``$PUSHWIRE_SERVER``, else 127.0.0.1:7447."""
    given = getattr(args, "server", None)
    if given is not None and positional is not None and given != positional:
        raise UsageError(f"two addresses given: {positional} and --server {given}")
    if given is not None:
        return parse_server(given)
    if positional is not None:
        return parse_server(positional, "HOST:PORT")
    from_env = os.environ.get(SERVER_ENV)
    if from_env:
        return parse_server(from_env, f"${SERVER_ENV}=")
    return parse_server(DEFAULT_SERVER)


def check_topic(topic: str) -> str:
    """``topic`` itself, or UsageError: its syntax (SPEC.md §9.1) is checked before
    connecting, so a typo never costs a connection."""
    problem = topic_problem(topic)
    if problem is not None:
        raise UsageError(f"invalid topic {topic!r}: {problem}")
    return topic


def check_subscription(topic: str) -> str:
    """A topic name or a pattern (``+``, a last ``#``: SPEC.md §9.4), checked as
    :func:`check_topic` checks a name."""
    if not is_pattern(topic):
        return check_topic(topic)
    problem = pattern_problem(topic)
    if problem is not None:
        raise UsageError(f"invalid pattern {topic!r}: {problem}")
    return topic


def argument_text(value: str, what: str) -> str:
    """``value`` as typed, or UsageError when it is not UTF-8 (the shell passed bytes that
    Python could only keep as lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid UTF-8") from None
    return value


def add_connection_arguments(
    parser: argparse.ArgumentParser,
    verbose_help: str = "log connection events to stderr (-vv: debug)",
) -> None:
    group = parser.add_argument_group("connection")
    add_server_argument(group)
    group.add_argument(
        "--token",
        default=os.environ.get("PUSHWIRE_TOKEN", ""),
        help="auth token (default: $PUSHWIRE_TOKEN; empty = anonymous)",
    )
    group.add_argument(
        "--name",
        default=None,
        help="client name sent in HELLO (default: pushwire-COMMAND/VERSION)",
    )
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
        help="exit (code 6) instead of reconnecting when the connection drops or the server "
        "goes away (GOAWAY)",
    )
    group.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="bound on connecting + handshake (default: %(default)s)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help=verbose_help,
    )


def client_name(command: str) -> str:
    """What a command calls itself in HELLO, so a server's log tells ``sub`` from ``pub``."""
    return f"pushwire-{command}/{version('pushwire')}"


def connect_options(args: argparse.Namespace, command: str | None = None) -> dict[str, object]:
    """The keyword arguments of ``connect()`` for the connection options, the address
    included; the client is named after ``command`` (default: the command being run).
    Raises UsageError when --server is not an address or the --tls-ca file is not usable."""
    command = command or getattr(args, "command", None) or "cli"
    server = server_address(args)
    tls: bool | ssl.SSLContext = args.tls or server.tls
    if args.tls_ca is not None:
        try:
            tls = tls_context(True, ca_file=args.tls_ca) or tls  # never None for True
        except ssl.SSLError:  # before OSError: it is one
            raise UsageError(f"--tls-ca {args.tls_ca}: no PEM certificate in it") from None
        except OSError as exc:
            raise UsageError(f"--tls-ca {args.tls_ca}: {exc.strerror or exc}") from None
    return {
        "address": str(server),
        "client_name": args.name or client_name(command),
        "auth_token": args.token.encode(),
        "reconnect": not args.no_reconnect,
        "tls": tls,
        "allow_plaintext_token": args.allow_plaintext_token,
        "connect_timeout": args.connect_timeout,
    }


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc``, what caused it, and the members of every exception group on the way."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                todo.append(linked)
    return seen


def refused_now(address: ServerAddress, timeout: float = 2.0) -> bool:
    """Whether a plain TCP connection to ``address`` is refused right now. Asked after the
    client's ConnectError, whose message does not say why the connection failed."""
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def unreachable_message(address: ServerAddress, exc: BaseException | None) -> str:
    """One line for a server that could not be reached. A refused connection is called
    that, with a hint: it nearly always means that no server runs at that address. With
    ``exc`` None, the connection was refused."""
    refused = exc is None or any(
        isinstance(cause, ConnectionRefusedError)
        or (isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED)
        for cause in _causes(exc)
    )
    if refused:
        return (
            f"cannot connect to {address}: connection refused (is a server running there? "
            f"start one with 'pushwire serve --port {address.port}', or give --server or "
            f"${SERVER_ENV})"
        )
    reason = str(exc).removeprefix(f"cannot connect to {address}: ")
    return f"cannot connect to {address}: {reason}"


def lost_message(exc: ConnectionLost) -> str:
    """One line for a connection that ended for good. NO_ERROR is not named (a server that
    closed without GOAWAY was killed or crashed: nothing ended the connection politely).
    With --no-reconnect a GOAWAY ends it too, named by its code and reason."""
    code = exc.code
    message = exc.message
    name = code.name if isinstance(code, ErrorCode) else None if code is None else f"{code:#06x}"
    if name is not None:
        message = message.removeprefix(f"{name}: ")
    if name is None or code == ErrorCode.NO_ERROR:
        return f"connection lost: {message}"
    return f"connection lost: {name}: {message}"


def fail(message: str, code: int, command: str = "") -> int:
    prefix = f"pushwire {command}: error:" if command else "pushwire: error:"
    print(f"{prefix} {message}", file=sys.stderr, flush=True)
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
        where = server_address(args)  # it was checked before connecting
        return fail(unreachable_message(where, None if refused_now(where) else exc), EXIT_CONNECT)
    except HandshakeRejected as exc:
        return fail(f"handshake rejected: {exc}", EXIT_REJECTED)
    except RequestError as exc:
        return fail(f"request refused: {exc}", EXIT_REQUEST)
    except ConnectionLost as exc:
        return fail(lost_message(exc), EXIT_LOST)
