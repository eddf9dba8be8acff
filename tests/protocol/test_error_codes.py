"""What the sans-I/O cores say in ERROR, GOAWAY and GAP frames, whatever the peer sends.

Each core is put through a handshake (HELLO carrying an auth token) and then fed arbitrary
frames: valid ones drawn over their whole range (``strategies.frames``), ones aimed at the
requests and subscriptions that exist (small ids, good and bad topics), and optionally a
malformed frame (``strategies.malformed_frames``), with a late ``tick()`` somewhere.
Everything the core sends is decoded by a tap, and

* every code keeps the scope the registry gives it (PW-ERR-5): request codes only in
  request-level ERRORs, connection codes only in connection-level ERRORs and GOAWAY, gap
  reasons only in GAP; a client ERROR is always connection-level (PW-ERR-7); nothing follows
  a connection-level ERROR (PW-ERR-2);
* no ERROR message or GOAWAY reason repeats the auth token (PW-ERR-8: no secrets);
* two cores that get the same ERROR with different messages end up in the same state, tell
  their application the same things and send the same bytes (PW-ERR-8: nobody acts on the
  text).

Codes that the shells choose themselves (``reject()``, ``request_error()``, ``gap()``,
``goaway()``) are proven in tests of those shells.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wire_tap import Tap, after_connection_error, scope_problem

from pushwire.protocol import client_conn as cc
from pushwire.protocol import frames as F
from pushwire.protocol import reference
from pushwire.protocol import server_conn as sc
from pushwire.protocol.client_conn import ClientConnection, Since
from pushwire.protocol.errors import ErrorCode, RemoteProtocolError
from pushwire.protocol.layouts import FrameType, Outcome
from pushwire.protocol.server_conn import ServerConnection, ServerLimits
from pushwire.protocol.testing import strategies as ps

LIMITS = ServerLimits(heartbeat_min_ms=100)
LATE = 3600.0  # a tick this late finds any connection timed out
SMALL_ID = st.integers(1, 2)  # sub_ids and request_ids that the tests' requests use
TOPIC = st.sampled_from(["a", "a/b"]) | st.sampled_from(["", "a//b", "a/#/b"])  # good | bad
CODE = st.one_of(st.sampled_from(list(ErrorCode)), st.integers(0, 0xFFFF))
_T = FrameType
REQUEST_TYPE = st.sampled_from(
    [0, _T.SUBSCRIBE, _T.UNSUBSCRIBE, _T.CREDIT, _T.ACK, _T.PUBLISH, _T.PUBLISH_BATCH, 0x99]
)
#: Texts an implementation might be tempted to act on; each test adds one drawn text.
TEMPTING = (
    "",
    "a",
    "retry",
    "retry later",
    "close",
    "fatal",
    "shutting down",
    *ErrorCode.__members__,
)
TOKENS = st.binary(min_size=8, max_size=8).map(lambda b: b"secret-" + b.hex().encode())


def mostly(
    aimed: st.SearchStrategy[F.Frame], direction: ps.Direction
) -> st.SearchStrategy[F.Frame]:
    """Three frames in four aimed at what exists, the fourth any valid frame of
    ``direction`` (which often ends the connection, so it must not crowd the others out)."""
    anything = ps.frames(direction=direction, max_items=2, max_payload=16)
    return st.sampled_from([aimed, aimed, aimed, anything]).flatmap(lambda s: s)


TO_SERVER = mostly(
    st.one_of(
        st.builds(
            F.Subscribe,
            SMALL_ID,
            TOPIC,
            initial_credit=st.integers(0, 3),
            at_least_once=st.booleans(),
        ),
        st.builds(F.Unsubscribe, SMALL_ID),
        st.builds(F.Credit, SMALL_ID, st.sampled_from([1, 0xFFFF_FFFF])),
        st.builds(F.Ack, SMALL_ID, st.integers(0, 3)),
        st.builds(F.Publish, SMALL_ID, TOPIC, st.just(b"x")),
    ),
    "to_server",
)
TO_CLIENT = mostly(
    st.one_of(
        st.builds(
            F.Subscribed,
            SMALL_ID,
            st.sampled_from(list(Outcome)),
            st.integers(1, 2),
            SMALL_ID,
            SMALL_ID,
        ),
        st.builds(F.Message, st.integers(1, 2), SMALL_ID, st.just("a"), st.just(b"x")),
        st.builds(F.Gap, SMALL_ID, st.integers(1, 2), SMALL_ID, SMALL_ID, CODE),
        st.builds(F.Error, CODE, REQUEST_TYPE, SMALL_ID, st.text(max_size=8)),
        st.builds(F.Puback, SMALL_ID, st.integers(1, 2), SMALL_ID, SMALL_ID),
        st.builds(F.Unsubscribed, SMALL_ID, st.integers(1, 2), SMALL_ID),
    ),
    "to_client",
)


def serve(server: ServerConnection, now: float = 0.0) -> bytes:
    """Run the server core's events; the application accepts every handshake and request."""
    out = bytearray()
    try:
        for ev in server.events():
            live = server.state in (sc.ServerState.OPEN, sc.ServerState.DRAINING)
            match ev:
                case sc.PrefaceReceived():
                    out += server.send_preface()
                case sc.HelloReceived():
                    out += server.accept(1, "codes", now)
                case sc.SubscribeRequested() if live:
                    out += server.subscribed(ev.sub_id, Outcome.NEW, 1, 1, 0)
                case sc.UnsubscribeRequested() if live:
                    out += server.unsubscribed(ev.sub_id)
            out += server.data_to_send()
    except RemoteProtocolError:
        pass  # the core closed; its ERROR is in data_to_send()
    return bytes(out + server.data_to_send())


def run_client(client: ClientConnection) -> list[Any]:
    """The client core's events, comparable, up to a violation (reported as its code and
    text), after which the core is closed and its ERROR is in data_to_send()."""
    out: list[Any] = []
    try:
        out.extend(comparable(ev) for ev in client.events())
    except RemoteProtocolError as exc:
        out.append(("violation", exc.code, str(exc)))
    return out


def handshake(token: bytes) -> tuple[ClientConnection, ServerConnection, bytes, bytes]:
    """Both cores OPEN; returns them and what each has sent so far."""
    client, server = ClientConnection(), ServerConnection(LIMITS, now=0.0)
    sent_by_client = client.initiate("codes", auth_token=token, heartbeat_ms=1000, now=0.0)
    server.receive_data(sent_by_client, 0.0)
    sent_by_server = serve(server)
    client.receive_data(sent_by_server, 0.0)
    run_client(client)
    assert client.state is cc.ClientState.OPEN and server.state is sc.ServerState.OPEN
    return client, server, sent_by_client + client.data_to_send(), sent_by_server


def check_what_was_sent(data: bytes, token: bytes) -> list[F.Frame]:
    tap = Tap()
    tap.feed(data)
    frames = tap.all()
    assert [problem for f in frames if (problem := scope_problem(f))] == []
    assert after_connection_error(frames) == []
    texts = [f.message for f in frames if isinstance(f, F.Error)]
    texts += [f.reason for f in frames if isinstance(f, F.Goaway)]
    assert [t for t in texts if token.decode() in t] == []
    return frames


@pytest.mark.spec("PW-ERR-5", "PW-ERR-8", "PW-ERR-2")
@given(
    token=TOKENS,
    frames=st.lists(TO_SERVER, max_size=8),
    malformed=st.none() | ps.malformed_frames("to_server", LIMITS.max_frame_size),
    late=st.none() | st.integers(0, 8),
)
def test_the_server_core_keeps_each_code_in_its_scope_and_the_token_out_of_messages(
    token: bytes, frames: list[F.Frame], malformed: ps.Malformed | None, late: int | None
) -> None:
    _, server, _, sent = handshake(token)
    for i, frame in enumerate(frames):
        if i == late:
            sent += server.tick(LATE)
        server.receive_data(reference.encode_frame(frame), 1.0)
        sent += serve(server, 1.0)
    if malformed is not None:
        server.receive_data(malformed.data, 2.0)
        sent += serve(server, 2.0)
    sent += server.tick(LATE) if late is not None else b""
    check_what_was_sent(sent, token)


@pytest.mark.spec("PW-ERR-5", "PW-ERR-7", "PW-ERR-8", "PW-ERR-2")
@given(
    token=TOKENS,
    frames=st.lists(TO_CLIENT, max_size=8),
    malformed=st.none() | ps.malformed_frames("to_client", 1 << 20),
    late=st.none() | st.integers(0, 8),
)
def test_the_client_core_keeps_each_code_in_its_scope_and_the_token_out_of_messages(
    token: bytes, frames: list[F.Frame], malformed: ps.Malformed | None, late: int | None
) -> None:
    client, _, sent, _ = handshake(token)
    _, data = client.subscribe("a", Since.new(), initial_credit=2)
    _, more = client.publish("a", b"x")
    sent += data + more
    for i, frame in enumerate(frames):
        if i == late:
            sent += client.tick(LATE)
        client.receive_data(reference.encode_frame(frame), 1.0)
        run_client(client)
        sent += client.data_to_send()
    if malformed is not None:
        client.receive_data(malformed.data, 2.0)
        run_client(client)
        sent += client.data_to_send()
    sent += client.tick(LATE) if late is not None else b""
    for frame in check_what_was_sent(sent, token):
        if isinstance(frame, F.Error):
            assert (frame.request_type, frame.request_id) == (0, 0), frame


def comparable(event: Any) -> tuple[str, dict[str, Any]]:
    """An event with its message text blanked (and an exception reduced to its facts)."""
    values = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    if "message" in values:
        values["message"] = ""
    if isinstance(values.get("error"), Exception):
        error = values["error"]
        values["error"] = (type(error).__name__, getattr(error, "code", None), str(error))
    return type(event).__name__, values


@pytest.mark.spec("PW-ERR-8")
@given(
    error=st.builds(F.Error, CODE, REQUEST_TYPE, SMALL_ID, st.just("")),
    message=st.text(max_size=40),
    then=st.lists(TO_CLIENT, max_size=4),
)
def test_the_client_core_does_not_act_on_the_text_of_an_error(
    error: F.Error, message: str, then: list[F.Frame]
) -> None:
    seen = []
    for text in (*TEMPTING, message):
        client, _, _, _ = handshake(b"")
        sub_id, _ = client.subscribe("a", Since.new(), initial_credit=2)
        client.publish("a", b"x")
        client.receive_data(reference.encode_frame(dataclasses.replace(error, message=text)), 1.0)
        for frame in then:
            client.receive_data(reference.encode_frame(frame), 2.0)
        events = run_client(client)
        out = client.data_to_send() + client.tick(LATE)
        seen.append(
            (
                client.state,
                client.subscription(sub_id),
                client.outstanding_publishes(),
                events,
                out,
            )
        )
    assert all(outcome == seen[0] for outcome in seen)


@pytest.mark.spec("PW-ERR-8")
@given(
    error=st.builds(F.Error, CODE, st.just(0), st.just(0), st.just("")),
    message=st.text(max_size=40),
    then=st.lists(TO_SERVER, max_size=4),
)
def test_the_server_core_does_not_act_on_the_text_of_an_error(
    error: F.Error, message: str, then: list[F.Frame]
) -> None:
    seen = []
    for text in (*TEMPTING, message):
        _, server, _, _ = handshake(b"")
        server.receive_data(reference.encode_frame(dataclasses.replace(error, message=text)), 1.0)
        events = [comparable(ev) for ev in server.events()]
        for frame in then:
            server.receive_data(reference.encode_frame(frame), 2.0)
        out = serve(server, 2.0) + server.tick(LATE)
        seen.append((server.state, server.close_code, events, out))
    assert all(outcome == seen[0] for outcome in seen)
