"""``pushwire stats``: what a server says about itself, read from its ``$sys/stats`` topic.

The server publishes a JSON object on the reserved topic ``$sys/stats`` every few seconds
(SPEC.md §9.3). This command subscribes with ``since last:1`` (so the latest figures come
at once), prints them as a table or as the JSON object itself, and with ``--watch`` keeps
printing each new one, with rates computed from consecutive totals.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pushwire.client.commands.cmdline import (
    EXIT_CODES_HELP,
    EXIT_OK,
    UsageError,
    add_connection_arguments,
    connect_options,
    run_command,
)
from pushwire.client.connection import connect
from pushwire.client.errors import DeliveryInterrupted

STATS_TOPIC = "$sys/stats"

DESCRIPTION = (
    "Show a server's figures: connections, subscriptions, topics, history memory, totals\n"
    "and rates, as the server publishes them on its reserved topic $sys/stats."
)
EPILOG = f"""\
examples:
  pushwire stats --server 127.0.0.1:7447
  pushwire stats --json | jq .connections
  pushwire stats --watch

The server must let the client read $sys/stats (a server without auth does; with auth, give
the token a subscribe pattern '$sys/stats').

{EXIT_CODES_HELP}"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the JSON object as is")
    parser.add_argument(
        "--watch", action="store_true", help="keep printing each new set of figures"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up when no figures arrive within this time (default: %(default)s)",
    )
    add_connection_arguments(parser)


def _rates(previous: dict[str, Any] | None, current: dict[str, Any]) -> dict[str, float]:
    if previous is None:
        return {}
    dt = current["server"]["uptime_s"] - previous["server"]["uptime_s"]
    if dt <= 0:
        return {}
    keys = ("messages_in", "messages_out", "bytes_in", "bytes_out")
    return {k: (current["totals"][k] - previous["totals"][k]) / dt for k in keys}


def render(stats: dict[str, Any], rates: dict[str, float]) -> str:
    server, conns, topics, totals = (
        stats["server"],
        stats["connections"],
        stats["topics"],
        stats["totals"],
    )
    rows = [
        ("server", f"{server['name']} at {server['address']}, up {server['uptime_s']:.0f} s"),
        (
            "connections",
            f"{conns['open']} open ({conns['admitted']} admitted, "
            f"{conns['handshaking']} in handshake; limit {conns['limit']})",
        ),
        ("subscriptions", str(conns["subscriptions"])),
        ("topics", f"{topics['count']} (limit {topics['limit']})"),
        (
            "history",
            f"{topics['history_messages']} messages, {topics['history_bytes']} bytes",
        ),
        ("messages in/out", f"{totals['messages_in']} / {totals['messages_out']}"),
        ("bytes in/out", f"{totals['bytes_in']} / {totals['bytes_out']}"),
        ("gaps", f"{totals['gaps']} ({totals['slow_consumer_events']} slow-consumer events)"),
        ("handshake failures", str(totals["handshake_failures"])),
    ]
    if rates:
        rows.append(
            (
                "rates",
                f"{rates['messages_in']:.0f} msg/s in, {rates['messages_out']:.0f} msg/s out, "
                f"{rates['bytes_out']:.0f} B/s out",
            )
        )
    closed = totals["closed_by_code"]
    if closed:
        rows.append(("closed by code", ", ".join(f"{k} {v}" for k, v in closed.items())))
    refused = totals["refused_by_code"]
    if refused:
        rows.append(("requests refused", ", ".join(f"{k} {v}" for k, v in refused.items())))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.timeout < 86400:
        return run_command(args, _usage("--timeout must be above 0 and below a day"))
    return run_command(args, lambda: _stats(args))


def _usage(message: str):  # type: ignore[no-untyped-def]
    async def fail() -> int:
        raise UsageError(message)

    return fail


async def _stats(args: argparse.Namespace) -> int:
    import trio

    options = connect_options(args)
    previous: dict[str, Any] | None = None
    async with (
        connect(**options) as conn,  # type: ignore[arg-type]
        conn.subscribe(STATS_TOPIC, since=("last", 1), credit=4) as sub,
    ):
        while True:
            with trio.move_on_after(args.timeout) as scope:
                try:
                    msg = await sub.__anext__()
                except DeliveryInterrupted:
                    continue  # older figures lost: only the newest matter
            if scope.cancelled_caught:
                raise UsageError(
                    f"no figures on {STATS_TOPIC} within {args.timeout:g} s "
                    "(is --stats-interval 0 on the server?)"
                )
            stats = json.loads(msg.payload)
            if args.json:
                print(json.dumps(stats), flush=True)
            else:
                if previous is not None:
                    print(flush=True)
                print(render(stats, _rates(previous, stats)), flush=True)
            previous = stats
            if not args.watch:
                return EXIT_OK
    return EXIT_OK  # pragma: no cover - the loop returns
