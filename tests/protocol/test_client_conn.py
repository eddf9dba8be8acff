"""The sans-I/O client state machine, driven by hand-built server bytes and a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.client_conn import (
    RECEIVE_TRANSITIONS,
    SEND_TRANSITIONS,
    ClientConnection,
    ClientState,
    ConnectionClosed,
    EpochReset,
    GapReceived,
    GoawayReceived,
    MessageReceived,
    PeerError,
    PublishAcked,
    RequestFailed,
    Since,
    SubscriptionConfirmed,
    SubStatus,
    UnsubscribeConfirmed,
    Welcomed,
    is_terminal,
)
from pushwire.protocol.decoder import FrameDecoder, encode_preface
from pushwire.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from pushwire.protocol.events import NEED_DATA, PAUSED, Event, Sentinel
from pushwire.protocol.layouts import (
    AT_LEAST_ONCE,
    CLIENT_SENDS,
    HEADER_SIZE,
    INITIAL_MAX_FRAME_SIZE,
    MAGIC,
    MAX_MAX_FRAME_SIZE,
    PATTERN,
    PREFACE_SIZE,
    SERVER_SENDS,
    FrameType,
    Outcome,
    SinceKind,
)

EPOCH = 0xE0
H = 5.0  # heartbeat interval in seconds (WELCOME.heartbeat_ms 5000)
WELCOME = F.Welcome(
    connection_id=7,
    heartbeat_ms=5000,
    max_frame_size=INITIAL_MAX_FRAME_SIZE,
    max_subscriptions=100,
    max_lag=1000,
    slow_consumer_policy=1,
    server_name="scripted",
)


def enc(*frames: F.Frame) -> bytes:
    return b"".join(codec.encode_frame(f) for f in frames)


def server_hello() -> bytes:
    return encode_preface(1, 1) + enc(WELCOME)


def decode_all(data: bytes) -> list[F.Frame]:
    decoder = FrameDecoder(MAX_MAX_FRAME_SIZE)
    decoder.feed(data)
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    assert decoder.buffered == 0
    return out


def opened(now: float = 0.0, max_frame_size: int = 1 << 20) -> ClientConnection:
    conn = ClientConnection()
    conn.initiate("test", max_frame_size=max_frame_size, now=now)
    conn.receive_data(server_hello(), now)
    assert [type(e) for e in drain(conn)] == [Welcomed]
    return conn


def subscribed(
    conn: ClientConnection,
    topic: str = "a/b",
    *,
    credit: int = 10,
    start: int = 1,
    at_least_once: bool = False,
) -> int:
    sub_id, _ = conn.subscribe(topic, at_least_once=at_least_once, initial_credit=credit)
    conn.receive_data(enc(F.Subscribed(sub_id, Outcome.NEW, EPOCH, start, start - 1)), 0)
    assert [type(e) for e in drain(conn)] == [SubscriptionConfirmed]
    return sub_id


def msg(seq: int, topic: str = "a/b", payload: bytes = b"x", epoch: int = EPOCH) -> bytes:
    return enc(F.Message(epoch, seq, topic, payload))


def drain(conn: ClientConnection) -> list[Event]:
    """Every event available now."""
    return list(conn.events())


def failure(conn: ClientConnection) -> RemoteProtocolError:
    """The violation next_event() raises, after the events before it; the machine is
    CLOSED and says no more."""
    with pytest.raises(RemoteProtocolError) as info:
        while not isinstance(conn.next_event(), Sentinel):
            pass
    assert conn.state is ClientState.CLOSED
    assert conn.close_code == info.value.code
    assert conn.next_event() is PAUSED
    return info.value


def assert_fails_with(conn: ClientConnection, data: bytes, code: ErrorCode) -> RemoteProtocolError:
    """The machine rejects ``data`` with ``code``: next_event() raises RemoteProtocolError
    carrying it, with ERROR(code) queued for the wire."""
    conn.receive_data(data, 1.0)
    error_raised = failure(conn)
    assert error_raised.code == code, error_raised
    (error,) = decode_all(conn.data_to_send())
    assert isinstance(error, F.Error)
    assert (error.code, error.request_type, error.request_id) == (code, 0, 0)
    # Later input is ignored.
    conn.receive_data(msg(1), 2.0)
    assert drain(conn) == []
    return error_raised


# -- handshake --------------------------------------------------------------------------------


@pytest.mark.spec("PW-PREFACE-3", "PW-PREFACE-8", "PW-HS-1", "PW-PREFACE-5")
def test_initiate_sends_preface_and_hello_back_to_back() -> None:
    conn = ClientConnection()
    data = conn.initiate("me", b"tok", max_frame_size=1 << 20, heartbeat_ms=2000)
    assert data[:PREFACE_SIZE] == MAGIC + bytes([1, 1, 0, 0])
    assert decode_all(data[PREFACE_SIZE:]) == [F.Hello(1 << 20, 2000, "me", b"tok")]
    assert conn.state is ClientState.PREFACE_SENT


@pytest.mark.spec("PW-HS-4")
@pytest.mark.parametrize("size", [INITIAL_MAX_FRAME_SIZE - 1, MAX_MAX_FRAME_SIZE + 1])
def test_initiate_refuses_max_frame_size_outside_the_spec_range(size: int) -> None:
    with pytest.raises(LocalProtocolError) as info:
        ClientConnection().initiate("me", max_frame_size=size)
    assert info.value.code == ErrorCode.FIELD_OUT_OF_RANGE


def test_welcome_opens_the_connection_and_reports_server_limits() -> None:
    conn = ClientConnection()
    conn.initiate("me")
    conn.receive_data(server_hello(), 0.0)
    (event,) = drain(conn)
    assert event == Welcomed(7, 5000, INITIAL_MAX_FRAME_SIZE, 100, 1000, 1, "scripted", 1)
    assert conn.state is ClientState.OPEN
    assert conn.peer_max_frame_size == INITIAL_MAX_FRAME_SIZE


def test_handshake_fed_one_byte_at_a_time() -> None:
    conn = ClientConnection()
    conn.initiate("me")
    data = server_hello() + enc(F.Ping(9))
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1], 0.0)
    assert [type(e) for e in drain(conn)] == [Welcomed]
    assert decode_all(conn.data_to_send()) == [F.Pong(9)]


def _script_events(pieces: list[bytes]) -> tuple[list[object], bytes]:
    conn = opened()
    sid = subscribed(conn, credit=10)
    for piece in pieces:
        conn.receive_data(piece, 0.0)
    assert sid == 1
    return drain(conn), conn.data_to_send()


SCRIPT = (
    msg(1)
    + enc(F.MessageBatch(EPOCH, 2, "a/b", (F.Record(b"p", ()), F.Record(b"q", ()))))
    + enc(F.Ping(5), F.Gap(1, EPOCH, 4, 6, ErrorCode.SLOW_CONSUMER))
    + msg(7, payload=b"z" * 300)
)


@given(st.lists(st.integers(0, len(SCRIPT)), max_size=12))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    cuts = sorted(cuts)
    bounds = zip([0, *cuts], [*cuts, len(SCRIPT)], strict=True)
    pieces = [SCRIPT[a:b] for a, b in bounds if b > a]  # b"" would mean EOF
    assert _script_events(pieces) == _script_events([SCRIPT])


def test_whole_script_with_trailing_partial_frame_waits_for_the_rest() -> None:
    events, _ = _script_events([SCRIPT + msg(8)[:-1]])
    assert [getattr(e, "seq", "gap") for e in events] == [1, 2, 3, "gap", 7]


@pytest.mark.spec("PW-PREFACE-7")
def test_server_with_no_common_version_is_unsupported_version_and_nothing_is_sent() -> None:
    conn = ClientConnection()
    conn.initiate("me")
    conn.receive_data(encode_preface(0, 3), 0.0)
    event = failure(conn)
    assert event.code == ErrorCode.UNSUPPORTED_VERSION
    assert conn.data_to_send() == b""  # no framing was agreed


def test_server_choosing_a_version_we_did_not_offer_is_unsupported_version() -> None:
    conn = ClientConnection()
    conn.initiate("me")
    conn.receive_data(encode_preface(2, 2), 0.0)
    assert failure(conn).code == ErrorCode.UNSUPPORTED_VERSION


def test_bad_server_magic_is_bad_preface() -> None:
    conn = ClientConnection()
    conn.initiate("me")
    conn.receive_data(b"HTTP/1.1 400 Bad Request\r\n", 0.0)
    assert failure(conn).code == ErrorCode.BAD_PREFACE


def test_server_preface_reserved_bytes_are_reserved_bits_set() -> None:
    conn = ClientConnection()
    conn.initiate("me")
    conn.receive_data(MAGIC + bytes([1, 1, 0, 1]), 0.0)
    assert failure(conn).code == ErrorCode.RESERVED_BITS_SET


def test_handshake_rejection_is_reported_by_server() -> None:
    conn = ClientConnection()
    conn.initiate("me", b"wrong")
    reject = F.Error(ErrorCode.UNAUTHENTICATED, 0, 0, "bad token")
    conn.receive_data(encode_preface(1, 1) + enc(reject), 0.0)
    (event,) = drain(conn)
    assert event == PeerError(ErrorCode.UNAUTHENTICATED, "bad token")
    assert conn.state is ClientState.CLOSED
    assert conn.data_to_send() == b""
    assert is_terminal(event.code)
    assert not is_terminal(ErrorCode.TOO_MANY_CONNECTIONS)
    assert not is_terminal(0x7777)


@pytest.mark.parametrize("frame", [F.Ping(1), F.Puback(1, 1, 1, 1), F.Goaway(0, 0, 0, (), "")])
def test_anything_but_welcome_or_error_before_welcome_is_unexpected_frame(frame: F.Frame) -> None:
    conn = ClientConnection()
    conn.initiate("me")
    assert_fails_with(conn, encode_preface(1, 1) + enc(frame), ErrorCode.UNEXPECTED_FRAME)


@pytest.mark.spec("PW-FRAME-2", "PW-FRAME-10")
def test_frame_larger_than_initial_limit_before_welcome_is_rejected_from_the_header() -> None:
    conn = ClientConnection()
    conn.initiate("me", max_frame_size=1 << 20)
    header = (INITIAL_MAX_FRAME_SIZE + 1).to_bytes(4, "big") + bytes([FrameType.WELCOME, 0])
    assert_fails_with(conn, encode_preface(1, 1) + header, ErrorCode.FRAME_TOO_LARGE)


def test_after_welcome_our_advertised_limit_applies() -> None:
    conn = opened(max_frame_size=20000)
    sid = subscribed(conn, credit=10)
    conn.receive_data(msg(1, payload=b"x" * 19000), 0)  # > 16384, < 20000: fine
    assert [type(e) for e in drain(conn)] == [MessageReceived]
    header = (20001).to_bytes(4, "big") + bytes([FrameType.MESSAGE, 0])
    assert_fails_with(conn, header, ErrorCode.FRAME_TOO_LARGE)
    assert sid == 1


@pytest.mark.spec("PW-HS-7")
@pytest.mark.parametrize(
    ("max_frame_size", "heartbeat_ms"),
    [(100, 5000), (MAX_MAX_FRAME_SIZE + 1, 5000), (16384, 0), (16384, 600_001)],
)
def test_welcome_with_out_of_range_limits_is_field_out_of_range(
    max_frame_size: int, heartbeat_ms: int
) -> None:
    conn = ClientConnection()
    conn.initiate("me")
    bad = F.Welcome(1, heartbeat_ms, max_frame_size, 1, 1, 0, "s")
    assert_fails_with(conn, encode_preface(1, 1) + enc(bad), ErrorCode.FIELD_OUT_OF_RANGE)


@pytest.mark.spec("PW-HS-3")
def test_request_level_error_before_welcome_is_unexpected() -> None:
    conn = ClientConnection()
    conn.initiate("me")
    err = F.Error(ErrorCode.FORBIDDEN, FrameType.SUBSCRIBE, 1, "")
    assert_fails_with(conn, encode_preface(1, 1) + enc(err), ErrorCode.UNEXPECTED_FRAME)


def test_eof_before_the_server_preface_is_a_plain_close() -> None:
    conn = ClientConnection()
    conn.initiate("me")
    conn.receive_data(b"", 0.0)
    (event,) = drain(conn)
    assert isinstance(event, ConnectionClosed) and not event.after_goaway


def test_requests_before_the_handshake_are_the_callers_mistake() -> None:
    conn = ClientConnection()
    conn.initiate("me")
    with pytest.raises(LocalProtocolError) as info:
        conn.subscribe("a")
    assert info.value.code == ErrorCode.UNEXPECTED_FRAME
    with pytest.raises(LocalProtocolError):
        conn.initiate("again")


# -- frame-level rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [F.Hello(16384, 0, "x", b""), F.Subscribe(1, "t"), F.Ack(1, 1), F.Publish(1, "t", b"")],
)
def test_client_only_frames_from_the_server_are_unexpected(frame: F.Frame) -> None:
    assert_fails_with(opened(), enc(frame), ErrorCode.UNEXPECTED_FRAME)


def test_second_welcome_is_unexpected() -> None:
    assert_fails_with(opened(), enc(WELCOME), ErrorCode.UNEXPECTED_FRAME)


@pytest.mark.spec("PW-FRAME-8")
def test_unknown_ignorable_frames_are_skipped() -> None:
    conn = opened()
    conn.receive_data(enc(F.Unknown(0xF0, 0x0F, b"whatever"), F.Ping(3)), 0.0)
    assert drain(conn) == []
    assert decode_all(conn.data_to_send()) == [F.Pong(3)]
    assert conn.state is ClientState.OPEN


def test_unknown_fatal_frame_type_is_unknown_frame_type() -> None:
    assert_fails_with(opened(), enc(F.Unknown(0x70, 0, b"")), ErrorCode.UNKNOWN_FRAME_TYPE)


def test_reserved_flag_bits_are_reserved_bits_set() -> None:
    data = bytearray(enc(F.Ping(1)))
    data[5] = 0x80
    assert_fails_with(opened(), bytes(data), ErrorCode.RESERVED_BITS_SET)


def test_truncated_payload_is_malformed_frame() -> None:
    good = enc(F.Ping(1))
    bad = (8 - 1).to_bytes(4, "big") + good[4:HEADER_SIZE] + good[HEADER_SIZE:-1]
    assert_fails_with(opened(), bad, ErrorCode.MALFORMED_FRAME)


def test_invalid_utf8_in_a_text_field_is_invalid_utf8() -> None:
    body = (0).to_bytes(2, "big") + b"\x00" + (0).to_bytes(4, "big") + b"\x00\x01\xff"
    data = len(body).to_bytes(4, "big") + bytes([FrameType.ERROR, 0]) + body
    assert_fails_with(opened(), data, ErrorCode.INVALID_UTF8)


@pytest.mark.spec("PW-CLIENT-5")
@pytest.mark.parametrize("cut", [3, 7])
def test_eof_in_the_middle_of_a_frame_is_a_lost_connection(cut: int) -> None:
    """Not MALFORMED_FRAME (which is terminal): the server has gone, nothing is sent back,
    and the connection is retried like any other EOF."""
    conn = opened()
    conn.receive_data(enc(F.Ping(1))[:cut], 0)
    conn.receive_data(b"", 0)
    event = conn.next_event()
    assert isinstance(event, ConnectionClosed) and "inside a frame" in event.message
    assert conn.state is ClientState.CLOSED
    assert conn.data_to_send() == b""


def test_eof_after_a_whole_header_that_fails_a_header_check_keeps_its_code() -> None:
    conn = opened()
    conn.receive_data(bytes.fromhex("000000087d00"), 0)  # unknown type 0x7d, no payload yet
    conn.receive_data(b"", 0)
    assert failure(conn).code == ErrorCode.UNKNOWN_FRAME_TYPE


def test_a_whole_malformed_frame_before_eof_is_still_malformed() -> None:
    conn = opened()
    data = enc(F.Ping(1))
    conn.receive_data(codec.encode_header(9, FrameType.PING, 0) + data[6:] + b"x", 0)
    conn.receive_data(b"", 0)
    assert failure(conn).code == ErrorCode.MALFORMED_FRAME


@pytest.mark.spec("PW-CLIENT-13")
def test_messages_ahead_of_a_connection_error_are_delivered_first() -> None:
    conn = opened()
    sid = subscribed(conn, credit=5)
    error = enc(F.Error(ErrorCode.SHUTTING_DOWN, 0, 0, "restarting"))
    conn.receive_data(msg(1) + msg(2) + error, 0)
    events = drain(conn)
    assert [type(e).__name__ for e in events] == ["MessageReceived"] * 2 + ["PeerError"]
    view = conn.subscription(sid)
    assert view is not None and view.last_delivered == 2
    assert conn.state is ClientState.CLOSED and conn.data_to_send() == b""


@pytest.mark.spec("PW-HB-2")
def test_ping_gets_a_pong_with_the_same_opaque() -> None:
    conn = opened()
    conn.receive_data(enc(F.Ping(0xDEAD), F.Ping(0xBEEF)), 0)
    assert drain(conn) == []  # the PONGs are made as the PINGs are parsed
    assert decode_all(conn.data_to_send()) == [F.Pong(0xDEAD), F.Pong(0xBEEF)]
    assert conn.data_to_send() == b""


@pytest.mark.spec("PW-ERR-3")
def test_connection_level_error_from_the_server_closes() -> None:
    conn = opened()
    conn.receive_data(enc(F.Error(ErrorCode.SLOW_CONSUMER, 0, 0, "too slow")), 0)
    assert drain(conn) == [PeerError(ErrorCode.SLOW_CONSUMER, "too slow")]
    assert conn.state is ClientState.CLOSED
    assert conn.data_to_send() == b""


@pytest.mark.spec("PW-ERR-6")
def test_unknown_error_codes_are_kept_as_integers() -> None:
    conn = opened()
    conn.receive_data(enc(F.Error(0x7ABC, 0, 0, "new")), 0)
    assert drain(conn) == [PeerError(0x7ABC, "new")]


# -- subscriptions: ordering ------------------------------------------------------------------


def test_subscribe_sends_the_requested_position_and_credit() -> None:
    conn = opened()
    sub_id, data = conn.subscribe("a/b", Since.after(5, 9), at_least_once=True, initial_credit=32)
    assert decode_all(data) == [
        F.Subscribe(sub_id, "a/b", SinceKind.AFTER, 5, 9, 0, 32, at_least_once=True)
    ]
    _, data = conn.subscribe("c", Since.last(4))
    assert decode_all(data)[0].since_count == 4  # type: ignore[union-attr]


def test_messages_in_order_become_events() -> None:
    conn = opened()
    sid = subscribed(conn, start=5)
    conn.receive_data(msg(5) + msg(6, payload=b"six"), 0)
    assert drain(conn) == [
        MessageReceived(sid, "a/b", EPOCH, 5, None, b"x"),
        MessageReceived(sid, "a/b", EPOCH, 6, None, b"six"),
    ]


@pytest.mark.spec("PW-PUB-10")
def test_a_batch_expands_to_one_event_per_record() -> None:
    conn = opened()
    sid = subscribed(conn, start=3)
    records = (F.Record(b"a", (("k", b"v"),)), F.Record(b"b", ()), F.Record(b"c", ()))
    conn.receive_data(enc(F.MessageBatch(EPOCH, 3, "a/b", records)) + msg(6), 0)
    events = drain(conn)
    assert [(e.seq, e.payload, e.headers) for e in events] == [  # type: ignore[union-attr]
        (3, b"a", (("k", b"v"),)),
        (4, b"b", ()),
        (5, b"c", ()),
        (6, b"x", None),
    ]
    assert conn.subscription(sid).credit == 6  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("seqs", "why"),
    [([2], "first message is not start_seq"), ([1, 1], "duplicate"), ([1, 3], "hole")],
)
@pytest.mark.spec("PW-ORDER-7", "PW-ERR-7", "PW-ERR-11")
def test_sequence_violations_are_protocol_errors(seqs: list[int], why: str) -> None:
    conn = opened()
    subscribed(conn)
    event = assert_fails_with(conn, b"".join(msg(s) for s in seqs), ErrorCode.PROTOCOL_ERROR)
    assert "seq" in str(event), why


def test_reordered_batch_is_a_protocol_error() -> None:
    conn = opened()
    subscribed(conn)
    batch = F.MessageBatch(EPOCH, 2, "a/b", (F.Record(b""),))
    assert_fails_with(conn, msg(1) + msg(2) + enc(batch), ErrorCode.PROTOCOL_ERROR)


@pytest.mark.spec("PW-ORDER-13")
def test_push_in_a_new_epoch_not_starting_at_one_is_a_protocol_error() -> None:
    conn = opened()
    subscribed(conn)
    assert_fails_with(conn, msg(1) + msg(2, epoch=EPOCH + 1), ErrorCode.PROTOCOL_ERROR)


@pytest.mark.spec("PW-ORDER-13", "PW-ACK-4", "PW-RESUME-4")
def test_history_reset_while_subscribed_continues_at_one_in_the_new_epoch() -> None:
    conn = opened()
    sid = subscribed(conn, start=5, credit=10, at_least_once=True)
    conn.receive_data(msg(5) + msg(6) + msg(1, epoch=77) + msg(2, epoch=77), 0)
    events = drain(conn)
    assert events[2] == EpochReset(sid, "a/b", EPOCH, 77)
    assert [(getattr(e, "epoch", None), getattr(e, "seq", None)) for e in events] == [
        (EPOCH, 5),
        (EPOCH, 6),
        (None, None),
        (77, 1),
        (77, 2),
    ]
    view = conn.subscription(sid)
    assert view is not None
    assert (view.epoch, view.last_acked, view.credit) == (77, 0, 6)  # credit carries over
    assert decode_all(conn.ack(sid, 2)) == [F.Ack(sid, 2)]


def test_history_reset_may_start_with_a_gap_from_one() -> None:
    conn = opened()
    sid = subscribed(conn)
    conn.receive_data(enc(F.Gap(sid, 77, 1, 3, ErrorCode.SLOW_CONSUMER)) + msg(4, epoch=77), 0)
    assert [type(e) for e in drain(conn)] == [EpochReset, GapReceived, MessageReceived]


def test_gap_frame_skips_explicitly_and_delivery_continues_after_it() -> None:
    conn = opened()
    sid = subscribed(conn)
    gap = F.Gap(sid, EPOCH, 2, 4, ErrorCode.SLOW_CONSUMER)
    conn.receive_data(msg(1) + enc(gap) + msg(5), 0)
    events = drain(conn)
    assert events[1] == GapReceived(sid, "a/b", EPOCH, 2, 4, ErrorCode.SLOW_CONSUMER)
    assert [type(e) for e in events] == [MessageReceived, GapReceived, MessageReceived]
    assert conn.subscription(sid).credit == 8  # type: ignore[union-attr]  # GAP costs none


@pytest.mark.parametrize(("first", "last"), [(3, 4), (1, 1)])
def test_gap_not_starting_at_the_next_sequence_is_a_protocol_error(first: int, last: int) -> None:
    conn = opened()
    sid = subscribed(conn)
    data = msg(1) + enc(F.Gap(sid, EPOCH, first, last, ErrorCode.HISTORY_EXPIRED))
    assert_fails_with(conn, data, ErrorCode.PROTOCOL_ERROR)


@pytest.mark.spec("PW-CLIENT-18")
def test_gap_for_an_unknown_subscription_is_a_protocol_error() -> None:
    assert_fails_with(opened(), enc(F.Gap(9, EPOCH, 1, 1, 0)), ErrorCode.PROTOCOL_ERROR)


def test_message_for_a_topic_never_subscribed_is_a_protocol_error() -> None:
    conn = opened()
    subscribed(conn, "a/b")
    assert_fails_with(conn, msg(1, topic="other"), ErrorCode.PROTOCOL_ERROR)


@pytest.mark.spec("PW-CLIENT-18")
def test_message_before_subscribed_is_a_protocol_error() -> None:
    conn = opened()
    conn.subscribe("a/b")
    assert_fails_with(conn, msg(1), ErrorCode.PROTOCOL_ERROR)


@pytest.mark.spec("PW-CLIENT-16")
def test_subscribed_for_an_unknown_sub_id_is_a_protocol_error() -> None:
    data = enc(F.Subscribed(42, Outcome.NEW, EPOCH, 1, 0))
    assert_fails_with(opened(), data, ErrorCode.PROTOCOL_ERROR)


@pytest.mark.spec("PW-CLIENT-16")
def test_second_subscribed_for_the_same_sub_id_is_a_protocol_error() -> None:
    conn = opened()
    sid = subscribed(conn)
    data = enc(F.Subscribed(sid, Outcome.NEW, EPOCH, 1, 0))
    assert_fails_with(conn, data, ErrorCode.PROTOCOL_ERROR)


# -- SUBSCRIBED must answer what was asked ----------------------------------------------------

AFTER_5_9 = Since.after(5, 9)


@pytest.mark.parametrize(
    ("since", "reply", "ok"),
    [
        (Since.new(), F.Subscribed(1, Outcome.NEW, 5, 11, 10), True),
        (Since.new(), F.Subscribed(1, Outcome.NEW, 5, 3, 10), False),
        (Since.new(), F.Subscribed(1, Outcome.RECOVERED, 5, 11, 10), False),
        (Since.new(), F.Subscribed(1, Outcome.NEW, 0, 11, 10), False),  # epoch 0
        (AFTER_5_9, F.Subscribed(1, Outcome.RECOVERED, 5, 10, 20), True),
        (AFTER_5_9, F.Subscribed(1, Outcome.RECOVERED, 5, 11, 20), False),
        (AFTER_5_9, F.Subscribed(1, Outcome.RECOVERED, 6, 10, 20), False),
        (AFTER_5_9, F.Subscribed(1, Outcome.GAP, 5, 15, 20, 10, 14, 0x200), True),
        (AFTER_5_9, F.Subscribed(1, Outcome.GAP, 5, 16, 20, 10, 14, 0x200), False),
        (AFTER_5_9, F.Subscribed(1, Outcome.GAP, 5, 15, 20, 11, 14, 0x200), False),
        (AFTER_5_9, F.Subscribed(1, Outcome.EPOCH_CHANGED, 6, 1, 3), True),
        (AFTER_5_9, F.Subscribed(1, Outcome.EPOCH_CHANGED, 5, 1, 3), False),
        (AFTER_5_9, F.Subscribed(1, Outcome.EPOCH_CHANGED, 6, 0, 3), False),  # start_seq 0
        (AFTER_5_9, F.Subscribed(1, Outcome.RECOVERED, 5, 30, 20), False),  # past head+1
        (Since.last(3), F.Subscribed(1, Outcome.RECOVERED, 5, 8, 10), True),
        (Since.last(30), F.Subscribed(1, Outcome.RECOVERED, 5, 1, 10), True),
        (Since.last(3), F.Subscribed(1, Outcome.RECOVERED, 5, 9, 10), False),
        (Since.last(9), F.Subscribed(1, Outcome.GAP, 5, 6, 10, 2, 5, 0x200), True),
        (Since.oldest(), F.Subscribed(1, Outcome.RECOVERED, 5, 4, 10), True),
        (Since.oldest(), F.Subscribed(1, Outcome.NEW, 5, 11, 10), False),
    ],
)
@pytest.mark.spec("PW-SUB-7")
@pytest.mark.spec("PW-CLIENT-16")
@pytest.mark.spec("PW-CLIENT-17")
def test_subscribed_reply_is_checked_against_the_request(
    since: Since, reply: F.Subscribed, ok: bool
) -> None:
    conn = opened()
    conn.subscribe("a/b", since)
    conn.receive_data(enc(reply), 0)
    if ok:
        assert isinstance(drain(conn)[0], SubscriptionConfirmed)
        assert conn.subscription(1).status is SubStatus.ACTIVE  # type: ignore[union-attr]
    else:
        assert failure(conn).code == ErrorCode.PROTOCOL_ERROR


def test_gap_outcome_reports_the_range_and_reason() -> None:
    conn = opened()
    conn.subscribe("a/b", AFTER_5_9)
    conn.receive_data(enc(F.Subscribed(1, Outcome.GAP, 5, 15, 20, 10, 14, 0x200)), 0)
    (event,) = drain(conn)
    assert event == SubscriptionConfirmed(
        1, "a/b", Outcome.GAP, 5, 15, 20, 10, 14, ErrorCode.HISTORY_EXPIRED
    )
    conn.receive_data(msg(15, epoch=5), 0)
    assert [e.seq for e in drain(conn)] == [15]  # type: ignore[union-attr]


# -- flow control -----------------------------------------------------------------------------


@pytest.mark.spec("PW-FLOW-5")
def test_message_beyond_credit_is_a_flow_control_error() -> None:
    conn = opened()
    subscribed(conn, credit=2)
    assert_fails_with(conn, msg(1) + msg(2) + msg(3), ErrorCode.FLOW_CONTROL_ERROR)


def test_batch_beyond_credit_is_a_flow_control_error() -> None:
    conn = opened()
    subscribed(conn, credit=2)
    batch = F.MessageBatch(EPOCH, 1, "a/b", (F.Record(b""),) * 3)
    assert_fails_with(conn, enc(batch), ErrorCode.FLOW_CONTROL_ERROR)


@pytest.mark.spec("PW-FLOW-5")
def test_credit_sent_after_a_push_arrived_does_not_count_for_it() -> None:
    """A top-up written while message 3 already sat in the input buffer cannot have been
    seen by the server when it sent message 3."""
    conn = opened()
    sid = subscribed(conn, credit=2)
    conn.receive_data(msg(1) + msg(2) + msg(3), 0)
    assert [type(e) for e in (conn.next_event(), conn.next_event())] == [MessageReceived] * 2
    conn.grant_credit(sid, 2)  # written now: after message 3's first byte arrived
    assert failure(conn).code == ErrorCode.FLOW_CONTROL_ERROR


@pytest.mark.spec("PW-FLOW-5")
@given(cut=st.integers(0, 200))
def test_credit_sent_before_a_push_arrived_counts_however_tcp_splits(cut: int) -> None:
    """Messages 1-2 use the initial credit; the CREDIT goes out once message 2 is read, and
    message 3 is accepted whether its bytes came in the same read as message 2 or not, as
    long as its first byte came after the CREDIT was sent."""
    conn = opened()
    sid = subscribed(conn, credit=2)
    first = msg(1) + msg(2)
    rest = msg(3) + msg(4)
    conn.receive_data(first, 0)
    assert len(drain(conn)) == 2
    conn.grant_credit(sid, 2)
    cut = min(cut, len(rest))
    for part in (rest[:cut], rest[cut:]):
        if part:
            conn.receive_data(part, 0)
        drain(conn)
    assert conn.state is ClientState.OPEN
    view = conn.subscription(sid)
    assert view is not None and view.last_delivered == 4 and view.credit == 0


def test_zero_initial_credit_means_no_message_until_credit() -> None:
    conn = opened()
    sid = subscribed(conn, credit=0)
    data = conn.grant_credit(sid, 2)
    assert decode_all(data) == [F.Credit(sid, 2)]
    conn.receive_data(msg(1) + msg(2), 0)
    assert len(drain(conn)) == 2
    assert_fails_with(conn, msg(3), ErrorCode.FLOW_CONTROL_ERROR)


def test_granted_credit_lets_more_messages_through() -> None:
    conn = opened()
    sid = subscribed(conn, credit=1)
    conn.receive_data(msg(1), 0)
    conn.grant_credit(sid, 1)
    conn.receive_data(msg(2), 0)
    assert [e.seq for e in drain(conn)] == [1, 2]  # type: ignore[union-attr]


def test_credit_overflow_and_zero_credit_are_refused_locally() -> None:
    conn = opened()
    sid = subscribed(conn, credit=0xFFFF_FFFF)
    with pytest.raises(LocalProtocolError) as info:
        conn.grant_credit(sid, 1)
    assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR
    with pytest.raises(LocalProtocolError):
        conn.grant_credit(sid, 0)


# -- unsubscribe ------------------------------------------------------------------------------


@pytest.mark.spec("PW-SUB-17", "PW-SUB-18")
def test_messages_for_a_topic_being_unsubscribed_are_dropped() -> None:
    conn = opened()
    sid = subscribed(conn, credit=1)
    assert decode_all(conn.unsubscribe(sid)) == [F.Unsubscribe(sid)]
    # in flight: even beyond credit, out of order, or a GAP: nobody cares any more
    conn.receive_data(msg(1) + msg(7) + enc(F.Gap(sid, EPOCH, 9, 9, 0)), 0)
    assert drain(conn) == []
    conn.receive_data(enc(F.Unsubscribed(sid, EPOCH, 7)), 0)
    assert drain(conn) == [UnsubscribeConfirmed(sid, "a/b", EPOCH, 7)]
    assert conn.subscription(sid) is None
    assert_fails_with(conn, msg(8), ErrorCode.PROTOCOL_ERROR)


def test_resubscribing_while_unsubscribe_is_in_flight() -> None:
    conn = opened()
    old = subscribed(conn)
    conn.unsubscribe(old)
    new, _ = conn.subscribe("a/b", Since.after(EPOCH, 3), initial_credit=5)
    assert new != old
    conn.receive_data(
        msg(4)  # still the old subscription's: dropped
        + enc(F.Unsubscribed(old, EPOCH, 4))
        + enc(F.Subscribed(new, Outcome.RECOVERED, EPOCH, 4, 4))
        + msg(4),
        0,
    )
    events = drain(conn)
    assert [type(e) for e in events] == [
        UnsubscribeConfirmed,
        SubscriptionConfirmed,
        MessageReceived,
    ]
    assert events[-1].sub_id == new  # type: ignore[union-attr]


@pytest.mark.spec("PW-SUB-1")
def test_sub_ids_in_use_are_never_reused() -> None:
    conn = opened()
    closing = subscribed(conn, "a")
    conn.unsubscribe(closing)  # being unsubscribed: still in use
    active = subscribed(conn, "b")
    pending, _ = conn.subscribe("c")
    conn._next_sub_id = closing  # wrap around onto the ids in use
    fresh, _ = conn.subscribe("d")
    assert fresh not in (closing, active, pending)
    conn.receive_data(enc(F.Unsubscribed(closing, EPOCH, 0)), 0)
    drain(conn)
    conn._next_sub_id = closing
    assert conn.subscribe("e")[0] == closing  # free again once UNSUBSCRIBED arrived


def test_subscribing_twice_to_a_topic_is_refused_locally() -> None:
    conn = opened()
    conn.subscribe("a/b")
    with pytest.raises(LocalProtocolError) as info:
        conn.subscribe("a/b")
    assert info.value.code == ErrorCode.ALREADY_SUBSCRIBED


def test_unsubscribed_without_unsubscribe_is_a_protocol_error() -> None:
    conn = opened()
    sid = subscribed(conn)
    assert_fails_with(conn, enc(F.Unsubscribed(sid, EPOCH, 0)), ErrorCode.PROTOCOL_ERROR)


def test_unsubscribe_error_unknown_subscription_forgets_it() -> None:
    conn = opened()
    sid = subscribed(conn)
    conn.unsubscribe(sid)
    err = F.Error(ErrorCode.UNKNOWN_SUBSCRIPTION, FrameType.UNSUBSCRIBE, sid, "no")
    conn.receive_data(enc(err), 0)
    (event,) = drain(conn)
    assert event == RequestFailed(
        ErrorCode.UNKNOWN_SUBSCRIPTION, FrameType.UNSUBSCRIBE, sid, "no", "a/b"
    )
    assert conn.subscription(sid) is None


# -- request errors ---------------------------------------------------------------------------


def test_subscribe_error_is_a_request_failure_and_the_connection_stays() -> None:
    conn = opened()
    sid, _ = conn.subscribe("secret")
    conn.receive_data(enc(F.Error(ErrorCode.FORBIDDEN, FrameType.SUBSCRIBE, sid, "no")), 0)
    assert drain(conn) == [
        RequestFailed(ErrorCode.FORBIDDEN, FrameType.SUBSCRIBE, sid, "no", "secret")
    ]
    assert conn.state is ClientState.OPEN
    assert conn.subscription(sid) is None
    conn.subscribe("secret")  # the topic is free again


@pytest.mark.spec("PW-ERR-12", "PW-ERR-6")
@pytest.mark.parametrize(
    "refused",
    [
        (FrameType.PUBLISH, 77),
        (FrameType.SUBSCRIBE, 77),
        (FrameType.MESSAGE, 1),  # not even a request type
        (0x7F, 1),  # a type nobody knows
    ],
)
def test_request_error_matching_no_request_never_ends_the_connection(
    refused: tuple[int, int],
) -> None:
    conn = opened()
    sid = subscribed(conn)
    request_type, request_id = refused
    conn.receive_data(enc(F.Error(0x0ABC, request_type, request_id, "?")), 0)
    (event,) = drain(conn)
    assert event == RequestFailed(0x0ABC, request_type, request_id, "?", None)
    assert conn.state is ClientState.OPEN
    conn.receive_data(msg(1), 0)  # the subscription is untouched
    assert [e.seq for e in drain(conn)] == [1]  # type: ignore[union-attr]
    assert conn.subscription(sid) is not None


def test_subscribe_error_for_an_active_subscription_leaves_it_alone() -> None:
    conn = opened()
    sid = subscribed(conn)
    conn.receive_data(enc(F.Error(ErrorCode.FORBIDDEN, FrameType.SUBSCRIBE, sid, "late")), 0)
    (event,) = drain(conn)
    assert isinstance(event, RequestFailed) and event.topic is None
    assert conn.subscription(sid).status is SubStatus.ACTIVE  # type: ignore[union-attr]


@pytest.mark.spec("PW-FLOW-6", "PW-ACK-5", "PW-SUB-15")
@pytest.mark.parametrize("request_type", [FrameType.CREDIT, FrameType.ACK, FrameType.UNSUBSCRIBE])
def test_unknown_subscription_errors_are_never_fatal(request_type: FrameType) -> None:
    conn = opened()
    conn.receive_data(enc(F.Error(ErrorCode.UNKNOWN_SUBSCRIPTION, request_type, 99, "")), 0)
    (event,) = drain(conn)
    assert isinstance(event, RequestFailed) and event.request_id == 99
    assert conn.state is ClientState.OPEN


def test_unsubscribing_before_subscribed_arrives() -> None:
    conn = opened()
    sid, _ = conn.subscribe("a/b")
    conn.unsubscribe(sid)
    conn.receive_data(
        enc(F.Subscribed(sid, Outcome.NEW, EPOCH, 1, 0))
        + msg(1)
        + enc(F.Unsubscribed(sid, EPOCH, 1)),
        0,
    )
    assert [type(e) for e in drain(conn)] == [SubscriptionConfirmed, UnsubscribeConfirmed]
    assert conn.subscription(sid) is None


def test_unsubscribing_a_subscribe_that_then_fails() -> None:
    conn = opened()
    sid, _ = conn.subscribe("secret")
    conn.unsubscribe(sid)
    conn.receive_data(
        enc(
            F.Error(ErrorCode.FORBIDDEN, FrameType.SUBSCRIBE, sid, ""),
            F.Error(ErrorCode.UNKNOWN_SUBSCRIPTION, FrameType.UNSUBSCRIBE, sid, ""),
        ),
        0,
    )
    assert [e.code for e in drain(conn)] == [  # type: ignore[union-attr]
        ErrorCode.FORBIDDEN,
        ErrorCode.UNKNOWN_SUBSCRIPTION,
    ]
    assert conn.subscription(sid) is None
    assert conn.state is ClientState.OPEN


def test_failed_publish_with_request_id_zero_is_reported() -> None:
    conn = opened()
    conn.publish("a", b"", want_ack=False)
    conn.receive_data(enc(F.Error(ErrorCode.FORBIDDEN, FrameType.PUBLISH, 0, "no")), 0)
    (event,) = drain(conn)
    assert isinstance(event, RequestFailed) and event.request_id == 0


def test_invalid_ack_error_is_reported() -> None:
    conn = opened()
    sid = subscribed(conn, at_least_once=True)
    conn.receive_data(enc(F.Error(ErrorCode.INVALID_ACK, FrameType.ACK, sid, "late")), 0)
    (event,) = drain(conn)
    assert isinstance(event, RequestFailed) and event.code == ErrorCode.INVALID_ACK


# -- publish ----------------------------------------------------------------------------------


def test_publish_and_puback() -> None:
    conn = opened()
    rid, data = conn.publish("a/b", b"hi", (("k", b"v"),))
    assert decode_all(data) == [F.Publish(rid, "a/b", b"hi", (("k", b"v"),))]
    rid2, data = conn.publish_batch("a/b", [b"1", (b"2", (("x", b"y"),))])
    (batch,) = decode_all(data)
    assert batch == F.PublishBatch(
        rid2, "a/b", (F.Record(b"1", ()), F.Record(b"2", (("x", b"y"),)))
    )
    assert conn.outstanding_publishes() == {rid, rid2}
    conn.receive_data(enc(F.Puback(rid2, EPOCH, 5, 2), F.Puback(rid, EPOCH, 4, 1)), 0)
    assert drain(conn) == [
        PublishAcked(rid2, "a/b", EPOCH, 5, 2),
        PublishAcked(rid, "a/b", EPOCH, 4, 1),
    ]
    assert conn.outstanding_publishes() == set()


def test_publish_without_ack_uses_request_id_zero() -> None:
    conn = opened()
    rid, data = conn.publish("a", b"", want_ack=False)
    assert rid == 0 and decode_all(data) == [F.Publish(0, "a", b"")]
    assert_fails_with(conn, enc(F.Puback(0, EPOCH, 1, 1)), ErrorCode.PROTOCOL_ERROR)


def test_puback_with_wrong_count_is_a_protocol_error() -> None:
    conn = opened()
    rid, _ = conn.publish_batch("a", [b"1", b"2"])
    assert_fails_with(conn, enc(F.Puback(rid, EPOCH, 1, 1)), ErrorCode.PROTOCOL_ERROR)


def test_publish_error_is_a_request_failure() -> None:
    conn = opened()
    rid, _ = conn.publish("a", b"")
    conn.receive_data(enc(F.Error(ErrorCode.GOING_AWAY, FrameType.PUBLISH, rid, "bye")), 0)
    (event,) = drain(conn)
    assert event == RequestFailed(ErrorCode.GOING_AWAY, FrameType.PUBLISH, rid, "bye", "a")


@pytest.mark.spec("PW-FRAME-9")
def test_publish_larger_than_the_servers_limit_is_refused_locally() -> None:
    conn = opened()  # server limit 16384
    with pytest.raises(LocalProtocolError) as info:
        conn.publish("a", b"x" * INITIAL_MAX_FRAME_SIZE)
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE
    assert conn.outstanding_publishes() == set()


@pytest.mark.spec("PW-TOPIC-1")
@pytest.mark.parametrize("topic", ["", "/a", "a//b", "a/", "a\x00", "x" * 256])
def test_invalid_topics_are_refused_locally(topic: str) -> None:
    conn = opened()
    for call in (lambda: conn.publish(topic, b""), lambda: conn.subscribe(topic)):
        with pytest.raises(LocalProtocolError) as info:
            call()
        assert info.value.code == ErrorCode.INVALID_TOPIC


def test_empty_batch_is_refused_locally() -> None:
    with pytest.raises(LocalProtocolError):
        opened().publish_batch("a", [])


@pytest.mark.spec("PW-PUB-1")
def test_request_ids_are_never_zero_and_skip_outstanding_ones() -> None:
    conn = opened()
    conn._next_request_id = 0xFFFF_FFFF
    first, _ = conn.publish("a", b"")
    second, _ = conn.publish("a", b"")
    assert (first, second) == (0xFFFF_FFFF, 1)


# -- acks -------------------------------------------------------------------------------------


def test_ack_is_cumulative_and_bounded_by_what_was_delivered() -> None:
    conn = opened()
    sid = subscribed(conn, at_least_once=True)
    conn.receive_data(msg(1) + msg(2) + msg(3), 0)
    drain(conn)
    assert decode_all(conn.ack(sid, 2)) == [F.Ack(sid, 2)]
    assert conn.ack(sid, 2) == b""  # nothing new
    for bad in (1, 4):
        with pytest.raises(LocalProtocolError) as info:
            conn.ack(sid, bad)
        assert info.value.code == ErrorCode.INVALID_ACK
    assert conn.subscription(sid).last_acked == 2  # type: ignore[union-attr]


@pytest.mark.spec("PW-ACK-1")
def test_ack_on_an_at_most_once_subscription_is_refused_locally() -> None:
    conn = opened()
    sid = subscribed(conn)
    conn.receive_data(msg(1), 0)
    with pytest.raises(LocalProtocolError):
        conn.ack(sid, 1)


def test_ack_may_cover_an_explicit_gap() -> None:
    conn = opened()
    sid = subscribed(conn, at_least_once=True)
    conn.receive_data(enc(F.Gap(sid, EPOCH, 1, 5, ErrorCode.HISTORY_EXPIRED)), 0)
    drain(conn)
    assert decode_all(conn.ack(sid, 5)) == [F.Ack(sid, 5)]


# -- heartbeats -------------------------------------------------------------------------------


@pytest.mark.spec("PW-HB-1")
def test_ping_when_idle_for_one_interval() -> None:
    conn = opened(now=100.0)
    assert conn.next_deadline() == 100.0 + H
    assert conn.tick(100.0 + H - 0.001) == b""
    (ping,) = decode_all(conn.tick(100.0 + H))
    assert isinstance(ping, F.Ping)
    assert conn.next_deadline() == 100.0 + 2 * H  # sending reset the idle timer


def test_anything_sent_postpones_the_ping() -> None:
    conn = opened(now=0.0)
    conn.subscribe("a", now=4.0)
    assert conn.tick(5.0) == b""
    assert conn.next_deadline() == 9.0


@pytest.mark.spec("PW-HB-3")
def test_heartbeat_timeout_after_three_silent_intervals() -> None:
    conn = opened(now=0.0)
    for t in (5.0, 10.0):
        assert decode_all(conn.tick(t))
    assert conn.next_deadline() == 3 * H
    (error,) = decode_all(conn.tick(3 * H))
    assert isinstance(error, F.Error) and error.code == ErrorCode.HEARTBEAT_TIMEOUT
    assert conn.state is ClientState.CLOSED
    assert conn.close_code == ErrorCode.HEARTBEAT_TIMEOUT
    assert drain(conn) == []
    assert conn.next_deadline() is None
    assert conn.tick(100.0) == b""


@pytest.mark.spec("PW-HB-4", "PW-HB-5")
def test_receiving_anything_resets_the_timeout() -> None:
    conn = opened(now=0.0)
    conn.tick(5.0)
    conn.receive_data(enc(F.Pong(1)), 12.0)
    assert conn.tick(3 * H + 1) != b""  # a PING, not the timeout: 12.0 was recent
    assert conn.state is ClientState.OPEN
    assert conn.tick(12.0 + 3 * H - 0.1) != b""
    assert conn.state is ClientState.OPEN
    assert conn.next_deadline() == 12.0 + 3 * H


def test_no_deadlines_before_the_handshake() -> None:
    conn = ClientConnection()
    conn.initiate("me", now=0.0)
    assert conn.next_deadline() is None
    assert conn.tick(1000.0) == b""


# -- GOAWAY and close -------------------------------------------------------------------------


@pytest.mark.spec("PW-GOAWAY-6", "PW-GOAWAY-3")
def test_goaway_drains_refuses_new_requests_then_eof_is_a_planned_close() -> None:
    conn = opened()
    sid = subscribed(conn, credit=1, at_least_once=True)
    goaway = F.Goaway(ErrorCode.SHUTTING_DOWN, 250, 100, (F.Position(sid, EPOCH, 1),), "restart")
    conn.receive_data(msg(1) + enc(goaway), 0)
    events = drain(conn)
    assert events[1] == GoawayReceived(
        ErrorCode.SHUTTING_DOWN,
        "restart",
        reconnect_after_ms=250,
        jitter_ms=100,
        positions=(F.Position(sid, EPOCH, 1),),
    )
    assert conn.state is ClientState.DRAINING
    for call in (lambda: conn.subscribe("new"), lambda: conn.publish("a", b"")):
        with pytest.raises(LocalProtocolError) as info:
            call()
        assert info.value.code == ErrorCode.GOING_AWAY
    assert conn.grant_credit(sid, 1) and conn.ack(sid, 1)  # still allowed
    conn.receive_data(b"", 0)
    (event,) = drain(conn)
    assert event == ConnectionClosed(
        ErrorCode.SHUTTING_DOWN, "server closed the connection after GOAWAY", True
    )


@pytest.mark.spec("PW-GOAWAY-4", "PW-GOAWAY-11")
@pytest.mark.parametrize("after", [msg(1), enc(F.Goaway(ErrorCode.SHUTTING_DOWN, 0, 0, (), ""))])
def test_pushes_or_a_second_goaway_after_goaway_are_unexpected(after: bytes) -> None:
    conn = opened()
    subscribed(conn)
    conn.receive_data(enc(F.Goaway(ErrorCode.SHUTTING_DOWN, 0, 0, (), "")), 0)
    assert [type(e) for e in drain(conn)] == [GoawayReceived]
    assert_fails_with(conn, after, ErrorCode.UNEXPECTED_FRAME)


def test_abrupt_eof_is_an_unplanned_close() -> None:
    conn = opened()
    conn.receive_data(b"", 0)
    (event,) = drain(conn)
    assert isinstance(event, ConnectionClosed) and not event.after_goaway
    assert event.code == ErrorCode.NO_ERROR


@pytest.mark.spec("PW-HS-16")
def test_nothing_is_sent_between_hello_and_welcome() -> None:
    conn = ClientConnection()
    conn.initiate("me")
    assert conn.goaway() == b""
    assert conn.state is ClientState.CLOSED


@pytest.mark.spec("PW-GOAWAY-9")
def test_client_goaway_closes() -> None:
    conn = opened()
    (frame,) = decode_all(conn.goaway("bye"))
    assert frame == F.Goaway(ErrorCode.NO_ERROR, 0, 0, (), "bye")
    assert conn.state is ClientState.CLOSED
    conn.receive_data(msg(1), 0)
    assert drain(conn) == []
    assert conn.goaway() == b""


def test_transition_table_covers_every_state() -> None:
    assert set(RECEIVE_TRANSITIONS) == set(ClientState)
    assert FrameType.WELCOME not in RECEIVE_TRANSITIONS[ClientState.OPEN]
    assert RECEIVE_TRANSITIONS[ClientState.OPEN][FrameType.GOAWAY] is ClientState.DRAINING


# -- the next_event() convention both machines share -------------------------------------------


def test_next_event_is_paused_before_initiate_and_once_closed() -> None:
    conn = ClientConnection()
    assert conn.next_event() is PAUSED
    conn = opened()
    conn.receive_data(b"", 0)
    assert isinstance(conn.next_event(), ConnectionClosed)
    assert conn.next_event() is PAUSED


def test_next_event_needs_data_inside_the_preface_and_inside_a_frame() -> None:
    conn = ClientConnection()
    conn.initiate("test")
    data = server_hello()
    for byte in data[:-1]:
        conn.receive_data(bytes([byte]), 0)
        assert conn.next_event() is NEED_DATA
    conn.receive_data(data[-1:], 0)
    assert isinstance(conn.next_event(), Welcomed)
    assert conn.next_event() is NEED_DATA


def test_events_before_a_violation_come_out_before_it_is_raised() -> None:
    conn = opened()
    subscribed(conn)
    conn.receive_data(msg(1) + msg(3), 0)
    first = conn.next_event()
    assert isinstance(first, MessageReceived) and first.seq == 1
    assert conn.state is ClientState.OPEN  # nothing past the event is parsed yet
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.code == ErrorCode.PROTOCOL_ERROR
    assert conn.state is ClientState.CLOSED
    assert [type(f) for f in decode_all(conn.data_to_send())] == [F.Error]


def test_the_tables_have_one_shape_and_agree_with_the_frame_directions() -> None:
    for table in (RECEIVE_TRANSITIONS, SEND_TRANSITIONS):
        assert set(table) == set(ClientState)
        for row in table.values():
            assert all(
                isinstance(t, FrameType) and isinstance(n, ClientState) for t, n in row.items()
            )
    assert set(RECEIVE_TRANSITIONS[ClientState.OPEN]) <= SERVER_SENDS
    assert set(SEND_TRANSITIONS[ClientState.OPEN]) <= CLIENT_SENDS


def test_the_package_exports_both_machines_with_one_event_base() -> None:
    import pushwire.protocol as pw

    assert set(pw.__all__) <= set(dir(pw))
    client_events = ["Welcomed", "SubscriptionConfirmed", "MessageReceived", "GapReceived"]
    client_events += ["EpochReset", "UnsubscribeConfirmed", "PublishAcked", "RequestFailed"]
    server_events = ["PrefaceReceived", "HelloReceived", "SubscribeRequested", "Acked"]
    server_events += ["UnsubscribeRequested", "CreditGranted", "PublishRequested"]
    server_events += ["PublishBatchRequested", "PingReceived", "PongReceived", "RequestRefused"]
    shared = ["GoawayReceived", "PeerError", "ConnectionClosed"]
    for name in client_events + server_events + shared:
        assert issubclass(getattr(pw, name), pw.Event), name
    assert pw.NEED_DATA is not pw.PAUSED


@pytest.mark.spec("PW-CLIENT-14")
def test_a_shell_can_ask_before_it_declares_a_timeout_and_bytes_read_late_still_count() -> None:
    conn = opened(now=0.0)
    assert not conn.timed_out(3 * H - 0.01)
    assert conn.timed_out(3 * H + 0.01)
    # the reader hands over what had arrived before the timer fired: the connection lives
    conn.receive_data(enc(F.Pong(1)), 3 * H + 0.01)
    assert not conn.timed_out(3 * H + 0.02)
    sent = decode_all(conn.tick(3 * H + 0.02))
    assert not any(isinstance(f, F.Error) for f in sent) and conn.state is ClientState.OPEN


@pytest.mark.spec("PW-CLIENT-15")
@pytest.mark.parametrize("heartbeat_ms", [1000, 60_000, 600_000])
def test_every_heartbeat_a_server_may_announce_above_one_second_is_accepted(
    heartbeat_ms: int,
) -> None:
    conn = ClientConnection()
    conn.initiate("test", now=0.0)
    welcome = F.Welcome(7, heartbeat_ms, INITIAL_MAX_FRAME_SIZE, 100, 1000, 1, "s")
    conn.receive_data(encode_preface(1, 1) + enc(welcome), 0.0)
    assert [type(e) for e in drain(conn)] == [Welcomed]


@pytest.mark.spec("PW-CLIENT-12")
def test_a_new_connection_starts_from_the_new_subscribe_initial_credit() -> None:
    old = opened()
    sid = subscribed(old, credit=10)
    old.grant_credit(sid, 50)
    new = opened()
    sid = subscribed(new, credit=3)
    view = new.subscription(sid)
    assert view is not None and view.credit == 3
    assert_fails_with(new, msg(1) + msg(2) + msg(3) + msg(4), ErrorCode.FLOW_CONTROL_ERROR)


# -- pattern subscriptions (§6.7) ---------------------------------------------------------------


def pattern_subscribed(conn: ClientConnection, pattern: str = "a/+", credit: int = 10) -> int:
    sub_id, data = conn.subscribe_pattern(pattern, initial_credit=credit)
    (frame,) = decode_all(data)
    assert isinstance(frame, F.Subscribe) and frame.positions == ()
    conn.receive_data(enc(F.Subscribed(sub_id, Outcome.NEW, 0, 0, 0)), 0)
    assert [type(e) for e in drain(conn)] == [SubscriptionConfirmed]
    return sub_id


@pytest.mark.spec("PW-FLOW-9", "PW-ORDER-15")
def test_a_pattern_takes_each_topics_pushes_from_one_credit_pool() -> None:
    conn = opened()
    sub_id = pattern_subscribed(conn, credit=3)
    conn.receive_data(msg(4, "a/b") + msg(1, "a/c") + msg(5, "a/b"), 0)
    got = [(e.topic, e.seq) for e in drain(conn) if isinstance(e, MessageReceived)]
    assert got == [("a/b", 4), ("a/c", 1), ("a/b", 5)]
    assert conn.topic_positions(sub_id) == (
        F.TopicPosition("a/b", EPOCH, 5),
        F.TopicPosition("a/c", EPOCH, 1),
    )
    assert_fails_with(conn, msg(2, "a/c"), ErrorCode.FLOW_CONTROL_ERROR)


@pytest.mark.spec("PW-SUB-17")
def test_a_push_of_a_pattern_being_unsubscribed_is_dropped_while_a_name_awaits_subscribed() -> None:
    """UNSUBSCRIBE of ``a/+`` then SUBSCRIBE of ``a/b``: until the name's SUBSCRIBED, a
    push on ``a/b`` is the pattern's (the server answers in order) and is dropped; after
    it, pushes are the name's."""
    conn = opened()
    pattern = pattern_subscribed(conn)
    conn.unsubscribe(pattern)
    name, _ = conn.subscribe("a/b", initial_credit=5)
    conn.receive_data(msg(7, "a/b"), 0)
    assert drain(conn) == []
    conn.receive_data(enc(F.Unsubscribed(pattern, EPOCH, 7)), 0)
    conn.receive_data(enc(F.Subscribed(name, Outcome.NEW, EPOCH, 8, 7)) + msg(8, "a/b"), 0)
    events = drain(conn)
    assert [type(e) for e in events] == [
        UnsubscribeConfirmed,
        SubscriptionConfirmed,
        MessageReceived,
    ]
    assert (events[2].sub_id, events[2].seq) == (name, 8)


@pytest.mark.spec("PW-SUB-23")
def test_a_push_on_a_live_patterns_topic_is_the_patterns_while_a_name_awaits_subscribed() -> None:
    """A SUBSCRIBE of a name the live pattern covers (the server will refuse it as
    ALREADY_SUBSCRIBED): pushes on the topic meanwhile are the pattern's."""
    conn = opened()
    pattern = pattern_subscribed(conn)
    conn.subscribe("a/b", initial_credit=5)
    conn.receive_data(msg(1, "a/b"), 0)
    (event,) = drain(conn)
    assert isinstance(event, MessageReceived) and (event.sub_id, event.seq) == (pattern, 1)


@pytest.mark.spec("PW-ORDER-15")
def test_a_hole_in_one_topic_of_a_pattern_is_a_protocol_error() -> None:
    conn = opened()
    pattern_subscribed(conn)
    conn.receive_data(msg(1, "a/b"), 0)
    drain(conn)
    assert_fails_with(conn, msg(3, "a/b"), ErrorCode.PROTOCOL_ERROR)


@pytest.mark.spec("PW-ORDER-13")
def test_a_topic_of_a_pattern_restarting_at_one_unannounced_is_told_to_the_application() -> None:
    """Without the TOPIC_STATUS a server owes, a push of a new epoch at sequence 1 is still
    a restart, and the application hears of it for that topic; at 2 it is an error."""
    conn = opened()
    sub_id = pattern_subscribed(conn)
    conn.receive_data(msg(1, "a/b") + msg(2, "a/b") + msg(1, "a/c"), 0)
    drain(conn)
    conn.receive_data(msg(1, "a/b", epoch=EPOCH + 1), 0)
    events = drain(conn)
    assert events[0] == EpochReset(sub_id, "a/b", EPOCH, EPOCH + 1)
    assert isinstance(events[1], MessageReceived) and (events[1].epoch, events[1].seq) == (
        EPOCH + 1,
        1,
    )
    assert F.TopicPosition("a/b", EPOCH + 1, 1) in conn.topic_positions(sub_id)
    assert_fails_with(conn, msg(2, "a/c", epoch=EPOCH + 5), ErrorCode.PROTOCOL_ERROR)


@pytest.mark.spec("PW-SUB-33")
def test_topic_status_for_a_subscription_to_a_name_is_a_protocol_error() -> None:
    conn = opened()
    sub_id = subscribed(conn)
    status = F.Subscribed(sub_id, Outcome.RECOVERED, EPOCH, 1, 0, topic="a/b")
    assert_fails_with(conn, enc(status), ErrorCode.PROTOCOL_ERROR)


@pytest.mark.spec("PW-SUB-33")
def test_topic_status_for_a_topic_the_pattern_does_not_match_is_a_protocol_error() -> None:
    conn = opened()
    sub_id = pattern_subscribed(conn)
    status = F.Subscribed(sub_id, Outcome.RECOVERED, EPOCH, 1, 0, topic="x/b")
    assert_fails_with(conn, enc(status), ErrorCode.PROTOCOL_ERROR)


@pytest.mark.spec("PW-SUB-30")
def test_a_gap_frame_for_a_pattern_is_a_protocol_error() -> None:
    conn = opened()
    sub_id = pattern_subscribed(conn)
    gap = F.Gap(sub_id, EPOCH, 1, 2, ErrorCode.SLOW_CONSUMER)
    assert_fails_with(conn, enc(gap), ErrorCode.PROTOCOL_ERROR)


@pytest.mark.spec("PW-SUB-28")
def test_pattern_with_at_least_once_is_out_of_range_when_decoded() -> None:
    body = codec.encode_payload(F.Subscribe(1, "a/+", positions=()))
    data = codec.encode_raw_frame(FrameType.SUBSCRIBE, PATTERN | AT_LEAST_ONCE, body)
    decoder = FrameDecoder()
    decoder.feed(data)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == ErrorCode.FIELD_OUT_OF_RANGE
