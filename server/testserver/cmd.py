"""``pushwire testserver``: the command (options, client command, report rendering)."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import trio

from pushwire.protocol.testing import report
from pushwire.server.cmd_serve import announce
from pushwire.server.testserver import appview
from pushwire.server.testserver.results import ScenarioRun
from pushwire.server.testserver.runner import TestServer, open_testserver
from pushwire.server.testserver.scenarios import NAME_WIDTH, SCENARIOS
from pushwire.server.testserver.script import TOPIC_PREFIX

DESCRIPTION = """\
A scripted pushwire server for testing a CLIENT implementation. The client subscribes to
'conformance/<scenario>' and the testserver plays that scenario (split frames, oversized or
unknown frames, gaps, epoch changes, GOAWAY with a reconnect hint, heartbeat silence,
credit exhaustion, redelivery...), records what the client does on the wire and reports,
per scenario, each check with its SPEC.md requirement IDs.

Exit status 1: a MUST check failed (or, with --strict, a SHOULD check), a scenario did not
finish, or the port cannot be opened. A --json or --junit file that cannot be written is
found before the run (exit 2)."""

EPILOG = """\
examples:
  pushwire testserver --list
  pushwire testserver --port 7450 --scenario gap      # then: mytool sub conformance/gap ...
  pushwire testserver --scenario all --json report.json \\
      --client-command 'pushwire sub {topic} --server {address} --format json {mode_flag}'
  pushwire testserver --scenario all \\
      --client-command 'pushwire sub {pattern} --server {address} --format json {mode_flag}'
  pushwire testserver --hostile 50 \\
      --client-command 'pushwire sub {topic} --server {address} --format json'

The client command's stdout is read as the client output contract (IMPLEMENTING.md): one
JSON line per message, gap and epoch change the application sees; the scenarios check it.
Its stderr is kept only for the last lines, shown when the command exits too early."""


def render_list() -> str:
    out = []
    for s in SCENARIOS.values():
        mode = " (subscribe at-least-once)" if s.mode != "any" else ""
        what = "pattern" if s.pattern else "topic"
        out.append(f"{s.name:<{NAME_WIDTH}} {what} {s.topic}{mode}")
        out.append(f"{'':{NAME_WIDTH}} {s.title}")
        out.append(f"{'':{NAME_WIDTH}} a correct client must: {s.client_must}")
        out.append(f"{'':{NAME_WIDTH}} requirements: {', '.join(s.requirements)}")
    return "\n".join(out)


def port_number(text: str) -> int:
    """argparse type for --port: a TCP port, 0..65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0..65535)")
    return port


def unwritable(path: Path) -> str | None:
    """Why a report cannot be written to ``path``, or None. Tried by opening it for append
    (a file that did not exist is removed again) before the scenarios run, so a typo in the
    path costs one line, not a run."""
    existed = path.exists()
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or exc}"
    if not existed:
        path.unlink(missing_ok=True)
    return None


#: Exit codes, as in every pushwire command (pushwire.client.commands.exits).
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _error(text: str, code: int = EXIT_USAGE) -> int:
    print(f"pushwire testserver: error: {text}", file=sys.stderr)
    return code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument(
        "--port", type=port_number, default=7450, help="port (7450; 0 = any free port)"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        help="scenario to run (repeat), or 'all' (default)",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write a JSON report")
    parser.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report")
    parser.add_argument("--strict", action="store_true", help="SHOULD failures fail the run")
    parser.add_argument(
        "--heartbeat-ms",
        type=int,
        default=1000,
        metavar="MS",
        help="heartbeat interval announced in WELCOME (1000)",
    )
    parser.add_argument(
        "--goaway-after-ms",
        type=int,
        default=1500,
        metavar="MS",
        help="reconnect_after_ms of the goaway scenario (1500)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds the client has for each expected reaction (5)",
    )
    parser.add_argument(
        "--scenario-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds one scenario may take from its first connection (60)",
    )
    parser.add_argument(
        "--client-command",
        metavar="CMD",
        help="run this shell command per scenario ({topic} {pattern} {address} {host} "
        "{port} {scenario} {mode} {mode_flag}) and stop it when the scenario ends",
    )
    parser.add_argument(
        "--hostile",
        type=int,
        default=0,
        metavar="N",
        help="instead of the scenarios: up to N generated hostile frames, one per run of "
        "--client-command, each after 1-3 messages; the client must report the frame's "
        "code and print (as JSON lines) the messages before it",
    )
    parser.add_argument("--seed", type=int, help="hypothesis seed for --hostile (default random)")
    parser.add_argument(
        "--no-patterns",
        action="store_true",
        help="the client does not subscribe to patterns: the pattern scenarios are n/a (they "
        "are also n/a when --client-command has no {pattern} placeholder)",
    )
    parser.add_argument(
        "--mode-flag",
        default="--at-least-once",
        metavar="FLAG",
        help="what {mode_flag} becomes for at-least-once scenarios",
    )


#: How many of the client's last stderr lines a failure shows; how long a line may be.
STDERR_TAIL = 8
MAX_LINE = 1 << 25
#: After the client command exits, how long the scenario may still take to finish (its last
#: checks run on the close the exit caused) before it fails for the exit.
EXIT_GRACE = 2.0


async def _read_lines(stream: trio.abc.ReceiveStream, on_line: Callable[[bytes], None]) -> None:
    """Call ``on_line`` for each line of ``stream`` (a line longer than MAX_LINE is dropped),
    until EOF. Reading all the time keeps the client from blocking on a full pipe."""
    buf = bytearray()
    dropping = False
    while chunk := await stream.receive_some(65536):
        buf += chunk
        while (end := buf.find(b"\n")) >= 0:
            if not dropping:
                on_line(bytes(buf[:end]))
            dropping = False
            del buf[: end + 1]
        if len(buf) > MAX_LINE:
            buf.clear()
            dropping = True
    if buf and not dropping:
        on_line(bytes(buf))


def _check_app_view(run: ScenarioRun, seen: AppSeen, contract_lines: int) -> None:
    s = run.scenario
    if s.pattern:
        _check_app_topics(run, seen, contract_lines)
        return
    assert isinstance(seen, list)
    expected = s.app(run) if s.app else []
    if run.not_applicable or not [i for i in expected if i[0] != "error"]:
        return
    if not contract_lines:
        run.check(
            "the client prints the output contract: a JSON line per message, gap and epoch "
            "change (IMPLEMENTING.md)",
            ("PW-PUB-13",),
            False,
            "no contract line on stdout; the application's view was not checked",
            level="SHOULD",
        )
        return
    run.check(
        f"the application sees {appview.render(expected)}",
        s.requirements,
        appview.matches(expected, seen),
        f"it saw {appview.render(seen)}",
    )


def _check_app_topics(run: ScenarioRun, seen: AppSeen, contract_lines: int) -> None:
    """A pattern scenario's application view, topic by topic."""
    s = run.scenario
    assert isinstance(seen, dict)
    if run.not_applicable or s.app_topics is None:
        return
    expected = s.app_topics(run)
    if not contract_lines:
        run.check(
            "the client prints the output contract: a JSON line, naming its topic, per "
            "message, gap and epoch change (IMPLEMENTING.md)",
            ("PW-PUB-13",),
            False,
            "no contract line naming a topic of the pattern on stdout; the application's "
            "view was not checked",
            level="SHOULD",
        )
        return
    run.check(
        f"the application sees, per topic, {appview.render_topics(expected)}",
        s.requirements,
        appview.matches_topics(expected, seen),
        f"it saw {appview.render_topics(seen)}",
    )


#: What the application of a client under test saw: a list of items, or for a pattern
#: scenario a list per topic.
AppSeen = list[appview.AppItem] | dict[str, list[appview.AppItem]]


def pattern_not_applicable(template: str | None, no_patterns: bool) -> str:
    """Why the pattern scenarios are n/a for this run ("" when they apply): a client that
    does not subscribe to patterns is not failed by them."""
    if no_patterns:
        return "--no-patterns: the client does not subscribe to patterns"
    if template is not None and "{pattern}" not in template:
        return "the client command has no {pattern} placeholder: no pattern subscriptions"
    return ""


async def _run_command(server: TestServer, run: ScenarioRun, template: str, limit: float) -> None:
    """Run the client command for one scenario: its stdout is the output contract, its
    stderr is kept for the last lines; when it exits before the scenario is over, the
    scenario fails at once with the exit status and those lines."""
    s = run.scenario
    cmd = template.format(
        topic=shlex.quote(s.topic),
        pattern=shlex.quote(s.topic),
        address=f"127.0.0.1:{server.port}",
        host="127.0.0.1",
        port=server.port,
        scenario=s.name,
        mode=s.mode,
        mode_flag=server_mode_flag if s.mode == "at-least-once" else "",
    )
    seen: list[appview.AppItem] = []
    per_topic: dict[str, list[appview.AppItem]] = {}
    contract = 0
    tail: deque[str] = deque(maxlen=STDERR_TAIL)

    def on_stdout(line: bytes) -> None:
        nonlocal contract
        if s.pattern:
            found = appview.parse_pattern_line(line, s.topic)
            if found is not None:
                contract += 1
                per_topic.setdefault(found[0], []).append(found[1])
            return
        item = appview.parse_line(line, s.topic)
        if item is not None:
            contract += 1
            seen.append(item)

    def on_stderr(line: bytes) -> None:
        tail.append(line[:300].decode("utf-8", "replace").rstrip())

    try:
        proc = await trio.lowlevel.open_process(
            cmd,
            shell=True,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        run.check("the client command starts", (), False, f"{cmd}: {exc}")
        run.finish()
        return
    assert proc.stdout is not None and proc.stderr is not None

    async def watch_exit() -> None:
        status = await proc.wait()
        run.client_exit = status
        run.client_exited.set()
        with trio.move_on_after(EXIT_GRACE):
            await run.done.wait()
        if not run.done.is_set():
            lines = " | ".join(tail) or "(nothing on stderr)"
            run.check(
                "the client command keeps running while the scenario needs it",
                (),
                False,
                f"exited with status {status} before the scenario ended; last stderr: {lines}",
            )
            run.finish()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_lines, proc.stdout, on_stdout)
            nursery.start_soon(_read_lines, proc.stderr, on_stderr)
            nursery.start_soon(watch_exit)
            with trio.move_on_after(limit):
                await run.done.wait()
                # What the application saw may still be on its way to the pipe.
                with trio.move_on_after(1.0):
                    while not _app_complete(run, per_topic if s.pattern else seen):
                        await trio.sleep(0.05)
                await trio.sleep(0.3)
            await _stop(proc)
            nursery.cancel_scope.cancel()
    finally:
        await _stop(proc)
    if run.done.is_set():
        _check_app_view(run, per_topic if s.pattern else seen, contract)


def _app_complete(run: ScenarioRun, seen: AppSeen) -> bool:
    s = run.scenario
    if isinstance(seen, dict):
        return s.app_topics is None or appview.matches_topics(s.app_topics(run), seen)
    return s.app is None or appview.matches(s.app(run), seen)


async def _stop(proc: trio.Process) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        with trio.move_on_after(2):
            await proc.wait()


server_mode_flag = "--at-least-once"


def run(args: argparse.Namespace) -> int:
    global server_mode_flag
    if args.hostile:
        from pushwire.server.testserver import hostile

        return hostile.run(args)
    if args.list:
        print(render_list())
        return EXIT_OK
    names = [n for n in args.scenario if n != "all"] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        return _error(f"unknown scenario(s) {', '.join(unknown)}; see --list")
    reports = [p for p in (args.json, args.junit) if p is not None]
    if (problem := next(filter(None, map(unwritable, reports)), None)) is not None:
        return _error(problem)
    server_mode_flag = args.mode_flag
    started = time.monotonic()

    address = f"{args.host}:{args.port}"

    async def main() -> list[ScenarioRun] | str:
        nonlocal address
        try:
            listeners = await trio.open_tcp_listeners(args.port, host=args.host)
        except OSError as exc:
            return f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        async with open_testserver(
            names,
            listeners=listeners,
            heartbeat_ms=args.heartbeat_ms,
            timeout=args.timeout,
            goaway_after_ms=args.goaway_after_ms,
        ) as server:
            address = f"{args.host}:{server.port}"
            announce(
                f"pushwire testserver listening on {address}; subscribe to {TOPIC_PREFIX}<scenario>"
            )
            runs = [server.runs[n] for n in names]
            unfit = pattern_not_applicable(args.client_command, args.no_patterns)
            for r in runs:
                server.current = r
                if r.scenario.pattern and unfit:
                    r.not_applicable = unfit
                    r.finish()
                elif args.client_command:
                    await _run_command(server, r, args.client_command, args.scenario_timeout)
                else:
                    with trio.move_on_after(args.scenario_timeout * len(runs)):
                        await r.done.wait()
                print(f"  {r.status.value:<10} {r.scenario.name}", file=sys.stderr, flush=True)
            return runs

    runs = trio.run(main)
    if isinstance(runs, str):
        return _error(runs, EXIT_FAILURE)
    results = [r.result() for r in runs]
    tool = "pushwire testserver"
    print(report.render_table(results, tool=tool, noun="scenarios", strict=args.strict))
    files: list[tuple[Path, str]] = []
    if args.json:
        seconds = round(time.monotonic() - started, 3)
        text = report.to_json(
            results, tool=tool, target=address, strict=args.strict, extra={"seconds": seconds}
        )
        files.append((args.json, text))
    if args.junit:
        files.append(
            (args.junit, report.to_junit(results, tool=tool, target=address, strict=args.strict))
        )
    for path, text in files:
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:  # checked before the run; the file system changed since
            return _error(f"cannot write {path}: {exc.strerror or exc}")
    return EXIT_OK if report.passed(results, strict=args.strict) else EXIT_FAILURE
