"""The sans-I/O server state machine: pure, no I/O, time passed in by hand."""

from __future__ import annotations

import itertools
import struct

import faults
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol import server_conn as sc
from pushwire.protocol.decoder import FrameDecoder, encode_preface, parse_preface
from pushwire.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from pushwire.protocol.events import NEED_DATA, PAUSED
from pushwire.protocol.layouts import (
    CLIENT_SENDS,
    HEADER_SIZE,
    INITIAL_MAX_FRAME_SIZE,
    MAGIC,
    PUBLISH_PREFIX_SIZE,
    FrameType,
    Outcome,
    SinceKind,
)

PREFACE = encode_preface(1, 1)
H = 1.0  # heartbeat interval in seconds used by the handshake helper


def enc(*frames: F.Frame) -> bytes:
    return b"".join(codec.encode_frame(f) for f in frames)


def hello(**kw: object) -> F.Hello:
    fields: dict[str, object] = {
        "max_frame_size": 1 << 20,
        "heartbeat_ms": int(H * 1000),
        "client_name": "t",
        "auth_token": b"",
    }
    fields.update(kw)
    return F.Hello(**fields)  # type: ignore[arg-type]


def decode_all(data: bytes) -> list[F.Frame]:
    decoder = FrameDecoder(1 << 24)
    decoder.feed(data)
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    return out


def open_conn(
    limits: sc.ServerLimits | None = None, cls: type[sc.ServerConnection] = sc.ServerConnection
) -> sc.ServerConnection:
    """A connection (of ``cls``: one of the faulty ones of tests/faults.py, say) through
    preface, HELLO and WELCOME at time 0."""
    limits = limits or sc.ServerLimits(heartbeat_min_ms=10, heartbeat_ms=1000)
    conn = cls(limits, now=0.0)
    conn.receive_data(PREFACE + enc(hello()), 0.0)
    assert isinstance(conn.next_event(), sc.PrefaceReceived)
    conn.send_preface()
    assert isinstance(conn.next_event(), sc.HelloReceived)
    conn.accept(7, "srv", 0.0)
    assert conn.state is sc.ServerState.OPEN
    return conn


def with_flags(frame: bytes, flags: int) -> bytes:
    """``frame`` with its header's flags replaced."""
    header = codec.decode_header(frame)
    return codec.encode_header(header.length, header.type, flags) + frame[HEADER_SIZE:]


def feed(conn: sc.ServerConnection, *frames: F.Frame | bytes, now: float = 0.0) -> list[sc.Event]:
    data = b"".join(f if isinstance(f, bytes) else codec.encode_frame(f) for f in frames)
    conn.receive_data(data, now)
    return list(conn.events())


def refused(conn: sc.ServerConnection, *frames: F.Frame) -> tuple[sc.RequestRefused, F.Error]:
    (event,) = feed(conn, *frames)
    assert isinstance(event, sc.RequestRefused)
    (error,) = decode_all(conn.data_to_send())
    assert isinstance(error, F.Error)
    assert error.code == event.code
    return event, error


def fails_with(conn: sc.ServerConnection, data: bytes, code: ErrorCode) -> bytes:
    conn.receive_data(data, 0.0)
    with pytest.raises(RemoteProtocolError) as info:
        list(conn.events())
    assert info.value.code == code, str(info.value)
    assert conn.state is sc.ServerState.CLOSED
    assert conn.close_code == code
    return conn.data_to_send()


def subscribe(conn: sc.ServerConnection, sub_id: int = 1, topic: str = "t", **kw: object) -> None:
    (event,) = feed(conn, F.Subscribe(sub_id, topic, **kw))  # type: ignore[arg-type]
    assert isinstance(event, sc.SubscribeRequested)
    conn.subscribed(sub_id, Outcome.NEW, 5, 1, 0)


# -- preface ----------------------------------------------------------------------------------


class TestPreface:
    @pytest.mark.spec("PW-PREFACE-4")
    def test_answers_a_whole_preface_with_its_own_after_the_caller_agrees(self) -> None:
        conn = sc.ServerConnection()
        conn.receive_data(PREFACE, 0.0)
        assert conn.next_event() == sc.PrefaceReceived(1, 1, 1)
        assert conn.next_event() is PAUSED  # until answered
        assert parse_preface(conn.send_preface()) == (1, 1)
        assert conn.state is sc.ServerState.AWAIT_HELLO

    def test_takes_the_preface_one_byte_at_a_time(self) -> None:
        conn = sc.ServerConnection()
        for i, byte in enumerate(PREFACE):
            assert conn.next_event() is NEED_DATA, i
            conn.receive_data(bytes([byte]), 0.0)
        assert isinstance(conn.next_event(), sc.PrefaceReceived)

    @pytest.mark.spec("PW-PREFACE-9")
    def test_does_not_parse_a_pipelined_hello_before_the_preface_is_answered(self) -> None:
        conn = sc.ServerConnection()
        conn.receive_data(PREFACE + enc(hello()), 0.0)
        assert isinstance(conn.next_event(), sc.PrefaceReceived)
        assert conn.next_event() is PAUSED
        conn.send_preface()
        assert isinstance(conn.next_event(), sc.HelloReceived)

    @pytest.mark.spec("PW-PREFACE-1")
    @pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n", b"\x89PX\n\x01\x01\x00\x00", b"\x00"])
    def test_bad_magic_closes_without_sending_anything(self, data: bytes) -> None:
        out = fails_with(sc.ServerConnection(), data, ErrorCode.BAD_PREFACE)
        assert out == b""

    @pytest.mark.spec("PW-PREFACE-2")
    def test_reserved_preface_bytes_close_without_sending_anything(self) -> None:
        out = fails_with(
            sc.ServerConnection(), MAGIC + b"\x01\x01\x00\x01", ErrorCode.RESERVED_BITS_SET
        )
        assert out == b""

    @pytest.mark.spec("PW-PREFACE-6")
    @pytest.mark.parametrize("versions", [(2, 3), (0, 0), (3, 2)])
    def test_no_common_version_gets_a_version_zero_preface_and_nothing_else(
        self, versions: tuple[int, int]
    ) -> None:
        out = fails_with(
            sc.ServerConnection(),
            encode_preface(*versions) + enc(hello()),
            ErrorCode.UNSUPPORTED_VERSION,
        )
        assert out == encode_preface(0, 1)

    def test_eof_inside_the_preface_is_a_plain_close(self) -> None:
        conn = sc.ServerConnection()
        conn.receive_data(MAGIC, 0.0)
        conn.receive_data(b"", 0.0)
        assert conn.next_event() == sc.ConnectionClosed()
        assert conn.next_event() is PAUSED

    def test_the_caller_may_not_answer_a_preface_it_did_not_get(self) -> None:
        with pytest.raises(LocalProtocolError):
            sc.ServerConnection().send_preface(1)


# -- handshake --------------------------------------------------------------------------------


class TestHandshake:
    def test_hello_is_reported_without_the_token_in_its_repr(self) -> None:
        conn = sc.ServerConnection()
        conn.receive_data(PREFACE + enc(hello(auth_token=b"s3cret", client_name="app")), 0.0)
        conn.next_event()
        conn.send_preface()
        event = conn.next_event()
        assert event == sc.HelloReceived("app", b"s3cret", 1 << 20, 1000)
        assert "s3cret" not in repr(event)

    @pytest.mark.spec("PW-HS-9")
    @pytest.mark.parametrize(
        ("preference", "chosen"), [(0, 5000), (1, 1000), (2000, 2000), (10**9, 60000)]
    )
    def test_welcome_clamps_the_heartbeat_preference(self, preference: int, chosen: int) -> None:
        conn = sc.ServerConnection()
        conn.receive_data(PREFACE + enc(hello(heartbeat_ms=preference)), 0.0)
        conn.next_event()
        conn.send_preface()
        conn.next_event()
        (welcome,) = decode_all(conn.accept(9, "srv", 0.0))
        assert isinstance(welcome, F.Welcome)
        assert welcome.heartbeat_ms == chosen
        assert welcome.connection_id == 9
        assert welcome.max_frame_size == sc.ServerLimits().max_frame_size

    @pytest.mark.spec("PW-HS-2", "PW-HS-6", "PW-HS-8", "PW-HS-10")
    def test_welcome_is_the_first_frame_and_states_the_limits_in_force(self) -> None:
        limits = sc.ServerLimits(max_frame_size=20000, max_subscriptions=3, max_lag=9)
        conn = sc.ServerConnection(limits)
        conn.receive_data(PREFACE + enc(hello(heartbeat_ms=0)), 0.0)
        conn.next_event()
        conn.send_preface()
        conn.next_event()
        (welcome,) = decode_all(conn.accept(1, "srv", 0.0))
        assert welcome == F.Welcome(1, 5000, 20000, 3, 9, 1, "srv")
        assert 16384 <= welcome.max_frame_size <= 1 << 24  # type: ignore[union-attr]
        assert 1 <= welcome.heartbeat_ms <= sc.MAX_HEARTBEAT_MS  # type: ignore[union-attr]
        too_big = codec.encode_header(20001, FrameType.PUBLISH, 0)
        fails_with(conn, too_big, ErrorCode.FRAME_TOO_LARGE)

    @pytest.mark.spec("PW-HS-5")
    @pytest.mark.parametrize("size", [0, 16383, (1 << 24) + 1])
    def test_hello_max_frame_size_out_of_range_is_field_out_of_range(self, size: int) -> None:
        conn = sc.ServerConnection()
        conn.receive_data(PREFACE, 0.0)
        conn.next_event()
        conn.send_preface()
        out = fails_with(conn, enc(hello(max_frame_size=size)), ErrorCode.FIELD_OUT_OF_RANGE)
        (error,) = decode_all(out)
        assert isinstance(error, F.Error)
        assert (error.code, error.request_type, error.request_id) == (
            ErrorCode.FIELD_OUT_OF_RANGE,
            0,
            0,
        )

    @pytest.mark.spec("PW-HS-3")
    @pytest.mark.parametrize("ftype", sorted(CLIENT_SENDS - {FrameType.HELLO}))
    def test_any_frame_but_hello_first_is_unexpected(self, ftype: FrameType) -> None:
        samples = {
            FrameType.PING: F.Ping(1),
            FrameType.PONG: F.Pong(1),
            FrameType.GOAWAY: F.Goaway(0, 0, 0, (), ""),
            FrameType.ERROR: F.Error(1, 0, 0, ""),
            FrameType.SUBSCRIBE: F.Subscribe(1, "t"),
            FrameType.UNSUBSCRIBE: F.Unsubscribe(1),
            FrameType.CREDIT: F.Credit(1, 1),
            FrameType.ACK: F.Ack(1, 1),
            FrameType.PUBLISH: F.Publish(1, "t", b""),
            FrameType.PUBLISH_BATCH: F.PublishBatch(1, "t", (F.Record(b""),)),
        }
        conn = sc.ServerConnection()
        conn.receive_data(PREFACE, 0.0)
        conn.next_event()
        conn.send_preface()
        out = fails_with(conn, enc(samples[ftype]), ErrorCode.UNEXPECTED_FRAME)
        assert isinstance(decode_all(out)[0], F.Error)

    @pytest.mark.spec("PW-FRAME-13")
    @pytest.mark.parametrize(
        "frame",
        [
            F.Message(1, 1, "t", b""),
            F.Welcome(1, 1000, 16384, 1, 1, 0, ""),
            F.Gap(1, 1, 1, 1, 0),
            F.Puback(1, 1, 1, 1),
            F.Subscribed(1, 0, 1, 1, 0),
            F.Unsubscribed(1, 1, 0),
            F.MessageBatch(1, 1, "t", (F.Record(b""),)),
        ],
    )
    def test_a_frame_only_servers_send_is_unexpected(self, frame: F.Frame) -> None:
        out = fails_with(open_conn(), enc(frame), ErrorCode.UNEXPECTED_FRAME)
        assert decode_all(out)[0].code == ErrorCode.UNEXPECTED_FRAME  # type: ignore[union-attr]

    @pytest.mark.spec("PW-FRAME-13")
    def test_a_second_hello_is_unexpected(self) -> None:
        fails_with(open_conn(), enc(hello()), ErrorCode.UNEXPECTED_FRAME)

    @pytest.mark.spec("PW-FRAME-10")
    def test_enforces_16384_before_welcome_and_its_own_limit_after(self) -> None:
        conn = sc.ServerConnection(sc.ServerLimits(max_frame_size=20000))
        conn.receive_data(PREFACE, 0.0)
        conn.next_event()
        conn.send_preface()
        header = codec.encode_header(INITIAL_MAX_FRAME_SIZE + 1, FrameType.HELLO, 0)
        fails_with(conn, header, ErrorCode.FRAME_TOO_LARGE)
        conn = open_conn(sc.ServerLimits(max_frame_size=20000))
        ok = F.Publish(1, "t", b"x" * (20000 - 4 - 2))
        assert len(enc(ok)) - HEADER_SIZE == 20000
        (event,) = feed(conn, ok)
        assert isinstance(event, sc.PublishRequested)
        too_big = codec.encode_header(20001, FrameType.PUBLISH, 0)
        fails_with(conn, too_big, ErrorCode.FRAME_TOO_LARGE)

    def test_reject_sends_a_connection_error_and_closes(self) -> None:
        conn = sc.ServerConnection()
        conn.receive_data(PREFACE + enc(hello(auth_token=b"bad")), 0.0)
        conn.next_event()
        conn.send_preface()
        conn.next_event()
        (error,) = decode_all(conn.reject(ErrorCode.UNAUTHENTICATED, "no"))
        assert error == F.Error(ErrorCode.UNAUTHENTICATED, 0, 0, "no")
        assert conn.state is sc.ServerState.CLOSED
        with pytest.raises(LocalProtocolError):
            conn.accept(1, "x", 0.0)

    @pytest.mark.spec("PW-HS-13")
    def test_may_reject_right_after_the_preface(self) -> None:
        conn = sc.ServerConnection()
        conn.receive_data(PREFACE, 0.0)
        conn.next_event()
        conn.send_preface()
        (error,) = decode_all(conn.reject(ErrorCode.TOO_MANY_CONNECTIONS))
        assert error.code == ErrorCode.TOO_MANY_CONNECTIONS  # type: ignore[union-attr]


# -- framing rules through the connection -----------------------------------------------------


class TestFraming:
    @pytest.mark.spec("PW-FRAME-3")
    def test_reserved_flag_bits_are_fatal(self) -> None:
        data = with_flags(enc(F.Ping(1)), 0x40)
        out = fails_with(open_conn(), data, ErrorCode.RESERVED_BITS_SET)
        assert decode_all(out)[0].code == ErrorCode.RESERVED_BITS_SET  # type: ignore[union-attr]

    def test_the_ignore_reserved_bits_fault_accepts_them(self) -> None:
        data = with_flags(enc(F.Ping(1)), 0x40)
        conn = open_conn(cls=faults.IgnoreReservedBits)
        assert feed(conn, data) == [sc.PingReceived(1)]

    def test_under_the_ignore_reserved_bits_fault_no_reserved_bit_reaches_a_publish(
        self,
    ) -> None:
        data = with_flags(enc(F.Publish(0, "a/b", b"payload")), 0x80)
        conn = open_conn(cls=faults.IgnoreReservedBits)
        (event,) = feed(conn, data)
        assert isinstance(event, sc.PublishRequested)
        assert event.flags == 0
        assert event.body == data[HEADER_SIZE + PUBLISH_PREFIX_SIZE :]

    @pytest.mark.spec("PW-FRAME-8")
    def test_skips_unknown_ignorable_frames(self) -> None:
        unknown = codec.encode_header(3, 0xB3, 0xFF) + b"abc"
        assert feed(open_conn(), unknown, F.Ping(4)) == [sc.PingReceived(4)]

    @pytest.mark.spec("PW-FRAME-4")
    def test_eof_inside_a_frame_is_malformed(self) -> None:
        conn = open_conn()
        conn.receive_data(enc(F.Ping(1))[:-1], 0.0)
        assert list(conn.events()) == []
        fails_with(conn, b"", ErrorCode.MALFORMED_FRAME)

    def test_eof_between_frames_is_a_plain_close(self) -> None:
        conn = open_conn()
        conn.receive_data(enc(F.Ping(1)), 0.0)
        conn.receive_data(b"", 0.0)
        assert list(conn.events()) == [sc.PingReceived(1), sc.ConnectionClosed()]
        assert conn.state is sc.ServerState.CLOSED
        assert conn.close_code == ErrorCode.NO_ERROR

    def test_accept_oversized_fault_takes_frames_beyond_the_limit(self) -> None:
        conn = open_conn(sc.ServerLimits(heartbeat_min_ms=10), cls=faults.AcceptOversized)
        (event,) = feed(conn, F.Publish(1, "t", b"x" * (2 << 20)))
        assert isinstance(event, sc.PublishRequested)

    @given(st.lists(st.integers(0, 200), max_size=8))
    def test_events_do_not_depend_on_how_the_bytes_are_split(self, cuts: list[int]) -> None:
        stream = PREFACE + enc(
            hello(),
            F.Ping(3),
            F.Subscribe(1, "a/b", SinceKind.LAST, since_count=4, initial_credit=9),
            F.Publish(2, "a/b", b"payload", (("k", b"v"),)),
            F.Credit(1, 5),
            F.Goaway(0, 0, 0, (), "bye"),
        )
        conn = sc.ServerConnection()
        events: list[sc.Event] = []
        points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
        for a, b in itertools.pairwise(points):
            conn.receive_data(stream[a:b], 0.0)
            for event in conn.events():
                events.append(event)
                if isinstance(event, sc.PrefaceReceived):
                    conn.send_preface()
                elif isinstance(event, sc.HelloReceived):
                    conn.accept(1, "s", 0.0)
                elif isinstance(event, sc.SubscribeRequested):
                    conn.subscribed(1, Outcome.NEW, 1, 1, 0)
        assert [type(e) for e in events] == [
            sc.PrefaceReceived,
            sc.HelloReceived,
            sc.PingReceived,
            sc.SubscribeRequested,
            sc.PublishRequested,
            sc.CreditGranted,
            sc.GoawayReceived,
        ]
        assert conn.state is sc.ServerState.CLOSED


# -- heartbeats and the handshake timeout -----------------------------------------------------


class TestTime:
    @pytest.mark.spec("PW-HB-1")
    def test_pings_after_an_idle_interval(self) -> None:
        conn = open_conn()
        assert conn.next_deadline() == pytest.approx(H)
        assert conn.tick(H * 0.99) == b""
        (ping,) = decode_all(conn.tick(H))
        assert isinstance(ping, F.Ping)
        assert conn.next_deadline() == pytest.approx(2 * H)

    def test_sending_anything_postpones_the_ping(self) -> None:
        conn = open_conn()
        conn.data_sent(0.8 * H)
        assert conn.tick(H) == b""
        assert conn.next_deadline() == pytest.approx(1.8 * H)

    @pytest.mark.spec("PW-HB-3")
    def test_closes_with_heartbeat_timeout_after_three_silent_intervals(self) -> None:
        conn = open_conn()
        for t in (1, 2):
            conn.tick(t * H)
        assert conn.state is sc.ServerState.OPEN
        (error,) = decode_all(conn.tick(3 * H))
        assert error.code == ErrorCode.HEARTBEAT_TIMEOUT  # type: ignore[union-attr]
        assert conn.state is sc.ServerState.CLOSED
        assert conn.next_deadline() is None

    @pytest.mark.spec("PW-HB-4")
    def test_any_received_byte_restarts_the_receive_timer(self) -> None:
        conn = open_conn()
        conn.receive_data(b"\x00", 2.5 * H)  # one byte of a frame header
        conn.tick(3 * H)
        assert conn.state is sc.ServerState.OPEN
        assert conn.next_deadline() is not None

    @pytest.mark.spec("PW-SEC-7", "PW-SEC-14")
    def test_a_frame_trickling_in_byte_by_byte_is_cut_off(self) -> None:
        conn = open_conn(sc.ServerLimits(heartbeat_min_ms=10, frame_timeout=10.0))
        data = enc(F.Publish(0, "t", b"x" * 100))
        now = 1.0
        out = b""
        for byte in data:  # one byte every half interval: the heartbeat never fires
            conn.receive_data(bytes([byte]), now)
            assert list(conn.events()) == []
            out = conn.tick(now)
            if conn.state is sc.ServerState.CLOSED:
                break
            conn.data_sent(now)
            now += 0.5
        assert now == pytest.approx(11.0)
        (error,) = decode_all(out)
        assert error.code == ErrorCode.HEARTBEAT_TIMEOUT  # type: ignore[union-attr]
        assert "frame took" in error.message  # type: ignore[union-attr]

    def test_steady_traffic_is_never_mistaken_for_a_trickle(self) -> None:
        conn = open_conn(sc.ServerLimits(heartbeat_min_ms=10, frame_timeout=5.0))
        data = enc(F.Ping(1), F.Ping(2)) * 50
        for i in range(0, len(data), 5):  # every read ends inside a frame
            now = i / 10
            conn.receive_data(data[i : i + 5], now)
            list(conn.events())
            conn.data_sent(now)
            conn.tick(now)
        assert conn.state is sc.ServerState.OPEN

    def test_the_no_heartbeat_timeout_fault_keeps_a_silent_peer(self) -> None:
        conn = open_conn(cls=faults.NoHeartbeatTimeout)
        for t in range(1, 20):
            conn.tick(t * H)
        assert conn.state is sc.ServerState.OPEN

    @pytest.mark.spec("PW-HB-2")
    def test_answers_ping_with_pong_of_the_same_opaque(self) -> None:
        conn = open_conn()
        assert feed(conn, F.Ping(0xDEADBEEF)) == [sc.PingReceived(0xDEADBEEF)]
        assert decode_all(conn.data_to_send()) == [F.Pong(0xDEADBEEF)]

    def test_the_no_pong_fault_stays_silent(self) -> None:
        conn = open_conn(cls=faults.NoPong)
        feed(conn, F.Ping(1))
        assert conn.data_to_send() == b""

    @pytest.mark.spec("PW-HB-5")
    def test_accepts_a_pong_nobody_asked_for(self) -> None:
        assert feed(open_conn(), F.Pong(77)) == [sc.PongReceived(77)]

    @pytest.mark.spec("PW-HS-14")
    def test_handshake_timeout_after_the_preface_sends_an_error(self) -> None:
        conn = sc.ServerConnection(sc.ServerLimits(handshake_timeout=2.0), now=10.0)
        conn.receive_data(PREFACE, 10.5)
        conn.next_event()
        conn.send_preface()
        assert conn.next_deadline() == 12.0
        assert conn.tick(11.9) == b""
        (error,) = decode_all(conn.tick(12.0))
        assert error.code == ErrorCode.HANDSHAKE_TIMEOUT  # type: ignore[union-attr]
        assert conn.state is sc.ServerState.CLOSED

    @pytest.mark.spec("PW-SEC-6")
    def test_handshake_timeout_before_the_preface_closes_silently(self) -> None:
        conn = sc.ServerConnection(sc.ServerLimits(handshake_timeout=2.0), now=0.0)
        conn.receive_data(MAGIC, 1.0)  # a slow preface does not extend the deadline
        assert conn.tick(2.0) == b""
        assert conn.state is sc.ServerState.CLOSED
        assert conn.close_code == ErrorCode.HANDSHAKE_TIMEOUT

    @pytest.mark.spec("PW-HB-6")
    def test_heartbeats_start_only_with_welcome(self) -> None:
        conn = sc.ServerConnection(sc.ServerLimits(heartbeat_min_ms=10, handshake_timeout=100))
        conn.receive_data(PREFACE + enc(hello(heartbeat_ms=10)), 0.0)
        conn.next_event()
        conn.send_preface()
        conn.next_event()
        assert conn.tick(50.0) == b""  # 5000 intervals, no PING, no timeout
        conn.accept(1, "s", 50.0)
        assert conn.next_deadline() == pytest.approx(50.01)


# -- subscriptions ----------------------------------------------------------------------------


class TestSubscribe:
    def test_a_valid_subscribe_is_handed_to_the_caller(self) -> None:
        conn = open_conn()
        (event,) = feed(
            conn,
            F.Subscribe(3, "a/b", SinceKind.AFTER, 11, 22, 0, 100, at_least_once=True),
        )
        assert event == sc.SubscribeRequested(3, "a/b", SinceKind.AFTER, 11, 22, 0, True, 100)
        (frame,) = decode_all(conn.subscribed(3, Outcome.RECOVERED, 11, 23, 40))
        assert frame == F.Subscribed(3, Outcome.RECOVERED, 11, 23, 40)
        sub = conn.subscription(3)
        assert sub is not None
        assert (sub.active, sub.credit, sub.delivered, sub.acked) == (True, 100, 22, 22)

    def test_subscribed_with_a_gap_carries_the_range(self) -> None:
        conn = open_conn()
        feed(conn, F.Subscribe(1, "t"))
        data = conn.subscribed(1, Outcome.GAP, 5, 10, 20, 3, 9, ErrorCode.HISTORY_EXPIRED)
        (frame,) = decode_all(data)
        assert frame == F.Subscribed(1, Outcome.GAP, 5, 10, 20, 3, 9, ErrorCode.HISTORY_EXPIRED)

    @pytest.mark.spec("PW-TOPIC-2")
    @pytest.mark.parametrize("topic", ["", "/a", "a/", "a//b", "a\x00b", "a\x7fb", "a\x1fb"])
    def test_an_invalid_topic_is_refused_and_the_connection_stays(self, topic: str) -> None:
        conn = open_conn()
        frame = F.Subscribe(4, topic)
        event, error = refused(conn, frame)
        assert error == F.Error(ErrorCode.INVALID_TOPIC, FrameType.SUBSCRIBE, 4, event.message)
        assert conn.state is sc.ServerState.OPEN
        assert conn.subscription(4) is None

    @pytest.mark.spec("PW-SUB-3")
    def test_a_sub_id_in_use_is_already_subscribed(self) -> None:
        conn = open_conn()
        subscribe(conn, 1, "a")
        _, error = refused(conn, F.Subscribe(1, "b"))
        assert (error.code, error.request_id) == (ErrorCode.ALREADY_SUBSCRIBED, 1)

    @pytest.mark.spec("PW-SUB-3")
    def test_a_topic_subscribed_twice_is_already_subscribed(self) -> None:
        conn = open_conn()
        subscribe(conn, 1, "a")
        _, error = refused(conn, F.Subscribe(2, "a"))
        assert (error.code, error.request_id) == (ErrorCode.ALREADY_SUBSCRIBED, 2)

    @pytest.mark.spec("PW-SUB-4")
    def test_subscriptions_beyond_the_limit_are_refused(self) -> None:
        conn = open_conn(sc.ServerLimits(max_subscriptions=2, heartbeat_min_ms=10))
        subscribe(conn, 1, "a")
        subscribe(conn, 2, "b")
        _, error = refused(conn, F.Subscribe(3, "c"))
        assert error.code == ErrorCode.TOO_MANY_SUBSCRIPTIONS

    @pytest.mark.spec("PW-SUB-6")
    def test_checks_run_in_the_documented_order(self) -> None:
        conn = open_conn(sc.ServerLimits(max_subscriptions=1, heartbeat_min_ms=10))
        subscribe(conn, 1, "a")
        # invalid topic beats "sub_id in use" beats "too many"
        assert refused(conn, F.Subscribe(1, "a//"))[1].code == ErrorCode.INVALID_TOPIC
        assert refused(conn, F.Subscribe(1, "z"))[1].code == ErrorCode.ALREADY_SUBSCRIBED
        conn.goaway()
        conn.data_to_send()
        # after GOAWAY everything is GOING_AWAY first
        assert refused(conn, F.Subscribe(1, "a//"))[1].code == ErrorCode.GOING_AWAY

    def test_a_refused_subscribe_frees_its_sub_id(self) -> None:
        conn = open_conn()
        feed(conn, F.Subscribe(1, "t"))
        (error,) = decode_all(conn.request_error(ErrorCode.FORBIDDEN, FrameType.SUBSCRIBE, 1, "no"))
        assert error == F.Error(ErrorCode.FORBIDDEN, FrameType.SUBSCRIBE, 1, "no")
        assert conn.subscription(1) is None
        (event,) = feed(conn, F.Subscribe(1, "t"))
        assert isinstance(event, sc.SubscribeRequested)

    @pytest.mark.spec("PW-SUB-15")
    def test_unsubscribe_reports_the_position_and_frees_the_sub_id(self) -> None:
        conn = open_conn()
        subscribe(conn, 1, "t", initial_credit=5)
        conn.consume_credit(1, 2, epoch=5, last_seq=2)
        assert feed(conn, F.Unsubscribe(1)) == [sc.UnsubscribeRequested(1, "t")]
        assert decode_all(conn.unsubscribed(1)) == [F.Unsubscribed(1, 5, 2)]
        assert conn.subscriptions == {}

    @pytest.mark.spec("PW-SUB-15")
    def test_unsubscribe_of_an_unknown_sub_id_is_refused(self) -> None:
        _, error = refused(open_conn(), F.Unsubscribe(9))
        assert (error.code, error.request_type, error.request_id) == (
            ErrorCode.UNKNOWN_SUBSCRIPTION,
            FrameType.UNSUBSCRIBE,
            9,
        )


# -- credit -----------------------------------------------------------------------------------


class TestCredit:
    @pytest.mark.spec("PW-FLOW-1")
    def test_credit_starts_at_initial_credit_and_grows(self) -> None:
        conn = open_conn()
        subscribe(conn, 1, "t", initial_credit=3)
        assert conn.credit(1) == 3
        assert feed(conn, F.Credit(1, 4)) == [sc.CreditGranted(1, 4, 7)]
        assert conn.credit(1) == 7

    @pytest.mark.spec("PW-FLOW-2")
    def test_pushes_never_exceed_the_credit(self) -> None:
        conn = open_conn()
        subscribe(conn, 1, "t", initial_credit=3)
        assert conn.can_send(1, 3)
        assert not conn.can_send(1, 4)
        conn.consume_credit(1, 2, epoch=5, last_seq=2)
        with pytest.raises(LocalProtocolError) as info:
            conn.consume_credit(1, 2, epoch=5, last_seq=4)
        assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR
        conn.consume_credit(1, 1, epoch=5, last_seq=3)
        assert conn.credit(1) == 0

    @given(
        credit=st.integers(0, 8),
        count=st.integers(1, 8),
        epoch=st.sampled_from([5, 6]),
        sub_id=st.sampled_from([1, 2]),
    )
    def test_take_credit_is_consume_credit_where_it_applies(
        self, credit: int, count: int, epoch: int, sub_id: int
    ) -> None:
        """The fan-out's one-call charge: the same record as consume_credit when the
        subscription is active and the credit covers ``count``, else -1 and no change."""
        fast, slow = open_conn(), open_conn()
        for conn in (fast, slow):
            subscribe(conn, 1, "t", initial_credit=credit)
        left = fast.take_credit(sub_id, count, epoch, 7)
        if sub_id == 1 and count <= credit:
            slow.consume_credit(1, count, epoch=epoch, last_seq=7)
            assert left == credit - count
        else:
            assert left == -1
        assert fast.subscriptions == slow.subscriptions
        assert fast.state is slow.state

    def test_take_credit_leaves_a_pattern_subscription_to_consume_credit(self) -> None:
        conn = open_conn()
        (event,) = feed(conn, F.Subscribe(1, "a/+", initial_credit=5, positions=()))
        assert isinstance(event, sc.PatternSubscribeRequested)
        conn.pattern_subscribed(1)
        before = conn.subscriptions
        assert conn.take_credit(1, 1, 5, 1) == -1
        assert conn.subscriptions == before

    def test_the_ignore_credit_fault_lets_everything_through(self) -> None:
        conn = open_conn(cls=faults.IgnoreCredit)
        subscribe(conn, 1, "t", initial_credit=0)
        assert conn.can_send(1, 1000)
        conn.consume_credit(1, 1000, epoch=5, last_seq=1000)

    @pytest.mark.spec("PW-FLOW-4")
    def test_credit_beyond_two_to_the_32_is_a_flow_control_error(self) -> None:
        conn = open_conn()
        subscribe(conn, 1, "t", initial_credit=0xFFFF_FFF0)
        feed(conn, F.Credit(1, 0xF))
        out = fails_with(conn, enc(F.Credit(1, 1)), ErrorCode.FLOW_CONTROL_ERROR)
        assert decode_all(out)[0].code == ErrorCode.FLOW_CONTROL_ERROR  # type: ignore[union-attr]

    @pytest.mark.spec("PW-FLOW-6")
    def test_credit_for_an_unknown_subscription_is_refused(self) -> None:
        _, error = refused(open_conn(), F.Credit(8, 1))
        assert (error.code, error.request_type, error.request_id) == (
            ErrorCode.UNKNOWN_SUBSCRIPTION,
            FrameType.CREDIT,
            8,
        )

    @pytest.mark.spec("PW-FLOW-1")
    def test_a_gap_costs_no_credit(self) -> None:
        conn = open_conn()
        subscribe(conn, 1, "t", initial_credit=1)
        (gap,) = decode_all(conn.gap(1, 5, 1, 10, ErrorCode.SLOW_CONSUMER))
        assert gap == F.Gap(1, 5, 1, 10, ErrorCode.SLOW_CONSUMER)
        assert conn.credit(1) == 1
        assert conn.subscription(1).delivered == 10  # type: ignore[union-attr]


# -- acks -------------------------------------------------------------------------------------


class TestAck:
    def at_least_once(self) -> sc.ServerConnection:
        conn = open_conn()
        feed(conn, F.Subscribe(1, "t", initial_credit=10, at_least_once=True))
        conn.subscribed(1, Outcome.RECOVERED, 5, 4, 3)
        conn.consume_credit(1, 3, epoch=5, last_seq=6)
        return conn

    @pytest.mark.spec("PW-ACK-3")
    def test_acks_are_cumulative_and_may_repeat(self) -> None:
        conn = self.at_least_once()
        assert feed(conn, F.Ack(1, 5), F.Ack(1, 5), F.Ack(1, 6)) == [
            sc.Acked(1, 5),
            sc.Acked(1, 5),
            sc.Acked(1, 6),
        ]
        assert conn.data_to_send() == b""

    @pytest.mark.spec("PW-ACK-2")
    def test_an_ack_beyond_the_position_is_invalid(self) -> None:
        _, error = refused(self.at_least_once(), F.Ack(1, 7))
        assert (error.code, error.request_type, error.request_id) == (
            ErrorCode.INVALID_ACK,
            FrameType.ACK,
            1,
        )

    @pytest.mark.spec("PW-ACK-2", "PW-ACK-4")
    def test_an_ack_below_the_level_is_invalid_and_the_level_starts_at_start_minus_one(
        self,
    ) -> None:
        conn = self.at_least_once()
        assert feed(conn, F.Ack(1, 3)) == [sc.Acked(1, 3)]  # start_seq - 1: a no-op
        assert refused(conn, F.Ack(1, 2))[1].code == ErrorCode.INVALID_ACK
        feed(conn, F.Ack(1, 6))
        assert refused(conn, F.Ack(1, 5))[1].code == ErrorCode.INVALID_ACK
        assert conn.state is sc.ServerState.OPEN

    @pytest.mark.spec("PW-ACK-2")
    def test_an_ack_on_an_at_most_once_subscription_is_invalid(self) -> None:
        conn = open_conn()
        subscribe(conn, 1, "t", initial_credit=5)
        conn.consume_credit(1, 1, epoch=5, last_seq=1)
        assert refused(conn, F.Ack(1, 1))[1].code == ErrorCode.INVALID_ACK

    @pytest.mark.spec("PW-ACK-5")
    def test_an_ack_for_an_unknown_subscription_is_refused(self) -> None:
        assert refused(open_conn(), F.Ack(3, 1))[1].code == ErrorCode.UNKNOWN_SUBSCRIPTION

    @pytest.mark.spec("PW-ACK-4")
    def test_the_ack_level_restarts_at_zero_in_a_new_epoch(self) -> None:
        conn = self.at_least_once()
        feed(conn, F.Ack(1, 6))
        conn.consume_credit(1, 1, epoch=99, last_seq=1)
        sub = conn.subscription(1)
        assert sub is not None
        assert (sub.epoch, sub.delivered, sub.acked) == (99, 1, 0)
        assert feed(conn, F.Ack(1, 1)) == [sc.Acked(1, 1)]


# -- publish ----------------------------------------------------------------------------------


class TestPublish:
    @pytest.mark.spec("PW-PUB-7")
    def test_publish_body_turns_into_the_message_by_swapping_the_prefix(self) -> None:
        conn = open_conn()
        headers = (("k", b"v"), ("k", b"w"))
        (event,) = feed(conn, F.Publish(9, "a/b", b"payload", headers))
        assert isinstance(event, sc.PublishRequested)
        assert (event.request_id, event.topic, event.payload, event.headers) == (
            9,
            "a/b",
            b"payload",
            headers,
        )
        message = (
            struct.pack(">IBBQQ", len(event.body) + 16, FrameType.MESSAGE, event.flags, 5, 77)
            + event.body
        )
        assert message == codec.encode_frame(F.Message(5, 77, "a/b", b"payload", headers))

    def test_publish_batch_record_offsets_slice_the_body(self) -> None:
        conn = open_conn()
        records = (F.Record(b"one", (("a", b"1"),)), F.Record(b"", ()), F.Record(b"three", ()))
        (event,) = feed(conn, F.PublishBatch(0, "t", records))
        assert isinstance(event, sc.PublishBatchRequested)
        assert event.count == 3
        starts = (event.records_start, *event.record_ends[:-1])
        for record, start, end in zip(records, starts, event.record_ends, strict=True):
            batch = F.PublishBatch(0, "t", (record,))
            assert event.body[start:end] == codec.encode_frame(batch)[HEADER_SIZE + 4 + 1 + 1 + 2 :]
        assert event.record_ends[-1] == len(event.body)

    @pytest.mark.spec("PW-TOPIC-2", "PW-PUB-4")
    def test_an_invalid_topic_is_refused_even_without_a_request_id(self) -> None:
        _, error = refused(open_conn(), F.Publish(0, "bad//topic", b""))
        assert (error.code, error.request_type, error.request_id) == (
            ErrorCode.INVALID_TOPIC,
            FrameType.PUBLISH,
            0,
        )

    @pytest.mark.spec("PW-GOAWAY-3")
    def test_publishes_after_goaway_are_going_away(self) -> None:
        conn = open_conn()
        conn.goaway()
        _, error = refused(conn, F.PublishBatch(4, "t", (F.Record(b""),)))
        assert (error.code, error.request_type, error.request_id) == (
            ErrorCode.GOING_AWAY,
            FrameType.PUBLISH_BATCH,
            4,
        )

    def test_puback_carries_epoch_first_seq_and_count(self) -> None:
        assert decode_all(open_conn().puback(3, 5, 10, 4)) == [F.Puback(3, 5, 10, 4)]


# -- goaway and errors ------------------------------------------------------------------------


class TestGoaway:
    @pytest.mark.spec("PW-GOAWAY-2")
    def test_goaway_lists_acked_or_delivered_positions(self) -> None:
        conn = open_conn()
        feed(conn, F.Subscribe(1, "a", initial_credit=10, at_least_once=True))
        conn.subscribed(1, Outcome.NEW, 5, 1, 0)
        conn.consume_credit(1, 4, epoch=5, last_seq=4)
        feed(conn, F.Ack(1, 2))
        subscribe(conn, 2, "b", initial_credit=10)
        conn.consume_credit(2, 3, epoch=5, last_seq=3)
        (goaway,) = decode_all(conn.goaway(ErrorCode.SHUTTING_DOWN, 100, 50, "bye"))
        assert goaway == F.Goaway(
            ErrorCode.SHUTTING_DOWN, 100, 50, (F.Position(1, 5, 2), F.Position(2, 5, 3)), "bye"
        )
        assert conn.state is sc.ServerState.DRAINING

    @pytest.mark.spec("PW-GOAWAY-2")
    def test_goaway_positions_are_cut_to_fit_the_client_limit(self) -> None:
        conn = open_conn(sc.ServerLimits(max_subscriptions=2000, heartbeat_min_ms=10))
        conn.client = sc.HelloReceived("t", b"", 16384, 1000)
        for i in range(1000):
            subscribe(conn, i, f"t{i}")
        data = conn.goaway(reason="r")
        assert len(data) - HEADER_SIZE <= 16384
        (goaway,) = decode_all(data)
        assert len(goaway.positions) == 818  # type: ignore[union-attr]

    @pytest.mark.spec("PW-GOAWAY-11")
    def test_only_one_goaway_per_connection(self) -> None:
        conn = open_conn()
        conn.goaway()
        with pytest.raises(LocalProtocolError):
            conn.goaway()

    @pytest.mark.spec("PW-GOAWAY-3")
    def test_credit_ack_unsubscribe_and_ping_still_work_while_draining(self) -> None:
        conn = open_conn()
        subscribe(conn, 1, "t", initial_credit=1)
        conn.goaway()
        events = feed(conn, F.Credit(1, 1), F.Ping(2), F.Unsubscribe(1))
        assert events == [
            sc.CreditGranted(1, 1, 2),
            sc.PingReceived(2),
            sc.UnsubscribeRequested(1, "t"),
        ]
        conn.unsubscribed(1)

    @pytest.mark.spec("PW-GOAWAY-10")
    def test_a_client_goaway_closes_without_an_error(self) -> None:
        conn = open_conn()
        assert feed(conn, F.Goaway(0, 0, 0, (), "done")) == [sc.GoawayReceived(0, "done")]
        assert conn.state is sc.ServerState.CLOSED
        assert conn.close_code == ErrorCode.NO_ERROR
        assert conn.data_to_send() == b""

    @pytest.mark.spec("PW-ERR-3")
    def test_a_client_error_closes(self) -> None:
        conn = open_conn()
        assert feed(conn, F.Error(0x7777, 0, 0, "odd")) == [sc.PeerError(0x7777, "odd")]
        assert conn.state is sc.ServerState.CLOSED
        assert conn.next_event() is PAUSED

    @pytest.mark.spec("PW-ERR-1", "PW-ERR-2")
    def test_close_with_error_says_it_once(self) -> None:
        conn = open_conn()
        (error,) = decode_all(conn.close_with_error(ErrorCode.SLOW_CONSUMER, "x" * 5000))
        assert error.code == ErrorCode.SLOW_CONSUMER  # type: ignore[union-attr]
        assert len(error.message.encode()) <= sc.MAX_REASON_BYTES  # type: ignore[union-attr]
        assert conn.close_with_error(ErrorCode.INTERNAL_ERROR) == b""
        with pytest.raises(LocalProtocolError):
            conn.puback(1, 1, 1, 1)


def test_transition_tables_cover_only_what_clients_send() -> None:
    for table in sc.RECEIVE_TRANSITIONS.values():
        assert set(table) <= CLIENT_SENDS
    assert set(sc.RECEIVE_TRANSITIONS[sc.ServerState.OPEN]) == CLIENT_SENDS - {FrameType.HELLO}


def test_both_tables_have_one_shape_state_to_frame_type_to_state() -> None:
    for table, direction in ((sc.RECEIVE_TRANSITIONS, CLIENT_SENDS), (sc.SEND_TRANSITIONS, None)):
        assert set(table) == set(sc.ServerState)
        for row in table.values():
            for frame_type, after in row.items():
                assert isinstance(frame_type, FrameType) and isinstance(after, sc.ServerState)
                assert direction is None or frame_type in direction
    assert FrameType.GOAWAY not in sc.SEND_TRANSITIONS[sc.ServerState.DRAINING]  # once only


def test_limits_refuse_a_frame_size_outside_the_protocol_range() -> None:
    with pytest.raises(ValueError):
        sc.ServerLimits(max_frame_size=1000)
    with pytest.raises(ValueError):
        sc.ServerLimits(heartbeat_max_ms=600_001)
