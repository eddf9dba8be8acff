"""ServerConnection.take_publishes: the publisher's hot path says what next_event says."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol import server_conn as sc
from pushwire.protocol.decoder import encode_preface
from pushwire.protocol.errors import RemoteProtocolError
from pushwire.protocol.events import Sentinel

PREFACE = encode_preface(1, 1)

topics = st.sampled_from(["a", "a/b", "ünï/çødé", "bad//topic", "/lead", "x" * 255])
publishes = st.builds(
    F.Publish,
    st.integers(0, 2**32 - 1),
    topics,
    st.binary(max_size=200),
    st.one_of(st.none(), st.just((("k", b"v"),))),
)
batches = st.builds(
    F.PublishBatch,
    st.integers(0, 2**32 - 1),
    topics,
    st.lists(st.builds(F.Record, st.binary(max_size=50)), min_size=1, max_size=5).map(tuple),
)
others = st.sampled_from([F.Ping(5), F.Credit(9, 1), F.Unsubscribe(3)])
streams = st.lists(st.one_of(publishes, publishes, batches, others), max_size=30)


def open_conn() -> sc.ServerConnection:
    conn = sc.ServerConnection(sc.ServerLimits(heartbeat_min_ms=10, heartbeat_ms=1000))
    hello = F.Hello(max_frame_size=1 << 20, heartbeat_ms=1000, client_name="t", auth_token=b"")
    conn.receive_data(PREFACE + codec.encode_frame(hello), 0.0)
    assert isinstance(conn.next_event(), sc.PrefaceReceived)
    conn.send_preface()
    assert isinstance(conn.next_event(), sc.HelloReceived)
    conn.accept(7, "srv", 0.0)
    return conn


def outcome(conn: sc.ServerConnection, fast: bool) -> list[object]:
    """What the connection makes of its buffer: publishes as (request_id, topic, flags,
    body, record count or 0), every other event as itself, and the bytes it queued on its
    own."""
    out: list[object] = []
    while True:
        run = conn.take_publishes() if fast else None
        if run is not None:
            data, spans = run
            out.extend((rid, topic, 0, data[s:e], n) for rid, topic, s, e, n in spans)
            continue
        event = conn.next_event()
        if isinstance(event, Sentinel):  # NEED_DATA (or PAUSED)
            break
        if isinstance(event, sc.PublishRequested):
            out.append((event.request_id, event.topic, event.flags, event.body, 0))
        elif isinstance(event, sc.PublishBatchRequested):
            out.append((event.request_id, event.topic, event.flags, event.body, event.count))
        else:
            out.append(event)
    out.append(conn.data_to_send())
    return out


@given(streams, st.data())
def test_take_publishes_agrees_with_next_event_at_any_split(
    frames: list[F.Frame], data: st.DataObject
) -> None:
    wire = b"".join(codec.encode_frame(f) for f in frames)
    cut = data.draw(st.integers(0, len(wire)))
    slow, fast = open_conn(), open_conn()
    expected: list[object] = []
    got: list[object] = []
    for part in (wire[:cut], wire[cut:]):
        slow.receive_data(part, 0.0)
        fast.receive_data(part, 0.0)
        expected += outcome(slow, fast=False)
        got += outcome(fast, fast=True)
    assert got == expected
    assert fast.buffered == slow.buffered


def test_a_malformed_batch_is_left_to_next_event() -> None:
    conn = open_conn()
    frame = bytearray(codec.encode_frame(F.PublishBatch(1, "t", (F.Record(b"abc"),))))
    frame[-4] = 9  # the record's length prefix no longer adds up
    conn.receive_data(bytes(frame), 0.0)
    assert conn.take_publishes() is None and conn.buffered == len(frame)


def test_a_batch_declaring_more_records_than_it_holds_is_left_to_next_event() -> None:
    conn = open_conn()
    frame = bytearray(codec.encode_frame(F.PublishBatch(1, "t", (F.Record(b"abc"),))))
    count_at = 6 + 4 + 1 + 1  # header, request_id, topic length, topic "t"
    frame[count_at : count_at + 2] = (2).to_bytes(2, "big")
    conn.receive_data(bytes(frame), 0.0)
    assert conn.take_publishes() is None and conn.buffered == len(frame)


@given(st.integers(0, 2**32 - 1), st.integers(1, 3))
def test_a_record_reaching_past_its_batch_is_left_to_next_event_whatever_follows(
    length: int, following: int
) -> None:
    """The record walk may read beyond its frame (into the frames after it, or off the
    buffer); it must still refuse the batch unless the records end exactly at its end."""
    records = (F.Record(b"abc"), F.Record(b"defg"))
    frame = bytearray(codec.encode_frame(F.PublishBatch(1, "t", records)))
    first_prefix = 6 + 4 + 1 + 1 + 2  # header, request_id, topic length, "t", count
    frame[first_prefix : first_prefix + 4] = length.to_bytes(4, "big")
    rest = b"".join(codec.encode_frame(F.Publish(2 + i, "t", b"p" * 9)) for i in range(following))
    slow, fast = open_conn(), open_conn()
    expected: list[object] = []
    got: list[object] = []
    for conn, out, use_fast in ((slow, expected, False), (fast, got, True)):
        conn.receive_data(bytes(frame) + rest, 0.0)
        try:
            out.extend(outcome(conn, fast=use_fast))
        except RemoteProtocolError as exc:
            out.append(exc.code)
    assert got == expected


@given(streams, st.binary(min_size=1, max_size=40), st.data())
def test_damaged_input_gets_the_same_outcome_either_way(
    frames: list[F.Frame], noise: bytes, data: st.DataObject
) -> None:
    wire = bytearray(b"".join(codec.encode_frame(f) for f in frames))
    at = data.draw(st.integers(0, len(wire)))
    wire[at : at + len(noise)] = noise
    slow, fast = open_conn(), open_conn()
    slow.receive_data(bytes(wire), 0.0)
    fast.receive_data(bytes(wire), 0.0)
    expected: list[object] = []
    got: list[object] = []
    for conn, out, use_fast in ((slow, expected, False), (fast, got, True)):
        try:
            out.extend(outcome(conn, fast=use_fast))
        except RemoteProtocolError as exc:
            out.append(exc.code)
    assert got == expected


def test_a_run_of_publishes_is_taken_in_one_pass() -> None:
    conn = open_conn()
    conn.receive_data(b"".join(codec.encode_frame(F.Publish(i, "t", b"p")) for i in range(50)), 0.0)
    run = conn.take_publishes()
    assert run is not None and len(run[1]) == 50
    assert conn.buffered == 0 and conn.take_publishes() is None
