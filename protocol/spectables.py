"""SPEC.md's generated parts: byte tables, registries, examples, rendered from the code.

Theory of operation: SPEC.md contains regions delimited by

    <!-- BEGIN GENERATED: frame-table MESSAGE -->
    ...
    <!-- END GENERATED -->

Each region name maps to a renderer here. ``--write`` replaces every region's body with what
the renderer produces from ``layouts.py``, ``errors.py`` and ``requirements.py`` now;
``--check`` exits 1 when any body differs, and ``tests/spec`` runs the same check, so the
prose can never drift from the declarations.

The byte tables come from walking the construct objects themselves (Struct subcons, If,
Switch, PrefixedArray, Prefixed, PascalString, Array, GreedyBytes, Terminated): offsets are
summed from each field's ``sizeof()`` until the first variable-length field, after which
offsets read "var". A construct this walker does not understand raises instead of being
rendered wrongly. Worked examples are built by the reference codec and annotated by parsing
them back with a copy of the declaration that records the stream position of every field.

Usage::

    python -m pushwire.protocol.spectables --write SPEC.md
    python -m pushwire.protocol.spectables --check SPEC.md
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import construct as C

from pushwire.protocol import errors, reference
from pushwire.protocol import frames as F
from pushwire.protocol import layouts as L
from pushwire.protocol.errors import REGISTRY, ErrorCode
from pushwire.protocol.heartbeat import TIMEOUT_FACTOR
from pushwire.protocol.requirements import REQUIREMENTS

REGION_RE = re.compile(
    r"<!-- BEGIN GENERATED: (?P<name>[^>]*?) -->\n(?P<body>.*?)<!-- END GENERATED -->",
    re.DOTALL,
)
HEADING_RE = re.compile(r"^#{1,6} (?:Appendix )?(?P<num>[0-9A-Z]+(?:\.[0-9]+)*)[ .]", re.M)

#: Where protocol/vectors.schema.json lives (written by the codec owner); §14 embeds it.
SCHEMA_PATH = Path(__file__).with_name("vectors.schema.json")

#: Codes that may appear as a gap reason (§7.4): the registry's own list.
GAP_REASONS: frozenset[ErrorCode] = errors.GAP_REASONS

#: Flag names per frame type. The bits must add up to layouts.DEFINED_FLAGS (tested): the
#: names are not data in layouts.py because HAS_HEADERS and AT_LEAST_ONCE share bit 0x01.
FLAG_NAMES: dict[L.FrameType, dict[int, tuple[str, str]]] = {
    L.FrameType.SUBSCRIBE: {
        L.AT_LEAST_ONCE: ("AT_LEAST_ONCE", "at-least-once delivery: cumulative ACK (§8.3)")
    },
    **{
        t: {L.HAS_HEADERS: ("HAS_HEADERS", "a header block precedes each payload (§9.2)")}
        for t in (
            L.FrameType.MESSAGE,
            L.FrameType.MESSAGE_BATCH,
            L.FrameType.PUBLISH,
            L.FrameType.PUBLISH_BATCH,
        )
    },
}

#: Names of the structures that appear inside others (their own tables in SPEC.md).
_HEADER_PAIR = L.HeaderBlock.subcons[1].subcon.subcon
NAMED_STRUCTS: dict[int, str] = {
    id(L.Record): "Record",
    id(L.Position): "Position",
    id(_HEADER_PAIR): "HeaderPair",
}
#: Top-level layouts with their own table besides the frame bodies.
LAYOUTS: dict[str, Any] = {
    "ClientPreface": L.ClientPreface,
    "ServerPreface": L.ServerPreface,
    "Header": L.Header,
    "Record": L.Record,
    "HeaderPair": _HEADER_PAIR,
    "Position": L.Position,
}

#: Per-field notes, keyed by (table name, field path). Automatic notes (conditions, prefixes)
#: are added by the walker; a test fails when a key here names no field.
FIELD_NOTES: dict[tuple[str, str], str] = {
    ("ClientPreface", "magic"): "`89 50 57 0a`",
    ("ClientPreface", "min_version"): "lowest version the client speaks, >= 1",
    ("ClientPreface", "max_version"): "highest version the client speaks, >= min_version",
    ("ClientPreface", "reserved"): "0",
    ("ServerPreface", "magic"): "`89 50 57 0a`",
    ("ServerPreface", "version"): "chosen version; 0 = no common version (then close)",
    ("ServerPreface", "max_version"): "highest version the server speaks (a hint)",
    ("ServerPreface", "reserved"): "0",
    ("Header", "length"): "payload bytes after the header; the header is not counted",
    ("Header", "type"): "frame type (§3.3); bit 7 = ignorable when unknown",
    ("Header", "flags"): "per type (§3.2); undefined bits are 0",
    ("HELLO", "max_frame_size"): "client's receive limit, 16384-16777216",
    ("HELLO", "heartbeat_ms"): "preferred heartbeat interval; 0 = server decides",
    ("HELLO", "client_name"): "free-form, for logs",
    ("HELLO", "auth_token"): "opaque credential; empty = anonymous",
    ("WELCOME", "connection_id"): "chosen by the server, for logs",
    ("WELCOME", "heartbeat_ms"): "interval both sides use, 1-600000",
    ("WELCOME", "max_frame_size"): "server's receive limit, 16384-16777216",
    ("WELCOME", "max_subscriptions"): "per connection",
    ("WELCOME", "max_lag"): "messages; the DISCONNECT threshold (§8.2)",
    ("WELCOME", "slow_consumer_policy"): "0 DISCONNECT, 1 DROP",
    ("WELCOME", "server_name"): "free-form, for logs",
    ("PING", "opaque"): "any value; echoed by PONG",
    ("PONG", "opaque"): "the opaque of the PING answered",
    ("GOAWAY", "code"): "registry code (§11)",
    ("GOAWAY", "reconnect_after_ms"): "minimum delay before reconnecting",
    ("GOAWAY", "reconnect_jitter_ms"): "upper bound of the random extra delay",
    ("GOAWAY", "positions"): "one per active subscription; empty from a client",
    ("GOAWAY", "reason"): "human-readable",
    ("Position", "sub_id"): "the subscription",
    ("Position", "epoch"): "its topic's epoch",
    ("Position", "seq"): "last acknowledged (at-least-once) or position (at-most-once)",
    ("ERROR", "code"): "registry code (§11)",
    ("ERROR", "request_type"): "0 = connection error; else the failed request's frame type",
    ("ERROR", "request_id"): "the request's sub_id or request_id; 0 for connection errors",
    ("ERROR", "message"): "human-readable; never parsed",
    ("SUBSCRIBE", "sub_id"): "chosen by the client (§6.1)",
    ("SUBSCRIBE", "initial_credit"): "messages the server may send before CREDIT",
    ("SUBSCRIBE", "since_kind"): "0 NEW, 1 AFTER, 2 LAST, 3 OLDEST",
    ("SUBSCRIBE", "since.epoch"): "epoch of the position",
    ("SUBSCRIBE", "since.seq"): "last sequence the client already has",
    ("SUBSCRIBE", "since.count"): "N: the last N messages",
    ("SUBSCRIBE", "topic"): "§9.1",
    ("SUBSCRIBED", "sub_id"): "from the SUBSCRIBE",
    ("SUBSCRIBED", "outcome"): "0 NEW, 1 RECOVERED, 2 GAP, 3 EPOCH_CHANGED",
    ("SUBSCRIBED", "epoch"): "the topic's current epoch",
    ("SUBSCRIBED", "start_seq"): "first sequence that will be delivered",
    ("SUBSCRIBED", "head_seq"): "last sequence assigned in the epoch; 0 = none",
    ("SUBSCRIBED", "gap.first"): "first lost sequence",
    ("SUBSCRIBED", "gap.last"): "last lost sequence (start_seq - 1)",
    ("SUBSCRIBED", "gap.reason"): "HISTORY_EXPIRED",
    ("UNSUBSCRIBE", "sub_id"): "an active subscription",
    ("UNSUBSCRIBED", "sub_id"): "from the UNSUBSCRIBE",
    ("UNSUBSCRIBED", "epoch"): "the topic's epoch",
    ("UNSUBSCRIBED", "last_seq"): "the subscription's final position (§8.4)",
    ("CREDIT", "sub_id"): "the subscription",
    ("CREDIT", "increment"): "messages, >= 1",
    ("ACK", "sub_id"): "an at-least-once subscription",
    ("ACK", "seq"): "cumulative: everything up to seq is processed",
    ("GAP", "sub_id"): "the subscription (a GAP is per subscriber)",
    ("GAP", "epoch"): "the subscription's epoch",
    ("GAP", "first"): "first skipped sequence, >= 1",
    ("GAP", "last"): "last skipped sequence, >= first",
    ("GAP", "reason"): "gap reason code (§7.4)",
    ("MESSAGE", "epoch"): "the topic's epoch",
    ("MESSAGE", "seq"): "sequence number in the epoch",
    ("MESSAGE", "topic"): "§9.1",
    ("MESSAGE", "payload"): "application bytes",
    ("MESSAGE_BATCH", "epoch"): "the topic's epoch",
    ("MESSAGE_BATCH", "base_seq"): "record i carries base_seq + i",
    ("MESSAGE_BATCH", "topic"): "§9.1",
    ("MESSAGE_BATCH", "count"): "1-65535",
    ("PUBLISH", "request_id"): "0 = no PUBACK wanted",
    ("PUBLISH", "topic"): "§9.1",
    ("PUBLISH", "payload"): "application bytes",
    ("PUBLISH_BATCH", "request_id"): "0 = no PUBACK wanted",
    ("PUBLISH_BATCH", "topic"): "§9.1",
    ("PUBLISH_BATCH", "count"): "1-65535",
    ("PUBACK", "request_id"): "from the publish",
    ("PUBACK", "epoch"): "the topic's epoch",
    ("PUBACK", "first_seq"): "sequence of the first (or only) message",
    ("PUBACK", "count"): "messages assigned: 1, or the batch's count",
    ("Record", "payload"): "application bytes",
    ("HeaderPair", "key"): "UTF-8, case-sensitive",
    ("HeaderPair", "value"): "opaque bytes",
}

#: One-line meanings of the enumerations' members (SPEC.md §5.2, §6.1, §6.2).
ENUM_MEANINGS: dict[str, dict[int, str]] = {
    "SinceKind": {
        L.SinceKind.NEW: "only messages published after the subscription",
        L.SinceKind.AFTER: "messages after (epoch, seq): resume",
        L.SinceKind.LAST: "the last N messages, then live",
        L.SinceKind.OLDEST: "everything retained, then live",
    },
    "Outcome": {
        L.Outcome.NEW: "live from start_seq = head + 1; no position was asked for",
        L.Outcome.RECOVERED: "every message after the position follows, in order",
        L.Outcome.GAP: "gap.first..gap.last are lost; delivery resumes at start_seq",
        L.Outcome.EPOCH_CHANGED: "the position's epoch is gone; delivery restarts in the "
        "current epoch at start_seq",
    },
    "SlowConsumerPolicy": {
        L.SlowConsumerPolicy.DISCONNECT: "ERROR(SLOW_CONSUMER) and close (§8.2)",
        L.SlowConsumerPolicy.DROP: "GAP(SLOW_CONSUMER), continue from the oldest retained",
    },
}
ENUMS: dict[str, type[Any]] = {
    "SinceKind": L.SinceKind,
    "Outcome": L.Outcome,
    "SlowConsumerPolicy": L.SlowConsumerPolicy,
}


# -- walking construct declarations ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    offset: str  # decimal offset from the start of the structure, or "var"
    size: str  # bytes: a number, "1+n", "var", "rest"
    field: str
    type: str
    notes: str


_INT_TYPES = {">B": "u8", ">H": "u16", ">L": "u32", ">Q": "u64"}


def _int_type(sub: Any) -> str:
    if not isinstance(sub, C.FormatField) or sub.fmtstr not in _INT_TYPES:
        raise TypeError(f"not a big-endian unsigned integer: {sub!r}")
    return _INT_TYPES[sub.fmtstr]


def _cond_text(expr: Any, table: str) -> str:
    """Human text for an ``If`` condition; unknown shapes raise rather than render wrong."""
    text = repr(expr)
    m = re.fullmatch(r"\(this\['_params'\]\['flags'\] & (\d+)\)", text)
    if m:
        bit = int(m.group(1))
        names = FLAG_NAMES.get(L.FrameType[table], {}) if table in L.FrameType.__members__ else {}
        name = names[bit][0] if bit in names else "|".join(n for n, _ in names.values())
        if not name:  # a record: its flags are the enclosing batch's
            name = "HAS_HEADERS"
        return f"flag {name} (0x{bit:02x}) is set"
    m = re.fullmatch(r"\(this\['(\w+)'\] == <(\w+)\.(\w+): (\d+)>\)", text)
    if m:
        return f"{m.group(1)} = {m.group(3)} ({m.group(4)})"
    raise ValueError(f"cannot render condition {text}")


def _simple(sub: Any) -> tuple[str, str, int | None, str]:
    """(type, size, fixed size or None, automatic note) of a leaf field."""
    if isinstance(sub, C.FormatField):
        return _int_type(sub), str(sub.length), sub.length, ""
    if type(sub) is C.Bytes and isinstance(sub.length, int):
        return f"bytes[{sub.length}]", str(sub.length), sub.length, ""
    if isinstance(sub, C.StringEncoded) and isinstance(sub.subcon, C.Prefixed):
        n = sub.subcon.lengthfield.length
        name = {1: "Str8", 2: "Text16"}[n]
        return name, f"{n}+n", None, ""
    if isinstance(sub, C.Prefixed) and sub.subcon is C.GreedyBytes:
        n = sub.lengthfield.length
        name = {2: "Bytes16", 4: "Bytes32"}[n]
        return name, f"{n}+n", None, ""
    if sub is C.GreedyBytes:
        return "bytes", "rest", None, "to the end of the payload"
    if sub is L.HeaderBlock:
        return "HeaderBlock", "var", None, "§9.2"
    if isinstance(sub, C.FocusedSeq) and [s.name for s in sub.subcons] == ["count", "items"]:
        count_type = _int_type(sub.subcons[0].subcon.subcon)
        item = sub.subcons[1].subcon.subcon
        item_name = NAMED_STRUCTS[id(item)]
        return f"{count_type} count, then {item_name}[count]", "var", None, ""
    if isinstance(sub, C.Array):
        item_name = NAMED_STRUCTS[id(sub.subcon)]
        count = sub.count if isinstance(sub.count, int) else repr(sub.count)
        count = re.sub(r"this\['(\w+)'\]", r"\1", str(count))
        return f"{item_name}[{count}]", "var", None, ""
    raise TypeError(f"spectables cannot describe {sub!r}")


@dataclass(slots=True)
class _Walk:
    table: str
    rows: list[Row]
    offset: int | None = 0
    terminated: bool = False

    def add(self, path: str, type_: str, size: str, fixed: int | None, notes: list[str]) -> None:
        manual = FIELD_NOTES.get((self.table, path))
        text = "; ".join(n for n in [*notes, manual or ""] if n)
        off = str(self.offset) if self.offset is not None else "var"
        self.rows.append(Row(off, size, path, type_, text))


def _walk_struct(w: _Walk, struct: Any, prefix: str = "", cond: str = "") -> None:
    for sc in struct.subcons:
        if sc is C.Terminated:
            w.terminated = True
            continue
        if not isinstance(sc, C.Renamed):
            raise TypeError(f"{w.table}: unnamed field {sc!r}")
        path = prefix + sc.name
        sub = sc.subcon
        if isinstance(sub, C.IfThenElse):
            if sub.elsesubcon is not C.Pass:
                raise TypeError(f"{w.table}.{path}: only If(cond, x) is supported")
            text = "present only if " + _cond_text(sub.condfunc, w.table)
            _walk_optional(w, sub.thensubcon, path, text)
            w.offset = None
        elif isinstance(sub, C.Switch):
            start = w.offset
            key = re.sub(r"this\['(\w+)'\]", r"\1", repr(sub.keyfunc))
            for value, case in sub.cases.items():
                w.offset = start
                member = f"{type(value).__name__}.{value.name}" if hasattr(value, "name") else ""
                label = value.name if member else str(value)
                _walk_optional(w, case, path, f"present only if {key} = {label} ({int(value)})")
            if sub.default is not C.Pass:
                raise TypeError(f"{w.table}.{path}: Switch default must be Pass")
            w.offset = None
        elif isinstance(sub, C.Struct):
            _walk_struct(w, sub, path + ".", cond)
        else:
            type_, size, fixed, note = _simple(sub)
            w.add(path, type_, size, fixed, [cond, note])
            w.offset = w.offset + fixed if (w.offset is not None and fixed is not None) else None


def _walk_optional(w: _Walk, sub: Any, path: str, cond: str) -> None:
    if isinstance(sub, C.Struct):
        _walk_struct(w, sub, path + ".", cond)
    else:
        type_, size, fixed, note = _simple(sub)
        w.add(path, type_, size, fixed, [cond, note])
        if w.offset is not None and fixed is not None:
            w.offset += fixed


def layout_rows(table: str, struct: Any) -> tuple[list[Row], bool]:
    """The rows of ``struct``'s byte table and whether it ends with ``Terminated``."""
    w = _Walk(table, [])
    _walk_struct(w, struct)
    return w.rows, w.terminated


def _md_table(headers: Sequence[str], rows: Iterator[Sequence[str]] | list[list[str]]) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _fixed_size(struct: Any) -> int | None:
    """Size of a structure whose every field is fixed (``Terminated`` counts zero)."""
    try:
        return sum(int(sc.sizeof()) for sc in struct.subcons if sc is not C.Terminated)
    except (C.SizeofError, KeyError, AttributeError):
        return None


def _shortest_payload(struct: Any) -> int:
    """Length of the shortest all-zero payload (flags 0) that the declaration parses."""
    for n in range(0, 256):
        try:
            struct.parse(bytes(n), flags=0)
        except C.ConstructError:
            continue
        return n
    raise ValueError("no short payload parses")


def render_layout(table: str, struct: Any, *, body: bool) -> str:
    rows, terminated = layout_rows(table, struct)
    text = _md_table(
        ("Offset", "Size", "Field", "Type", "Notes"),
        [[r.offset, r.size, f"`{r.field}`", r.type, r.notes] for r in rows],
    )
    fixed = _fixed_size(struct)
    what = "Payload" if body else "Size"
    if fixed is not None:
        tail = f"{what}: exactly {fixed} bytes."
        if body:
            tail += " Any other length is MALFORMED_FRAME [PW-FRAME-4]."
    else:
        tail = f"{what}: variable; the layout admits {_shortest_payload(struct)} bytes or more."
        if body and terminated:
            tail += " Bytes left after the last field are MALFORMED_FRAME [PW-FRAME-4]."
        elif body:
            tail += " The last field takes every remaining byte of the payload."
    return f"{text}\n\n{tail}"


# -- registries -----------------------------------------------------------------------------


def _section_of(doc: str | None, region: str) -> str:
    if doc is None:
        return "-"
    at = doc.find(f"<!-- BEGIN GENERATED: {region} -->")
    if at < 0:
        return "-"
    headings = [m.group("num") for m in HEADING_RE.finditer(doc, 0, at)]
    return "§" + headings[-1] if headings else "-"


def render_frame_types(doc: str | None) -> str:
    rows = []
    for t in L.FrameType:
        flags = FLAG_NAMES.get(t, {})
        rows.append(
            [
                f"0x{t:02x}",
                t.name,
                "set" if t & L.IGNORABLE_BIT else "clear",
                "yes" if t in L.CLIENT_SENDS else "-",
                "yes" if t in L.SERVER_SENDS else "-",
                ", ".join(f"{n} (0x{b:02x})" for b, (n, _) in sorted(flags.items())) or "none",
                _section_of(doc, f"frame-table {t.name}"),
            ]
        )
    return _md_table(
        ("Type", "Name", "Bit 7", "Client sends", "Server sends", "Flags", "Layout"), rows
    )


def render_flags() -> str:
    rows = [
        [t.name, f"0x{bit:02x}", name, meaning]
        for t, bits in FLAG_NAMES.items()
        for bit, (name, meaning) in sorted(bits.items())
    ]
    note = "Every other flag bit of every frame type is reserved: sent as 0 [PW-FRAME-3]."
    return _md_table(("Frame type", "Bit", "Name", "Meaning"), rows) + "\n\n" + note


def render_enum(name: str) -> str:
    enum = ENUMS[name]
    meanings = ENUM_MEANINGS[name]
    rows = [[str(int(m)), m.name, meanings[m]] for m in enum]
    return _md_table(("Value", "Name", "Meaning"), rows)


def render_constants() -> str:
    rows = [
        ["MAGIC", " ".join(f"{b:02x}" for b in L.MAGIC), "§2.2", "first bytes of each preface"],
        ["PREFACE_SIZE", str(L.PREFACE_SIZE), "§2.2", "bytes in each preface"],
        ["PROTOCOL_VERSION", str(L.PROTOCOL_VERSION), "§2.3", "the version this document defines"],
        ["DEFAULT_PORT", str(L.DEFAULT_PORT), "§2.1", "TCP port when none is configured"],
        ["HEADER_SIZE", str(L.HEADER_SIZE), "§3.1", "bytes in a frame header"],
        ["IGNORABLE_BIT", f"0x{L.IGNORABLE_BIT:02x}", "§3.3", "frame type bit: skip if unknown"],
        [
            "INITIAL_MAX_FRAME_SIZE",
            str(L.INITIAL_MAX_FRAME_SIZE),
            "§3.4",
            "payload limit before limits are exchanged",
        ],
        [
            "MIN_MAX_FRAME_SIZE",
            str(L.MIN_MAX_FRAME_SIZE),
            "§3.4",
            "smallest max_frame_size a peer may advertise",
        ],
        [
            "MAX_MAX_FRAME_SIZE",
            str(L.MAX_MAX_FRAME_SIZE),
            "§3.4",
            "largest max_frame_size a peer may advertise (2^24)",
        ],
        [
            "HEARTBEAT_TIMEOUT_FACTOR",
            str(TIMEOUT_FACTOR),
            "§8.5",
            "receive timeout = factor x heartbeat interval",
        ],
    ]
    return _md_table(("Name", "Value", "Section", "Meaning"), rows)


def render_error_registry() -> str:
    rows = [
        [
            f"0x{code:04x}",
            code.name,
            info.scope.value,
            "temporary" if info.temporary else "terminal",
            "yes" if code in GAP_REASONS else "-",
            info.meaning,
        ]
        for code, info in sorted(REGISTRY.items())
    ]
    return _md_table(("Code", "Name", "Scope", "Retry", "Gap reason", "Meaning"), rows)


def render_requirement_index() -> str:
    rows = [
        [
            r.id,
            r.level,
            "§" + r.section,
            r.applies_to,
            "yes" if r.observable else "no",
            r.text,
        ]
        for r in REQUIREMENTS
    ]
    musts = sum(r.is_must for r in REQUIREMENTS)
    shoulds = sum(r.level.startswith("SHOULD") for r in REQUIREMENTS)
    summary = (
        f"{len(REQUIREMENTS)} requirements: {musts} MUST / MUST NOT, {shoulds} SHOULD / "
        f"SHOULD NOT, {len(REQUIREMENTS) - musts - shoulds} MAY; "
        f"{sum(r.observable for r in REQUIREMENTS)} observable on the wire."
    )
    table = _md_table(("ID", "Level", "Section", "Applies to", "Observable", "Summary"), rows)
    return summary + "\n\n" + table


def render_vectors_schema() -> str:
    if not SCHEMA_PATH.exists():
        return (
            "_`protocol/vectors.schema.json` does not exist yet; this region is filled by "
            "`python -m pushwire.protocol.spectables --write SPEC.md` once it does._"
        )
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return "```json\n" + json.dumps(schema, indent=2, ensure_ascii=False) + "\n```"


# -- worked examples ------------------------------------------------------------------------

_ENUM_FIELDS: dict[str, Callable[[int], str]] = {
    "since_kind": lambda v: L.SinceKind(v).name,
    "outcome": lambda v: L.Outcome(v).name,
    "slow_consumer_policy": lambda v: L.SlowConsumerPolicy(v).name,
    "code": lambda v: ErrorCode(v).name,
    "reason": lambda v: ErrorCode(v).name,
    "type": lambda v: L.FrameType(v).name,
    "request_type": lambda v: L.FrameType(v).name if v else "connection",
}


def _value(name: str, v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int) and name == "epoch":
        return f"{v} (0x{v:x})"
    if isinstance(v, int):
        label = ""
        if name in _ENUM_FIELDS:
            try:
                label = f" ({_ENUM_FIELDS[name](v)})"
            except ValueError:
                label = ""
        return f"{v}{label}"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, bytes | bytearray):
        return json.dumps(bytes(v).decode("latin-1")) if bytes(v).isascii() else bytes(v).hex()
    if v is None:
        return "absent"
    if isinstance(v, C.ListContainer | list):
        return "[" + ", ".join(_value("", x) for x in v) + "]"
    if isinstance(v, dict):
        parts = [f"{k}={_value(k, x)}" for k, x in v.items() if not k.startswith("_")]
        return "{" + ", ".join(parts) + "}"
    return repr(v)


def _positions(struct: Any, data: bytes, flags: int) -> list[tuple[str, int, int, Any]]:
    """(field, start, end, value) of each top-level field, by parsing ``data`` with a copy
    of ``struct`` that records the stream position before and after every field."""
    parts: list[Any] = []
    names: list[str] = []
    for i, sc in enumerate(struct.subcons):
        if sc is C.Terminated:
            continue
        parts += [f"_at{i}" / C.Tell, sc]
        names.append(sc.name)
    parts.append("_end" / C.Tell)
    probe = C.Struct(*parts, C.Terminated)
    parsed = probe.parse(data, flags=flags)
    out = []
    marks = [k for k in parsed if k.startswith("_at")] + ["_end"]
    for name, a, b in zip(names, marks, marks[1:], strict=False):
        out.append((name, parsed[a], parsed[b], parsed[name]))
    return out


def _hex_lines(chunk: bytes, label: str, width: int = 12) -> list[str]:
    lines = []
    for i in range(0, max(len(chunk), 1), width):
        piece = " ".join(f"{b:02x}" for b in chunk[i : i + width])
        lines.append(f"  {piece:<{width * 3}} {label if i == 0 else ''}".rstrip())
    return lines


def annotate_preface(data: bytes, struct: Any) -> list[str]:
    lines = []
    for name, a, b, value in _positions(struct, data, 0):
        shown = " ".join(f"{x:02x}" for x in value) if name == "magic" else _value(name, value)
        lines += _hex_lines(data[a:b], f"{name} = {shown}")
    return lines


def annotate_frame(data: bytes) -> list[str]:
    """An annotated hex dump of one encoded frame: header fields, then body fields."""
    header = L.Header.parse(data[: L.HEADER_SIZE])
    ft = L.FrameType(header.type)
    lines = []
    for name, a, b, value in _positions(L.Header, data[: L.HEADER_SIZE], 0):
        if name == "type":
            shown = f"0x{value:02x} ({ft.name})"
        elif name == "flags":
            names = [n for bit, (n, _) in FLAG_NAMES.get(ft, {}).items() if value & bit]
            shown = f"0x{value:02x}" + (f" ({', '.join(names)})" if names else "")
        else:
            shown = _value(name, value)
        lines += _hex_lines(data[a:b], f"{name} = {shown}")
    body = data[L.HEADER_SIZE :]
    for name, a, b, value in _positions(L.BODIES[ft], body, header.flags):
        if a == b and value is None:
            continue  # an absent optional field
        lines += _hex_lines(body[a:b], f"{name} = {_value(name, value)}")
    return lines


#: The frames of the worked session in Appendix B, in wire order: (direction, what, bytes).
def example_session() -> list[tuple[str, str, bytes]]:
    return [
        ("C->S", "client preface (versions 1..1)", L.MAGIC + bytes((1, 1, 0, 0))),
        (
            "C->S",
            "HELLO, sent right after the preface",
            reference.encode_frame(
                F.Hello(max_frame_size=65536, heartbeat_ms=0, client_name="demo", auth_token=b"")
            ),
        ),
        ("S->C", "server preface (version 1 chosen)", L.MAGIC + bytes((1, 1, 0, 0))),
        (
            "S->C",
            "WELCOME",
            reference.encode_frame(
                F.Welcome(
                    connection_id=7,
                    heartbeat_ms=5000,
                    max_frame_size=1 << 20,
                    max_subscriptions=1024,
                    max_lag=10000,
                    slow_consumer_policy=L.SlowConsumerPolicy.DROP,
                    server_name="ref",
                )
            ),
        ),
        (
            "C->S",
            "SUBSCRIBE sub 1 to news/eu, resuming after (epoch 0x1234, seq 41), 8 credits",
            reference.encode_frame(
                F.Subscribe(
                    sub_id=1,
                    topic="news/eu",
                    since_kind=L.SinceKind.AFTER,
                    since_epoch=0x1234,
                    since_seq=41,
                    initial_credit=8,
                )
            ),
        ),
        (
            "S->C",
            "SUBSCRIBED: RECOVERED, 42 is the next sequence, head is 42",
            reference.encode_frame(
                F.Subscribed(
                    sub_id=1,
                    outcome=L.Outcome.RECOVERED,
                    epoch=0x1234,
                    start_seq=42,
                    head_seq=42,
                )
            ),
        ),
        ("S->C", "MESSAGE 42 (see B.2)", example_message()),
    ]


def example_message() -> bytes:
    return reference.encode_frame(
        F.Message(
            epoch=0x1234,
            seq=42,
            topic="news/eu",
            payload=b"hello",
            headers=(("ct", b"text/plain"),),
        )
    )


def example_publish() -> bytes:
    """The PUBLISH that the server turned into :func:`example_message` (§7.8)."""
    return reference.encode_frame(
        F.Publish(request_id=9, topic="news/eu", payload=b"hello", headers=(("ct", b"text/plain"),))
    )


def render_example(name: str) -> str:
    if name == "session-start":
        lines: list[str] = []
        for direction, what, data in example_session():
            lines.append(f"{direction}  {what}")
            if data[:4] == L.MAGIC and len(data) == L.PREFACE_SIZE:
                struct = L.ClientPreface if direction == "C->S" else L.ServerPreface
                lines += annotate_preface(data, struct)
            else:
                lines += annotate_frame(data)
            lines.append("")
        return "```text\n" + "\n".join(lines).rstrip() + "\n```"
    if name == "message":
        data = example_message()
        dump = "\n".join(annotate_frame(data))
        intro = "As one hex string (`pushwire decode` accepts it):"
        return f"```text\n{dump}\n```\n\n{intro}\n\n```text\n{data.hex()}\n```"
    if name == "forwarding":
        pub, msg = example_publish(), example_message()
        pub_rest = pub[L.HEADER_SIZE + L.PUBLISH_PREFIX_SIZE :].hex()
        msg_rest = msg[L.HEADER_SIZE + L.MESSAGE_PREFIX_SIZE :].hex()
        return (
            "```text\n"
            + "PUBLISH (client -> server)\n"
            + "\n".join(annotate_frame(pub))
            + "\n\nMESSAGE (server -> every subscriber)\n"
            + "\n".join(annotate_frame(msg))
            + "\n```\n\n"
            + f"PUBLISH body after request_id: `{pub_rest}`  \n"
            + f"MESSAGE body after epoch+seq: `{msg_rest}`"
        )
    raise KeyError(name)


# -- regions --------------------------------------------------------------------------------


def render(name: str, doc: str | None = None) -> str:
    """The body of the generated region ``name`` (without the markers)."""
    kind, _, arg = name.partition(" ")
    if kind == "frame-table":
        t = L.FrameType[arg]
        return render_layout(t.name, L.BODIES[t], body=True)
    if kind == "layout-table":
        return render_layout(arg, LAYOUTS[arg], body=False)
    if kind == "enum":
        return render_enum(arg)
    if kind == "example":
        return render_example(arg)
    simple: dict[str, Callable[[], str]] = {
        "constants": render_constants,
        "flags": render_flags,
        "error-registry": render_error_registry,
        "requirement-index": render_requirement_index,
        "vectors-schema": render_vectors_schema,
    }
    if name == "frame-types":
        return render_frame_types(doc)
    if name in simple:
        return simple[name]()
    raise KeyError(f"unknown generated region {name!r}")


def all_region_names() -> list[str]:
    """Every region SPEC.md is expected to contain."""
    names = ["constants", "frame-types", "flags", "error-registry", "requirement-index"]
    names += [f"frame-table {t.name}" for t in L.FrameType]
    names += [f"layout-table {n}" for n in LAYOUTS]
    names += [f"enum {n}" for n in ENUMS]
    names += ["example session-start", "example message", "example forwarding"]
    names += ["vectors-schema"]
    return names


def regions(doc: str) -> list[tuple[str, str]]:
    """(name, current body) of each generated region in ``doc``."""
    return [(m.group("name"), m.group("body")) for m in REGION_RE.finditer(doc)]


def update(doc: str) -> str:
    """``doc`` with every generated region re-rendered."""

    def repl(m: re.Match[str]) -> str:
        name = m.group("name")
        return f"<!-- BEGIN GENERATED: {name} -->\n{render(name, doc)}\n<!-- END GENERATED -->"

    # Two passes: section numbers in the frame-type table depend on the headings only, which
    # regions never contain, so one pass is enough; the loop guards against that changing.
    for _ in range(2):
        new = REGION_RE.sub(repl, doc)
        if new == doc:
            break
        doc = new
    return doc


def stale(doc: str) -> list[str]:
    """Names of the regions whose body differs from what the code renders now."""
    return [name for name, body in regions(doc) if body != render(name, doc) + "\n"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pushwire.protocol.spectables",
        description="Rewrite or check SPEC.md's generated regions.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the regions in place")
    mode.add_argument("--check", action="store_true", help="exit 1 if any region is stale")
    parser.add_argument("path", nargs="?", default="SPEC.md", type=Path)
    args = parser.parse_args(argv)
    doc = args.path.read_text(encoding="utf-8")
    names = [n for n, _ in regions(doc)]
    problems = [f"missing region: {n}" for n in all_region_names() if n not in names]
    problems += [f"duplicate region: {n}" for n in set(names) if names.count(n) > 1]
    try:
        bad = stale(doc)
    except KeyError as exc:
        print(f"{args.path}: {exc}", file=sys.stderr)
        return 1
    if args.write:
        new = update(doc)
        if new != doc:
            args.path.write_text(new, encoding="utf-8")
        print(f"{args.path}: {len(bad)} region(s) rewritten")
        for p in problems:
            print(f"{args.path}: {p}", file=sys.stderr)
        return 1 if problems else 0
    for name in bad:
        print(f"{args.path}: stale region: {name}", file=sys.stderr)
    for p in problems:
        print(f"{args.path}: {p}", file=sys.stderr)
    return 1 if bad or problems else 0


if __name__ == "__main__":
    sys.exit(main())
