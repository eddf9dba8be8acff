"""SPEC.md's generated regions equal what the declarations render now: the spec cannot drift.

Besides the byte-for-byte check of every region, these tests check the renderer itself
against real encodings (an offset the walker prints is where the codec puts the field), and
check that the worked examples in SPEC.md decode back to the frames they claim to be.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import construct as C
import pytest

from pushwire.protocol import frames as F
from pushwire.protocol import layouts as L
from pushwire.protocol import reference
from pushwire.protocol.decoder import FrameDecoder, parse_preface
from pushwire.protocol.errors import REGISTRY, ErrorCode
from pushwire.protocol.spec import tables as spectables
from pushwire.server import ServerConfig

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "SPEC.md"


@pytest.fixture(scope="module")
def doc() -> str:
    return SPEC.read_text(encoding="utf-8")


def region(doc: str, name: str) -> str:
    found = [body for n, body in spectables.regions(doc) if n == name]
    assert len(found) == 1, f"region {name!r} appears {len(found)} times"
    return found[0]


# -- the generated regions are current ------------------------------------------------------


def test_every_generated_region_matches_the_declarations(doc: str) -> None:
    stale = spectables.stale(doc)
    assert not stale, (
        f"SPEC.md is stale in {stale}; "
        "run `python -m pushwire.protocol.spec.tables --write SPEC.md`"
    )


def test_every_expected_region_is_present_exactly_once(doc: str) -> None:
    names = [n for n, _ in spectables.regions(doc)]
    assert sorted(names) == sorted(spectables.all_region_names())


def test_markers_are_balanced(doc: str) -> None:
    begins = doc.count("<!-- BEGIN GENERATED:")
    ends = doc.count("<!-- END GENERATED -->")
    assert begins == ends == len(spectables.regions(doc))


def test_every_frame_type_has_its_table_in_the_section_layouts_py_names(doc: str) -> None:
    """layouts.FrameType annotates each member with its SPEC.md section; the frame's byte
    table must sit in that section."""
    source = Path(L.__file__).read_text(encoding="utf-8")
    declared = dict(re.findall(r"^\s+([A-Z_]+) = 0x[0-9a-fA-F]{2}\s+# (§[0-9.]+)", source, re.M))
    assert set(declared) == {t.name for t in L.FrameType}
    for t in L.FrameType:
        assert spectables._section_of(doc, f"frame-table {t.name}") == declared[t.name], t.name


def test_cli_check_fails_on_a_stale_region_and_write_repairs_it(doc: str, tmp_path: Path) -> None:
    path = tmp_path / "SPEC.md"
    broken = doc.replace("| 0x01 | HELLO |", "| 0x01 | HELO |", 1)
    assert broken != doc
    path.write_text(broken, encoding="utf-8")
    assert spectables.main(["--check", str(path)]) == 1
    assert spectables.main(["--write", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == doc
    assert spectables.main(["--check", str(path)]) == 0


def test_cli_check_reports_a_missing_region(doc: str, tmp_path: Path) -> None:
    path = tmp_path / "SPEC.md"
    body = region(doc, "flags")
    marker = "<!-- BEGIN GENERATED: flags -->\n" + body + "<!-- END GENERATED -->"
    path.write_text(doc.replace(marker, ""), encoding="utf-8")
    assert spectables.main(["--check", str(path)]) == 1


def test_unknown_region_name_is_an_error() -> None:
    with pytest.raises(KeyError):
        spectables.render("frame-table NOT_A_FRAME")
    with pytest.raises(KeyError):
        spectables.render("no-such-region")


# -- the renderer's data stays in step with layouts.py ---------------------------------------


def test_flag_names_cover_exactly_the_defined_flags() -> None:
    for t in L.FrameType:
        named = 0
        for bit in spectables.FLAG_NAMES.get(t, {}):
            named |= bit
        assert named == L.DEFINED_FLAGS[t], t.name


def test_field_notes_name_real_fields() -> None:
    tables = {t.name: L.BODIES[t] for t in L.FrameType} | spectables.LAYOUTS
    paths = {
        (name, row.field)
        for name, struct in tables.items()
        for row in spectables.layout_rows(name, struct)[0]
    }
    stale = set(spectables.FIELD_NOTES) - paths
    assert not stale, f"notes for fields that do not exist: {sorted(stale)}"


def test_enum_meanings_cover_every_member() -> None:
    for name, enum in spectables.ENUMS.items():
        assert set(spectables.ENUM_MEANINGS[name]) == set(enum), name


def test_gap_reasons_are_registry_codes() -> None:
    assert set(REGISTRY) >= spectables.GAP_REASONS


def test_walker_refuses_constructs_it_cannot_describe() -> None:
    weird = C.Struct("x" / C.Float32b)
    with pytest.raises(TypeError):
        spectables.layout_rows("X", weird)
    conditional = C.Struct("n" / C.Int8ub, "x" / C.If(C.this.n > 3, C.Int8ub))
    with pytest.raises(ValueError):
        spectables.layout_rows("X", conditional)


# -- the printed offsets are where the codec puts the fields --------------------------------

HDRS: F.Headers = (("k", b"v"),)
SAMPLES: list[F.Frame] = [
    F.Hello(max_frame_size=65536, heartbeat_ms=1234, client_name="c", auth_token=b"tok"),
    F.Welcome(7, 5000, 1 << 20, 99, 1000, 1, "srv"),
    F.Ping(0x0102030405060708),
    F.Pong(0x1112131415161718),
    F.Goaway(0x11, 1000, 500, (F.Position(1, 2, 3), F.Position(4, 5, 6)), "bye"),
    F.Error(0x0101, 0x10, 77, "bad topic"),
    F.Subscribe(sub_id=5, topic="t/a", since_kind=L.SinceKind.AFTER, since_epoch=9, since_seq=8),
    F.Subscribe(sub_id=6, topic="t/b", since_kind=L.SinceKind.LAST, since_count=40),
    F.Subscribe(sub_id=7, topic="t/c", since_kind=L.SinceKind.OLDEST, initial_credit=3),
    F.Subscribed(1, L.Outcome.GAP, 99, 50, 60, 10, 49, ErrorCode.HISTORY_EXPIRED),
    F.Subscribed(2, L.Outcome.RECOVERED, 99, 50, 60),
    F.Unsubscribe(3),
    F.Unsubscribed(3, 99, 42),
    F.Credit(3, 17),
    F.Ack(3, 41),
    F.Gap(3, 99, 5, 9, ErrorCode.SLOW_CONSUMER),
    F.Message(99, 42, "t/a", b"payload", HDRS),
    F.Message(99, 43, "t/a", b""),
    F.MessageBatch(99, 100, "t/a", (F.Record(b"x", HDRS), F.Record(b"yy", ()))),
    F.Publish(12, "t/a", b"p", HDRS),
    F.PublishBatch(13, "t/a", (F.Record(b"a"), F.Record(b"b"))),
    F.Puback(12, 99, 42, 2),
]


def _lookup(container: Any, path: str) -> Any:
    value = container
    for part in path.split("."):
        value = value[part]
    return value


@pytest.mark.spec("PW-FRAME-11")
@pytest.mark.parametrize("frame", SAMPLES, ids=lambda f: type(f).__name__)
def test_fixed_offsets_in_the_tables_match_real_encodings(frame: F.Frame) -> None:
    data = reference.encode_frame(frame)
    header = L.Header.parse(data[: L.HEADER_SIZE])
    payload = data[L.HEADER_SIZE :]
    struct = L.BODIES[L.FrameType(header.type)]
    parsed = struct.parse(payload, flags=header.flags)
    rows, _ = spectables.layout_rows(L.FrameType(header.type).name, struct)
    checked = 0
    for row in rows:
        if row.offset == "var" or not row.size.isdigit() or not row.type.startswith("u"):
            continue
        try:
            expected = _lookup(parsed, row.field)
        except (KeyError, TypeError):
            continue  # an optional field this sample does not carry
        if expected is None:
            continue
        start, size = int(row.offset), int(row.size)
        assert int.from_bytes(payload[start : start + size], "big") == expected, row
        checked += 1
    assert checked >= 1


def test_header_and_preface_tables_match_the_wire() -> None:
    rows, _ = spectables.layout_rows("Header", L.Header)
    assert [(r.offset, r.size, r.field, r.type) for r in rows] == [
        ("0", "4", "length", "u32"),
        ("4", "1", "type", "u8"),
        ("5", "1", "flags", "u8"),
    ]
    rows, _ = spectables.layout_rows("ClientPreface", L.ClientPreface)
    assert [r.offset for r in rows] == ["0", "4", "5", "6"]


def test_offsets_after_a_variable_field_read_var() -> None:
    rows, terminated = spectables.layout_rows("MESSAGE", L.Message)
    assert [(r.field, r.offset) for r in rows] == [
        ("epoch", "0"),
        ("seq", "8"),
        ("topic", "16"),
        ("headers", "var"),
        ("payload", "var"),
    ]
    assert not terminated
    assert spectables.layout_rows("HELLO", L.Hello)[1]


# -- the worked examples are exact -----------------------------------------------------------


def _decode_all(data: bytes, limit: int = 1 << 24) -> list[F.Frame]:
    decoder = FrameDecoder(limit)
    decoder.feed(data)
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    assert decoder.buffered == 0
    return out


def test_message_example_hex_decodes_to_the_documented_frame(doc: str) -> None:
    body = region(doc, "example message")
    hex_string = re.findall(r"```text\n([0-9a-f]+)\n```", body)
    assert len(hex_string) == 1
    (frame,) = _decode_all(bytes.fromhex(hex_string[0]))
    assert frame == F.Message(0x1234, 42, "news/eu", b"hello", (("ct", b"text/plain"),))


def _dump_bytes(body: str) -> bytes:
    """The bytes of an annotated hex dump: the hex column of every indented line."""
    out = bytearray()
    for line in body.splitlines():
        m = re.match(r"^  ((?:[0-9a-f]{2} )*[0-9a-f]{2})(?:\s|$)", line)
        if m:
            out += bytes.fromhex(m.group(1))
    return bytes(out)


def test_session_example_is_a_valid_conversation(doc: str) -> None:
    body = region(doc, "example session-start")
    chunks = body.split("\n\n")
    sent = {"C->S": bytearray(), "S->C": bytearray()}
    for chunk in chunks:
        direction = chunk.strip("`\ntex").split()[0]
        sent[direction] += _dump_bytes(chunk)
    client, server = bytes(sent["C->S"]), bytes(sent["S->C"])
    assert parse_preface(client[: L.PREFACE_SIZE]) == (1, 1)
    assert parse_preface(server[: L.PREFACE_SIZE]) == (1, 1)
    client_frames = _decode_all(client[L.PREFACE_SIZE :])
    server_frames = _decode_all(server[L.PREFACE_SIZE :])
    assert [type(f) for f in client_frames] == [F.Hello, F.Subscribe]
    assert [type(f) for f in server_frames] == [F.Welcome, F.Subscribed, F.Message]
    session = spectables.example_session()
    assert client == b"".join(data for d, _, data in session if d == "C->S")
    assert server == b"".join(data for d, _, data in session if d == "S->C")


def test_forwarding_example_shows_the_prefix_swap() -> None:
    pub, msg = spectables.example_publish(), spectables.example_message()
    assert (
        pub[L.HEADER_SIZE + L.PUBLISH_PREFIX_SIZE :] == msg[L.HEADER_SIZE + L.MESSAGE_PREFIX_SIZE :]
    )
    assert len(msg) - len(pub) == L.MESSAGE_PREFIX_SIZE - L.PUBLISH_PREFIX_SIZE == 12
    assert pub[5] == msg[5]  # the flags byte is copied


# -- the registry table ----------------------------------------------------------------------


def test_registry_table_in_spec_equals_errors_registry(doc: str) -> None:
    rows = [
        [cell.strip() for cell in line.strip("|").split(" | ")]
        for line in region(doc, "error-registry").splitlines()[2:]
        if line.startswith("|")
    ]
    parsed = {
        int(code, 16): (name, scope, retry, meaning)
        for code, name, scope, retry, _gap, meaning in rows
    }
    expected = {
        int(code): (
            code.name,
            info.scope.value,
            info.retry,
            info.meaning,
        )
        for code, info in REGISTRY.items()
    }
    assert parsed == expected


# -- §13 reference defaults match the reference server ---------------------------------------

#: §13 row label -> (ServerConfig field, how SPEC.md writes the default).
DEFAULT_ROWS: dict[str, tuple[str, Any]] = {
    "frame payload, client to server": ("max_frame_size", str),
    "connections per server": ("max_connections", str),
    "subscriptions per connection": ("max_subscriptions", str),
    "lag per subscription": ("max_lag", str),
    "history per topic, messages": ("history_count", str),
    "history per topic, bytes": ("history_bytes", lambda v: f"{v >> 20} MiB"),
    "outbound queue per connection": ("outbound_queue_bytes", lambda v: f"{v >> 20} MiB"),
    "handshake time": ("handshake_timeout", lambda v: f"{v:g} s"),
    "drain time after GOAWAY": ("drain_timeout", lambda v: f"{v:g} s"),
}


def test_resource_limit_defaults_match_the_reference_server(doc: str) -> None:
    config = ServerConfig()
    section = doc[doc.index("## 13. Resource limits") : doc.index("## 14. Test vectors")]
    table = {
        cells[0]: cells[4]
        for line in section.splitlines()
        if line.startswith("| ")
        for cells in [[c.strip() for c in line.strip("|").split(" | ")]]
        if len(cells) == 6
    }
    for label, (field, fmt) in DEFAULT_ROWS.items():
        assert table[label] == fmt(getattr(config, field)), label
    heartbeat = table["heartbeat interval H"]
    assert heartbeat.startswith(f"{config.heartbeat_ms} ms"), heartbeat


def test_every_admission_limit_names_a_real_serve_option_and_its_default(doc: str) -> None:
    """The second table of §13: each option exists in ``pushwire serve`` and the defaults
    that are plain numbers are the reference configuration's."""
    import argparse

    from pushwire.server import cmd_serve

    parser = argparse.ArgumentParser()
    cmd_serve.add_arguments(parser)
    known = {opt for action in parser._actions for opt in action.option_strings}
    section = doc[doc.index("## 13. Resource limits") : doc.index("## 14. Test vectors")]
    rows = [
        cells
        for line in section.splitlines()
        if line.startswith("| ")
        for cells in [[c.strip() for c in line.strip("|").split(" | ")]]
        if len(cells) == 4 and cells[0] != "Limit"
    ]
    assert len(rows) >= 7
    for label, option, _default, _code in rows:
        for name in re.findall(r"`(--[a-z-]+)`", option):
            assert name in known, (label, name)
    config = ServerConfig()
    defaults = {cells[1]: cells[2] for cells in rows}
    assert defaults["`--idle-timeout`"] == f"{config.idle_timeout:g} s"
    assert defaults["`--max-handshaking`"].startswith(f"{config.max_handshaking} ")
