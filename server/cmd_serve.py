"""``pushwire serve``: run a server with the embedded in-memory broker, or on Redis
(``--broker redis://...``) shared with other servers.

Prints exactly one line on stdout once it listens (``pushwire listening on HOST:PORT``, or
``pushwire listening on tls://HOST:PORT`` with ``--tls-cert``/``--tls-key``), logs to
stderr, and shuts down gracefully on SIGINT or SIGTERM (GOAWAY to every client, bounded
drain); a second signal closes at once. User mistakes (a port in use, a bad auth file, a
limit out of range) end with a one-line message and a non-zero exit status, never a
traceback. The limits of SPEC.md §13 are options, each mapped to its ServerConfig field.

``--config FILE`` reads the same options from a TOML file (stdlib ``tomllib``): a key is an
option's name without its dashes (``max-lag = 1000``), and an option given on the command
line wins over the file. So that "given" can be told from "left at its default", every
option defaults to None in the parser and :data:`OPTION_DEFAULT_VALUES` (from the declarations)
fills in what neither the command line nor the file set. The effective configuration is
logged once at start.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import math
import os
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Run a pushwire server with the embedded in-memory broker (history is lost on restart:
every topic gets a new epoch, so resuming clients see EPOCH_CHANGED).

On start it prints one line, 'pushwire listening on HOST:PORT' (with TLS:
'pushwire listening on tls://HOST:PORT'), and then logs one line per connection opened and
closed to stderr. Ctrl-C or SIGTERM shuts down gracefully: every client gets
GOAWAY(SHUTTING_DOWN) with its positions, then connections close.

--config FILE reads any of the options below from a TOML file, one key per option, named as
the option without its leading dashes; options on the command line override the file.
Exit status 1: the address cannot be listened on (e.g. the port is in use)."""

EPILOG = """\
examples:
  pushwire serve --port 7447
  pushwire serve --host 0.0.0.0 --slow-consumer disconnect --max-lag 1000 --log-format json
  pushwire serve --max-subscriptions 64 --outbound-queue-bytes 262144 --handshake-timeout 3
  pushwire serve --auth tokens.json
      tokens.json: {"s3cret": {"subscribe": ["orders/#"], "publish": ["orders/eu/#"]},
                    "": {"subscribe": ["public/#"]}}
      ("" = clients without a token; "#" = every topic; "a/#" = "a" and below)
  pushwire serve --tls-cert server.pem --tls-key server.key
      (clients connect with 'pushwire sub --tls ...', adding '--tls-ca ca.pem' when the
       certificate is not signed by a CA the system trusts)
  pushwire serve --broker redis://127.0.0.1:6379/0 --reuse-port --port 7447
      (run it N times: N processes share the port and the topics; start more on other
       machines against the same Redis)
  pushwire serve --config pushwire.toml --port 7448
      pushwire.toml:  host = "0.0.0.0"
                      max-lag = 1000
                      slow-consumer = "disconnect"
                      auth = "tokens.json"    # relative paths: from the file's folder"""

EXIT_USAGE = 2
EXIT_FAILURE = 1

log = logging.getLogger("pushwire.server")


def byte_size(text: str) -> int:
    """``512M``, ``2G``, ``64k`` or a number of bytes (multiples of 1024); ValueError for
    anything else."""
    text = text.strip()
    scale = 1
    if text[-1:].upper() in _SIZE_SUFFIXES:
        scale = _SIZE_SUFFIXES[text[-1].upper()]
        text = text[:-1]
    if not text.isdigit():
        raise ValueError(f"not a size: {text!r} (bytes, or a number with K, M or G)")
    return int(text) * scale


_SIZE_SUFFIXES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_options(parser)
    parser.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="read options from this TOML file (keys: the option names without '--'); "
        "the command line overrides it",
    )
    # None = not given, so that a value from --config can be told apart (see OPTION_DEFAULT_VALUES).
    parser.set_defaults(**dict.fromkeys(OPTION_DEFAULT_VALUES))


def _add_options(parser: argparse.ArgumentParser) -> None:
    """The options that --config can set too, with their defaults."""
    from pushwire.protocol.layouts import DEFAULT_PORT

    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"0 = any free port ({DEFAULT_PORT})",
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        default=False,
        help="listen with SO_REUSEPORT, so that several server processes on this machine "
        "share the port (the kernel spreads connections); useful with --broker",
    )
    parser.add_argument(
        "--broker",
        metavar="URL",
        help="keep topics in Redis Streams, shared by every server on the same Redis: "
        "redis://HOST:PORT/DB (rediss:// for TLS), "
        "redis+sentinel://HOST:PORT[,HOST:PORT]/SERVICE[/DB] or "
        "redis+cluster://HOST:PORT[,HOST:PORT]; default: in this process's memory",
    )
    # the limits of SPEC.md §13, in the order of its table
    limits = parser.add_argument_group("limits (SPEC.md §13)")
    limits.add_argument(
        "--max-frame-size",
        metavar="B",
        type=int,
        default=1 << 20,
        help="largest frame payload accepted from clients, 16384..16777216 (1 MiB)",
    )
    limits.add_argument(
        "--max-connections",
        metavar="N",
        type=int,
        default=1024,
        help="connections served at once; beyond: TOO_MANY_CONNECTIONS (1024)",
    )
    limits.add_argument(
        "--max-subscriptions",
        metavar="N",
        type=int,
        default=1024,
        help="subscriptions per connection; beyond: TOO_MANY_SUBSCRIPTIONS (1024)",
    )
    limits.add_argument(
        "--slow-consumer",
        choices=("drop", "disconnect"),
        default="drop",
        help="drop: skip ahead with a GAP; disconnect: close with SLOW_CONSUMER (drop)",
    )
    limits.add_argument(
        "--max-lag",
        metavar="N",
        type=int,
        default=10_000,
        help="messages a subscriber may lag before 'disconnect' closes it (10000)",
    )
    limits.add_argument(
        "--history-count",
        metavar="N",
        type=int,
        default=10_000,
        help="messages kept per topic (10000)",
    )
    limits.add_argument(
        "--history-bytes",
        metavar="B",
        type=int,
        default=16 << 20,
        help="bytes of frames kept per topic (16 MiB)",
    )
    limits.add_argument(
        "--max-topics",
        metavar="N",
        type=int,
        default=100_000,
        help="topics kept; beyond: an unsubscribed one is evicted, those retaining nothing "
        "first, then the least recently used (100000)",
    )
    limits.add_argument(
        "--memory-limit",
        metavar="SIZE",
        type=byte_size,
        default=None,
        help="memory budget of the whole server: history, topics and connection queues; "
        "bytes, or with K, M, G (1024-based). Beyond it the oldest history is trimmed, "
        "then publishes get RESOURCE_EXHAUSTED (a quarter of physical memory)",
    )
    limits.add_argument(
        "--outbound-queue-bytes",
        metavar="B",
        type=int,
        default=1 << 20,
        help="per connection: queued replies plus one round of pushes, at least 16384; "
        "a subscriber that cannot keep up lags in the history instead (1 MiB)",
    )
    limits.add_argument(
        "--handshake-timeout",
        metavar="SECONDS",
        type=float,
        default=10.0,
        help="from the TCP accept to a complete HELLO; then HANDSHAKE_TIMEOUT (10)",
    )
    limits.add_argument(
        "--heartbeat-ms",
        metavar="MS",
        type=int,
        default=5000,
        help="heartbeat interval when the client has no preference (5000)",
    )
    limits.add_argument(
        "--heartbeat-min-ms",
        metavar="MS",
        type=int,
        default=None,
        help="a client's preferred interval is raised to this (1000, or --heartbeat-ms if lower)",
    )
    limits.add_argument(
        "--heartbeat-max-ms",
        metavar="MS",
        type=int,
        default=None,
        help="... and lowered to this, at most 600000 (60000, or --heartbeat-ms if higher)",
    )
    limits.add_argument(
        "--drain-timeout",
        metavar="SECONDS",
        type=float,
        default=5.0,
        help="how long clients may stay after GOAWAY (5)",
    )
    limits.add_argument(
        "--goaway-reconnect-after-ms",
        metavar="MS",
        type=int,
        default=1000,
        help="GOAWAY tells clients to reconnect after this many ms ... (1000)",
    )
    limits.add_argument(
        "--goaway-jitter-ms",
        metavar="MS",
        type=int,
        default=1000,
        help="... plus a random delay of up to this many ms (1000)",
    )
    admission = parser.add_argument_group("admission and throttling (SPEC.md §12)")
    admission.add_argument(
        "--max-connections-per-source",
        metavar="N",
        type=int,
        default=None,
        help="connections one IP address may hold; beyond: TOO_MANY_CONNECTIONS "
        "(3/4 of --max-connections)",
    )
    admission.add_argument(
        "--max-handshaking",
        metavar="N",
        type=int,
        default=256,
        help="connections still in the handshake, all sources; they do not count toward "
        "--max-connections (256)",
    )
    admission.add_argument(
        "--reserved-for-authenticated",
        metavar="N",
        type=int,
        default=None,
        help="with auth on, slots anonymous clients cannot take (1/16 of --max-connections)",
    )
    admission.add_argument(
        "--idle-timeout",
        metavar="SECONDS",
        type=float,
        default=300.0,
        help="close a connection without subscriptions that makes no request for this "
        "long, with IDLE_TIMEOUT; 0: never (300)",
    )
    admission.add_argument(
        "--auth-failure-burst",
        metavar="N",
        type=float,
        default=10.0,
        help="failed authentications per source before answers slow down and then are "
        "refused with AUTH_THROTTLED (10) ...",
    )
    admission.add_argument(
        "--auth-failure-rate",
        metavar="PER_S",
        type=float,
        default=1.0,
        help="... forgiven at this rate per second (1)",
    )
    admission.add_argument(
        "--churn-rate",
        metavar="PER_S",
        type=float,
        default=1000.0,
        help="SUBSCRIBE+UNSUBSCRIBE per identity per second, bursts of 10x; beyond: "
        "RATE_LIMITED (1000)",
    )
    admission.add_argument(
        "--request-rate",
        metavar="PER_S",
        type=float,
        default=0.0,
        help="requests (publish records included) per identity per second, bursts of 2x; "
        "beyond: RATE_LIMITED; 0: no limit (0)",
    )
    admission.add_argument(
        "--publish-bytes-rate",
        metavar="SIZE",
        type=byte_size,
        default=0,
        help="bytes of publish bodies per identity per second, bursts of 2x (at least two "
        "of the largest frames); beyond: RATE_LIMITED; 0: no limit (0)",
    )
    admission.add_argument(
        "--max-subscriptions-per-identity",
        metavar="N",
        type=int,
        default=100_000,
        help="subscriptions one identity holds over all its connections; beyond: "
        "QUOTA_EXCEEDED (100000)",
    )
    admission.add_argument(
        "--max-topics-per-identity",
        metavar="N",
        type=int,
        default=10_000,
        help="topics one identity's publishes created that still exist; at the quota its "
        "own oldest unsubscribed topic is evicted, or QUOTA_EXCEEDED if all are (10000)",
    )
    parser.add_argument(
        "--auth",
        metavar="FILE",
        type=Path,
        help='JSON: {"token": {"subscribe": [patterns], "publish": [patterns]}}',
    )
    parser.add_argument(
        "--token-secret-file",
        metavar="FILE",
        type=Path,
        help="accept signed tokens (JWT HS256, see 'pushwire token') made with the secret "
        "in FILE, at least 32 bytes; or set PUSHWIRE_TOKEN_SECRET",
    )
    parser.add_argument(
        "--tls-cert",
        metavar="FILE",
        type=Path,
        help="serve TLS only, with this PEM certificate chain (needs --tls-key)",
    )
    parser.add_argument(
        "--tls-key", metavar="FILE", type=Path, help="PEM private key for --tls-cert"
    )
    ops = parser.add_argument_group("operations")
    ops.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics",
    )
    ops.add_argument(
        "--stats-interval",
        metavar="SECONDS",
        type=float,
        default=10.0,
        help="publish JSON stats on the topic $sys/stats this often; 0: never (10)",
    )
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="info"
    )


class UsageError(Exception):
    """A mistake in the command line or an input file: reported in one line."""


def _config_options() -> dict[str, argparse.Action]:
    """Option name without its dashes -> its declaration, for every option a config file
    may set: all of them but hidden ones (and --config itself)."""
    parser = argparse.ArgumentParser(add_help=False)
    _add_options(parser)
    return {
        action.option_strings[0].removeprefix("--"): action
        for action in parser._actions
        if action.help is not argparse.SUPPRESS
    }


#: The keys of a config file: the options' names without their dashes.
CONFIG_KEYS: tuple[str, ...] = tuple(_config_options())
#: dest -> default of every option a config file may set, as declared.
OPTION_DEFAULT_VALUES: dict[str, Any] = {a.dest: a.default for a in _config_options().values()}


def _file_value(action: argparse.Action, value: Any, base: Path) -> Any:
    """A TOML value for ``action``, checked like the command line would check it;
    ValueError saying what was expected."""
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if action.type is byte_size:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if not isinstance(value, str):
            raise ValueError("expected a size: an integer or a string like '512M'")
        return byte_size(value)
    if action.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected an integer")
        return value
    if action.type is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("expected a number")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("expected a string")
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"expected one of {', '.join(map(repr, action.choices))}")
    if action.type is Path:
        return base / Path(value).expanduser()
    return value


def load_config_file(path: Path) -> dict[str, Any]:
    """dest -> value of every option set in the TOML file ``path``; UsageError in one line
    for a file that cannot be read, is not TOML, or has an unknown key or a wrong value.
    Relative paths in it are taken from the file's folder, not the current directory."""
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    options = _config_options()
    values = {}
    for key, value in data.items():
        action = options.get(key)
        if action is None:
            close = difflib.get_close_matches(key.replace("_", "-"), options, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"config file {path}: unknown key {key!r}{hint}")
        try:
            values[action.dest] = _file_value(action, value, path.parent)
        except ValueError as exc:
            raise UsageError(f"config file {path}: {key} = {value!r}: {exc}") from None
    return values


def effective_options(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with what the command line left out taken from --config, then from the
    defaults."""
    from_file = load_config_file(args.config) if args.config is not None else {}
    merged = vars(args).copy()
    for dest, default in OPTION_DEFAULT_VALUES.items():
        if merged.get(dest) is None:
            merged[dest] = from_file.get(dest, default)
    return argparse.Namespace(**merged)


def load_auth(path: Path) -> dict[bytes, Any]:
    from pushwire.server import Permissions

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read auth file {path}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"auth file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"auth file {path}: expected an object mapping tokens to permissions")
    out = {}
    for token, value in data.items():
        try:
            out[token.encode("utf-8")] = Permissions.from_json(value)
        except ValueError as exc:
            raise UsageError(f"auth file {path}, token {token!r}: {exc}") from None
    return out


def load_tls(cert: Path | None, key: Path | None) -> Any:
    """The server TLS context for --tls-cert/--tls-key (both or neither), or None."""
    import ssl

    from pushwire.server import server_tls_context

    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UsageError("--tls-cert and --tls-key go together: give both or neither")
    for what, path in (("certificate", cert), ("key", key)):
        try:  # ssl's own errors do not say which file
            path.open("rb").close()
        except OSError as exc:
            raise UsageError(f"cannot read TLS {what} {path}: {exc.strerror}") from None
    try:
        return server_tls_context(cert, key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or "not a PEM certificate and its private key"
        raise UsageError(f"cannot use TLS certificate {cert} with key {key}: {reason}") from None


#: The value ranges of the numeric options, checked before anything else so that a bad
#: value is reported with the option's name: option -> (lowest, highest). Where a range
#: comes from the protocol its SPEC.md section is given; the rest only keep out nonsense.
U32_MAX = 0xFFFF_FFFF
RANGES: dict[str, tuple[float, float]] = {
    "--port": (0, 65535),
    "--max-connections": (1, math.inf),
    "--max-frame-size": (16384, 16_777_216),  # §3.4, PW-HS-4
    "--max-subscriptions": (1, U32_MAX),  # WELCOME.max_subscriptions, §5.2
    "--max-lag": (0, U32_MAX),  # WELCOME.max_lag, §5.2
    "--history-count": (0, math.inf),  # 0: only the newest message is kept
    "--history-bytes": (0, math.inf),
    "--memory-limit": (1 << 20, math.inf),  # room for a few frames and the bookkeeping
    "--publish-bytes-rate": (0, math.inf),
    "--max-topics": (1, math.inf),
    "--max-subscriptions-per-identity": (1, math.inf),
    "--max-topics-per-identity": (1, math.inf),
    "--outbound-queue-bytes": (16384, math.inf),  # room for at least one frame, §13
    "--heartbeat-ms": (1, 600_000),  # §8.5, PW-HS-8
    "--heartbeat-min-ms": (1, 600_000),
    "--heartbeat-max-ms": (1, 600_000),
    "--goaway-reconnect-after-ms": (0, U32_MAX),  # GOAWAY fields, §8.6
    "--goaway-jitter-ms": (0, U32_MAX),
}
#: Options in seconds: option -> whether 0 is allowed. Infinite and NaN never are.
DURATIONS = {"--handshake-timeout": False, "--drain-timeout": True}


def _value(args: argparse.Namespace, option: str) -> Any:
    return getattr(args, option[2:].replace("-", "_"))


def check_ranges(args: argparse.Namespace) -> None:
    """UsageError naming the first option whose value is out of range."""
    for option, (low, high) in RANGES.items():
        value = _value(args, option)
        if value is not None and not low <= value <= high:
            bound = f"at least {low}" if high == math.inf else f"{low}..{high}"
            raise UsageError(f"{option} must be {bound}, not {value}")
    for option, zero_ok in DURATIONS.items():
        value = _value(args, option)
        if not (math.isfinite(value) and (value > 0 or (zero_ok and value == 0))):
            what = "zero or more" if zero_ok else "more than zero"
            raise UsageError(f"{option} must be a number of seconds {what}, not {value}")


def heartbeat_clamp(args: argparse.Namespace) -> tuple[int, int]:
    """The clamp of clients' heartbeat preferences: the options, or 1000..60000 widened to
    include --heartbeat-ms (SPEC.md §13). UsageError unless min <= --heartbeat-ms <= max."""
    low = args.heartbeat_min_ms
    high = args.heartbeat_max_ms
    low = min(1000, args.heartbeat_ms) if low is None else low
    high = max(60_000, args.heartbeat_ms) if high is None else high
    if not low <= args.heartbeat_ms <= high:
        raise UsageError(
            f"need --heartbeat-min-ms ({low}) <= --heartbeat-ms ({args.heartbeat_ms}) "
            f"<= --heartbeat-max-ms ({high})"
        )
    return low, high


def load_token_secret(path: Path | None) -> bytes | None:
    """The signed-token secret from --token-secret-file, else PUSHWIRE_TOKEN_SECRET; a file's
    trailing newline is not part of the secret."""
    if path is None:
        value = os.environ.get("PUSHWIRE_TOKEN_SECRET")
        return value.encode("utf-8") if value else None
    try:
        return path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise UsageError(f"cannot read token secret file {path}: {exc.strerror}") from None


def build_config(args: argparse.Namespace) -> Any:
    """The ServerConfig of parsed command-line arguments (and their --config file)."""
    return config_from(effective_options(args))


def config_from(args: argparse.Namespace) -> Any:
    """The ServerConfig of complete options (see :func:`effective_options`)."""
    from pushwire.server import ServerConfig

    check_ranges(args)
    heartbeat_min_ms, heartbeat_max_ms = heartbeat_clamp(args)
    auth = load_auth(args.auth) if args.auth is not None else None
    token_secret = load_token_secret(args.token_secret_file)
    tls = load_tls(args.tls_cert, args.tls_key)
    try:
        return ServerConfig(
            host=args.host,
            port=args.port,
            reuse_port=args.reuse_port,
            history_count=args.history_count,
            history_bytes=args.history_bytes,
            memory_limit=args.memory_limit,
            max_topics=args.max_topics,
            max_connections=args.max_connections,
            max_frame_size=args.max_frame_size,
            max_subscriptions=args.max_subscriptions,
            outbound_queue_bytes=args.outbound_queue_bytes,
            handshake_timeout=args.handshake_timeout,
            heartbeat_ms=args.heartbeat_ms,
            heartbeat_min_ms=heartbeat_min_ms,
            heartbeat_max_ms=heartbeat_max_ms,
            slow_consumer_policy=args.slow_consumer,
            max_lag=args.max_lag,
            drain_timeout=args.drain_timeout,
            goaway_reconnect_after_ms=args.goaway_reconnect_after_ms,
            goaway_jitter_ms=args.goaway_jitter_ms,
            max_connections_per_source=args.max_connections_per_source,
            max_handshaking=args.max_handshaking,
            reserved_for_authenticated=args.reserved_for_authenticated,
            idle_timeout=args.idle_timeout,
            auth_failure_burst=args.auth_failure_burst,
            auth_failure_rate=args.auth_failure_rate,
            churn_rate=args.churn_rate,
            churn_burst=args.churn_rate * 10,
            request_rate=args.request_rate,
            request_burst=args.request_rate * 2 or 100_000.0,
            publish_bytes_rate=float(args.publish_bytes_rate),
            max_subscriptions_per_identity=args.max_subscriptions_per_identity,
            max_topics_per_identity=args.max_topics_per_identity,
            auth=auth,
            token_secret=token_secret,
            metrics_address=args.metrics,
            stats_interval=args.stats_interval,
            tls=tls,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def serve_until_signalled(config: Any, broker_url: str | None = None) -> None:
    """Serve; the first SIGINT/SIGTERM shuts down gracefully, a second one at once. With
    ``broker_url``, topics live in Redis (:mod:`pushwire.server.redis_broker`)."""
    if broker_url is None:
        await _serve_until_signalled(config, None)
        return
    from pushwire.server.redis_broker import open_redis_broker
    from pushwire.server.serve import default_memory_limit

    async with open_redis_broker(
        broker_url,
        history_count=config.history_count,
        history_bytes=config.history_bytes,
        max_topics=config.max_topics,
        memory_limit=config.memory_limit or default_memory_limit(),
    ) as broker:
        await _serve_until_signalled(config, broker)


async def _serve_until_signalled(config: Any, broker: Any) -> None:
    import trio

    from pushwire.server import Server

    server = Server(config, broker=broker)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def shutdown_then_stop() -> None:
                await server.shutdown()
                nursery.cancel_scope.cancel()

            await nursery.start(server.serve)
            collector = _freeze_startup_objects()
            nursery.start_soon(collector.run)
            scheme = "tls://" if config.tls is not None else ""
            announce(f"pushwire listening on {scheme}{server.address}")
            async for signum in signals:
                name = signal.Signals(signum).name
                if not server.shutting_down:
                    log.info("%s: shutting down gracefully", name)
                    nursery.start_soon(shutdown_then_stop)
                else:
                    log.warning("%s again: closing now", name)
                    nursery.cancel_scope.cancel()


def announce(line: str) -> None:
    """Write ``line`` and its newline to stdout in one call, then flush.

    ``print`` writes the text and the newline separately, and with ``PYTHONUNBUFFERED`` (or
    ``-u``) each becomes its own ``write(2)``: nodes that share a pipe (``--reuse-port``
    under one launcher) then interleave their ready lines. One write of a short line to a
    pipe is atomic (under ``PIPE_BUF``), so whole lines reach the reader.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _freeze_startup_objects() -> Any:
    """Move everything alive once the server listens (modules, the construct
    declarations, configuration: tens of thousands of objects that live as long as the
    process) out of the cyclic garbage collector's reach, and return the
    :class:`~pushwire.server.collector.Collector` that keeps what serving creates from
    starting full collections of the whole heap (its docstring says why). A full
    collection over the start-up objects alone took 10-23 ms."""
    from pushwire.server.collector import Collector

    collector = Collector()
    collector.full("start-up")
    return collector


def describe_configuration(options: argparse.Namespace, config: Any) -> dict[str, Any]:
    """Every option's effective value by its config-file key, for the start-up log: the
    heartbeat clamp as derived, files by name (never read out: an auth file holds tokens),
    None for an option that is off."""
    out: dict[str, Any] = {}
    for key, action in _config_options().items():
        value = getattr(options, action.dest)
        out[key] = str(value) if isinstance(value, Path) else value
    out["heartbeat-min-ms"] = config.heartbeat_min_ms
    out["heartbeat-max-ms"] = config.heartbeat_max_ms
    return out


def run(args: argparse.Namespace) -> int:
    import trio

    from pushwire.server.logs import configure_logging

    try:
        options = effective_options(args)
        config = config_from(options)
    except UsageError as exc:
        print(f"pushwire serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(options.log_format, options.log_level)
    effective = describe_configuration(options, config)
    source = f" (from {args.config} and the command line)" if args.config is not None else ""
    log.info(
        "configuration%s: %s",
        source,
        " ".join(f"{key}={value}" for key, value in effective.items()),
        extra={"config": effective},
    )
    if options.broker is not None:
        from pushwire.server.redis_broker import redis_url_problem

        problem = redis_url_problem(options.broker)
        if problem is not None:
            print(f"pushwire serve: --broker: {problem}", file=sys.stderr)
            return EXIT_USAGE
    try:
        trio.run(serve_until_signalled, config, options.broker)
    except OSError as exc:
        return _cannot_listen(config, exc)
    except BaseExceptionGroup as group:
        matched, rest = group.split(OSError)
        if matched is None or rest is not None:
            raise
        return _cannot_listen(config, matched)
    return 0


def _cannot_listen(config: Any, exc: BaseException) -> int:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    reason = getattr(exc, "strerror", None) or str(exc)
    where = f"{config.host}:{config.port}"
    print(f"pushwire serve: cannot listen on {where}: {reason}", file=sys.stderr)
    return EXIT_FAILURE
