"""Client state-machine vectors: sequences of bytes in, events and bytes out (SPEC.md §14).

Theory of operation: each sequence below is a short script of what a client's application
and its transport do (open, subscribe, grant credit, receive bytes, see EOF). It is run
through the reference :class:`~pushwire.protocol.client_conn.ClientConnection`, and what
the machine answers to each step is recorded: the bytes it sends (``sent_hex``), the events
it reports, and the connection-level error it detects. The result is the ``client_sessions``
list of ``vectors.json``, so an implementer can replay the steps against their own client
machine as they replay the frame vectors against their decoder. Events carry the reference
machine's names (``MessageReceived``, ``GapReceived``, ``PeerError``, ...); what is
normative is what they report (which messages are delivered, which gap, which code), not
the names.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pushwire.protocol import client_conn as cc
from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.decoder import encode_preface
from pushwire.protocol.errors import ErrorCode, RemoteProtocolError
from pushwire.protocol.events import Sentinel
from pushwire.protocol.layouts import INITIAL_MAX_FRAME_SIZE, Outcome

__all__ = ["CONVENTION", "generate"]

EPOCH = 0x1234
TOPIC = "news/eu"
#: Event fields holding u64 values, written as decimal strings like the frame vectors'.
_U64_EVENT_FIELDS = frozenset(
    {"epoch", "seq", "first", "last", "start_seq", "head_seq", "gap_first", "gap_last"}
    | {"old_epoch", "new_epoch", "connection_id", "first_seq"}
)

CONVENTION = (
    "client_sessions: sequences of steps run through a client state machine that offered "
    "versions 1..1. Steps: initiate (send the preface and HELLO: client_name, "
    "max_frame_size, heartbeat_ms 0), receive (hex bytes from the server; eof true means the "
    "server closed), subscribe (topic, since new, initial_credit, at_least_once; sub_ids "
    "count from 1), credit (sub_id, increment), ack (sub_id, seq). Each step records "
    "sent_hex (what the client sends in answer, in order), events (what it reports to its "
    "application, named as the reference client's events) and, when the server broke a "
    "rule, error (the registry name the client closes with, after sending sent_hex)."
)


@dataclass(frozen=True)
class _Session:
    name: str
    description: str
    requirements: tuple[str, ...]
    steps: tuple[dict[str, Any], ...]


def _hex(*frames: F.Frame) -> str:
    return b"".join(codec.encode_frame(f) for f in frames).hex()


def _msg(seq: int, epoch: int = EPOCH) -> F.Message:
    return F.Message(epoch, seq, TOPIC, b"m%d" % seq)


_WELCOME = F.Welcome(7, 5000, INITIAL_MAX_FRAME_SIZE, 64, 1000, 1, "vectors")
_OPEN: tuple[dict[str, Any], ...] = (
    {"do": "initiate", "client_name": "vectors", "max_frame_size": INITIAL_MAX_FRAME_SIZE},
    {"do": "receive", "hex": encode_preface(1, 1).hex() + _hex(_WELCOME)},
)


def _subscribed(credit: int, *, at_least_once: bool = False) -> tuple[dict[str, Any], ...]:
    return (
        {
            "do": "subscribe",
            "topic": TOPIC,
            "initial_credit": credit,
            "at_least_once": at_least_once,
        },
        {"do": "receive", "hex": _hex(F.Subscribed(1, Outcome.NEW, EPOCH, 1, 0))},
    )


def _sessions() -> Iterable[_Session]:
    yield _Session(
        "credit-sent-after-the-push-arrived",
        "initial credit 2; messages 1-3 arrive in one read; a CREDIT written after that read "
        "does not count for message 3, which exceeds the credit granted",
        ("PW-FLOW-5",),
        (
            *_OPEN,
            *_subscribed(2),
            {"do": "receive", "hex": _hex(_msg(1), _msg(2), _msg(3)), "events_before_credit": 2},
        ),
    )
    yield _Session(
        "credit-sent-before-the-push-arrived",
        "initial credit 2; messages 1-2; CREDIT(2) sent; message 3 arrives afterwards and is "
        "within the credit granted",
        ("PW-FLOW-5",),
        (
            *_OPEN,
            *_subscribed(2),
            {"do": "receive", "hex": _hex(_msg(1), _msg(2))},
            {"do": "credit", "sub_id": 1, "increment": 2},
            {"do": "receive", "hex": _hex(_msg(3))},
        ),
    )
    yield _Session(
        "messages-ahead-of-a-connection-error",
        "messages 1-2 and ERROR(SHUTTING_DOWN) in one read: the messages are delivered, then "
        "the error; the client sends nothing",
        ("PW-CLIENT-13", "PW-ERR-3"),
        (
            *_OPEN,
            *_subscribed(4),
            {
                "do": "receive",
                "hex": _hex(_msg(1), _msg(2), F.Error(ErrorCode.SHUTTING_DOWN, 0, 0, "restart")),
            },
        ),
    )
    yield _Session(
        "eof-inside-a-frame",
        "the server closes in the middle of a frame: a lost connection, not MALFORMED_FRAME",
        ("PW-CLIENT-5",),
        (
            *_OPEN,
            *_subscribed(4),
            {"do": "receive", "hex": _hex(_msg(1))[:20]},
            {"do": "receive", "hex": "", "eof": True},
        ),
    )
    yield _Session(
        "ack-through-a-gap",
        "at-least-once: message 1, GAP 2-4, message 5; the client acknowledges 5",
        ("PW-CLIENT-10", "PW-PUB-13"),
        (
            *_OPEN,
            *_subscribed(4, at_least_once=True),
            {
                "do": "receive",
                "hex": _hex(_msg(1), F.Gap(1, EPOCH, 2, 4, ErrorCode.SLOW_CONSUMER), _msg(5)),
            },
            {"do": "ack", "sub_id": 1, "seq": 5},
        ),
    )
    yield _Session(
        "push-before-subscribed",
        "a MESSAGE of the topic before SUBSCRIBED answered the SUBSCRIBE",
        ("PW-CLIENT-18", "PW-ORDER-5"),
        (
            *_OPEN,
            {"do": "subscribe", "topic": TOPIC, "initial_credit": 4, "at_least_once": False},
            {"do": "receive", "hex": _hex(_msg(1))},
        ),
    )
    yield _Session(
        "credit-and-order-both-broken",
        "initial credit 1; message 1, then message 3: beyond credit and out of order; the "
        "credit check comes first",
        ("PW-FRAME-14", "PW-FLOW-5"),
        (*_OPEN, *_subscribed(1), {"do": "receive", "hex": _hex(_msg(1), _msg(3))}),
    )
    yield _Session(
        "epoch-change-mid-stream",
        "messages 1-2, then message 1 of a new epoch: accepted, reported as an epoch change",
        ("PW-ORDER-13",),
        (
            *_OPEN,
            *_subscribed(4),
            {"do": "receive", "hex": _hex(_msg(1), _msg(2), _msg(1, epoch=EPOCH + 1))},
        ),
    )
    yield _Session(
        "push-after-goaway",
        "GOAWAY, then a MESSAGE: the server sends no pushes after GOAWAY",
        ("PW-GOAWAY-4",),
        (
            *_OPEN,
            *_subscribed(4),
            {
                "do": "receive",
                "hex": _hex(F.Goaway(ErrorCode.SHUTTING_DOWN, 1000, 0, (), "bye"), _msg(1)),
            },
        ),
    )
    yield _Session(
        "request-error-before-welcome",
        "a request-level ERROR before WELCOME is UNEXPECTED_FRAME",
        ("PW-HS-3", "PW-ERR-12"),
        (
            {"do": "initiate", "client_name": "vectors", "max_frame_size": INITIAL_MAX_FRAME_SIZE},
            {
                "do": "receive",
                "hex": encode_preface(1, 1).hex()
                + _hex(F.Error(ErrorCode.FORBIDDEN, 0x10, 1, "no")),
            },
        ),
    )


def _value(name: str, value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value) if name in _U64_EVENT_FIELDS else value
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, tuple | list):
        return [_value(name, v) for v in value]
    if dataclasses.is_dataclass(value):
        return {f.name: _value(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)}
    raise TypeError(f"cannot render {type(value).__name__} in {name}")


def _event(ev: cc.Event) -> dict[str, Any]:
    out: dict[str, Any] = {"event": type(ev).__name__}
    for f in dataclasses.fields(ev):  # type: ignore[arg-type]
        out[f.name] = _value(f.name, getattr(ev, f.name))
    return out


def _run(session: _Session) -> dict[str, Any]:
    conn = cc.ClientConnection()
    steps: list[dict[str, Any]] = []
    actions: dict[str, Callable[[dict[str, Any]], bytes]] = {
        "initiate": lambda s: conn.initiate(
            s["client_name"], max_frame_size=s["max_frame_size"], now=0.0
        ),
        "subscribe": lambda s: conn.subscribe(
            s["topic"],
            initial_credit=s["initial_credit"],
            at_least_once=s["at_least_once"],
            now=0.0,
        )[1],
        "credit": lambda s: conn.grant_credit(s["sub_id"], s["increment"], now=0.0),
        "ack": lambda s: conn.ack(s["sub_id"], s["seq"], now=0.0),
    }
    for step in session.steps:
        record = {k: v for k, v in step.items() if k != "events_before_credit"}
        events: list[dict[str, Any]] = []
        sent = b""
        if step["do"] == "receive":
            conn.receive_data(b"" if step.get("eof") else bytes.fromhex(step["hex"]), 0.0)
            credit_after = step.get("events_before_credit")
            try:
                while not isinstance(ev := conn.next_event(), Sentinel):
                    events.append(_event(ev))
                    if credit_after is not None and len(events) == credit_after:
                        # the application grants credit between two events of one read
                        sent += conn.grant_credit(1, 2, now=0.0)
                        record["credit_after_event"] = credit_after
                        record["credit"] = {"sub_id": 1, "increment": 2}
            except RemoteProtocolError as exc:
                record["error"] = exc.code.name
            sent += conn.data_to_send()
        else:
            sent = actions[step["do"]](step)
        record["events"] = events
        record["sent_hex"] = sent.hex()
        steps.append(record)
    return {
        "name": session.name,
        "description": session.description,
        "requirements": sorted(set(session.requirements)),
        "steps": steps,
    }


def generate() -> list[dict[str, Any]]:
    """The ``client_sessions`` of vectors.json, sorted by name."""
    return sorted((_run(s) for s in _sessions()), key=lambda v: v["name"])
