"""ClientConnection.publish_run and take_pubacks: a pipelining publisher's hot path says
what publish() and next_event() say, one answer per publish, each checked."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushwire.protocol import codec
from pushwire.protocol import frames as F
from pushwire.protocol.client_conn import (
    ClientConnection,
    ClientState,
    MessageReceived,
    PublishAcked,
    PublishRun,
    RequestFailed,
    Welcomed,
)
from pushwire.protocol.decoder import FrameDecoder, encode_preface
from pushwire.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from pushwire.protocol.events import Event, Sentinel
from pushwire.protocol.layouts import INITIAL_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE, FrameType, Outcome

EPOCH = 0xE0
WELCOME = F.Welcome(7, 5000, INITIAL_MAX_FRAME_SIZE, 100, 1000, 1, "scripted")


def enc(*frames: F.Frame) -> bytes:
    return b"".join(codec.encode_frame(f) for f in frames)


def opened() -> ClientConnection:
    conn = ClientConnection()
    conn.initiate("test")
    conn.receive_data(encode_preface(1, 1) + enc(WELCOME), 0.0)
    assert [type(e) for e in conn.events()] == [Welcomed]
    return conn


def decode_all(data: bytes) -> list[F.Frame]:
    decoder = FrameDecoder(MAX_MAX_FRAME_SIZE)
    decoder.feed(data)
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    assert decoder.buffered == 0
    return out


@dataclass
class Result:
    events: list[Event]
    answers: list[int | RequestFailed]
    error: ErrorCode | None
    taken: int  # PUBACKs take_pubacks took (0 for the plain machine)


def run_script(conn: ClientConnection, run: PublishRun, pieces: list[bytes], fast: bool) -> Result:
    """Feed ``pieces`` one read at a time; the fast machine calls take_pubacks before
    each next_event, as the client's reader does, the plain one never does."""
    events: list[Event] = []
    taken = 0
    try:
        for piece in pieces:
            conn.receive_data(piece, 0.0)
            while True:
                if fast:
                    taken += conn.take_pubacks()
                event = conn.next_event()
                if isinstance(event, Sentinel):
                    break
                events.append(event)
    except RemoteProtocolError as exc:
        assert conn.state is ClientState.CLOSED
        return Result(events, list(run.answers), exc.code, taken)
    return Result(events, list(run.answers), None, taken)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    points = sorted({p % (len(data) + 1) for p in points})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return [p for p in pieces if p]  # b"" would be EOF


# -- sending ----------------------------------------------------------------------------------


@given(
    st.lists(st.binary(max_size=64), min_size=1, max_size=20),
    st.none() | st.just((("k", b"v"), ("é", b""))),
)
def test_a_run_is_the_frames_publish_would_send(
    payloads: list[bytes], headers: F.Headers | None
) -> None:
    one, many = opened(), opened()
    expected = [one.publish("a/b", p, headers)[1] for p in payloads]
    run, data = many.publish_run("a/b", payloads, headers)
    assert data == b"".join(expected)
    assert decode_all(data) == [
        F.Publish(rid, "a/b", p, headers) for rid, p in zip(run.request_ids, payloads, strict=True)
    ]
    assert many.outstanding_publishes() == one.outstanding_publishes() == set(run.request_ids)
    assert not run.done and run.answers == []


def test_request_ids_of_a_run_skip_those_still_outstanding() -> None:
    conn = opened()
    rid, _ = conn.publish("a", b"single")
    conn._next_request_id = rid  # the counter came round to it again
    run, _ = conn.publish_run("a", [b"1", b"2"])
    assert rid not in run.request_ids and len(set(run.request_ids)) == 2


def test_a_run_with_a_frame_too_large_is_refused_whole_and_allocates_nothing() -> None:
    conn = opened()  # server limit 16384
    with pytest.raises(LocalProtocolError) as info:
        conn.publish_run("a", [b"ok", b"x" * INITIAL_MAX_FRAME_SIZE])
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE
    assert conn.outstanding_publishes() == set()
    run, _ = conn.publish_run("a", [b"x" * (INITIAL_MAX_FRAME_SIZE - 6)])  # 4 + 2 for "a"
    assert run.request_ids == [1]


@pytest.mark.parametrize("topic", ["", "a//b", "a/+", "x" * 256])
def test_a_run_on_an_invalid_topic_is_refused_locally(topic: str) -> None:
    conn = opened()
    with pytest.raises(LocalProtocolError):
        conn.publish_run(topic, [b"1"])
    assert conn.outstanding_publishes() == set()


def test_an_empty_run_is_the_callers_mistake() -> None:
    with pytest.raises(LocalProtocolError):
        opened().publish_run("a", [])


def test_no_run_after_goaway() -> None:
    conn = opened()
    conn.receive_data(enc(F.Goaway(ErrorCode.NO_ERROR, 0, 0, (), "bye")), 0.0)
    list(conn.events())
    with pytest.raises(LocalProtocolError) as info:
        conn.publish_run("a", [b"1"])
    assert info.value.code == ErrorCode.GOING_AWAY


# -- answers ----------------------------------------------------------------------------------


@pytest.mark.spec("PW-ORDER-10")
def test_pubacks_are_taken_in_bulk_without_events() -> None:
    conn = opened()
    run, _ = conn.publish_run("a", [b"%d" % i for i in range(100)])
    replies = enc(*(F.Puback(rid, EPOCH, 7 + i, 1) for i, rid in enumerate(run.request_ids)))
    conn.receive_data(replies, 0.0)
    assert conn.take_pubacks() == 100
    assert run.answers == list(range(7, 107)) and run.done
    assert conn.run_answers == 100
    assert list(conn.events()) == []
    assert conn.outstanding_publishes() == set()


def test_take_pubacks_leaves_anything_but_a_run_puback_to_next_event() -> None:
    conn = opened()
    run, _ = conn.publish_run("a", [b"1", b"2", b"3"])
    single, _ = conn.publish("a", b"4")
    r1, r2, r3 = run.request_ids
    data = enc(F.Puback(r1, EPOCH, 1, 1), F.Ping(9), F.Puback(r2, EPOCH, 2, 1))
    data += enc(F.Puback(r3, EPOCH, 3, 1), F.Puback(single, EPOCH, 4, 1))
    conn.receive_data(data[:-5], 0.0)
    assert conn.take_pubacks() == 1
    assert conn.take_pubacks() == 0  # the PING is next_event's
    # next_event answers the PING; with no event to report it goes on through the run's
    # PUBACKs itself (the general path) up to the PUBACK cut short.
    assert isinstance(conn.next_event(), Sentinel)
    assert decode_all(conn.data_to_send()) == [F.Pong(9)]
    assert run.answers == [1, 2, 3] and conn.run_answers == 3
    conn.receive_data(data[-5:], 0.0)
    assert conn.take_pubacks() == 0  # not a run publish: an event, as before
    assert list(conn.events()) == [PublishAcked(single, "a", EPOCH, 4, 1)]
    assert run.answers == [1, 2, 3]


def test_take_pubacks_waits_while_an_event_is_pending_and_after_close() -> None:
    conn = opened()
    sub_id, _ = conn.subscribe("m")
    run, _ = conn.publish_run("a", [b"1"])
    batch = F.MessageBatch(EPOCH, 1, "m", (F.Record(b"x"), F.Record(b"y")))
    subscribed = F.Subscribed(sub_id, Outcome.NEW, EPOCH, 1, 0)
    conn.receive_data(enc(subscribed, batch, F.Puback(run.request_ids[0], EPOCH, 1, 1)), 0.0)
    conn.next_event()  # SUBSCRIBED
    assert isinstance(conn.next_event(), MessageReceived)  # the second record is pending
    assert conn.take_pubacks() == 0
    assert isinstance(conn.next_event(), MessageReceived)
    assert conn.take_pubacks() == 1 and run.answers == [1]
    closed = opened()
    run, _ = closed.publish_run("a", [b"1"])
    closed.goaway()
    closed.receive_data(enc(F.Puback(run.request_ids[0], EPOCH, 1, 1)), 0.0)
    assert closed.take_pubacks() == 0 and run.answers == []


def test_an_error_mid_window_answers_the_publish_it_names() -> None:
    conn = opened()
    run, _ = conn.publish_run("a", [b"1", b"2", b"3", b"4"])
    r1, r2, r3, r4 = run.request_ids
    conn.receive_data(
        enc(
            F.Puback(r1, EPOCH, 10, 1),
            F.Error(ErrorCode.RATE_LIMITED, FrameType.PUBLISH, r2, "slow down"),
            F.Puback(r3, EPOCH, 11, 1),
            F.Puback(r4, EPOCH, 12, 1),
        ),
        0.0,
    )
    failed = RequestFailed(ErrorCode.RATE_LIMITED, FrameType.PUBLISH, r2, "slow down", "a")
    assert conn.take_pubacks() == 1
    assert conn.next_event() == failed
    assert conn.take_pubacks() == 2
    assert run.answers == [10, failed, 11, 12] and conn.run_answers == 4
    assert conn.outstanding_publishes() == set()


def test_a_history_reset_mid_run_starts_the_sequences_again() -> None:
    conn = opened()
    run, _ = conn.publish_run("a", [b"1", b"2"])
    r1, r2 = run.request_ids
    conn.receive_data(enc(F.Puback(r1, EPOCH, 50, 1), F.Puback(r2, EPOCH + 1, 1, 1)), 0.0)
    assert conn.take_pubacks() == 2 and run.answers == [50, 1]


def bad_replies(run: PublishRun) -> dict[str, bytes]:
    r1, r2 = run.request_ids
    return {
        "overtaking puback": enc(F.Puback(r2, EPOCH, 1, 1)),
        "overtaking error": enc(F.Error(ErrorCode.FORBIDDEN, FrameType.PUBLISH, r2, "")),
        "earlier sequence": enc(F.Puback(r1, EPOCH, 5, 1), F.Puback(r2, EPOCH, 5, 1)),
        "count of a batch": enc(F.Puback(r1, EPOCH, 5, 2)),
        "sequence zero": enc(F.Puback(r1, EPOCH, 0, 1)),
        "epoch zero": enc(F.Puback(r1, 0, 1, 1)),
        "answered twice": enc(F.Puback(r1, EPOCH, 1, 1), F.Puback(r1, EPOCH, 2, 1)),
    }


@pytest.mark.spec("PW-ORDER-8", "PW-ORDER-10")
@pytest.mark.parametrize("case", list(bad_replies(opened().publish_run("a", [b"1", b"2"])[0])))
@pytest.mark.parametrize("fast", [True, False])
def test_a_broken_answer_is_a_protocol_error_on_either_path(case: str, fast: bool) -> None:
    conn = opened()
    run, _ = conn.publish_run("a", [b"1", b"2"])
    outcome = run_script(conn, run, [bad_replies(run)[case]], fast)
    assert outcome.error == ErrorCode.PROTOCOL_ERROR
    (error,) = decode_all(conn.data_to_send())
    assert isinstance(error, F.Error) and error.code == ErrorCode.PROTOCOL_ERROR


# -- the two paths agree ----------------------------------------------------------------------


@st.composite
def scripts(draw: st.DrawFn) -> tuple[int, list[tuple[str, int]]]:
    """(run size, replies): the run's answers in order, a few refused, with MESSAGEs and
    PINGs between them, and now and then one broken answer."""
    n = draw(st.integers(1, 40))
    replies: list[tuple[str, int]] = []
    for i in range(n):
        replies += [(draw(st.sampled_from(["message", "ping"])), 0)] * draw(st.integers(0, 1))
        replies.append((draw(st.sampled_from(["ack"] * 8 + ["refuse"])), i))
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(replies) - 1))
        replies.insert(at, (draw(st.sampled_from(["stale", "overtake", "batch"])), 0))
    return n, replies


@given(scripts(), st.lists(st.integers(0, 10_000), max_size=8))
def test_take_pubacks_gives_what_next_event_alone_gives(
    script: tuple[int, list[tuple[str, int]]], points: list[int]
) -> None:
    n, replies = script
    outcomes = []
    for fast in (True, False):
        conn = opened()
        sub_id, _ = conn.subscribe("m", initial_credit=1000)
        conn.receive_data(enc(F.Subscribed(sub_id, Outcome.NEW, EPOCH, 1, 0)), 0.0)
        list(conn.events())
        run, _ = conn.publish_run("a", [b"%d" % i for i in range(n)])
        frames: list[F.Frame] = []
        seq = message_seq = 100
        for kind, i in replies:
            rid = run.request_ids[i]
            if kind == "ack":
                seq += 1
                frames.append(F.Puback(rid, EPOCH, seq, 1))
            elif kind == "refuse":
                frames.append(F.Error(ErrorCode.RATE_LIMITED, FrameType.PUBLISH, rid, ""))
            elif kind == "message":
                message_seq += 1
                frames.append(F.Message(EPOCH, message_seq - 100, "m", b"m"))
            elif kind == "ping":
                frames.append(F.Ping(3))
            elif kind == "stale":
                frames.append(F.Puback(run.request_ids[0], EPOCH, 1, 1))
            elif kind == "overtake":
                frames.append(F.Puback(run.request_ids[-1], EPOCH, 10**6, 1))
            else:
                frames.append(F.Puback(run.request_ids[0], EPOCH, 10**6, 2))
        outcome = run_script(conn, run, cut(enc(*frames), points), fast)
        outcomes.append(outcome)
        if outcome.error is None:
            assert run.done and conn.outstanding_publishes() == set()
            assert conn.run_answers == n
        assert not any(isinstance(e, PublishAcked) for e in outcome.events)
        assert all(isinstance(e, MessageReceived | RequestFailed) for e in outcome.events)
    fast_outcome, plain = outcomes
    assert (fast_outcome.events, fast_outcome.answers, fast_outcome.error) == (
        plain.events,
        plain.answers,
        plain.error,
    )
