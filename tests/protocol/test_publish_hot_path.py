"""ServerConnection.take_publishes: the publisher's hot path says what next_event says."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol import server_conn as sc
from pushwire.protocol.decoder import encode_preface

PREFACE = encode_preface(1, 1)

topics = st.sampled_from(["a", "a/b", "ünï/çødé", "bad//topic", "/lead", "x" * 255])
publishes = st.builds(
    F.Publish,
    st.integers(0, 2**32 - 1),
    topics,
    st.binary(max_size=200),
    st.one_of(st.none(), st.just((("k", b"v"),))),
)
others = st.sampled_from([F.Ping(5), F.Credit(9, 1), F.Unsubscribe(3)])
streams = st.lists(st.one_of(publishes, publishes, publishes, others), max_size=30)


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
    body), every other event as itself, and the bytes it queued on its own."""
    out: list[object] = []
    while True:
        run = conn.take_publishes() if fast else None
        if run is not None:
            data, spans = run
            out.extend((rid, topic, 0, data[s:e]) for rid, topic, s, e in spans)
            continue
        event = conn.next_event()
        if event is None:
            break
        if isinstance(event, sc.PublishRequested):
            out.append((event.request_id, event.topic, event.flags, event.body))
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


def test_a_run_of_publishes_is_taken_in_one_pass() -> None:
    conn = open_conn()
    conn.receive_data(b"".join(codec.encode_frame(F.Publish(i, "t", b"p")) for i in range(50)), 0.0)
    run = conn.take_publishes()
    assert run is not None and len(run[1]) == 50
    assert conn.buffered == 0 and conn.take_publishes() is None
