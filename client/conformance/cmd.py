"""``pushwire conformance [--server HOST:PORT]``: check a server against SPEC.md over the wire.

Exit codes (the table of ``pushwire.client.commands.exits``): 0 every selected case passed
(or was n/a / skipped); 1 at least one case failed or could not run; 2 bad command line or a
report file that cannot be written; 3 a server that cannot be reached at all. Those last
two are decided before the run (one TCP connect, one trial open of each report file), so a
typo costs one line, not a run of ~100 failing cases.
"""

from __future__ import annotations

import argparse
import shlex
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from pushwire.client.commands.cmdline import (
    ServerAddress,
    UsageError,
    add_server_argument,
    server_address,
    unreachable_message,
)
from pushwire.client.commands.exits import EXIT_CONNECT, EXIT_FAILURE, EXIT_OK, EXIT_USAGE

DESCRIPTION = """\
Check a pushwire server against SPEC.md, over the wire only: each case opens its own fresh
TCP connection(s) to the server, sends exactly the bytes it needs (valid or hostile) and
compares what the server answers with what SPEC.md requires. Works against a server written
in any language. MUST cases always run; SHOULD cases run with --strict.

Some behaviour cannot be triggered over the wire; those cases are "n/a" unless you give the
kit a way: --shutdown-command (GOAWAY on graceful shutdown; run last, the server is gone
afterwards), --reset-command (a topic's history reset / new epoch), --token (authentication),
--max-connections, --forbidden-topic. History expiry is produced by publishing more than
the server keeps (bounded by --max-publish).

Exit status 1: at least one case failed, or the kit could not run it. A report file that
cannot be written is found before the run (exit 2)."""

EPILOG = """\
examples:
  pushwire serve --port 7447 &
  pushwire conformance --server 127.0.0.1:7447
  pushwire conformance --category framing-limits --category errors   # $PUSHWIRE_SERVER
  pushwire conformance --server 127.0.0.1:7447 --case FL-01 --case HB-03 --strict
  pushwire conformance --server 127.0.0.1:7447 --strict --json report.json \\
      --junit report.xml --shutdown-command "kill -TERM $(cat server.pid)"
  pushwire conformance --list

The server may also be given as the first argument (pushwire conformance HOST:PORT)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "address", nargs="?", metavar="HOST:PORT", help="server to test (same as --server)"
    )
    add_server_argument(parser)
    parser.add_argument(
        "--case", action="append", default=[], metavar="ID", help="run only this case (repeat)"
    )
    parser.add_argument(
        "--category",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this category (repeat); see --list",
    )
    parser.add_argument("--strict", action="store_true", help="also run the SHOULD cases")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--coverage", action="store_true", help="print MUST coverage and exit")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write a JSON report")
    parser.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report")
    parser.add_argument(
        "--timeout",
        type=float,
        default=3.0,
        metavar="S",
        help="seconds to wait for each expected answer (default 3); every case is bounded "
        "by a few of these plus what it declares (heartbeat or handshake waits)",
    )
    parser.add_argument(
        "--quiet-time",
        type=float,
        default=0.3,
        metavar="S",
        help="silence that counts as 'nothing more comes' (default 0.3)",
    )
    parser.add_argument("--token", default="", help="auth token for HELLO (enables PH-11)")
    parser.add_argument(
        "--heartbeat-ms",
        type=int,
        default=1000,
        metavar="MS",
        help="heartbeat interval the heartbeat cases ask for in HELLO (default 1000)",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="the server's handshake timeout, for PH-10/PH-14 (default 10)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="how long a draining server may keep connections after GOAWAY (default 10)",
    )
    parser.add_argument(
        "--max-publish",
        type=int,
        default=50_000,
        metavar="N",
        help="most messages a case publishes to push others out of history (default 50000)",
    )
    parser.add_argument(
        "--shutdown-command",
        metavar="CMD",
        help="shell command that shuts the server down gracefully (enables shutdown cases); "
        "SD-09 wants it to wait for the server to exit and exit with the server's status",
    )
    parser.add_argument(
        "--reset-command",
        metavar="CMD",
        help="shell command that resets a topic's history; {topic} is replaced by the "
        "(shell-quoted) topic name (enables RH-12)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="how many connections the server admits from this host: its connection limit, "
        "or its per-source limit when lower (PH-15)",
    )
    parser.add_argument(
        "--forbidden-topic", metavar="TOPIC", help="a topic the token may not use (ER-25)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="cases run at the same time (default 1)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show case notes")


def _shell(command: str) -> Callable[[], Awaitable[int | None]]:
    async def run() -> int | None:
        done = await trio.run_process(command, shell=True, check=False)
        return done.returncode

    return run


def _reset(template: str) -> Callable[[str], Awaitable[None]]:
    async def run(topic: str) -> None:
        await trio.run_process(template.replace("{topic}", shlex.quote(topic)), shell=True)

    return run


def target_address(args: argparse.Namespace) -> ServerAddress:
    """The server of ``--server``, the positional HOST:PORT or ``$PUSHWIRE_SERVER``: plain
    TCP only (the kit sends its bytes as they are)."""
    address = server_address(args, args.address)
    if address.tls:
        raise UsageError(f"{address}: the kit speaks plain TCP only, not tls://")
    return address


def unreachable(address: ServerAddress, timeout: float) -> str | None:
    """Why ``address`` does not accept a TCP connection, or None when it does. The probe
    connection is closed at once, before it sends a byte: a server sees a client that left
    before its preface, which the cases themselves do too (PH-14)."""
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout):
            return None
    except OSError as exc:
        return unreachable_message(address, exc)


def unwritable(path: Path) -> str | None:
    """Why a report cannot be written to ``path``, or None. Tried by opening it for append
    (a file that did not exist is removed again), which answers for permissions, missing
    directories and read-only file systems alike."""
    existed = path.exists()
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or exc}"
    if not existed:
        path.unlink(missing_ok=True)
    return None


def _error(text: str, code: int = EXIT_USAGE) -> int:
    print(f"pushwire conformance: error: {text}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    from pushwire.client.conformance import coverage
    from pushwire.client.conformance.coverage import TOOL
    from pushwire.client.conformance.registry import render_list
    from pushwire.client.conformance.runner import Target, run_cases, select_cases
    from pushwire.protocol.testing import report
    from pushwire.protocol.testing.model import Result

    try:
        cases = select_cases(args.case, args.category)
    except KeyError as exc:
        return _error(exc.args[0])
    if args.list:
        print(render_list(cases))
        return EXIT_OK
    if args.coverage:
        print(coverage.render_coverage(coverage.coverage()))
        return EXIT_OK
    try:
        address = target_address(args)
    except UsageError as exc:
        return _error(str(exc))
    reports = [p for p in (args.json, args.junit) if p is not None]
    problem = next(filter(None, map(unwritable, reports)), None)
    if problem is not None:
        return _error(problem)
    problem = unreachable(address, args.timeout)
    if problem is not None:
        return _error(problem, EXIT_CONNECT)
    target = Target(
        host=address.host,
        port=address.port,
        token=args.token.encode(),
        timeout=args.timeout,
        quiet=args.quiet_time,
        handshake_timeout=args.handshake_timeout,
        drain_timeout=args.drain_timeout,
        max_publish=args.max_publish,
        heartbeat_ms=args.heartbeat_ms,
        shutdown=_shell(args.shutdown_command) if args.shutdown_command else None,
        reset=_reset(args.reset_command) if args.reset_command else None,
        max_connections=args.max_connections,
        forbidden_topic=args.forbidden_topic,
    )

    def progress(result: Result) -> None:
        if sys.stderr.isatty():
            print(f"  {result.status.value:<8} {result.id}", file=sys.stderr)

    results = trio.run(
        lambda: run_cases(target, cases, strict=args.strict, jobs=args.jobs, progress=progress)
    )
    print(
        report.render_table(
            results, tool=TOOL, noun="cases", target=target.address, verbose=args.verbose
        )
    )
    if not args.case and not args.category:
        print()
        print(coverage.render_coverage(coverage.coverage()))
    if not_checked := coverage.render_unchecked(coverage.unchecked(results)):
        print()
        print(not_checked)
    files: list[tuple[Path, str]] = []
    if args.json:
        text = coverage.report_json(results, target=target.address, strict=args.strict)
        files.append((args.json, text))
    if args.junit:
        files.append((args.junit, report.to_junit(results, tool=TOOL, target=target.address)))
    for path, text in files:
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:  # checked before the run; the file system changed since
            return _error(f"cannot write {path}: {exc.strerror or exc}")
    return EXIT_FAILURE if any(r.status.is_failure for r in results) else EXIT_OK
